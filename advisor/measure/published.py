"""Published measured fine-tuning runs (bench/published/rows.yaml) read as the estimators see them, and each one's
estimate beside its measurement. Which rows the estimator can express, and why not, is decided here (`row_case`)."""

import functools
import re
import statistics
from pathlib import Path

import yaml
from msgspec import Struct
from msgspec.structs import replace
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from advisor.catalog import load as catalog
from advisor.catalog.types import DEFAULT_CUDA_CONTEXT_GIB, Gpu, ModelArch
from advisor.core.convert import InputError, convert
from advisor.core.errors import AdvisorError
from advisor.core.yaml_keys import UniqueKeyLoader
from advisor.formulas.memory import DEFAULT_OVERHEAD_FRACTION, memory_per_gpu
from advisor.formulas.step_time import DEFAULT_STEP_TIME, StepTimeConstants, StepWork, step_seconds, step_work
from advisor.formulas.setup import LossKind, Method, Optimizer, Precision, TrainingSetup, canonical_dtype

ROWS_FILE = Path(__file__).resolve().parents[2] / "bench" / "published" / "rows.yaml"


class PublishedRow(BaseModel):
    """One published measurement with its configuration, source and the quoted line (bench/published/README.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # a NaN figure fits nothing
    id: str
    source: str
    quote: str
    stack: str
    model: str
    hub_id: str | None = None
    method: Method
    lora_rank: int | None = None
    lora_alpha: float | None = None
    lora_targets: list[str] | str | None = None
    lora_dropout: float | None = None
    seq_len: int | None = None
    packed: bool | None = None
    mean_seq_len: int | None = None
    micro_batch: int | None = None
    grad_accum: int | None = None
    gradient_checkpointing: bool | None = None
    activation_offloading: bool | None = None
    precision: str
    adapter_dtype: str | None = None
    optimizer: str | None = None
    compile: bool | None = None
    loss: str | None = None
    gpu: str | None = None
    gpus: int = Field(ge=1)
    parallelism: str
    nodes: int | None = None
    internode: str | None = None
    transformers_version: str | None = None
    excluded: str | None = None  # why the figures are shown but not compared, where a source's own caveat says so
    peak_memory_gib: float | None = Field(default=None, gt=0)
    memory_kind: str | None = None
    tokens_per_second_per_gpu: float | None = Field(default=None, gt=0)
    wall_seconds: float | None = None
    total_tokens: float | None = None
    notes: str = ""
    implied_tflops_lower_bound: float | None = None
    gpu_peak_dense_bf16_tflops: float | None = None
    implausible: bool | None = None


def load_rows(path: Path | str = ROWS_FILE) -> list[PublishedRow]:
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(), Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise AdvisorError(f"{path}: cannot read published rows ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, list):
        raise AdvisorError(f"{path}: expected a YAML list of published rows")
    rows: list[PublishedRow] = []
    for number, r in enumerate(raw, 1):
        named = f" ({r['id']})" if isinstance(r, dict) and isinstance(r.get("id"), str) else ""
        try:
            rows.append(PublishedRow.model_validate(r))
        except ValidationError as exc:
            err = exc.errors()[0]
            raise AdvisorError(f"{path}: row {number}{named}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
        if any(seen.id == rows[-1].id for seen in rows[:-1]):
            raise AdvisorError(f"{path}: row {number}: id {rows[-1].id!r} appears twice: give each row once")
    return rows


@functools.cache
def _extra_archs(directory: Path) -> dict[str, ModelArch | str]:
    """The published rows' extra architectures by lower-cased name; an entry the estimators cannot describe (a
    model_type advisor.catalog.arch refuses) maps to the reason, so only its own rows are left out."""
    path = directory / "archs.yaml"
    if not path.is_file():
        return {}
    out: dict[str, ModelArch | str] = {}
    for entry in yaml.safe_load(path.read_text()) or []:
        try:
            out[entry["name"].lower()] = convert(ModelArch, entry)
        except InputError as exc:
            out[entry["name"].lower()] = exc.msg
    return out


# Published model names that are the same shapes as a catalog entry (the fields the estimators read).
SAME_SHAPES = {"llama-3-8b": "Llama-3.1-8B", "mistral-7b-v0.2": "Mistral-7B", "granite-7b (llama-2 architecture)": "Granite-7B",
               "mistral-7b-v0.1": "Mistral-7B", "llama-3-70b": "Llama-3.1-70B", "llama-3.3-70b-instruct": "Llama-3.1-70B",
               "mixtral-8x7b-instruct-v0.1": "Mixtral-8x7B", "llama-3.1-8b (published as 'llama3-8b')": "Llama-3.1-8B",
               "llama-3.1-8b (torchtitan llama3 '8b' flavor)": "Llama-3.1-8B"}
# torchtune's module names, in transformers' names.
TORCHTUNE_TARGETS = {"output_proj": "o_proj", "w1": "gate_proj", "w2": "down_proj", "w3": "up_proj",
                     "linear_proj": "o_proj"}  # Megatron's names too (linear_qkv below)
# Published precisions the estimators cannot express: they model bf16 (or fp16 where bf16 is absent) matmuls.
UNMODELLED_PRECISIONS = ("fp8", "mxfp8", "nvfp4", "fp16-mixed (gptq")
# Parallelisms beyond data parallelism and FSDP: tensor, pipeline, context and expert parallelism, and kernels the
# step-time model has no term for. A published figure using them is shown, never compared.
UNMODELLED_PARALLELISM = ("tp", "pp", "cp", "ep", "scattermoe", "megatron")
# Published GPU descriptions whose card is named without its memory size or form factor; peak and bandwidth are the
# same either way, and a measured peak does not depend on the card's size.
GPU_NAMES = {"a100 (80gb implied)": "A100-80GB", "a100 (memory size unstated)": "A100-80GB",
             "a100 (80gb implied by 70.4 gb)": "A100-80GB", "h100-80gb (sxm/pcie unstated)": "H100-SXM",
             "rtx-6000-ada-48gb": "RTX-6000-Ada",
             "h100 96gb hbm2e (sxm, 500w power limit; grand teton)": "H100-96GB-HBM2e"}


def row_arch(row: PublishedRow, directory: Path) -> ModelArch:
    name = SAME_SHAPES.get(row.model.lower(), row.model)
    extra = _extra_archs(directory)
    if name.lower() not in extra:
        return catalog.get_model(name)
    found = extra[name.lower()]
    if isinstance(found, str):
        raise AdvisorError(found)
    return found


def row_gpu(row: PublishedRow) -> Gpu | None:
    if row.gpu is None:
        return None
    name = GPU_NAMES.get(row.gpu.lower(), row.gpu)
    return catalog.load("gpus").get(name.lower())


def row_optimizer(text: str | None) -> Optimizer:
    t = (text or "adamw").lower()
    if "8bit" in t:
        return "paged-adamw-8bit" if t.startswith("paged") else "adamw-8bit"
    return "adamw"


class RowCase(Struct, frozen=True):
    """A published row as a TrainingSetup, with what the estimator cannot express about it."""
    row: PublishedRow
    setup: TrainingSetup | None
    gpu: Gpu | None
    sharding: str
    memory_reason: str | None       # None: the memory figure is compared
    throughput_reason: str | None   # None: the tokens/s figure is compared
    paged_optimizer: bool           # bitsandbytes paged state lives in CUDA managed memory, outside torch's stats

    @property
    def generation(self) -> str:
        return gpu_generation(self.gpu)

    @property
    def moe(self) -> bool:
        """The row's model is a mixture of experts (False where the setup is not expressible)."""
        from advisor.catalog.arch import describe
        return self.setup is not None and describe(self.setup.arch).is_moe


def gpu_generation(gpu: Gpu | None) -> str:
    """The GPU's architecture generation as the catalog states it ("unstated" without a GPU)."""
    if gpu is None:
        return "unstated"
    return gpu.generation or "other"


def row_case(row: PublishedRow, directory: Path = ROWS_FILE.parent) -> RowCase:
    """The estimators' view of a published row, and why a figure is not compared where the setup cannot be expressed."""
    why_not: list[str] = []
    if row.implausible:
        why_not.append("flagged implausible (see its notes)")
    if row.excluded:
        why_not.append(row.excluded)
    if row.seq_len is None or row.micro_batch is None:
        return RowCase(row, None, row_gpu(row), "none", "sequence length or micro-batch unpublished",
                       "sequence length or micro-batch unpublished", False)
    try:
        arch = row_arch(row, directory)
    except (AdvisorError, ValueError) as exc:  # a model type advisor.catalog.arch does not describe: refused, not guessed
        reason = f"architecture not supported ({str(exc).strip().splitlines()[0][:100]})"
        return RowCase(row, None, row_gpu(row), "none", reason, reason, False)
    if row.gradient_checkpointing is None:
        why_not.append("checkpointing unpublished")
    if (unmodelled := unmodelled_parallelism(row.parallelism)):
        why_not.append(f"{unmodelled} not modelled")
    if row.gpu and "power limit" in row.gpu.lower():
        why_not.append("power-capped GPU: its reachable peak is unpublished")
    if row.transformers_version and row.transformers_version < "5" and row.method == "qlora" and arch_is_moe(row, directory):
        why_not.append(f"MoE QLoRA on transformers {row.transformers_version}: per-expert nn.Linear that bitsandbytes "
                       "quantises; the estimate models transformers 5's fused experts, left in 16 bits")
    if any(row.precision.lower().startswith(p) for p in UNMODELLED_PRECISIONS):
        why_not.append(f"{row.precision.split(' (')[0]} training not modelled (bf16 matmuls)")
    padded_unknown = row.packed is not True and row.mean_seq_len is None and row.stack != "fsdp_qlora"
    targets = row.lora_targets or ()
    if isinstance(targets, str):
        targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj") if targets == "all-linear" else (targets,)
    targets = tuple(TORCHTUNE_TARGETS.get(t, t) for t in targets if t not in ("output", "linear_qkv", "c_attn")) + \
        (("q_proj", "k_proj", "v_proj") if "linear_qkv" in targets else ())
    if targets and row.method != "full":
        from advisor.formulas.params import resolve_lora_targets
        try:
            resolve_lora_targets(targets)
        except AdvisorError as exc:
            reason = f"LoRA targets not expressible ({exc})"
            return RowCase(row, None, row_gpu(row), "none", reason, reason, False)
    parallel = row.parallelism.lower()
    sharding = "none" if row.gpus == 1 else ("ddp" if parallel.startswith("ddp") else "fsdp")
    optimizer_text = (row.optimizer or "").lower()
    setup = TrainingSetup(
        arch=arch, method=row.method, lora_rank=row.lora_rank or 16,
        lora_targets=targets or ("q_proj", "v_proj"), lora_dropout=row.lora_dropout or 0.0, seq_len=row.seq_len, micro_batch=row.micro_batch, gpus=row.gpus,
        sharding="auto" if sharding == "none" else sharding, gradient_checkpointing=bool(row.gradient_checkpointing),
        optimizer=row_optimizer(row.optimizer),
        precision=_precision(row, sharding),
        adapter_dtype="bfloat16" if canonical_dtype(row.adapter_dtype or "") == "bfloat16" else "float32",
        qlora_embeddings_dtype="float32" if row.stack == "hf-peft" and row.precision != "bf16-pure" else "bfloat16",
        activation_offloading=bool(row.activation_offloading), cpu_offload="cpu-offload" in parallel,
        optimizer_in_backward="optimizer_in_bwd=true" in optimizer_text.replace(" ", ""),
        loss=_loss_kind(row), mean_seq_len=row.mean_seq_len, grad_accum=_grad_accum(row), compile=bool(row.compile),
    )
    gpu = row_gpu(row)
    padded_memory = ["padded batches, lengths unpublished"] if padded_unknown else \
        ["padded batches: the longest is unpublished (estimated at the cap, an upper bound)"] \
        if row.packed is not True and row.mean_seq_len else []
    if "activation checkpointing: selective" in row.notes.lower():
        padded_memory.append("selective activation checkpointing (between none and full) not modelled")
    memory_reason = "; ".join(why_not + padded_memory) or None
    if row.peak_memory_gib is None:
        memory_reason = "no memory figure"
    tput = why_not + (["padded batches, lengths unpublished"] if padded_unknown else [])
    if gpu is None:
        tput.append("GPU not in the catalog")
    if "cpu-offload" in parallel and row.method == "full":
        tput.append("CPU optimizer step priced only as a lower bound (host DRAM bandwidth)")
    throughput_reason = "; ".join(tput) or None
    if row.tokens_per_second_per_gpu is None:
        throughput_reason = "no throughput figure"
    return RowCase(row, setup, gpu, sharding, memory_reason, throughput_reason, optimizer_text.startswith("paged"))


def arch_is_moe(row: PublishedRow, directory: Path) -> bool:
    from advisor.catalog.arch import describe
    try:
        return describe(row_arch(row, directory)).is_moe
    except (AdvisorError, ValueError):
        return False


def unmodelled_parallelism(text: str) -> str | None:
    """The parallelism the step-time model has no term for in a published `parallelism` ("tp2 pp4 cp1 ep8 ...",
    "fsdp+tp8", "single (ScatterMoE kernels, ep...)"), or None for one GPU, DDP and FSDP/HSDP."""
    t = text.lower()
    found = [name for name, pattern in (("tensor parallelism", r"\btp([2-9]|\d\d+)"), ("pipeline parallelism", r"\bpp([2-9]|\d\d+)"),
                                        ("context parallelism", r"\bcp([2-9]|\d\d+)"), ("expert parallelism", r"\bep([2-9]|\d\d+)"),
                                        ("ScatterMoE kernels", r"scattermoe"))
             if re.search(pattern, t)]
    if "megatron" in t:
        found.append("Megatron-Core (its fused kernels and distributed optimizer)")
    return ", ".join(found) or None


def _precision(row: PublishedRow, sharding: str) -> Precision:
    """As the stack ran it: accelerate's FSDP upcasts trainable bf16 parameters to fp32 when mixed precision is on
    ("Upcasted low precision parameters in ... because mixed precision turned on in FSDP", accelerate/accelerator.py
    prepare_model), so HF Trainer's `--bf16` full fine-tunes under FSDP keep fp32 weights, gradients and moments."""
    if row.stack in ("hf-trainer", "liger") and sharding == "fsdp":
        return "bf16-mixed"
    return "bf16-pure" if row.precision.startswith("bf16-pure") else "bf16-mixed"


def _loss_kind(row: PublishedRow) -> LossKind:
    if row.stack == "liger":
        return "fused"
    if row.loss and "chunked" in row.loss.lower():
        return "chunked"
    # Hugging Face stacks measured before transformers v4.46 (all of this set's: 2023-2024) ran the legacy loss
    return "stock-legacy" if row.stack in LEGACY_LOSS_STACKS else "stock"


LEGACY_LOSS_STACKS = ("fsdp_qlora", "hf-peft", "hf-trainer", "deepspeed")


def _grad_accum(row: PublishedRow) -> int:
    """grad_accum as published; fsdp_qlora's table aims at an effective batch of 32 ("or the closest we could get")."""
    if row.grad_accum:
        return row.grad_accum
    if row.stack == "fsdp_qlora":
        return max(1, round(32 / ((row.micro_batch or 1) * row.gpus)))
    return 1


class RowEstimate(Struct, frozen=True):
    case: RowCase
    memory_gib: float | None
    tokens_per_second: float | None

    @property
    def memory_ratio(self) -> float | None:
        m = self.case.row.peak_memory_gib
        return self.memory_gib / m if (m and self.memory_gib) else None

    @property
    def throughput_ratio(self) -> float | None:
        t = self.case.row.tokens_per_second_per_gpu
        return self.tokens_per_second / t if (t and self.tokens_per_second) else None


def row_memory_gib(case: RowCase, overhead_fraction: float | None = None) -> float | None:
    """Estimated peak memory per GPU as the row measured it: paged optimizer state is left out (bitsandbytes allocates
    it with cudaMallocManaged, outside PyTorch's allocator, so torch's peak statistics do not count it), and an
    allocated/active figure is compared without the allocator's reserve."""
    if case.setup is None:
        return None
    base, varied = memory_parts(case)
    stat = memory_stat(case.row)
    if stat == "allocated":  # the allocator's cached blocks are not counted: no fragmentation share
        return base
    reserved = base + (DEFAULT_OVERHEAD_FRACTION if overhead_fraction is None else overhead_fraction) * varied
    # nvidia-smi counts the process's whole device memory: the allocator's reserve and the CUDA context beside it
    return reserved + (cuda_context_gib(case.gpu) if stat == "device" else 0.0)


def cuda_context_gib(gpu: Gpu | None) -> float:
    """The GPU's CUDA context (catalog.CUDA_CONTEXT_SOURCE), or the catalog's default where the GPU is unstated."""
    return gpu.cuda_context_gib if gpu else DEFAULT_CUDA_CONTEXT_GIB


def memory_stat(row: PublishedRow) -> str:
    """allocated (torch's allocated or active bytes), device (nvidia-smi: reserved plus the CUDA context) or reserved
    (reserved, or unstated). torchtune's figures without a stat count as allocated: its recipes log peak
    active/allocated memory and its later tables label the column "Peak Memory Active"."""
    kind = (row.memory_kind or "").lower()
    if "nvidia-smi" in kind:
        return "device"
    if kind.startswith(("allocated", "active")) or (row.stack == "torchtune" and "unspecified" in kind):
        return "allocated"
    return "reserved"


def memory_parts(case: RowCase, **overheads) -> tuple[float, float]:
    """(estimate without the allocator's fractional reserve, the activations and logits that reserve scales with)."""
    assert case.setup is not None, "only rows the estimator can express reach memory_parts"
    memory = memory_per_gpu(replace(case.setup, sharding=case.sharding if case.setup.gpus > 1 else "auto"), **overheads)
    base = memory.allocated - (memory.optimizer if case.paged_optimizer else 0.0)
    return base, max(0.0, memory.activations + memory.logits)


def row_work(case: RowCase) -> StepWork | None:
    if case.setup is None:
        return None
    return step_work(case.setup, case.sharding)


def row_tokens_per_second(case: RowCase, constants: StepTimeConstants = DEFAULT_STEP_TIME,
                          work: StepWork | None = None) -> float | None:
    if case.setup is None or case.gpu is None:
        return None
    work = work or row_work(case)
    if work is None:
        return None
    return step_seconds(work, case.gpu, fused_elementwise(case), constants).tokens_per_second


def fused_elementwise(case: RowCase) -> bool:
    """Whether the row's elementwise kernels are fused: torch.compile, or Liger's Triton RMSNorm/SwiGLU/RoPE kernels."""
    return bool(case.setup and case.setup.compile) or case.row.stack == "liger"


def estimate_rows(cases: list[RowCase], constants: StepTimeConstants = DEFAULT_STEP_TIME) -> list[RowEstimate]:
    return [RowEstimate(c, row_memory_gib(c), row_tokens_per_second(c, constants)) for c in cases]


def abs_errors(ratios) -> list[float]:
    return [abs(r - 1) for r in ratios if r is not None]


def error_summary(values: list[float]) -> tuple[float, float, int] | None:
    """(median, worst, count) of |estimate/measured - 1|."""
    return (statistics.median(values), max(values), len(values)) if values else None
