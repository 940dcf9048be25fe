"""What a team knows in the first hour (data, usage, constraints, hardware, money): the decision engine's input."""

from typing import Literal, get_args

from advisor.core.records import bounded, record

Tier = Literal["api", "peft", "full", "pretrain"]
TaskKind = Literal["knowledge", "style", "task", "domain", "language"]
TIERS: tuple[Tier, ...] = ("api", "peft", "full", "pretrain")

# Share of a request's tokens that the API bills as output (the rest is prompt). Chat workloads with
# retrieved context are prompt-heavy; 25% output is an assumption, overridable per call.
DEFAULT_OUTPUT_FRACTION = 0.25


@record
class Situation:
    """What the team knows in the first hour: data, usage, constraints, hardware and money."""

    tokens: float = bounded(gt=0, description="Tokens of training data you have (before quality filtering).")
    docs: float | None = bounded(None, gt=0, description="Number of documents (for the report; tokens drive the maths).")
    quality: float = bounded(1.0, gt=0, le=1, description="Usable fraction of the data after cleaning, in (0, 1].")
    requests_per_day: float = bounded(1000, ge=0, description="Expected production requests per day.")
    tokens_per_request: float = bounded(1000, gt=0, description="Prompt + completion tokens per request.")
    output_fraction: float = bounded(DEFAULT_OUTPUT_FRACTION, ge=0, le=1, description="Share of a request's tokens that are output.")
    task: TaskKind = bounded("task", choices=get_args(TaskKind), description="knowledge (Q&A over facts), style (tone/format), task (task-specific "
                                               "behaviour), domain (domain adaptation), language (new language or modality).")
    on_prem: bool = bounded(False, description="Data may not leave your premises: hosted APIs are excluded.")
    api_sufficient: bool = bounded(True, description="An off-the-shelf model (hosted API, or an open-weight model "
                                                   "self-hosted) with prompting and retrieval meets the quality bar.")
    api: str = bounded("gpt-6-luna", description="Hosted model priced as the API option.")
    base_model: str = bounded("Llama-3.1-8B", description="Open model to adapt for PEFT and full fine-tuning.")
    gpu: str = bounded("A100-80GB", description="GPU type available.")
    gpus: int = bounded(8, ge=1, le=100000, description="How many GPUs of that type are available.")
    availability: float = bounded(1.0, gt=0, le=1, description="Fraction of the time those GPUs are yours.")
    budget_usd: float | None = bounded(None, gt=0, description="Training budget in dollars (none: unbounded).")
    deadline_days: float | None = bounded(None, gt=0, description="Wall-clock days the training may take (none: the "
                                                                   "assumed deadline, advisor.decide.constraints).")
    price_usd_per_gpu_hour: float | None = bounded(None, gt=0, description="Override the catalog's GPU price.")
    epochs: float = bounded(1.0, gt=0, le=1000, description="Passes over the data for fine-tuning.")
    seq_len: int = bounded(2048, gt=0, le=1_048_576, description="Training sequence length.")

    @property
    def effective_tokens(self) -> float:
        """Tokens x quality: the data that actually teaches the model."""
        return self.tokens * self.quality
