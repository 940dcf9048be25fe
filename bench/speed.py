"""Our runner against plain Hugging Face Trainer + peft, LoRA and QLoRA, side by side in one process.

Usage (GPU): python bench/speed.py --out bench/results/speed_h200.json
Usage (CPU smoke test, tiny model): python bench/speed.py --tiny --out /tmp/speed.json

Both pipelines train the same randomly initialised architecture (default: Llama-3.1-8B's shape; nothing is
downloaded) on the same packed token rows, with LoRA r=16 on every projection and the same micro-batch; each run
uses gradient checkpointing only if it needs it to fit this device (`--checkpointing auto`, the default; `on` or
`off` forces it everywhere). The baseline follows the Hugging Face docs' recommended settings: bf16, SDPA
attention, Trainer's default fused AdamW. After warm-up steps, each run's tokens/s, model FLOPs utilisation
(against the bf16 matmul rate measured here, on this device) and peak memory are recorded.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from bench.common import sync, synthetic_corpus  # noqa: E402

from advisor.catalog import ModelArch, get_model  # noqa: E402
from advisor.flops import flops_per_token  # noqa: E402
from advisor.params import lora_trainable_params  # noqa: E402

TINY = ModelArch(name="tiny", hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=259, max_position_embeddings=4096)


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
                checkpointing: bool | str) -> str:
    import yaml
    model = {"arch": arch.hf_config_dict() | {"max_position_embeddings": max(seq_len, 4096)}}
    model["arch"].pop("head_dim", None)
    body = {"name": f"speed-{method}", "model": model, "lora": {"r": 16, "alpha": 32, "targets": "all-linear"},
            "data": {"path": str(data), "format": "text", "seq_len": seq_len, "packing": True, "val_fraction": 0.0},
            "train": {"max_steps": steps, "micro_batch": micro_batch, "lr": 1e-4, "gradient_checkpointing": checkpointing,
                      "eval_every": 0, "log_every": 1}}
    if method == "qlora":
        body["quant"] = {"quant_type": "nf4", "double_quant": True,
                         "compute_dtype": "bfloat16" if torch.cuda.is_available() else "float32"}
    return yaml.safe_dump(body)


def steady_rate(step_tokens: list[int], step_seconds: list[float], warmup: int) -> float:
    return sum(step_tokens[warmup:]) / sum(step_seconds[warmup:])


def run_ours(recipe_path: Path, out_dir: Path, warmup: int, device: torch.device, overrides: tuple[str, ...] = ()) -> dict:
    """The real runner, end to end; throughput from its own per-step metrics after warm-up."""
    from advisor.recipe import load_recipe
    from runners.run import run
    report = run(load_recipe(recipe_path, overrides), out_dir, overwrite=True)  # resolves checkpointing: auto itself
    metrics = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if "loss" in line]
    tokens = [m["tokens"] - (metrics[i - 1]["tokens"] if i else 0) for i, m in enumerate(metrics)]
    mem = report.peak_memory_gib
    return {"tokens_per_second": steady_rate(tokens, [m["step_seconds"] for m in metrics], warmup),
            "peak_memory_gib": mem.reserved if mem.reserved is not None else mem.rss,
            "peak_memory_kind": "reserved" if mem.reserved is not None else "process rss", "steps": report.steps,
            "gradient_checkpointing": report.estimate.gradient_checkpointing}


def device_memory_gib(device: torch.device) -> float | None:
    return torch.cuda.get_device_properties(device).total_memory / 2**30 if device.type == "cuda" else None


def baseline_checkpointing(recipe, memory: float | None) -> bool:
    """The baseline's checkpointing "as needed to fit": the recipe's choice, or for `auto` the advisor's estimate of
    the baseline's own peak (transformers' loss, which holds the whole micro-batch's logits) against `memory` GiB."""
    from advisor.estimate import estimate_recipe
    if recipe.train.gradient_checkpointing != "auto":
        return recipe.train.gradient_checkpointing
    stock = recipe.model_copy(update={"train": recipe.train.model_copy(update={"fused_loss": False})})
    return estimate_recipe(stock, device_memory_gib=memory).gradient_checkpointing


def run_baseline(recipe_path: Path, out_dir: Path, warmup: int, device: torch.device, overrides: tuple[str, ...] = ()) -> dict:
    """transformers.Trainer + peft on the same rows, as the Hugging Face docs set it up."""
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from advisor.recipe import load_recipe
    from runners.data import build_dataset
    from runners.model import load_model, to_peft_config
    from runners.run import cache_root
    from runners.tokenizer import load_tokenizer
    recipe = load_recipe(recipe_path, overrides)
    checkpointing = baseline_checkpointing(recipe, device_memory_gib(device))
    rows = build_dataset(recipe, load_tokenizer(recipe), cache_root()).train
    import datasets
    train = datasets.Dataset.from_list([{"input_ids": r["input_ids"].tolist(), "labels": r["input_ids"].tolist()}
                                        for r in rows.rows()])
    model = load_model(recipe, device, cache_root(), recipe.train.seed)  # the same random weights as ours
    if recipe.quant is not None:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    model = get_peft_model(model, to_peft_config(recipe.lora))
    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            sync(device)
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            sync(device)
            times.append(time.perf_counter() - self.t)

    cuda = device.type == "cuda"
    # transformers 5 renamed gradient_checkpointing to activation_checkpointing; use whichever this version has
    prefix = "activation" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__ else "gradient"
    trainer_checkpointing = {f"{prefix}_checkpointing": checkpointing,
                             f"{prefix}_checkpointing_kwargs": {"use_reentrant": False}}
    args = TrainingArguments(output_dir=str(out_dir), per_device_train_batch_size=recipe.train.micro_batch,
                             max_steps=recipe.train.max_steps, learning_rate=recipe.train.lr, bf16=cuda, use_cpu=not cuda,
                             logging_steps=10, report_to=[], save_strategy="no", dataloader_drop_last=True,
                             remove_unused_columns=False, disable_tqdm=True, **trainer_checkpointing)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    Trainer(model=model, args=args, train_dataset=train, callbacks=[StepTimer()]).train()
    tokens = [recipe.train.micro_batch * recipe.data.seq_len] * len(times)
    import resource
    peak = torch.cuda.max_memory_reserved(device) / 2**30 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"tokens_per_second": steady_rate(tokens, times, warmup), "peak_memory_gib": peak,
            "peak_memory_kind": "reserved" if cuda else "process rss", "steps": len(times), "gradient_checkpointing": checkpointing}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="Llama-3.1-8B", help="catalog architecture to build (random weights)")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test: a 2-layer model, short sequences")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--micro-batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--checkpointing", choices=["auto", "on", "off"], default="auto",
                        help="gradient checkpointing in every run; auto: each run as needed to fit this device (ours decides "
                             "with its own estimate, the baseline by the estimate of its own peak)")
    parser.add_argument("--methods", default="lora,qlora")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE[,KEY=VALUE]",
                        help="also run ours with these recipe overrides (e.g. stock-loss:train.fused_loss=false); "
                             "repeatable, reported under 'variants' beside the default runner")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    variants = {}
    for spec in args.variant:
        name, _, assignments = spec.partition(":")
        if not name or not assignments:
            parser.error(f"--variant {spec!r}: expected NAME:KEY=VALUE[,KEY=VALUE]")
        variants[name] = tuple(assignments.split(","))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    arch = TINY if args.tiny else get_model(args.model)
    seq_len = 128 if args.tiny else args.seq_len
    steps, warmup = (8, 2) if args.tiny else (args.steps, args.warmup)
    peak_rate = matmul_flops_per_second(device, torch.bfloat16 if device.type == "cuda" else torch.float32,
                                        8192 if device.type == "cuda" else 512)
    lora_params = lora_trainable_params(arch, 16, "all-linear")
    result = {"gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
              "model": arch.name, "seq_len": seq_len, "micro_batch": args.micro_batch, "steps": steps, "warmup_steps": warmup,
              "gradient_checkpointing": args.checkpointing, "measured_matmul_tflops": peak_rate / 1e12,
              "versions": {"torch": torch.__version__}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ.setdefault("RIGHTSIZE_CACHE_DIR", str(tmp / "cache"))
        data = tmp / "corpus.jsonl"
        synthetic_corpus(data, docs=400 if args.tiny else max(200, steps * args.micro_batch * seq_len // 2000 + 50))
        for method in args.methods.split(","):
            path = tmp / f"{method}.yaml"
            checkpointing = {"auto": "auto", "on": True, "off": False}[args.checkpointing]
            path.write_text(recipe_text(arch, method, data, seq_len, args.micro_batch, steps, checkpointing))
            model_flops = flops_per_token(arch, seq_len, method, lora_params).model
            runs = [("baseline", run_baseline, ()), ("ours", run_ours, ())] + [
                (name, run_ours, overrides) for name, overrides in variants.items()]
            for name, fn, overrides in runs:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                r = fn(path, tmp / f"{method}-{name}", warmup, device, overrides)
                r["mfu"] = model_flops * r["tokens_per_second"] / peak_rate
                if name not in variants:
                    result[f"{method}_{name}"] = r
                else:
                    r["overrides"] = list(overrides)
                    r["speedup_vs_baseline"] = r["tokens_per_second"] / result[f"{method}_baseline"]["tokens_per_second"]
                    result.setdefault("variants", {})[f"{method}_{name}"] = r
            ours, base = result[f"{method}_ours"], result[f"{method}_baseline"]
            result[f"{method}_speedup"] = ours["tokens_per_second"] / base["tokens_per_second"]
            result[f"{method}_memory_ratio"] = ours["peak_memory_gib"] / base["peak_memory_gib"]
            result[f"{method}_mfu"] = ours["mfu"]
    print(render(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


def render(result: dict) -> str:
    lines = [f"{result['gpu']}: {result['model']}, seq {result['seq_len']}, micro-batch {result['micro_batch']}, "
             f"checkpointing {result['gradient_checkpointing']}, matmul {result['measured_matmul_tflops']:.1f} TFLOP/s measured",
             f"{'run':<16}{'tokens/s':>12}{'MFU':>9}{'peak GiB':>10}{'ckpt':>6}"]
    for name in ("lora_baseline", "lora_ours", "qlora_baseline", "qlora_ours"):
        if name not in result:
            continue
        r = result[name]
        lines.append(f"{name:<16}{r['tokens_per_second']:>12,.0f}{r['mfu']:>9.1%}{r['peak_memory_gib']:>10.2f}"
                     f"{'on' if r['gradient_checkpointing'] else 'off':>6}")
    for name, r in result.get("variants", {}).items():
        lines.append(f"{name:<16}{r['tokens_per_second']:>12,.0f}{r['mfu']:>9.1%}{r['peak_memory_gib']:>10.2f}"
                     f"{'on' if r['gradient_checkpointing'] else 'off':>6}   ({', '.join(r['overrides'])})")
    for method in ("lora", "qlora"):
        if f"{method}_speedup" in result:
            lines.append(f"{method}: speed-up {result[f'{method}_speedup']:.2f}x, memory ratio "
                         f"{result[f'{method}_memory_ratio']:.2f}, our MFU {result[f'{method}_mfu']:.1%}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
