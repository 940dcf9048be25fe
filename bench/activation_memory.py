"""Measure the activation memory of Llama decoder layers and fit the estimator's coefficients (CPU, minutes).

Usage: python bench/activation_memory.py [--out bench/results/activation_fit_cpu.json]
For each shape and LoRA target set, counts the bytes autograd saves per layer and token under bf16 autocast
(bench.measure), fits the linear model advisor.formulas.memory uses, and prints the fit beside the shipped constants.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the project root, for `bench`

from advisor.catalog.types import ModelArch  # noqa: E402
from advisor.formulas.memory import activation_bytes_per_token_per_layer  # noqa: E402
from advisor.formulas.params import LINEAR_MODULES  # noqa: E402
from bench.measure import activation_bytes_per_layer_token, lora_builder, qlora_builder  # noqa: E402

SHAPES = [(128, 256, 4, 2), (256, 704, 8, 2), (192, 512, 6, 6), (320, 384, 10, 2), (256, 896, 8, 2), (384, 1024, 6, 2),
          (128, 448, 4, 1), (512, 1376, 8, 4)]
SUBSETS = {"all-linear": LINEAR_MODULES, "q,v": ("q_proj", "v_proj"), "attention": LINEAR_MODULES[:4],
           "mlp": LINEAR_MODULES[4:], "q,k,v": LINEAR_MODULES[:3], "o": ("o_proj",), "gate,up": ("gate_proj", "up_proj"),
           "down": ("down_proj",), "q": ("q_proj",)}


def features(h, inter, kv, targets, rank):
    has = lambda *names: float(any(n in targets for n in names))  # noqa: E731
    return [h, inter, kv, has("q_proj", "k_proj", "v_proj") * h, has("o_proj") * h, has("gate_proj", "up_proj") * h,
            has("down_proj") * inter, rank * len(targets)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows, full_rows = [], []
    for h, inter, heads, kv_heads in SHAPES:
        kv = kv_heads * h // heads
        arch = ModelArch(hidden_size=h, intermediate_size=inter, num_hidden_layers=1, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, vocab_size=64)
        measured = activation_bytes_per_layer_token(lora_builder(()), h, inter, heads, kv_heads)
        full_rows.append({"shape": [h, inter, heads, kv_heads], "measured": measured,
                          "estimated": activation_bytes_per_token_per_layer(arch, "full", 256)})
        for name, targets in SUBSETS.items():
            for rank in (8, 32) if name == "all-linear" else (8,):
                m = activation_bytes_per_layer_token(lora_builder(list(targets), rank), h, inter, heads, kv_heads)
                e = activation_bytes_per_token_per_layer(arch, "lora", 256, True, targets, rank)
                rows.append({"shape": [h, inter, heads, kv_heads], "targets": name, "rank": rank, "measured": m,
                             "estimated": e, "features": features(h, inter, kv, targets, rank)})
    qlora_rows = []
    for h, inter, heads, kv_heads in SHAPES[:4]:
        arch = ModelArch(hidden_size=h, intermediate_size=inter, num_hidden_layers=1, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, vocab_size=64)
        for name in ("all-linear", "q,v"):
            targets = SUBSETS[name]
            q = activation_bytes_per_layer_token(qlora_builder(targets), h, inter, heads, kv_heads)
            lora = next(r["measured"] for r in rows if r["shape"] == [h, inter, heads, kv_heads] and r["targets"] == name
                        and r["rank"] == 8)
            qlora_rows.append({"shape": [h, inter, heads, kv_heads], "targets": name, "rank": 8, "measured": q,
                               "estimated": activation_bytes_per_token_per_layer(arch, "qlora", 256, True, targets, 8),
                               "extra_over_lora_per_I": (q - lora) / inter})
    X = np.array([r["features"] for r in rows])
    y = np.array([r["measured"] for r in rows])
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    Xf = np.array([[r["shape"][0], r["shape"][1], r["shape"][3] * r["shape"][0] // r["shape"][2]] for r in full_rows])
    coef_full, *_ = np.linalg.lstsq(Xf, np.array([r["measured"] for r in full_rows]), rcond=None)
    errors = [abs(r["estimated"] / r["measured"] - 1) for r in rows + full_rows + qlora_rows]
    result = {
        "method": "bytes saved for backward per layer and token, bf16 autocast, CPU, tokens=256 x batch 4",
        "lora_fit": dict(zip(["h", "I", "kv", "qkv_in_h", "o_in_h", "gate_up_in_h", "down_in_I", "rank_x_targets"],
                             np.round(coef, 3).tolist())),
        "full_fit": dict(zip(["h", "I", "kv"], np.round(coef_full, 3).tolist())),
        "qlora_extra_over_lora_per_I": sorted({round(r["extra_over_lora_per_I"], 3) for r in qlora_rows}),
        "estimator_max_relative_error": round(max(errors), 4),
        "estimator_median_relative_error": round(float(np.median(errors)), 4),
        "rows": [{k: v for k, v in r.items() if k != "features"} for r in rows] + full_rows + qlora_rows,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
