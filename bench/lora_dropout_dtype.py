"""Measure what LoRA's adapter dtype and dropout change in the bytes autograd keeps per layer and token (CPU, a minute).

Usage: python bench/lora_dropout_dtype.py [--out bench/results/lora_dropout_dtype_cpu.json]
Per shape and target set: saved bytes with fp32 adapters (peft's default on a 16-bit base) and bf16 adapters
(autocast_adapter_dtype=False), each without and with dropout 0.1, per input element of the adapted projections.
advisor.formulas.memory's ACT_BF16_ADAPTER_SAVING is the bf16 saving; ACT_LORA_DROPOUT is the CPU increment less the noise
tensor CPU dropout keeps (a CUDA kernel keeps a 1-byte mask instead; see the constant's comment).
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the project root, for `bench`

from advisor.formulas.params import LINEAR_MODULES  # noqa: E402
from bench.measure import activation_bytes_per_layer_token  # noqa: E402

CASES = [((256, 704, 8, 2), LINEAR_MODULES), ((384, 1024, 6, 2), LINEAR_MODULES), ((256, 704, 8, 2), ("q_proj", "v_proj"))]


def builder(targets, dropout: float, adapter_bf16: bool):
    import torch

    def build(config):
        from peft import LoraConfig, get_peft_model
        from transformers import LlamaForCausalLM
        model = LlamaForCausalLM(config).to(torch.bfloat16)
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=list(targets), lora_dropout=dropout),
                               autocast_adapter_dtype=not adapter_bf16)
        return model.train()
    return build


def input_features(h: int, inter: int, kv: int, targets) -> int:
    widths = {"q_proj": h, "k_proj": h, "v_proj": h, "o_proj": h, "gate_proj": h, "up_proj": h, "down_proj": inter}
    return sum(widths[t] for t in targets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "lora_dropout_dtype_cpu.json")
    args = parser.parse_args()
    rows = []
    for (h, inter, heads, kv_heads), targets in CASES:
        measured = {f"{'bf16' if bf16 else 'fp32'}_dropout{d}": activation_bytes_per_layer_token(
            builder(targets, d, bf16), h, inter, heads, kv_heads) for bf16 in (False, True) for d in (0.0, 0.1)}
        n = input_features(h, inter, kv_heads * h // heads, targets)
        rows.append({"shape": [h, inter, heads, kv_heads], "targets": list(targets), "bytes_per_token": measured,
                     "bf16_saving_per_input": round((measured["fp32_dropout0.0"] - measured["bf16_dropout0.0"]) / n, 3),
                     "dropout_fp32_per_input": round((measured["fp32_dropout0.1"] - measured["fp32_dropout0.0"]) / n, 3),
                     "dropout_bf16_per_input": round((measured["bf16_dropout0.1"] - measured["bf16_dropout0.0"]) / n, 3)})
        print(rows[-1])
    args.out.write_text(json.dumps({"method": "bytes saved for backward per layer and token, bf16 autocast, CPU, "
                                    "tokens=256 x batch 4 (bench.measure)", "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
