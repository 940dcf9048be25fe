"""QLoRA's unquantised parameters (embeddings, norms, LM head) in fp32 as peft's prepare_model_for_kbit_training
casts them, or kept in the compute dtype (bf16) as the runner does (runners.model.attach_adapters): memory on the CPU
with the live-bytes tracker, and the loss over the same steps.

Usage: python bench/qlora_dtype.py [--out bench/results/qlora_dtype_cpu.json] [--steps 30]
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from advisor.plan.recipe import load_recipe  # noqa: E402
from bench.measure import saved_activation_bytes, step_peak_bytes  # noqa: E402

# The tiny QLoRA recipe at a shape where the unquantised parameters and the MLP path are visible (bf16, as on a GPU).
SHAPE = ["model.dtype=bfloat16", "quant.compute_dtype=bfloat16", "model.arch.hidden_size=256",
         "model.arch.intermediate_size=768", "model.arch.num_hidden_layers=3", "model.arch.vocab_size=2048"]


def build(variant: str, cache: Path):
    """The runner's QLoRA model: `peft` prepares it with prepare_model_for_kbit_training (fp32 upcast), `runner` with
    runners.model.attach_adapters (the compute dtype kept)."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    from runners.model import attach_adapters, load_model, to_peft_config
    recipe = load_recipe(ROOT / "recipes" / "tiny-cpu-qlora.yaml", SHAPE)
    model = load_model(recipe, torch.device("cpu"), cache, seed=0)
    if variant == "peft":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        return get_peft_model(model, to_peft_config(recipe.lora)), recipe
    return attach_adapters(model, recipe, checkpointing=False), recipe


def static_bytes(model) -> dict:
    frozen = [p for p in model.parameters() if not p.requires_grad]
    unquantised = [p for p in frozen if p.__class__.__name__ != "Params4bit"]
    return {"unquantised_bytes": sum(p.numel() * p.element_size() for p in unquantised),
            "unquantised_dtypes": sorted({str(p.dtype) for p in unquantised})}


def losses(model, recipe, steps: int) -> list[float]:
    """Loss per step of AdamW on the same fixed batches (seeded), the recipe's learning rate."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=recipe.train.lr)
    gen = torch.Generator().manual_seed(0)
    vocab = recipe.model.arch.vocab_size
    out = []
    for _ in range(steps):
        ids = torch.randint(0, vocab, (2, 128), generator=gen)
        ids[:, 64:] = ids[:, :64]  # a repeated half: something to learn
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        out.append(float(loss))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "qlora_dtype_cpu.json")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    result = {"shape": SHAPE, "steps": args.steps}
    with tempfile.TemporaryDirectory() as cache:
        for variant in ("peft", "runner"):
            torch.manual_seed(0)
            model, recipe = build(variant, Path(cache))
            model.train()
            ids = torch.randint(0, recipe.model.arch.vocab_size, (4, 256), generator=torch.Generator().manual_seed(1))
            entry = static_bytes(model)
            entry["step_peak_bytes"] = step_peak_bytes(model, ids)
            entry["saved_activation_bytes"] = saved_activation_bytes(model, ids)
            model.zero_grad(set_to_none=True)
            entry["losses"] = losses(model, recipe, args.steps)
            result[variant] = entry
    p, r = result["peft"], result["runner"]
    result["saved_bytes"] = {k: p[k] - r[k] for k in ("unquantised_bytes", "step_peak_bytes", "saved_activation_bytes")}
    result["max_abs_loss_difference"] = max(abs(a - b) for a, b in zip(p["losses"], r["losses"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("saved_bytes", "max_abs_loss_difference")}, indent=2))
    print(f"final loss: peft {p['losses'][-1]:.4f}, runner {r['losses'][-1]:.4f}; wrote {args.out}")


if __name__ == "__main__":
    main()
