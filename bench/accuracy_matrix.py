"""On a CUDA GPU: run the accuracy matrix (2 model sizes x LoRA/QLoRA x 2 sequence lengths = 8 runs), each a
short real `advisor run` of a randomly initialised model built from a catalog architecture (no download),
writing bench/results/accuracy/<name>/report.json. Then `python bench/accuracy.py` rebuilds docs/accuracy.md.

Usage: python bench/accuracy_matrix.py [--steps 30] [--models Llama-3.2-1B,Llama-3.1-8B] [--seq-lens 1024,2048]
"""

import argparse
import itertools
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the project root, for `bench`

from bench.common import synthetic_corpus  # noqa: E402
OUT = ROOT / "bench" / "results" / "accuracy"


def recipe(name: str, model: str, method: str, seq_len: int, steps: int, micro_batch: int, data: Path) -> str:
    quant = "quant: {quant_type: nf4, double_quant: true, compute_dtype: bfloat16}\n" if method == "qlora" else ""
    return (f"name: {name}\nmodel: {{name: {model}, random_init: true}}\n"
            "lora: {r: 16, alpha: 32, targets: all-linear}\n" + quant +
            f"data: {{path: {data}, format: text, seq_len: {seq_len}, packing: true, val_fraction: 0.0}}\n"
            f"train: {{max_steps: {steps}, micro_batch: {micro_batch}, lr: 1.0e-4, gradient_checkpointing: true, log_every: 5}}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--models", default="Llama-3.2-1B,Llama-3.1-8B")
    parser.add_argument("--seq-lens", default="1024,2048")
    parser.add_argument("--micro-batch", type=int, default=2)
    args = parser.parse_args()
    import torch
    if not torch.cuda.is_available():
        sys.exit("bench/accuracy_matrix.py measures GPU runs: no CUDA device here")
    OUT.mkdir(parents=True, exist_ok=True)
    data = OUT / "synthetic.jsonl"
    if not data.exists():
        synthetic_corpus(data, 4000, words_per_doc=(200, 900))
    hub = {"Llama-3.2-1B": "meta-llama/Llama-3.2-1B", "Llama-3.1-8B": "meta-llama/Llama-3.1-8B"}
    for model, method, seq_len in itertools.product(args.models.split(","), ("lora", "qlora"), map(int, args.seq_lens.split(","))):
        name = f"{model.lower()}-{method}-{seq_len}"
        path = OUT / f"{name}.yaml"
        path.write_text(recipe(name, hub.get(model, model), method, seq_len, args.steps, args.micro_batch, data))
        print(f"== {name}", flush=True)
        subprocess.run([sys.executable, "-m", "advisor.cli", "run", str(path), "--out", str(OUT / name), "--overwrite"],
                       check=False)


if __name__ == "__main__":
    main()
