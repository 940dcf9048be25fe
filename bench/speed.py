"""Our runner against the baselines users would otherwise run (HF Trainer + peft, with and without a chunked
cross-entropy; TRL's SFTTrainer), LoRA and QLoRA, and against our own ablations, on identical work, measured so a
shared, noisy machine cannot fake a result.

Usage (CPU, the committed results; TRL on the path: pip install --target DIR trl==1.16.0 --no-deps, PYTHONPATH=DIR):
  python bench/speed.py --model Qwen2.5-0.5B --seq-len 512 --pairs 5 --dtype bfloat16 --data instruction \
      --out bench/results/speed_cpu_qwen05b_instruction.json
Usage (GPU): bench/README.md, "GPU procedure".
Usage (CPU smoke test, tiny model): python bench/speed.py --tiny --out /tmp/speed.json
Usage (the markdown table of a result, as the READMEs quote it): python bench/speed.py --render RESULT.json

How it measures:
- identical work: every pipeline trains on the same rows in the same order, the order our runner draws
  (runners.data.epoch_order for the recipe's seed, micro-batches by runners.data.get_batch); the baselines get those
  rows as a dataset in that order behind a sequential sampler, and the same collate. Every pipeline records a digest
  of each step's collated input_ids and labels, and the run stops if any differs from the plan (`planned_steps`);
- tokens/s credits the real tokens of the timed steps (rows hold no padding), and labelled tokens/s (the targets
  after the causal shift) is reported beside it; both from the wall time between consecutive step ends (data,
  logging and all) over the timed window: after --warmup steps, before the last step, which is wrapped in LiveBytes;
- every pipeline runs in its own process (a process's peak RSS never resets, and freed memory stays with glibc);
- repeats are interleaved (ABBA: ours, its ablations, the baselines, then the reverse), so drift from other work on
  the machine falls on all of them; each ratio is the median of per-pair ratios, with its min and max;
- noise guard: per run, the CPU time other processes (and the hypervisor's steal) took during the timed window,
  from /proc/stat less this process's own CPU time, and the longest timed step per token against the run's median;
  per pair,
  a matmul probe and the load average. A pair with a run over FOREIGN_CPU_MAX or STEP_OUTLIER_RATIO, or a probe
  below PROBE_MIN_SHARE of the best one, is dropped (kept in the file with its reasons, counted) and re-run, up to
  --max-attempts pairs;
- memory as the peak of live tensor bytes during one training step (bench/measure.py LiveBytes: activations, logits,
  gradients, temporaries; the weights and optimizer state allocated before it are not counted), and as the process's
  peak RSS over the training steps (Linux VmHWM, reset through /proc/self/clear_refs before the first step);
- MFU only on CUDA, from the probe of the same pair (a CPU's matmul probe is no peak: on a shared 2-core machine it
  read 0.13 TFLOP/s once and put MFU above 100%);
- every pipeline trains the same randomly initialised architecture (nothing is downloaded), the same dtype (--dtype:
  weights and QLoRA's compute dtype), LoRA r=16 on every projection; --data instruction: Alpaca-style synthetic rows
  whose prompts are masked (labels -100), as SFT data is; --data text: every token labelled.
"""

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import msgspec.structs  # noqa: E402
import torch  # noqa: E402

from bench.common import sync, synthetic_corpus, synthetic_instructions  # noqa: E402

from advisor.catalog.types import ModelArch  # noqa: E402
from advisor.catalog.load import get_model  # noqa: E402
from advisor.formulas.flops import flops_per_token  # noqa: E402
from advisor.formulas.params import lora_trainable_params  # noqa: E402
from advisor.plan.recipe_sections import TrainSection  # noqa: E402

TINY = ModelArch(name="tiny", hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=259, max_position_embeddings=4096)

# The baselines: what users would otherwise run. *-liger need CUDA and liger-kernel (the GPU procedure).
BASELINES = ("trainer", "trainer-chunked", "trl", "trainer-liger", "trl-liger")
DEFAULT_BASELINES = "trainer,trainer-chunked,trl"
GPU_ONLY_BASELINES = ("trainer-liger", "trl-liger")


def default_ablations() -> dict[str, list[str]]:
    """Our runner with one of its choices undone, so each ratio can be attributed: the fused loss, and the CPU
    host-memory policy set the other way from the recipe default."""
    other = "allocator" if TrainSection().host_memory == "release" else "release"
    return {"no-fused-loss": ["train.fused_loss=false"], f"host-memory-{other}": [f"train.host_memory={other}"]}


# Noise guard (policies): a pair is dropped when a run in it lost more than FOREIGN_CPU_MAX of the machine's CPU time
# to other processes or steal during its timed window, or had a timed step longer than STEP_OUTLIER_RATIO x its median
# step per token (rows differ in length), or when the pair's matmul probe read below PROBE_MIN_SHARE of the best probe of the benchmark so far.
FOREIGN_CPU_MAX = 0.10
STEP_OUTLIER_RATIO = 1.5
PROBE_MIN_SHARE = 0.8
LORA_RANK = 16


def matmul_flops_per_second(device: torch.device, dtype: torch.dtype, n: int, iters: int = 20) -> float:
    """The dense matmul rate this device reaches now (the noise guard's probe; on CUDA the denominator of MFU)."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        a @ b
    sync(device)
    return 2 * n**3 * iters / (time.perf_counter() - start)


def recipe_text(arch: ModelArch, method: str, data: Path, seq_len: int, micro_batch: int, steps: int,
                checkpointing: bool | str, data_format: str = "text", dtype: str = "auto") -> str:
    """The one recipe every pipeline of a method trains from (the baselines read its rows, model, dtype and LoRA)."""
    import yaml
    model = {"arch": arch.hf_config_dict() | {"max_position_embeddings": max(seq_len, 4096)}, "dtype": dtype}
    model["arch"].pop("head_dim", None)
    body = {"name": f"speed-{method}", "model": model, "lora": {"r": LORA_RANK, "alpha": 32, "targets": "all-linear"},
            "data": {"path": str(data), "format": data_format, "seq_len": seq_len, "packing": True, "val_fraction": 0.0,
                     "on_bad_rows": "skip"},  # the rare synthetic prompt longer than seq_len: out of every pipeline's rows
            "train": {"max_steps": steps, "micro_batch": micro_batch, "lr": 1e-4, "gradient_checkpointing": checkpointing,
                      "eval_every": 0, "log_every": 1, "checkpoint_every": 0}}
    if method == "qlora":
        compute = dtype if dtype != "auto" else "bfloat16" if torch.cuda.is_available() else "float32"
        body["quant"] = {"quant_type": "nf4", "double_quant": True, "compute_dtype": compute}
    return yaml.safe_dump(body)


def device_memory_gib(device: torch.device) -> float | None:
    return torch.cuda.get_device_properties(device).total_memory / 2**30 if device.type == "cuda" else None


def baseline_checkpointing(recipe, memory: float | None) -> bool:
    """The baseline's checkpointing "as needed to fit": the recipe's choice, or for `auto` the advisor's estimate of
    the baseline's own peak (transformers' loss, which holds the whole micro-batch's logits) against `memory` GiB."""
    from advisor.plan.estimate import estimate_recipe
    if recipe.train.gradient_checkpointing != "auto":
        return recipe.train.gradient_checkpointing
    stock = recipe.model_copy(update={"train": recipe.train.model_copy(update={"fused_loss": False})})
    return estimate_recipe(stock, device_memory_gib=memory).gradient_checkpointing


# --- identical work -----------------------------------------------------------------------------------------------

def batch_digest(inputs: dict) -> str:
    """A digest of one collated micro-batch's token ids and labels: what every pipeline must have trained on."""
    h = hashlib.sha1()
    for key in ("input_ids", "labels"):
        h.update(inputs[key].detach().to("cpu", torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def planned_batches(recipe) -> list:
    """Our runner's micro-batches (runners.data.Batch) for the recipe's max_steps, in its order: the work every
    pipeline is given (one process, grad_accum 1)."""
    from runners.data import epoch_order, get_batch, micro_batches_per_epoch
    from runners.prepare import build_dataset
    from runners.environment import cache_root
    from runners.tokenizer import load_tokenizer
    if recipe.train.grad_accum != 1:
        raise ValueError("speed.py compares one micro-batch per optimizer step (train.grad_accum 1)")
    tokenizer = load_tokenizer(recipe)
    rows = build_dataset(recipe, tokenizer, cache_root()).train
    per_epoch = micro_batches_per_epoch(len(rows), recipe.train.micro_batch, 1)
    out = []
    for step in range(recipe.train.max_steps):
        epoch, within = divmod(step, per_epoch)
        order = epoch_order(len(rows), epoch, recipe.train.seed)
        out.append(get_batch(rows, order, within, recipe.train.micro_batch, 0, 1, tokenizer.pad_token_id))
    return out


def planned_steps(recipe) -> list[dict]:
    """Per step: the batch digest, the real tokens (rows hold no padding), the labelled tokens and the row lengths."""
    return [{"digest": batch_digest(b.inputs), "tokens": b.tokens, "labelled_tokens": b.loss_tokens,
             "row_lengths": [r["input_ids"].numel() for r in b.rank_rows]} for b in planned_batches(recipe)]


# --- one pipeline, in its own process ---------------------------------------------------------------------------

def machine_busy_seconds() -> float | None:
    """CPU seconds the whole machine spent busy so far, steal included (/proc/stat), or None off Linux."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


class StepProbe:
    """Called around every optimizer step: records step ends and digests, resets the peak RSS before the first step,
    measures the foreign CPU time over the timed window, and wraps the last step in LiveBytes."""

    def __init__(self, steps: int, warmup: int, device: torch.device):
        self.steps, self.warmup, self.device, self.ends, self.live = steps, warmup, device, [], None
        self.rss_start, self.rss_ends, self.rss_peak = None, [], None
        self.mode, self.digests, self.window = None, [], {}

    @staticmethod
    def reset_peak_rss() -> None:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := current RSS
        except OSError:
            pass

    def record(self, inputs: dict) -> None:
        """The micro-batch this step trains on (called once per step, before its forward)."""
        self.digests.append(batch_digest(inputs))

    def before_step(self) -> None:
        if not self.ends:
            self.reset_peak_rss()
            self.rss_start = current_rss_gib()
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
        if len(self.ends) == self.steps - 1:
            from bench.measure import LiveBytes
            self.mode = LiveBytes()
            self.mode.__enter__()

    def after_step(self) -> None:
        sync(self.device)
        if self.mode is not None:
            self.mode.__exit__(None, None, None)
            self.live, self.mode = self.mode.peak, None
        self.ends.append(time.perf_counter())
        if len(self.ends) in (self.warmup, self.steps - 1):  # the timed window's start and end
            key = "start" if len(self.ends) == self.warmup else "end"
            self.window[key] = (self.ends[-1], machine_busy_seconds(), own_cpu_seconds())
        self.rss_ends.append(current_rss_gib())
        if len(self.ends) == self.steps:  # the peak over the training steps, before the pipeline saves its outputs
            self.rss_peak = peak_rss_gib()

    def foreign_cpu_share(self) -> float | None:
        """Share of the machine's CPU time in the timed window that went to other processes or steal."""
        (t0, busy0, own0), (t1, busy1, own1) = self.window["start"], self.window["end"]
        if busy0 is None or busy1 is None or t1 <= t0:
            return None
        return max(0.0, (busy1 - busy0) - (own1 - own0)) / ((t1 - t0) * (os.cpu_count() or 1))


def current_rss_gib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def peak_rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_ours(recipe, out_dir: Path, probe: StepProbe, device, variant: str) -> dict:
    """The real runner, end to end (runners.run.run); the probe wraps the train_step its session calls."""
    import runners.session
    from runners.run import run
    inner = runners.session.train_step

    def probed(model, optimizer, params, batches, *args, **kwargs):
        for batch in batches:
            probe.record(batch.inputs)
        probe.before_step()
        result = inner(model, optimizer, params, batches, *args, **kwargs)
        probe.after_step()
        return result
    runners.session.train_step = probed
    report = run(recipe, out_dir, overwrite=True)
    return {"gradient_checkpointing": report.estimate.gradient_checkpointing,
            "fused_loss": recipe.train.fused_loss, "host_memory": recipe.train.host_memory}


def _rows_dataset(recipe, tokenizer):
    """The planned rows (our runner's order) as a datasets.Dataset, one micro-batch after another, and our collate."""
    import datasets

    from runners.data import collate
    rows = [row for batch in planned_batches(recipe) for row in batch.rank_rows]
    train = datasets.Dataset.from_list([{k: v.tolist() for k, v in r.items()} for r in rows])
    pad = tokenizer.pad_token_id

    def collator(features):
        return collate([{k: torch.tensor(v) for k, v in f.items()} for f in features], pad)
    return train, collator


def _trainer_args(cls, recipe, out_dir: Path, device, checkpointing: bool, compiled: bool, **extra):
    cuda = device.type == "cuda"
    # transformers 5 renamed gradient_checkpointing to activation_checkpointing; use whichever this version has
    prefix = "activation" if "activation_checkpointing" in cls.__dataclass_fields__ else "gradient"
    return cls(output_dir=str(out_dir), per_device_train_batch_size=recipe.train.micro_batch,
               max_steps=recipe.train.max_steps, learning_rate=recipe.train.lr, bf16=cuda, use_cpu=not cuda,
               logging_steps=10, report_to=[], save_strategy="no", dataloader_drop_last=True,
               remove_unused_columns=False, disable_tqdm=True, torch_compile=compiled,
               **{f"{prefix}_checkpointing": checkpointing,
                  f"{prefix}_checkpointing_kwargs": {"use_reentrant": False}},
               **extra)


def _callback(probe: StepProbe):
    from transformers import TrainerCallback

    class Probe(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            probe.before_step()

        def on_step_end(self, args, state, control, **kw):
            probe.after_step()
    return Probe()


def _identical_work(trainer_class, probe: StepProbe):
    """trainer_class drawing the dataset's rows in order (they are in our runner's order already) and recording each
    step's collated micro-batch before training on it."""
    from torch.utils.data import SequentialSampler

    class InOrder(trainer_class):
        def _get_train_sampler(self, *args, **kwargs):
            return SequentialSampler(self.train_dataset)

        def training_step(self, model, inputs, *args, **kwargs):
            probe.record(inputs)
            return super().training_step(model, inputs, *args, **kwargs)
    return InOrder


LOSS_CHUNK = 1024  # positions per chunk of the baseline's chunked cross-entropy (the size ours uses on this head)


def _chunk_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy((hidden @ weight.T).float(), targets, reduction="sum")


def chunked_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                          num_items: int | None = None, chunk: int = LOSS_CHUNK) -> torch.Tensor:
    """The plain-PyTorch chunked cross-entropy a user would write for the Trainer: shift, keep the labelled positions,
    then the head and the loss chunk by chunk, each chunk checkpointed (its logits recomputed in backward), so the
    micro-batch's logits are never held at once. Summed, divided by the labelled targets."""
    from torch.utils.checkpoint import checkpoint
    h = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    y = labels[:, 1:].reshape(-1).to(h.device)
    keep = y != -100
    h, y = h[keep], y[keep]
    total = torch.zeros((), dtype=torch.float32, device=h.device)
    for start in range(0, y.numel(), chunk):
        total = total + checkpoint(_chunk_loss, h[start:start + chunk], weight, y[start:start + chunk],
                                   use_reentrant=False)
    return total / max(1, int(num_items) if num_items is not None else y.numel())


def _chunked_loss_trainer(trainer_class):
    """trainer_class whose loss is `chunked_cross_entropy` on the decoder's hidden states (the head never runs on
    all positions). The base model must be a plain `lm_head(model(...))` causal LM without logit softcapping."""
    class ChunkedLoss(trainer_class):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            base = self.accelerator.unwrap_model(model).get_base_model()
            labels = inputs["labels"]
            kwargs = {k: v for k, v in inputs.items() if k != "labels"}
            hidden = base.model(**kwargs, use_cache=False).last_hidden_state
            return chunked_cross_entropy(hidden, base.lm_head.weight, labels, num_items_in_batch)
    return ChunkedLoss


def run_trainer(recipe, out_dir: Path, probe: StepProbe, device, variant: str, compiled: bool = False) -> dict:
    """transformers.Trainer + peft as the Hugging Face docs set it up (prepare_model_for_kbit_training for QLoRA);
    trainer-chunked: with `chunked_cross_entropy`; trainer-liger: with use_liger_kernel (CUDA)."""
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import Trainer, TrainingArguments

    from runners.model import load_model, to_peft_config
    from runners.environment import cache_root
    from runners.tokenizer import load_tokenizer
    checkpointing = baseline_checkpointing(recipe, device_memory_gib(device))
    train, collator = _rows_dataset(recipe, load_tokenizer(recipe))
    model = load_model(recipe, device, cache_root(), recipe.train.seed)  # the same random weights as ours
    if recipe.quant is not None:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    model = get_peft_model(model, to_peft_config(recipe.lora))
    extra = {"use_liger_kernel": True} if variant == "trainer-liger" else {}
    args = _trainer_args(TrainingArguments, recipe, out_dir, device, checkpointing, compiled, **extra)
    cls = _identical_work(_chunked_loss_trainer(Trainer) if variant == "trainer-chunked" else Trainer, probe)
    cls(model=model, args=args, train_dataset=train, data_collator=collator, callbacks=[_callback(probe)]).train()
    return {"gradient_checkpointing": checkpointing}


def run_trl(recipe, out_dir: Path, probe: StepProbe, device, variant: str, compiled: bool = False) -> dict:
    """TRL's SFTTrainer with its defaults (its chunked LM head and loss) on the planned rows; peft through its
    peft_config; trl-liger: with use_liger_kernel (CUDA)."""
    from trl import SFTConfig, SFTTrainer

    from runners.model import load_model, to_peft_config
    from runners.environment import cache_root
    from runners.tokenizer import load_tokenizer
    checkpointing = baseline_checkpointing(recipe, device_memory_gib(device))
    tokenizer = load_tokenizer(recipe)
    train, collator = _rows_dataset(recipe, tokenizer)
    model = load_model(recipe, device, cache_root(), recipe.train.seed)
    extra = {"use_liger_kernel": True} if variant == "trl-liger" else {}
    args = _trainer_args(SFTConfig, recipe, out_dir, device, checkpointing, compiled, packing=False, max_length=None,
                         dataset_kwargs={"skip_prepare_dataset": True}, **extra)
    _identical_work(SFTTrainer, probe)(model=model, args=args, train_dataset=train, data_collator=collator,
                                       processing_class=tokenizer, peft_config=to_peft_config(recipe.lora),
                                       callbacks=[_callback(probe)]).train()
    return {"gradient_checkpointing": checkpointing}


def pipeline_function(name: str):
    kind = name.split(":")[0]
    if kind == "ours":
        return run_ours
    return run_trl if kind.startswith("trl") else run_trainer


def worker(pipeline: str, recipe_path: Path, overrides: list[str], warmup: int, result_path: Path,
           compiled: bool) -> None:
    """One pipeline in this process: train, then write its step times, digests, live bytes, RSS and noise."""
    from advisor.plan.recipe import load_recipe
    from runners.environment import quiet_libraries
    quiet_libraries()
    recipe = load_recipe(recipe_path, overrides + (["train.compile=true"] if compiled and pipeline.startswith("ours")
                                                   else []))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    steps = recipe.train.max_steps
    probe = StepProbe(steps, warmup, device)
    with tempfile.TemporaryDirectory() as out:
        function = pipeline_function(pipeline)
        kwargs = {} if function is run_ours else {"compiled": compiled}
        info = function(recipe, Path(out) / "run", probe, device, pipeline.split(":")[0], **kwargs)
    step_seconds = [b - a for a, b in zip(probe.ends, probe.ends[1:])]  # step i+1's time; the first has none
    timed = step_seconds[warmup - 1:-1]  # steps warmup .. steps-2: after warm-up, before the live-bytes step
    result = {"steps": len(probe.ends), "timed_steps": len(timed), "step_seconds": timed, "digests": probe.digests,
              "live_peak_gib": probe.live / 2**30, "rss_peak_gib": probe.rss_peak, "rss_start_gib": probe.rss_start,
              "rss_step_ends_gib": probe.rss_ends, "foreign_cpu_share": probe.foreign_cpu_share(), **info}
    if device.type == "cuda":
        result["cuda_peak_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    result_path.write_text(json.dumps(result))


def plan_worker(recipe_path: Path, result_path: Path) -> None:
    from advisor.plan.recipe import load_recipe
    from runners.environment import quiet_libraries
    quiet_libraries()
    result_path.write_text(json.dumps(planned_steps(load_recipe(recipe_path))))


# --- the orchestrator -------------------------------------------------------------------------------------------

def spawn(args: list[str], tmp: Path, env: dict, what: str):
    result = tmp / f"result-{os.getpid()}-{time.monotonic_ns()}.json"
    command = [sys.executable, str(Path(__file__).resolve()), *args, "--result", str(result)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{proc.stderr[-3000:]}")
    return json.loads(result.read_text())


def credit(run: dict, plan: list[dict], warmup: int) -> dict:
    """The run's tokens/s and labelled tokens/s over its timed window, from the planned steps' real tokens;
    stops the benchmark if the run trained on anything but the plan."""
    if run["digests"] != [p["digest"] for p in plan]:
        first = next((i for i, (a, b) in enumerate(zip(run["digests"], plan)) if a != b["digest"]),
                     min(len(run["digests"]), len(plan)))
        raise RuntimeError(f"{run['pipeline']} trained on other batches than planned (first difference at step "
                           f"{first + 1}; {len(run['digests'])} steps recorded, {len(plan)} planned)")
    timed = plan[warmup:warmup + run["timed_steps"]]
    seconds = sum(run["step_seconds"])
    per_token = [s / p["tokens"] for s, p in zip(run["step_seconds"], timed)]  # rows differ in length
    return {"tokens_per_second": sum(p["tokens"] for p in timed) / seconds,
            "labelled_tokens_per_second": sum(p["labelled_tokens"] for p in timed) / seconds,
            "step_outlier_ratio": max(per_token) / statistics.median(per_token)}


def noise_reasons(runs: dict, probe: float, best_probe: float, guard: bool) -> list[str]:
    """Why a pair cannot be trusted (empty: clean)."""
    reasons = []
    for name, r in runs.items():
        if r["foreign_cpu_share"] is not None and r["foreign_cpu_share"] > FOREIGN_CPU_MAX:
            reasons.append(f"{name}: other processes took {r['foreign_cpu_share']:.0%} of the CPU time")
        if r["step_outlier_ratio"] > STEP_OUTLIER_RATIO:
            reasons.append(f"{name}: a step took {r['step_outlier_ratio']:.2f}x the median step")
    if probe < PROBE_MIN_SHARE * best_probe:
        reasons.append(f"matmul probe {probe / best_probe:.0%} of the best")
    return reasons if guard else []


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def summarize(method: str, pairs: list[dict], baselines: list[str], ours_names: list[str], model_flops: float,
              cuda: bool) -> dict:
    """Medians per pipeline over the clean pairs; per-pair ratios of ours and of each ablation against every baseline
    and against the better baseline of each pair (faster for tokens/s, leaner for memory)."""
    out: dict = {}
    runs_of = {name: [p["runs"][name] for p in pairs] for name in pairs[0]["runs"]}
    for name, runs in runs_of.items():
        mfu = (statistics.median(model_flops * r["tokens_per_second"] / (p["probe_tflops"] * 1e12)
                                 for r, p in zip(runs, pairs)) if cuda else None)
        entry = {
            "tokens_per_second": statistics.median(r["tokens_per_second"] for r in runs),
            "labelled_tokens_per_second": statistics.median(r["labelled_tokens_per_second"] for r in runs),
            "peak_memory_gib": statistics.median(r["live_peak_gib"] for r in runs), "peak_memory_kind": "live tensor bytes",
            "rss_peak_gib": statistics.median(r["rss_peak_gib"] for r in runs),
            "gradient_checkpointing": runs[0]["gradient_checkpointing"], "steps": runs[0]["steps"],
            "timed_steps_per_repeat": runs[0]["timed_steps"], "mfu": mfu,
            "rss_start_gib": statistics.median(r["rss_start_gib"] for r in runs),
            "repeats": [{k: r[k] for k in ("tokens_per_second", "labelled_tokens_per_second", "step_seconds",
                                           "live_peak_gib", "rss_peak_gib", "rss_start_gib", "rss_step_ends_gib",
                                           "foreign_cpu_share", "step_outlier_ratio")} for r in runs]}
        for key in ("fused_loss", "host_memory"):
            if key in runs[0]:
                entry[key] = runs[0][key]
        out[f"{method}_{name}" if ":" not in name else f"{method}_{name.replace(':', '_')}"] = entry

    def per_pair(name: str, against: list[str]) -> dict[str, list[float]]:
        """Each pair's ratio of `name` to the faster (tokens/s) or leaner (memory) of `against`."""
        return {"speedup": [p["runs"][name]["tokens_per_second"] / max(p["runs"][b]["tokens_per_second"] for b in against)
                            for p in pairs],
                "memory_ratio": [p["runs"][name]["live_peak_gib"] / min(p["runs"][b]["live_peak_gib"] for b in against)
                                 for p in pairs],
                "rss_ratio": [p["runs"][name]["rss_peak_gib"] / min(p["runs"][b]["rss_peak_gib"] for b in against)
                              for p in pairs]}

    def ratios(name: str, against: list[str]) -> dict:
        return {key: spread(values) for key, values in per_pair(name, against).items()}

    table = {}
    for name in ours_names:
        row = {b: ratios(name, [b]) for b in baselines} | {"best_baseline": ratios(name, baselines)}
        if name != "ours":
            row["ours"] = ratios(name, ["ours"])
        table[name] = row
    out[f"{method}_ratios"] = table
    best = table["ours"]["best_baseline"]
    better = max(baselines, key=lambda b: out[f"{method}_{b}"]["tokens_per_second"])
    out[f"{method}_baseline"] = out[f"{method}_{better}"] | {"pipeline": better}
    each = per_pair("ours", baselines)
    out |= {f"{method}_speedup": best["speedup"]["median"], f"{method}_memory_ratio": best["memory_ratio"]["median"],
            f"{method}_rss_ratio": best["rss_ratio"]["median"], f"{method}_mfu": out[f"{method}_ours"]["mfu"],
            f"{method}_pairs": [dict(zip(each, values)) for values in zip(*each.values())],
            f"{method}_spread": best}
    return out


def order_for(pair: int, names: list[str]) -> list[str]:
    """ABBA: ours first in even pairs, last in odd ones, so a linear drift in machine load cancels."""
    return names if pair % 2 == 0 else names[::-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="Llama-3.1-8B", help="catalog architecture to build (random weights)")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test: a 2-layer model, short sequences")
    parser.add_argument("--layers", type=int, help="keep only this many of the model's decoder layers (a smaller shape "
                                                   "with the same width and vocabulary, for slow machines)")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--micro-batch", type=int, default=1)
    parser.add_argument("--timed-steps", type=int, default=8, help="steps timed per repeat (>= 8 for a published figure)")
    parser.add_argument("--warmup", type=int, default=2, help="steps before the timed ones (>= 2 for a published figure)")
    parser.add_argument("--pairs", type=int, default=5, help="clean interleaved repeats of every pipeline wanted")
    parser.add_argument("--max-attempts", type=int, help="pairs tried at most, dropped ones included (default 2x --pairs)")
    parser.add_argument("--no-noise-guard", action="store_true", help="record the noise measures but keep every pair")
    parser.add_argument("--checkpointing", choices=["auto", "on", "off"], default="auto",
                        help="gradient checkpointing in every run; auto: each run as needed to fit this device (ours decides "
                             "with its own estimate, the baselines by the estimate of their own peak)")
    parser.add_argument("--methods", default="lora,qlora")
    parser.add_argument("--data", choices=["instruction", "text"], default="instruction",
                        help="instruction: Alpaca-style rows, loss on the responses only (prompts masked, as SFT data is); "
                             "text: plain documents, every token labelled")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                        help="model.dtype (and QLoRA's compute dtype) of every pipeline; auto: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--baselines", default=DEFAULT_BASELINES, help=f"comma-separated, of {', '.join(BASELINES)}")
    parser.add_argument("--ablations", default="default", help="'default' (each of our choices undone: "
                        f"{', '.join(default_ablations())}), or 'none'")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE[,KEY=VALUE]",
                        help="also run ours with these recipe overrides (e.g. compiled:train.compile=true); repeatable")
    parser.add_argument("--compile", action="store_true", help="torch.compile in every pipeline (ours: train.compile; "
                                                               "the baselines: TrainingArguments.torch_compile)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--render", type=Path, metavar="RESULT.json", help="print a result's markdown table and exit")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--plan", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--recipe", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.render:
        return print(markdown(json.loads(args.render.read_text())))
    if args.plan:
        return plan_worker(args.recipe, args.result)
    if args.worker:
        return worker(args.worker, args.recipe, args.overrides, args.warmup, args.result, args.compile)
    variants = default_ablations() if args.ablations == "default" else {}
    for spec in args.variant:
        name, _, assignments = spec.partition(":")
        if not name or not assignments:
            parser.error(f"--variant {spec!r}: expected NAME:KEY=VALUE[,KEY=VALUE]")
        variants[name] = assignments.split(",")
    baselines = [b for b in args.baselines.split(",") if b]
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        parser.error(f"--baselines: unknown {', '.join(unknown)} (known: {', '.join(BASELINES)})")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    skipped = {}
    for b in list(baselines):
        if b.startswith("trl") and importlib.util.find_spec("trl") is None:
            skipped[b] = "not installed (pip install trl)"
        elif b in GPU_ONLY_BASELINES and (device.type != "cuda" or importlib.util.find_spec("liger_kernel") is None):
            skipped[b] = "needs CUDA and liger-kernel (pip install liger-kernel)"
        if b in skipped:
            baselines.remove(b)
    if not baselines:
        parser.error("no baseline to compare with")
    arch = TINY if args.tiny else get_model(args.model)
    if args.layers:
        arch = msgspec.structs.replace(arch, num_hidden_layers=args.layers, name=f"{arch.name} ({args.layers} layers)")
    seq_len = (128 if args.data == "text" else 512) if args.tiny else args.seq_len  # an Alpaca prompt alone is ~200 bytes
    timed, warmup, n_pairs = (2, 2, 1) if args.tiny else (args.timed_steps, args.warmup, args.pairs)
    if timed < 1 or warmup < 1:
        parser.error("--timed-steps and --warmup must be at least 1")
    steps = warmup + timed + 1  # warm-up, timed, and the live-bytes step
    max_attempts = args.max_attempts or (n_pairs if args.tiny else 2 * n_pairs)
    guard = not args.no_noise_guard
    bf16 = device.type == "cuda" if args.dtype == "auto" else args.dtype == "bfloat16"  # the probe's dtype
    probe_dtype, probe_n = (torch.bfloat16 if bf16 else torch.float32), (8192 if device.type == "cuda" else 1024)
    lora_params = lora_trainable_params(arch, LORA_RANK, "all-linear")
    result = {"gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
              "model": arch.name, "seq_len": seq_len, "micro_batch": args.micro_batch, "steps": steps,
              "warmup_steps": warmup, "timed_steps": timed, "pairs_wanted": n_pairs, "max_attempts": max_attempts,
              "baselines": baselines, "baselines_skipped": skipped, "ablations": variants, "compile": args.compile,
              "gradient_checkpointing": args.checkpointing, "matmul_dtype": "bfloat16" if bf16 else "float32",
              "data": args.data, "dtype": args.dtype, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "cpu_model": _cpu_model(), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "noise_guard": {"on": guard, "foreign_cpu_max": FOREIGN_CPU_MAX, "step_outlier_ratio": STEP_OUTLIER_RATIO,
                              "probe_min_share": PROBE_MIN_SHARE},
              "mfu_note": None if device.type == "cuda" else "not reported on the CPU: its matmul probe is no peak",
              "load_average": {"start": list(os.getloadavg())}, "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "command": "python bench/speed.py " + " ".join(sys.argv[1:]), "versions": _versions()}
    ours_names = ["ours"] + [f"ours:{v}" for v in variants]
    names = ours_names + baselines
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "RIGHTSIZE_CACHE_DIR": os.environ.get("RIGHTSIZE_CACHE_DIR", str(tmp / "cache")),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        data = tmp / "corpus.jsonl"
        docs = 400 if args.tiny else max(200, steps * args.micro_batch * seq_len // 2000 + 50)
        if args.data == "instruction":
            synthetic_instructions(data, docs=docs * 4)  # responses are shorter than documents
        else:
            synthetic_corpus(data, docs=docs)
        methods = args.methods.split(",")
        checkpointing = {"auto": "auto", "on": True, "off": False}[args.checkpointing]
        plans = {}
        for method in methods:
            (tmp / f"{method}.yaml").write_text(recipe_text(arch, method, data, seq_len, args.micro_batch, steps,
                                                            checkpointing, args.data, args.dtype))
            plans[method] = spawn(["--plan", "--recipe", str(tmp / f"{method}.yaml")], tmp, env, "planning the rows")
        plan = plans[methods[0]]
        timed_plan = plan[warmup:warmup + timed]
        result["timed_rows"] = {"row_lengths": [n for p in timed_plan for n in p["row_lengths"]],
                                "tokens": sum(p["tokens"] for p in timed_plan),
                                "labelled_tokens": sum(p["labelled_tokens"] for p in timed_plan)}
        result["labelled_token_share"] = result["timed_rows"]["labelled_tokens"] / result["timed_rows"]["tokens"]
        clean = {m: [] for m in methods}
        dropped = {m: [] for m in methods}
        best_probe = 0.0
        for attempt in range(max_attempts):
            todo = [m for m in methods if len(clean[m]) < n_pairs]
            if not todo:
                break
            probe = matmul_flops_per_second(device, probe_dtype, probe_n)
            best_probe = max(best_probe, probe)
            for method in todo:  # every method's pair n before any pair n+1: a run stopped early keeps both methods
                path, runs = tmp / f"{method}.yaml", {}
                for name in order_for(attempt, names):
                    overrides = variants.get(name[5:], []) if name.startswith("ours:") else []
                    extra = ["--compile"] if args.compile else []
                    run = spawn(["--worker", name, "--recipe", str(path), "--warmup", str(warmup), *extra]
                                + [f"--set={o}" for o in overrides], tmp, env, name)
                    run["pipeline"] = name
                    runs[name] = run | credit(run, plans[method], warmup)
                    del runs[name]["digests"]
                    print(f"{method} attempt {attempt + 1} {name}: {runs[name]['tokens_per_second']:,.0f} tokens/s, "
                          f"live {run['live_peak_gib']:.3f} GiB, rss {run['rss_peak_gib']:.2f} GiB, foreign CPU "
                          f"{run['foreign_cpu_share'] or 0:.0%}, step spread {runs[name]['step_outlier_ratio']:.2f}",
                          file=sys.stderr, flush=True)
                reasons = noise_reasons(runs, probe, best_probe, guard)
                pair = {"attempt": attempt + 1, "runs": runs, "probe_tflops": probe / 1e12,
                        "load_average": list(os.getloadavg()), "dropped_because": reasons}
                (dropped if reasons else clean)[method].append(pair)
                if reasons:
                    print(f"{method} attempt {attempt + 1} dropped: {'; '.join(reasons)}", file=sys.stderr, flush=True)
                result[f"{method}_clean_pairs"] = clean[method]
                result[f"{method}_dropped_pairs"] = dropped[method]
                result["pairs"] = min(len(clean[m]) for m in methods)
                result["dropped"] = {m: len(dropped[m]) for m in methods}
                if clean[method]:
                    model_flops = flops_per_token(arch, seq_len, method, lora_params).model
                    result |= summarize(method, clean[method], baselines, ours_names, model_flops, device.type == "cuda")
                if args.out:  # after every pair: a long run that is stopped keeps what it measured
                    _write(args.out, result)
    result["load_average"]["end"] = list(os.getloadavg())
    result["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    missing = [m for m in methods if len(clean[m]) < n_pairs]
    result["complete"] = not missing
    if all(f"{m}_ratios" in result for m in methods):
        result["targets"] = targets(result, methods)
        print(render(result))
    if args.out:
        _write(args.out, result)
    if missing:
        sys.exit(f"speed.py: only {', '.join(f'{len(clean[m])} clean pairs of {m}' for m in missing)} of {n_pairs} "
                 f"after {max_attempts} attempts (dropped: {result['dropped']}); the file says why")


# The targets against the better baseline (issue 15, kept by issue 24): live bytes <= 0.8x, peak RSS <= 0.9x,
# tokens/s >= 1.0x.
TARGETS = {"memory_ratio": ("<=", 0.8), "rss_ratio": ("<=", 0.9), "speedup": (">=", 1.0)}


def targets(result: dict, methods: list[str]) -> dict:
    """Each target with the measured median and whether it is met (nothing rounded in its favour)."""
    out = {}
    for method in methods:
        for key, (op, bound) in TARGETS.items():
            measured = result[f"{method}_{key}"]
            met = measured <= bound if op == "<=" else measured >= bound
            out[f"{method}_{key}"] = {"target": f"{op} {bound}", "measured": measured, "met": met}
    return out


def _write(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


def _cpu_model() -> str | None:
    """The CPU's model name (Linux), which decides what a CPU figure means: bf16 runs emulated without AVX-512/AMX."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for name in ("torch", "transformers", "peft", "bitsandbytes", "trl", "liger-kernel"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def render(result: dict) -> str:
    """The terminal summary: every pipeline's medians, then the ratios."""
    lines = [f"{result['gpu']}: {result['model']}, seq {result['seq_len']}, micro-batch {result['micro_batch']}, "
             f"{result['pairs']} clean pairs (dropped: {result['dropped']}), checkpointing {result['gradient_checkpointing']}",
             f"{'run':<32}{'tokens/s':>10}{'labelled/s':>11}{'live GiB':>10}{'RSS GiB':>9}{'ckpt':>6}"]
    for method in ("lora", "qlora"):
        for key, r in result.items():
            if key.startswith(f"{method}_") and isinstance(r, dict) and "tokens_per_second" in r \
                    and not key.endswith("_baseline"):
                lines.append(f"{key:<32}{r['tokens_per_second']:>10,.0f}{r['labelled_tokens_per_second']:>11,.0f}"
                             f"{r['peak_memory_gib']:>10.3f}{r['rss_peak_gib']:>9.2f}"
                             f"{'on' if r['gradient_checkpointing'] else 'off':>6}")
    lines.append(markdown(result))
    return "\n".join(lines)


def _ratio(r: dict) -> str:
    return f"{r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f})"


def markdown(result: dict) -> str:
    """The table the READMEs quote (tests/test_speed_claims.py checks they quote it unchanged): per method, each of
    our configurations against each baseline and the best of them, median of the clean pairs' ratios (min-max)."""
    lines = [f"`{result['command']}` ({result['started']}, {result['cpu_count']} cores, {result['gpu']}; "
             f"{result['model']}, seq {result['seq_len']}, {result['data']} data, "
             f"{result['labelled_token_share']:.0%} of the timed tokens labelled; {result['timed_steps']} timed steps "
             f"after {result['warmup_steps']} warm-up; {result['pairs']} clean pairs, dropped {result['dropped']})", "",
             "| method | ours as | against | tokens/s | live tensor bytes | peak RSS |", "|---|---|---|---|---|---|"]
    for method in ("lora", "qlora"):
        table = result.get(f"{method}_ratios")
        if not table:
            continue
        for name, row in table.items():
            for against, r in row.items():
                lines.append(f"| {method} | {name} | {against.replace('_', ' ')} | {_ratio(r['speedup'])} | "
                             f"{_ratio(r['memory_ratio'])} | {_ratio(r['rss_ratio'])} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
