"""What a team knows in the first hour (data, usage, constraints, hardware, money): the decision engine's input."""

from typing import Annotated, Literal

from msgspec import Meta, Struct

from advisor.core.bounds import (
    MAX_BUDGET_USD, MAX_DOCS, MAX_GPUS, MAX_PRICE_USD_PER_GPU_HOUR, MAX_REQUESTS_PER_DAY, MAX_TOKENS,
    MAX_TOKENS_PER_REQUEST,
)
from advisor.plan.serving import DEFAULT_PEAK_TO_AVERAGE

Tier = Literal["api", "peft", "full", "pretrain"]
TaskKind = Literal["knowledge", "style", "task", "domain", "language"]
TIERS: tuple[Tier, ...] = ("api", "peft", "full", "pretrain")

# Share of a request's tokens that the API bills as output (the rest is prompt). Chat workloads with
# retrieved context are prompt-heavy; 25% output is an assumption, overridable per call.
DEFAULT_OUTPUT_FRACTION = 0.25

# The hosted model priced when none is named: a current one (never a retired one, advisor/catalog/data/apis.yaml).
DEFAULT_API = "gpt-6-luna"


class Situation(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the team knows in the first hour: data, usage, constraints, hardware and money (the flags give it:
    advisor.cli.options._validated checks each against its constraint)."""

    tokens: Annotated[float, Meta(gt=0, le=MAX_TOKENS, description=(
        "Tokens of training data you have (before quality filtering)."))]
    docs: Annotated[float, Meta(gt=0, le=MAX_DOCS, description=(
        "Number of documents (for the report; tokens drive the maths)."))] | None = None
    quality: Annotated[float, Meta(gt=0, le=1, description="Usable fraction of the data after cleaning, in "
                                                           "(0, 1].")] = 1.0
    requests_per_day: Annotated[float, Meta(ge=0, le=MAX_REQUESTS_PER_DAY, description=(
        "Expected production requests per day."))] = 1000.0
    tokens_per_request: Annotated[float, Meta(gt=0, le=MAX_TOKENS_PER_REQUEST, description=(
        "Prompt + completion tokens per request."))] = 1000.0
    output_fraction: Annotated[float, Meta(ge=0, le=1, description="Share of a request's tokens that are "
                                                                   "output.")] = DEFAULT_OUTPUT_FRACTION
    task: Annotated[TaskKind, Meta(description=(
        "knowledge (Q&A over facts), style (tone/format), task (task-specific behaviour), domain (domain adaptation), "
        "language (new language or modality)."))] = "task"
    on_prem: Annotated[bool, Meta(description="Data may not leave your premises: hosted APIs are excluded.")] = False
    api_sufficient: Annotated[bool, Meta(description=(
        "An off-the-shelf model (hosted API, or an open-weight model self-hosted) with prompting and retrieval meets "
        "the quality bar."))] = True
    api: Annotated[str, Meta(description="Hosted model priced as the API option.")] = DEFAULT_API
    base_model: Annotated[str, Meta(description="Open model to adapt for PEFT and full fine-tuning.")] = "Llama-3.1-8B"
    gpu: Annotated[str, Meta(description="GPU type available.")] = "A100-80GB"
    gpus: Annotated[int, Meta(ge=1, le=MAX_GPUS, description="How many GPUs of that type are available.")] = 8
    availability: Annotated[float, Meta(gt=0, le=1, description="Fraction of the time those GPUs are yours.")] = 1.0
    budget_usd: Annotated[float, Meta(gt=0, le=MAX_BUDGET_USD, description=(
        "Training budget in dollars (none: unbounded)."))] | None = None
    deadline_days: Annotated[float, Meta(ge=0, description=(
        "Wall-clock days the training may take; 0 is a deadline no training meets (none: the assumed deadline, "
        "advisor.decide.constraints)."))] | None = None
    price_usd_per_gpu_hour: Annotated[float, Meta(gt=0, le=MAX_PRICE_USD_PER_GPU_HOUR, description=(
        "Override the catalog's GPU price."))] | None = None
    epochs: Annotated[float, Meta(gt=0, le=1000, description="Passes over the data for fine-tuning.")] = 1.0
    seq_len: Annotated[int, Meta(gt=0, le=1_048_576, description="Training sequence length.")] = 2048
    peak_to_average: Annotated[float, Meta(ge=1, le=100, description=(
        "Peak request rate over the day's average: serving replicas are sized for the peak "
        "(advisor.plan.serving.DEFAULT_PEAK_TO_AVERAGE)."))] = DEFAULT_PEAK_TO_AVERAGE
    monthly_budget_usd: Annotated[float, Meta(gt=0, le=MAX_BUDGET_USD, description=(
        "Monthly budget for serving (or the API bill), USD (none: unbounded)."))] | None = None

    @property
    def effective_tokens(self) -> float:
        """Tokens x quality: the data that actually teaches the model."""
        return self.tokens * self.quality
