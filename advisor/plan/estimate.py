"""The Estimate of a training setup or a recipe before it runs: memory per GPU, FLOPs, tokens, GPU-hours, dollars, and what would fit."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from msgspec import Struct
from msgspec.structs import asdict, replace

from advisor.catalog.types import Gpu
from advisor.catalog.load import get_gpu
from advisor.catalog.arch import counted, describe
from advisor.catalog.counted import GENERIC_NOTE as GENERIC_COUNT_NOTE
from advisor.plan.efficiency import training_efficiency, training_rate  # noqa: F401 - re-exported for callers
from advisor.core.errors import AdvisorError
from advisor.formulas.step_time import DEFAULT_STEP_TIME
from advisor.plan.uncertainty import BAND_LEVEL, biased_note, estimate_bands
from advisor.formulas.flops import cost_usd, flops_per_token
from advisor.core.numbers import human
from advisor.formulas.params import param_counts
from advisor.plan.launch_plan import gpus_needed, plan_launch, suggest_fits
from advisor.plan.recipe_setup import not_modelled, recipe_setup
from advisor.plan.sizing import bf16_conflict
from advisor.formulas.setup import TrainingSetup

if TYPE_CHECKING:  # annotations only: imported where used, so `advisor recommend` does not load them
    from advisor.plan.calibration import Calibration
    from advisor.plan.recipe import Recipe

# Without tokenizing, a file's characters / 4 approximates its tokens for English text with a BPE
# vocabulary (OpenAI's tokenizer guide: "one token ~= 4 characters of English"). The runner replaces this
# with the exact count before it launches.
CHARS_PER_TOKEN = 4.0


class Estimate(Struct, frozen=True, kw_only=True):
    """Everything the advisor predicts for one training setup; a run stores it in report.json under `estimate`.

    Read back inside RunReport (advisor.measure.runreport) it ignores keys another version wrote (msgspec's default,
    no forbid_unknown_fields), so older and newer report.json files still load."""

    recipe: str | None = None
    method: str
    model: str
    gpu: str | None
    gpu_source: str | None = None
    gpus: int
    total_params: int
    active_params: int | None = None  # per token: a MoE's top-k experts only (equal to total_params when dense)
    # the whole checkpoint: total_params plus a multimodal wrapper's vision encoder, which the text fine-tune does
    # not load (equal to total_params for a text model; None when the vision encoder is not counted)
    checkpoint_params: int | None = None
    vision_model_type: str | None = None
    architecture: str | None = None   # advisor.catalog.arch's one-line description
    trainable_params: int
    flops_per_token: float
    flops_breakdown: dict
    memory_gib: dict
    peak_memory_gib: float
    gpu_memory_gib: float | None
    gradient_checkpointing: bool = False
    gradient_checkpointing_reason: str | None = None
    sharding: str = "none"
    sharding_reason: str | None = None
    fits: bool
    gpus_needed: int | None
    suggestions: list[str]
    tokens: float | None = None
    tokens_source: str | None = None
    model_flops: float | None = None
    total_flops: float | None = None
    efficiency: float
    efficiency_source: str
    tokens_per_second_per_gpu: float | None = None
    step_seconds: dict | None = None
    gpu_hours: float | None = None
    cost_usd: float | None = None
    calibration: str | None = None
    precision_conflict: str | None = None
    not_modelled: list[str] = []  # settings whose cost the estimate leaves out
    # 80% intervals (advisor.plan.uncertainty: leave-one-out errors of the nearest published rows); None: no group
    interval_level: float | None = None
    tokens_per_second_per_gpu_low: float | None = None
    tokens_per_second_per_gpu_high: float | None = None
    gpu_hours_low: float | None = None
    gpu_hours_high: float | None = None
    cost_usd_low: float | None = None
    cost_usd_high: float | None = None
    peak_memory_low_gib: float | None = None
    peak_memory_high_gib: float | None = None
    interval_basis: dict | None = None       # quantity -> the group of published rows and their count
    extrapolating: list[str] | None = None   # where the setup lies outside the measured groups
    # Memory kinds: peak_memory_gib is what torch.cuda.max_memory_reserved reports (the caching allocator's reserve
    # included); allocated is torch.cuda.max_memory_allocated's; nvidia-smi shows reserved plus the CUDA context.
    memory_kind: str | None = "reserved"
    peak_memory_allocated_gib: float | None = None
    peak_memory_nvidia_smi_gib: float | None = None
    fit_verdict: str | None = None   # fits (the upper bound fits) | tight (the estimate fits, its upper bound not) | does not fit
    headroom_gib: float | None = None  # usable memory less the estimate
    overrides: list[str] = []  # flags that replaced the recipe's values, as said
    # The recipe's data prepared once before training (advisor estimate RECIPE; None elsewhere): its tokens, the
    # packed cache's bytes on disk, and the time to tokenize and pack it, from runners.data_probe's measurement
    data_tokens: float | None = None
    data_tokens_source: str | None = None
    data_cache_bytes: float | None = None
    data_preparation_seconds: float | None = None
    data_preparation_processes: int | None = None
    data_preparation_source: str | None = None  # what was measured, or "not measured: why"


class DataSourceSize(Struct, frozen=True, kw_only=True):
    """One source the run prepares, as the probe found it on disk (a hub dataset: its files in the local cache)."""

    key: str          # data.path, data.mix[0].path, data.eval_path
    path: str
    bytes: int
    weight: float     # times each row is used per epoch (the eval file: 1)
    is_eval: bool = False


class DataProbe(Struct, frozen=True, kw_only=True):
    """What runners.data_probe measured on a sample of the recipe's training file with the recipe's tokenizer (its
    JSON, read by advisor.measure.data_probe)."""

    tokens_per_second_per_process: float  # packed tokens per second of reading, validating, rendering and packing
    serial_tokens_per_second: float | None = None  # of the main process's share alone (all but rendering)
    sample_rows: int                      # valid rows sampled
    sample_examples: int                  # of them, rows that carry loss (what the cache keeps)
    sample_tokens: int                    # packed tokens of the sample
    sample_packed_rows: int
    sample_bytes: int | None = None       # bytes of the file the sample covers (None: not proportional, Parquet)
    tokens_per_byte: float | None = None
    whole_file: bool = False
    file: str
    tokenizer: str
    sources: list[DataSourceSize] = []    # every source the run prepares
    cached: bool = False


class DataPreparation(Struct, frozen=True, kw_only=True):
    """The recipe's data prepared once: tokens, the packed cache's bytes, the time on `processes` processes."""

    tokens: float | None
    tokens_source: str | None
    cache_bytes: float | None
    seconds: float | None
    processes: int | None
    source: str


# Below this many rows the runner (runners.prepare) prepares in its own process: a spawned one first imports
# transformers and unpickles the tokenizer, about 2 s, which 20,000 short rows take to render; above, every core.
PARALLEL_MIN_ROWS = 20_000
PROCESS_START_SECONDS = 2.0  # runners.prepare's measured start of a rendering process (bench/data_scale.py)
# runners.prepare's speed-up over one core is this share of the process count: 1.67x on 2 processes (2 cores) at 1e8
# tokens, against 77.3 s on one pinned core (bench/results/data_scale_cpu.json). Measured on 2 cores only; with more,
# the main process's share (the serial rate) bounds it as well.
PREPARATION_PARALLEL_EFFICIENCY = 0.83


def machine_cores() -> int:
    """The CPU cores this process may run on (its affinity, else the machine's count)."""
    import os
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS and Windows have no affinity call
        return max(1, os.cpu_count() or 1)


def preparation_processes(rows: float, cores: int | None = None) -> int:
    """Processes that prepare the data (runners.prepare uses this policy): one below PARALLEL_MIN_ROWS rows, else every
    core. The estimate says these are this machine's cores: a training node has its own count."""
    if rows < PARALLEL_MIN_ROWS:
        return 1
    return cores or machine_cores()


def data_preparation(recipe: Recipe, probe: DataProbe | str, processes: int | None = None) -> DataPreparation:
    """The data's tokens (each source's bytes x the measured tokens per byte, else / CHARS_PER_TOKEN), the packed
    cache's size and the time to prepare it, from a probe, or "not measured: why" when the probe is a reason. The
    whole data is tokenized once whatever the training tokens (--tokens, train.max_steps, epochs)."""
    from advisor.formulas.data import packed_cache_bytes, preparation_seconds
    if isinstance(probe, str):
        return DataPreparation(tokens=None, tokens_source=None, cache_bytes=None, seconds=None, processes=None,
                               source=probe if probe.startswith("not measured") else f"not measured: {probe}")
    tokens, tokens_source = _data_tokens(recipe, probe)
    examples = tokens * probe.sample_examples / probe.sample_tokens
    processes = processes or preparation_processes(examples)
    rows = tokens * probe.sample_packed_rows / probe.sample_tokens
    rate = probe.tokens_per_second_per_process
    seconds = preparation_seconds(tokens, rate, processes, probe.serial_tokens_per_second, PROCESS_START_SECONDS,
                                  PREPARATION_PARALLEL_EFFICIENCY)
    where = "this machine's CPU cores" if processes > 1 else f"one: under {PARALLEL_MIN_ROWS:,} rows"
    source = (f"{human(rate)} tokens/s per core measured on {probe.sample_rows:,} rows of {Path(probe.file).name} "
              f"with the {probe.tokenizer} tokenizer, {processes} process{'es' if processes > 1 else ''} ({where})")
    return DataPreparation(tokens=tokens, tokens_source=tokens_source, cache_bytes=packed_cache_bytes(tokens, rows),
                           seconds=seconds, processes=processes, source=source)


def _data_tokens(recipe: Recipe, probe: DataProbe) -> tuple[float, str]:
    """Packed tokens of every source the run prepares (training files by weight, the eval file once), capped by
    data.max_examples, with where the figure comes from."""
    per_byte = probe.tokens_per_byte
    training = sum(s.bytes * s.weight for s in probe.sources if not s.is_eval)
    evaluation = sum(s.bytes for s in probe.sources if s.is_eval)
    if per_byte is not None:
        how = (f"{per_byte:.3g} tokens per byte measured on " + ("the whole file" if probe.whole_file else
               f"its first {probe.sample_rows:,} rows ({probe.sample_bytes:,} bytes)") + f" of {Path(probe.file).name}")
    else:
        per_byte = 1 / CHARS_PER_TOKEN
        how = f"file size / {CHARS_PER_TOKEN:g} chars per token (tokens per byte not measurable in this file format)"
    train_tokens = training * per_byte
    if recipe.data.max_examples is not None:
        train_tokens = min(train_tokens, recipe.data.max_examples * probe.sample_tokens / probe.sample_examples)
    names = " + ".join(Path(s.path).name + (f" x {s.weight:g}" if s.weight != 1 else "") for s in probe.sources)
    return train_tokens + evaluation * per_byte, (f"{names}: {human(training + evaluation)} bytes x {how}; "
                                                  "prepared once, whatever --tokens, train.max_steps or epochs "
                                                  "train on")


def recipe_tokens(recipe: Recipe, dataset_tokens: float | None = None) -> tuple[float, str]:
    """Tokens the recipe trains on, and where the figure comes from: max_steps, the tokenized dataset (at run time),
    or the data file's size. A data path that does not exist is an error (cost a dataset you do not have with
    `--tokens`), never zero tokens."""
    t = recipe.train
    if t.max_steps:
        per_step = t.micro_batch * t.grad_accum * recipe.world_size * recipe.data.seq_len
        return float(t.max_steps * per_step), (f"train.max_steps {t.max_steps} x {per_step:,} tokens per step "
                                               "(global batch x seq_len, packed)")
    if dataset_tokens is not None:
        return dataset_tokens * t.epochs, f"tokenized dataset x {t.epochs:g} epochs"
    sources = [(recipe.data.path, recipe.data.hub, recipe.data.weight)] + [(s.path, s.hub, s.weight)
                                                                            for s in recipe.data.mix]
    per_epoch = sum(_file_bytes(path, hub) * weight for path, hub, weight in sources) / CHARS_PER_TOKEN \
        * (1 - recipe.data.val_fraction)
    names = " + ".join(Path(path).name + (f" x {weight:g}" if weight != 1 else "") for path, _, weight in sources)
    return per_epoch * t.epochs, (f"the data file {names}: ~{human(per_epoch)} tokens (file size / "
                                  f"{CHARS_PER_TOKEN:g} chars per token) x {t.epochs:g} epochs; "
                                  "--tokens costs a full-size dataset")


def _file_bytes(path_text: str, hub: bool) -> int:
    """Bytes of a data file or save_to_disk folder; a hub dataset or a missing path is an error naming the fix."""
    path = Path(path_text)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    if path.is_file():
        return path.stat().st_size
    if hub:
        raise AdvisorError(f"data.path {path_text} is a hub dataset: give --tokens to cost it")
    raise AdvisorError(f"data.path {path} does not exist: point it at your data, or give --tokens to cost a dataset "
                       "you do not have yet")


def estimate_training(setup: TrainingSetup, gpu: Gpu | None, tokens: float | None = None, tokens_source: str | None = None,
                      efficiency: float | None = None, price: float | None = None,
                      calibration: Calibration | None = None, recipe_name: str | None = None,
                      checkpointing: bool | None = None, checkpointing_reason: str = "set in the recipe") -> Estimate:
    """Apply every estimator to one setup on one GPU type (None: a CPU run, which costs no GPU-hours), launched as
    `plan_launch` decides (checkpointing None: auto)."""
    plan = plan_launch(setup, gpu, calibration, checkpointing, checkpointing_reason)
    setup, memory, arch = plan.setup, plan.memory, setup.arch
    flops = flops_per_token(arch, setup.seq_len, setup.method, setup.trainable_params, setup.gradient_checkpointing)
    rate = training_rate(setup, gpu, calibration, efficiency)
    efficiency, source, step = rate.efficiency, rate.source, rate.step
    hours = cost = None
    if tokens is not None:
        hours = rate.gpu_hours(tokens)
        unit_price = price if price is not None else (gpu.price_usd_per_hour if gpu else 0.0)
        cost = cost_usd(hours, unit_price) if unit_price is not None else None
    counts = param_counts(arch)
    bands = estimate_bands(gpu.generation if gpu else "", setup.method, describe(arch).is_moe)
    tput, mem = bands["throughput"], bands["memory"]
    interval = {}
    if gpu and tput and rate.tokens_per_second:
        interval |= dict(zip(("tokens_per_second_per_gpu_low", "tokens_per_second_per_gpu_high"),
                             tput.rate_bounds(rate.tokens_per_second)))
        if hours is not None:
            interval |= dict(zip(("gpu_hours_low", "gpu_hours_high"), tput.time_bounds(hours)))
        if cost is not None:
            interval |= dict(zip(("cost_usd_low", "cost_usd_high"), tput.time_bounds(cost)))
    if mem:
        interval |= dict(zip(("peak_memory_low_gib", "peak_memory_high_gib"), mem.rate_bounds(memory.total)))
    basis = {q: f"{b.group.replace('*', 'any')} ({b.rows} published rows)" for q, b in bands.items() if b}
    notes = [b.extrapolating for b in bands.values() if b and b.extrapolating] + \
        [f"no interval for {q}: no group of published rows to derive it from" for q, b in bands.items() if b is None]
    notes += [n for q, b in bands.items() if (n := biased_note(b, q))]
    if counted(arch):
        notes.append(GENERIC_COUNT_NOTE)
    if gpu and rate.step is not None and efficiency > DEFAULT_STEP_TIME.matmul_fraction_max:
        notes.append(f"efficiency {efficiency:.2f} is above the {DEFAULT_STEP_TIME.matmul_fraction_max:.2f} no GEMM "
                     "exceeds: the FLOPs per token count full-context attention (PaLM), which a causal kernel halves; "
                     "the tokens/s and GPU-hours come from the step-time model, not from this fraction")
    verdict, headroom = fit_verdict(memory.total, interval.get("peak_memory_high_gib"), gpu.usable_memory_gib) \
        if gpu else (None, None)
    return Estimate(
        recipe=recipe_name, method=setup.method, model=arch.name, gpu=gpu.name if gpu else None, gpus=setup.gpus,
        total_params=counts.total, active_params=counts.active,
        checkpoint_params=counts.checkpoint_total, vision_model_type=arch.vision_model_type,
        architecture=describe(arch).summary(), trainable_params=setup.trainable_params,
        flops_per_token=flops.total, flops_breakdown=flops.as_dict(), memory_gib=memory.as_dict(),
        peak_memory_gib=memory.total, gpu_memory_gib=gpu.memory_gib if gpu else None,
        gradient_checkpointing=setup.gradient_checkpointing, gradient_checkpointing_reason=plan.checkpointing_reason,
        sharding=plan.sharding.strategy, sharding_reason=plan.sharding.reason, fits=plan.fits,
        gpus_needed=gpus_needed(plan.requested, gpu, calibration, setup.gradient_checkpointing) if gpu else None,
        suggestions=[] if plan.fits else suggest_fits(plan, calibration),
        tokens=tokens, tokens_source=tokens_source,
        model_flops=flops.model * tokens if tokens is not None else None,
        total_flops=flops.total * tokens if tokens is not None else None,
        efficiency=efficiency, efficiency_source=source, gpu_hours=hours, cost_usd=cost,
        tokens_per_second_per_gpu=rate.tokens_per_second,
        step_seconds=asdict(step) | {"tokens_per_second": step.tokens_per_second} if step else None,
        calibration=str(calibration.path) if calibration else None,
        interval_level=BAND_LEVEL if interval else None, **interval, interval_basis=basis, extrapolating=notes,
        peak_memory_allocated_gib=memory.allocated,
        peak_memory_nvidia_smi_gib=memory.total + gpu.cuda_context_gib if gpu else None,
        fit_verdict=verdict, headroom_gib=headroom,
    )


def fit_verdict(estimate_gib: float, upper_gib: float | None, usable_gib: float) -> tuple[str, float]:
    """fits when the interval's upper bound fits the usable memory (the point when there is no interval), tight when
    only the estimate does, does not fit otherwise; with the headroom the estimate leaves (negative: over)."""
    headroom = usable_gib - estimate_gib
    if estimate_gib > usable_gib:
        return "does not fit", headroom
    if upper_gib is not None and upper_gib > usable_gib:
        return "tight", headroom
    return "fits", headroom


def estimate_recipe(recipe: Recipe, gpu: Gpu | str | None = None, dataset_tokens: float | None = None,
                    calibration: Calibration | None = None, gpus: int | None = None, tokens: float | None = None,
                    efficiency: float | None = None, price: float | None = None,
                    device_memory_gib: float | None = None, overrides: dict | None = None,
                    data_probe: DataProbe | str | None = None) -> Estimate:
    """The recipe's own model, method, sequence length, batch, token count and GPU count, estimated; `tokens`,
    `efficiency` and `price` override what the recipe, calibration and catalog would give, and `overrides` (setup
    field -> value, gradient_checkpointing among them) the recipe's setup. At run time
    `device_memory_gib` (the device's own total) replaces the catalog's memory for the fit and for `auto` checkpointing.
    `data_probe` (runners.data_probe's measurement, or why there is none) adds the data's preparation (data_*)."""
    gpu_source = "given" if gpu is not None else None
    if isinstance(gpu, str):
        gpu = get_gpu(gpu)
    if gpu is None and recipe.launch.gpu:
        gpu, gpu_source = get_gpu(recipe.launch.gpu), "the recipe's launch.gpu"
    if gpu is not None and device_memory_gib:  # at run time: the device's own memory, not the catalog's
        gpu = replace(gpu, memory_gib=device_memory_gib)
    count, source = (tokens, "given (--tokens)") if tokens is not None else recipe_tokens(recipe, dataset_tokens)
    overrides = dict(overrides or {})
    checkpointing = recipe.train.gradient_checkpointing
    checkpointing = overrides.pop("gradient_checkpointing", None if checkpointing == "auto" else checkpointing)
    setup = replace(recipe_setup(recipe, gpus), **overrides)
    result = estimate_training(setup, gpu, count, source, efficiency, price, calibration, recipe.name, checkpointing)
    result = replace(result, not_modelled=not_modelled(recipe))
    conflict = bf16_conflict(gpu, recipe.model.dtype, recipe.quant.compute_dtype if recipe.quant else None)
    result = replace(result, gpu_source=gpu_source, precision_conflict=conflict)
    if data_probe is None:
        return result
    prep = data_preparation(recipe, data_probe)
    return replace(result, data_tokens=prep.tokens, data_tokens_source=prep.tokens_source,
                   data_cache_bytes=prep.cache_bytes, data_preparation_seconds=prep.seconds,
                   data_preparation_processes=prep.processes, data_preparation_source=prep.source)


def plan_refusal(e: Estimate) -> str | None:
    """Why a run with this estimate stops before loading anything (`--force` runs it anyway), or None: the predicted
    peak exceeds the GPU's memory, or the recipe asks for bf16 on a GPU without it (advisor.plan.sizing.bf16_conflict)."""
    if not e.fits:
        return (f"predicted peak {e.peak_memory_gib:.1f} GiB per GPU exceeds the {e.gpu}'s {e.gpu_memory_gib:.1f} GiB; "
                "would fit: " + "; ".join(e.suggestions) + " (or --force)")
    if e.precision_conflict:
        return f"{e.precision_conflict} (or --force)"
    return None
