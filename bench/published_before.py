"""The estimator BEFORE the step-time model and the new memory terms, on the published rows: what docs/accuracy.md
shows as "before". Run it with an old checkout's advisor on the path (it uses only what that version had):

    git worktree add /tmp/before c296a68
    PYTHONPATH=/tmp/before python bench/published_before.py --out bench/results/published_before.json

Each row is mapped to the old TrainingSetup's fields (method, rank, targets, length, micro-batch, GPUs, sharding,
checkpointing, optimizer); what the old estimator could not express (pure bf16, bf16 adapters, offloading, chunked
losses) it estimates as if absent, which is what a user of that version got. Throughput: the old relation,
dense peak x DEFAULT_EFFICIENCY[method] / executed FLOPs per token, with the old catalog's peak.
"""

import argparse
import json
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
TORCHTUNE_TARGETS = {"output_proj": "o_proj", "w1": "gate_proj", "w2": "down_proj", "w3": "up_proj"}
SAME_SHAPES = {"llama-3-8b": "Llama-3.1-8B", "mistral-7b-v0.2": "Mistral-7B"}
GPU_NAMES = {"a100 (80gb implied)": "A100-80GB", "a100 (memory size unstated)": "A100-80GB",
             "a100 (80gb implied by 70.4 gb)": "A100-80GB", "h100-80gb (sxm/pcie unstated)": "H100-SXM"}


def main() -> None:
    from advisor.catalog import load as catalog
    from advisor.formulas.flops import DEFAULT_EFFICIENCY, flops_per_token
    from advisor.formulas.memory import memory_per_gpu
    from advisor.core.convert import convert
    from advisor.formulas.setup import TrainingSetup

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=Path, default=HERE / "published" / "rows.yaml")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "published_before.json")
    parser.add_argument("--commit", default="c296a68")
    args = parser.parse_args()
    archs = {e["name"].lower(): convert(catalog.ModelArch, e)
             for e in yaml.safe_load((args.rows.parent / "archs.yaml").read_text())}
    out = {}
    for row in yaml.safe_load(args.rows.read_text()):
        if row["seq_len"] is None or row["micro_batch"] is None:
            continue
        name = SAME_SHAPES.get(row["model"].lower(), row["model"]).split(" (")[0]
        arch = archs.get(name.lower()) or catalog.get_model(name)
        targets = row["lora_targets"] or ("q_proj", "v_proj")
        if isinstance(targets, str):
            targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
        targets = tuple(TORCHTUNE_TARGETS.get(t, t) for t in targets if t != "output")
        parallel = row["parallelism"].lower()
        sharding = "auto" if row["gpus"] == 1 else ("ddp" if parallel.startswith("ddp") else "fsdp")
        opt = (row["optimizer"] or "adamw").lower()
        optimizer = ("paged-adamw-8bit" if opt.startswith("paged") else "adamw-8bit") if "8bit" in opt else "adamw"
        setup = TrainingSetup(arch=arch, method=row["method"], lora_rank=row["lora_rank"] or 16, lora_targets=targets,
                              seq_len=row["seq_len"], micro_batch=row["micro_batch"], gpus=row["gpus"],
                              sharding=sharding, gradient_checkpointing=bool(row["gradient_checkpointing"]),
                              optimizer=optimizer)
        entry = {"memory_gib": memory_per_gpu(setup).total}
        gpu = catalog.load("gpus").get(GPU_NAMES.get((row["gpu"] or "").lower(), row["gpu"] or "").lower())
        if gpu is not None:
            flops = flops_per_token(arch, row["seq_len"], row["method"], setup.trainable_params,
                                    setup.gradient_checkpointing).total
            entry["tokens_per_second"] = gpu.peak_flops * DEFAULT_EFFICIENCY[row["method"]] / flops
        out[row["id"]] = entry
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"commit": args.commit, "rows": out}, indent=1) + "\n")
    print(f"wrote {args.out} ({len(out)} rows)")


if __name__ == "__main__":
    main()
