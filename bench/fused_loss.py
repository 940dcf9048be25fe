"""The fused LM head + cross-entropy (runners.loss) against transformers' own loss, side by side: step peak memory
and step time of the same LoRA model, at several micro-batches and chunk sizes.

Usage (CPU, ~2 min): python bench/fused_loss.py --out bench/results/fused_loss_cpu.json
Usage (GPU, Llama-3.1-8B's head, one layer): python bench/fused_loss.py --hidden 4096 --intermediate 14336 \\
    --heads 32 --kv-heads 8 --layers 1 --seq-len 2048 --micro-batches 1,4 --chunks 256,1024,4096 --out ...

The model has Llama-3's 128,256-token vocabulary and few, narrow layers, so the loss is a large part of the step, as
it is for an 8B model with gradient checkpointing. Peak memory: on CUDA the allocator's peak above the memory in use
before the step; on the CPU the live-bytes tracker (bench.measure.step_peak_bytes), which counts the same
allocations. Each is printed beside the advisor's prediction of the loss's own peak (advisor.formulas.memory.logits_bytes).
Times are medians over --repeats steps after one warm-up; CPU times say nothing about GPU speed.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from advisor.catalog.types import ModelArch  # noqa: E402
from bench.common import sync  # noqa: E402

from advisor.formulas.fused_loss import loss_chunk_tokens  # noqa: E402
from advisor.formulas.memory import logits_bytes  # noqa: E402
from advisor.formulas.params import LINEAR_MODULES  # noqa: E402
from runners.loss import use_fused_loss  # noqa: E402
from bench.measure import lora_builder, step_peak_bytes  # noqa: E402


def step(model, ids: torch.Tensor) -> None:
    with torch.autocast(ids.device.type, dtype=torch.bfloat16):
        out = model(input_ids=ids, labels=ids, use_cache=False)
    out.loss.backward()
    model.zero_grad(set_to_none=True)


def measure(model, ids: torch.Tensor, repeats: int) -> dict:
    cuda = ids.device.type == "cuda"
    step(model, ids)  # warm-up
    times = []
    for _ in range(repeats):
        sync(ids.device)
        start = time.perf_counter()
        step(model, ids)
        sync(ids.device)
        times.append(time.perf_counter() - start)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(model, ids)
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = step_peak_bytes(model, ids)
        model.zero_grad(set_to_none=True)
    return {"step_seconds": statistics.median(times), "peak_bytes": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--intermediate", type=int, default=1408)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=128256)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--micro-batches", default="1,4")
    parser.add_argument("--chunks", default="", help="chunk sizes to compare (default: the runner's, loss_chunk_tokens)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from transformers import LlamaConfig
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    config = LlamaConfig(hidden_size=args.hidden, intermediate_size=args.intermediate, num_hidden_layers=args.layers,
                         num_attention_heads=args.heads, num_key_value_heads=args.kv_heads, vocab_size=args.vocab,
                         use_cache=False, attn_implementation="sdpa")
    arch = ModelArch(hidden_size=args.hidden, intermediate_size=args.intermediate, num_hidden_layers=args.layers,
                     num_attention_heads=args.heads, num_key_value_heads=args.kv_heads, vocab_size=args.vocab)
    torch.manual_seed(0)
    model = lora_builder(LINEAR_MODULES, rank=16)(config)
    model = model.to(device)
    causal_lm = model.get_base_model()
    stock_forward = causal_lm.forward
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({platform.machine()})",
              "torch": torch.__version__, "shape": vars(args) | {"out": None}, "runs": []}
    for mb in (int(x) for x in args.micro_batches.split(",")):
        ids = torch.randint(0, args.vocab, (mb, args.seq_len), device=device)
        tokens = mb * args.seq_len
        causal_lm.forward = stock_forward
        stock = measure(model, ids, args.repeats)
        stock["predicted_loss_bytes"] = logits_bytes(arch, args.seq_len, mb, fused=False)[0]
        result["runs"].append({"micro_batch": mb, "loss": "stock", **stock})
        chunks = [int(c) for c in args.chunks.split(",")] if args.chunks else [loss_chunk_tokens(tokens)]
        for chunk in chunks:
            use_fused_loss(causal_lm, chunk)
            fused = measure(model, ids, args.repeats)
            fused["predicted_loss_bytes"] = (logits_bytes(arch, args.seq_len, mb, fused=True)[0]
                                             if chunk == loss_chunk_tokens(tokens) else None)
            fused["memory_ratio"] = fused["peak_bytes"] / stock["peak_bytes"]
            fused["speedup"] = stock["step_seconds"] / fused["step_seconds"]
            result["runs"].append({"micro_batch": mb, "loss": f"fused, chunk {min(chunk, tokens)}", **fused})
    print(render(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


def render(result: dict) -> str:
    s = result["shape"]
    lines = [f"{result['device']}, torch {result['torch']}: LoRA r16 all-linear, h {s['hidden']}, {s['layers']} layers, "
             f"vocab {s['vocab']:,}, seq {s['seq_len']}, bf16 autocast",
             f"{'mb':>3} {'loss':<20}{'step s':>9}{'peak MiB':>10}{'loss pred MiB':>15}{'mem ratio':>11}{'speed-up':>10}"]
    for r in result["runs"]:
        pred = f"{r['predicted_loss_bytes'] / 2**20:,.0f}" if r.get("predicted_loss_bytes") else "-"
        ratio = f"{r['memory_ratio']:.2f}" if "memory_ratio" in r else "-"
        speed = f"{r['speedup']:.2f}x" if "speedup" in r else "-"
        lines.append(f"{r['micro_batch']:>3} {r['loss']:<20}{r['step_seconds']:>9.3f}{r['peak_bytes'] / 2**20:>10,.0f}"
                     f"{pred:>15}{ratio:>11}{speed:>10}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
