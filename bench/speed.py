"""Our runner against the baselines users would otherwise run (HF Trainer + peft; TRL's SFTTrainer), LoRA and QLoRA,
measured so a shared, noisy machine cannot fake a result.

Usage (CPU, the committed result; TRL on the path: pip install --target DIR trl==1.16.0 --no-deps, PYTHONPATH=DIR):
  python bench/speed.py --model Qwen2.5-0.5B --seq-len 512 --steps 4 --warmup 1 --pairs 5 --dtype bfloat16 \
      --data instruction --out bench/results/speed_cpu_qwen05b_paired.json
Usage (GPU): python bench/speed.py --seq-len 2048 --pairs 5 --out bench/results/speed_h200.json
Usage (CPU smoke test, tiny model): python bench/speed.py --tiny --out /tmp/speed.json

How it measures:
- every pipeline runs in its own process (a process's peak RSS never resets, and freed memory stays with glibc);
- repeats are interleaved, ours and the baselines in turn (ABBA: ours, trainer, trl, then trl, trainer, ours, ...),
  so drift from other work on the machine falls on all of them; each figure is a median over the repeats, and the
  ratios are medians of per-pair ratios with their spread (min, max);
- tokens/s from the wall time between consecutive step ends after warm-up (data, logging and all), the same
  micro-batch x seq_len tokens per step for every pipeline;
- memory as the peak of live tensor bytes during one training step (bench/measure.py LiveBytes: activations, logits,
  gradients, temporaries; the weights and optimizer state allocated before it are not counted), and as the process's
  peak RSS over the training steps (Linux VmHWM, reset through /proc/self/clear_refs before the first step, read
  at the last step's end), with the RSS when training starts and after every step;
- every pipeline trains the same randomly initialised architecture (nothing is downloaded) on the same packed rows
  with the same position_ids (attention stays within each packed example in all of them: transformers builds the
  block-causal mask from position_ids when there is no attention mask), the same dtype (--dtype: weights and QLoRA's
  compute dtype), LoRA r=16 on every projection; with --data instruction (the default) the rows are Alpaca-style
  synthetic examples whose prompts are masked (labels -100), as SFT data is, and the share of labelled tokens is
  recorded (`labelled_token_share`); --data text labels every token. What each baseline does with the masked positions
  is its own: transformers' loss computes the head for all of them, TRL's chunked head too on a device without Triton,
  ours skips them.
The better baseline is the faster (for tokens/s) or the leaner (for memory) one in each pair.
"""

import argparse
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

TINY = ModelArch(name="tiny", hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=259, max_position_embeddings=4096)
BASELINES = ("trainer", "trl")


def matmul_flops_per_second(device: torch.device, dtype: torch.dtype, n: int, iters: int = 20) -> float:
    """The dense matmul rate this device reaches: the denominator of MFU (measured, not the datasheet's)."""
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
    body = {"name": f"speed-{method}", "model": model, "lora": {"r": 16, "alpha": 32, "targets": "all-linear"},
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


# --- one pipeline, in its own process ---------------------------------------------------------------------------

class StepProbe:
    """Called at the end of every optimizer step: records the time, resets the peak RSS before the first step, and
    wraps the last step in LiveBytes (its time is not used)."""

    def __init__(self, steps: int, device: torch.device):
        self.steps, self.device, self.ends, self.live = steps, device, [], None
        self.rss_start, self.rss_ends, self.rss_peak = None, [], None
        self.mode = None

    @staticmethod
    def reset_peak_rss() -> None:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := current RSS
        except OSError:
            pass

    def before_step(self) -> None:
        if not self.ends:
            self.reset_peak_rss()
            self.rss_start = current_rss_gib()
            self.start = time.perf_counter()
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
        self.rss_ends.append(current_rss_gib())
        if len(self.ends) == self.steps:  # the peak over the training steps, before the pipeline saves its outputs
            self.rss_peak = peak_rss_gib()


def current_rss_gib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def peak_rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_ours(recipe, out_dir: Path, probe: StepProbe, device) -> dict:
    """The real runner, end to end (runners.run.run); the probe wraps the train_step its session calls."""
    import runners.session
    from runners.run import run
    inner = runners.session.train_step

    def probed(*args, **kwargs):
        probe.before_step()
        result = inner(*args, **kwargs)
        probe.after_step()
        return result
    runners.session.train_step = probed
    report = run(recipe, out_dir, overwrite=True)
    return {"gradient_checkpointing": report.estimate.gradient_checkpointing}


def _rows_dataset(recipe, tokenizer):
    """Our packed rows (input_ids, labels, position_ids) as a datasets.Dataset, and our collate for them."""
    import datasets

    from runners.data import build_dataset, collate
    from runners.environment import cache_root
    rows = build_dataset(recipe, tokenizer, cache_root()).train
    train = datasets.Dataset.from_list([{k: v.tolist() for k, v in r.items()} for r in rows.rows()])
    pad = tokenizer.pad_token_id

    def collator(features):
        return collate([{k: torch.tensor(v) for k, v in f.items()} for f in features], pad)
    return train, collator


def _trainer_args(cls, recipe, out_dir: Path, device, checkpointing: bool, **extra):
    cuda = device.type == "cuda"
    # transformers 5 renamed gradient_checkpointing to activation_checkpointing; use whichever this version has
    prefix = "activation" if "activation_checkpointing" in cls.__dataclass_fields__ else "gradient"
    return cls(output_dir=str(out_dir), per_device_train_batch_size=recipe.train.micro_batch,
               max_steps=recipe.train.max_steps, learning_rate=recipe.train.lr, bf16=cuda, use_cpu=not cuda,
               logging_steps=10, report_to=[], save_strategy="no", dataloader_drop_last=True,
               remove_unused_columns=False, disable_tqdm=True, **{f"{prefix}_checkpointing": checkpointing,
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


def run_trainer(recipe, out_dir: Path, probe: StepProbe, device) -> dict:
    """transformers.Trainer + peft as the Hugging Face docs set it up (prepare_model_for_kbit_training for QLoRA)."""
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
    args = _trainer_args(TrainingArguments, recipe, out_dir, device, checkpointing)
    Trainer(model=model, args=args, train_dataset=train, data_collator=collator, callbacks=[_callback(probe)]).train()
    return {"gradient_checkpointing": checkpointing}


def run_trl(recipe, out_dir: Path, probe: StepProbe, device) -> dict:
    """TRL's SFTTrainer with its defaults (its chunked LM head and loss) on our rows; peft through its peft_config."""
    from trl import SFTConfig, SFTTrainer

    from runners.model import load_model, to_peft_config
    from runners.environment import cache_root
    from runners.tokenizer import load_tokenizer
    checkpointing = baseline_checkpointing(recipe, device_memory_gib(device))
    tokenizer = load_tokenizer(recipe)
    train, collator = _rows_dataset(recipe, tokenizer)
    model = load_model(recipe, device, cache_root(), recipe.train.seed)
    args = _trainer_args(SFTConfig, recipe, out_dir, device, checkpointing, packing=False, max_length=None,
                         dataset_kwargs={"skip_prepare_dataset": True})
    SFTTrainer(model=model, args=args, train_dataset=train, data_collator=collator, processing_class=tokenizer,
               peft_config=to_peft_config(recipe.lora), callbacks=[_callback(probe)]).train()
    return {"gradient_checkpointing": checkpointing}


PIPELINES = {"ours": run_ours, "trainer": run_trainer, "trl": run_trl}


def worker(pipeline: str, recipe_path: Path, overrides: list[str], warmup: int, result_path: Path) -> None:
    """One pipeline in this process: train, then write its step times, live bytes and peak RSS."""
    from advisor.plan.recipe import load_recipe
    from runners.environment import quiet_libraries
    quiet_libraries()
    recipe = load_recipe(recipe_path, overrides)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    steps = recipe.train.max_steps
    probe = StepProbe(steps, device)
    with tempfile.TemporaryDirectory() as out:
        info = PIPELINES[pipeline.split(":")[0]](recipe, Path(out) / "run", probe, device)
    timed = [b - a for a, b in zip(probe.ends[warmup - 1:-2], probe.ends[warmup:-1])]  # warm-up and the live step out
    tokens = recipe.train.micro_batch * recipe.data.seq_len
    result = {"steps": len(probe.ends), "timed_steps": len(timed), "step_seconds": timed,
              "tokens_per_second": tokens * len(timed) / sum(timed), "live_peak_gib": probe.live / 2**30,
              "rss_peak_gib": probe.rss_peak, "rss_start_gib": probe.rss_start, "rss_step_ends_gib": probe.rss_ends,
              **info}
    if device.type == "cuda":
        result["cuda_peak_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    result_path.write_text(json.dumps(result))


# --- the orchestrator -------------------------------------------------------------------------------------------

def spawn(pipeline: str, recipe_path: Path, overrides: list[str], warmup: int, tmp: Path, env: dict) -> dict:
    result = tmp / f"result-{os.getpid()}-{time.monotonic_ns()}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", pipeline, "--recipe", str(recipe_path),
               "--warmup", str(warmup), "--result", str(result)] + [f"--set={o}" for o in overrides]
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{pipeline} failed:\n{proc.stderr[-3000:]}")
    return json.loads(result.read_text())


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def summarize(method: str, pairs: list[dict], baselines: list[str], model_flops: float, peak_rate: float) -> dict:
    """Medians per pipeline, and the per-pair ratios of ours against the better baseline of that pair."""
    out = {}
    for name in pairs[0]:
        runs = [p[name] for p in pairs]
        out[f"{method}_{name}"] = {
            "tokens_per_second": statistics.median(r["tokens_per_second"] for r in runs),
            "peak_memory_gib": statistics.median(r["live_peak_gib"] for r in runs), "peak_memory_kind": "live tensor bytes",
            "rss_peak_gib": statistics.median(r["rss_peak_gib"] for r in runs),
            "gradient_checkpointing": runs[0]["gradient_checkpointing"], "steps": runs[0]["steps"],
            "timed_steps_per_repeat": runs[0]["timed_steps"],
            "mfu": model_flops * statistics.median(r["tokens_per_second"] for r in runs) / peak_rate,
            "rss_start_gib": statistics.median(r["rss_start_gib"] for r in runs),
            "repeats": [{k: r[k] for k in ("tokens_per_second", "step_seconds", "live_peak_gib", "rss_peak_gib",
                                           "rss_start_gib", "rss_step_ends_gib")} for r in runs]}
    speed = [p["ours"]["tokens_per_second"] / max(p[b]["tokens_per_second"] for b in baselines) for p in pairs]
    live = [p["ours"]["live_peak_gib"] / min(p[b]["live_peak_gib"] for b in baselines) for p in pairs]
    rss = [p["ours"]["rss_peak_gib"] / min(p[b]["rss_peak_gib"] for b in baselines) for p in pairs]
    better = max(baselines, key=lambda b: out[f"{method}_{b}"]["tokens_per_second"])
    out[f"{method}_baseline"] = out[f"{method}_{better}"] | {"pipeline": better}
    out |= {f"{method}_speedup": statistics.median(speed), f"{method}_memory_ratio": statistics.median(live),
            f"{method}_rss_ratio": statistics.median(rss), f"{method}_mfu": out[f"{method}_ours"]["mfu"],
            f"{method}_pairs": [{"speedup": s, "memory_ratio": m, "rss_ratio": r} for s, m, r in zip(speed, live, rss)],
            f"{method}_spread": {"speedup": spread(speed), "memory_ratio": spread(live), "rss_ratio": spread(rss)}}
    for name in pairs[0]:
        if name.startswith("ours:"):
            variant = out.pop(f"{method}_{name}")
            variant["speedup_vs_baseline"] = statistics.median(
                p[name]["tokens_per_second"] / max(p[b]["tokens_per_second"] for b in baselines) for p in pairs)
            out.setdefault("variants", {})[f"{method}_{name[5:]}"] = variant
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
    parser.add_argument("--steps", type=int, default=8, help="steps per repeat: warm-up, timed, and one live-bytes step")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=5, help="interleaved repeats of every pipeline")
    parser.add_argument("--checkpointing", choices=["auto", "on", "off"], default="auto",
                        help="gradient checkpointing in every run; auto: each run as needed to fit this device (ours decides "
                             "with its own estimate, the baselines by the estimate of their own peak)")
    parser.add_argument("--methods", default="lora,qlora")
    parser.add_argument("--data", choices=["instruction", "text"], default="instruction",
                        help="instruction: Alpaca-style rows, loss on the responses only (prompts masked, as SFT data is); "
                             "text: plain documents, every token labelled")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                        help="model.dtype (and QLoRA's compute dtype) of every pipeline; auto: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--baselines", default="trainer,trl", help="trainer (HF Trainer + peft), trl (SFTTrainer)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE[,KEY=VALUE]",
                        help="also run ours with these recipe overrides (e.g. stock-loss:train.fused_loss=false); "
                             "repeatable, reported under 'variants' beside the default runner")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--recipe", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.recipe, args.overrides, args.warmup, args.result)
    variants = {}
    for spec in args.variant:
        name, _, assignments = spec.partition(":")
        if not name or not assignments:
            parser.error(f"--variant {spec!r}: expected NAME:KEY=VALUE[,KEY=VALUE]")
        variants[name] = assignments.split(",")
    baselines = [b for b in args.baselines.split(",") if b]
    skipped = {}
    if "trl" in baselines and importlib.util.find_spec("trl") is None:
        baselines.remove("trl")
        skipped["trl"] = "not installed (pip install trl)"
    if not baselines:
        parser.error("no baseline to compare with")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    arch = TINY if args.tiny else get_model(args.model)
    if args.layers:
        arch = msgspec.structs.replace(arch, num_hidden_layers=args.layers, name=f"{arch.name} ({args.layers} layers)")
    seq_len = (128 if args.data == "text" else 512) if args.tiny else args.seq_len  # an Alpaca prompt alone is ~200 bytes
    steps, warmup, n_pairs = (5, 2, 1) if args.tiny else (args.steps, args.warmup, args.pairs)
    if steps < warmup + 2 or warmup < 1:
        parser.error("--steps must leave at least one timed step after --warmup (>= 1) and the live-bytes step")
    bf16 = device.type == "cuda" if args.dtype == "auto" else args.dtype == "bfloat16"  # the MFU denominator's dtype
    peak_rate = matmul_flops_per_second(device, torch.bfloat16 if bf16 else torch.float32,
                                        8192 if device.type == "cuda" else 1024)
    lora_params = lora_trainable_params(arch, 16, "all-linear")
    result = {"gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
              "model": arch.name, "seq_len": seq_len, "micro_batch": args.micro_batch, "steps": steps, "warmup_steps": warmup,
              "pairs": n_pairs, "baselines": baselines, "baselines_skipped": skipped,
              "gradient_checkpointing": args.checkpointing, "measured_matmul_tflops": peak_rate / 1e12,
              "matmul_dtype": "bfloat16" if bf16 else "float32",
              "data": args.data, "dtype": args.dtype, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "load_average": {"start": list(os.getloadavg())},
              "command": "python bench/speed.py " + " ".join(sys.argv[1:]), "versions": _versions()}
    names = ["ours", *baselines] + [f"ours:{v}" for v in variants]
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
        methods, pairs = args.methods.split(","), {}
        checkpointing = {"auto": "auto", "on": True, "off": False}[args.checkpointing]
        for method in methods:
            (tmp / f"{method}.yaml").write_text(recipe_text(arch, method, data, seq_len, args.micro_batch, steps,
                                                            checkpointing, args.data, args.dtype))
        result["labelled_token_share"] = labelled_share(tmp / f"{methods[0]}.yaml", steps * args.micro_batch, env)
        for pair in range(n_pairs):  # every method's pair n before any pair n+1: a run stopped early keeps both methods
            for method in methods:
                path, runs = tmp / f"{method}.yaml", {}
                model_flops = flops_per_token(arch, seq_len, method, lora_params).model
                for name in order_for(pair, names):
                    overrides = variants.get(name[5:], []) if name.startswith("ours:") else []
                    runs[name] = spawn(name, path, overrides, warmup, tmp, env)
                    print(f"{method} pair {pair + 1}/{n_pairs} {name}: {runs[name]['tokens_per_second']:,.0f} tokens/s, "
                          f"live {runs[name]['live_peak_gib']:.3f} GiB, rss {runs[name]['rss_peak_gib']:.2f} GiB",
                          file=sys.stderr, flush=True)
                pairs.setdefault(method, []).append({n: runs[n] for n in names})
                result["load_average"].setdefault("pairs", []).append(list(os.getloadavg()))
                summary = summarize(method, pairs[method], baselines, model_flops, peak_rate)
                summary["variants"] = result.get("variants", {}) | summary.get("variants", {})
                for variant, overrides in variants.items():
                    summary["variants"][f"{method}_{variant}"]["overrides"] = overrides
                result |= summary
                if args.out:  # after every pair: a long run that is stopped keeps what it measured
                    _write(args.out, result)
    result["load_average"]["end"] = list(os.getloadavg())
    result["targets"] = targets(result, methods)
    print(render(result))
    if args.out:
        _write(args.out, result)


# The targets against the better baseline (issue 15): live bytes <= 0.8x, peak RSS <= 0.9x, tokens/s >= 1.1x.
TARGETS = {"memory_ratio": ("<=", 0.8), "rss_ratio": ("<=", 0.9), "speedup": (">=", 1.1)}


def targets(result: dict, methods: list[str]) -> dict:
    """Each target with the measured median and whether it is met (nothing rounded in its favour)."""
    out = {}
    for method in methods:
        for key, (op, bound) in TARGETS.items():
            measured = result[f"{method}_{key}"]
            met = measured <= bound if op == "<=" else measured >= bound
            out[f"{method}_{key}"] = {"target": f"{op} {bound}", "measured": measured, "met": met}
    return out


def labelled_share(recipe_path: Path, micro_batches: int, env: dict) -> float:
    """Share of the first `micro_batches` training rows' tokens that carry a label (the rest are masked prompt),
    the rows every pipeline trains on; computed in a child process with the workers' cache."""
    code = ("import sys, json; from advisor.plan.recipe import load_recipe; from runners.data import build_dataset; "
            "from runners.environment import cache_root; from runners.tokenizer import load_tokenizer; "
            "r = load_recipe(sys.argv[1]); rows = build_dataset(r, load_tokenizer(r), cache_root()).train.rows(); "
            "rows = [x for _, x in zip(range(int(sys.argv[2])), rows)]; "
            "print(json.dumps(sum(int((x['labels'] != -100).sum()) for x in rows) / sum(x['labels'].numel() for x in rows)))")
    proc = subprocess.run([sys.executable, "-c", code, str(recipe_path), str(micro_batches)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"reading the rows failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _write(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for name in ("torch", "transformers", "peft", "bitsandbytes", "trl"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def render(result: dict) -> str:
    lines = [f"{result['gpu']}: {result['model']}, seq {result['seq_len']}, micro-batch {result['micro_batch']}, "
             f"{result['pairs']} interleaved repeats, checkpointing {result['gradient_checkpointing']}, "
             f"matmul {result['measured_matmul_tflops']:.1f} TFLOP/s measured",
             f"{'run':<20}{'tokens/s':>12}{'MFU':>9}{'live GiB':>10}{'RSS GiB':>9}{'ckpt':>6}"]
    rows = [(k, v) for k, v in result.items() if isinstance(v, dict) and "tokens_per_second" in v
            and not k.endswith("_baseline")] + list(result.get("variants", {}).items())
    for name, r in rows:
        lines.append(f"{name:<20}{r['tokens_per_second']:>12,.0f}{r['mfu']:>9.1%}{r['peak_memory_gib']:>10.3f}"
                     f"{r['rss_peak_gib']:>9.2f}{'on' if r['gradient_checkpointing'] else 'off':>6}")
    for method in ("lora", "qlora"):
        if f"{method}_speedup" in result:
            s = result[f"{method}_spread"]
            lines.append(f"{method}: speed-up {result[f'{method}_speedup']:.2f}x (pairs {s['speedup']['min']:.2f}-"
                         f"{s['speedup']['max']:.2f}), live-bytes ratio {result[f'{method}_memory_ratio']:.2f}, "
                         f"RSS ratio {result[f'{method}_rss_ratio']:.2f} against the better of "
                         f"{', '.join(result['baselines'])}; our MFU {result[f'{method}_mfu']:.1%}")
    if "labelled_token_share" in result:
        lines.append(f"data: {result['data']} ({result['labelled_token_share']:.0%} of tokens labelled), dtype {result['dtype']}, "
                     f"load average {result['load_average']['start'][0]:.1f} at start, "
                     f"{result['load_average'].get('end', [float('nan')])[0]:.1f} at end")
    for name, why in result.get("baselines_skipped", {}).items():
        lines.append(f"baseline {name} skipped: {why}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
