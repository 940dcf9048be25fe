"""The option a recommendation chose, written as a recipe (`advisor recommend --recipe-out`): what the costing assumed,
spelled as recipe keys, with the estimate it was chosen on in the recipe's `plan` section."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import yaml
from pydantic import ValidationError

import advisor
from advisor.catalog import load as catalog
from advisor.core.errors import AdvisorError
from advisor.decide.costing import Option
from advisor.formulas.setup import TrainingSetup
from advisor.plan.recipe import RUN_NAME_MAX, Recipe, describe_validation_error
from advisor.plan.recipe_sections import DATA_PLACEHOLDER

# GPUs one node holds: an HGX/DGX baseboard's 8 (A100, H100, H200, B200, MI300X nodes), the most in any node the GPU
# catalog describes. A plan on more GPUs spans ceil(gpus / 8) nodes; costing's GPU counts are powers of two, so the
# nodes are full.
GPUS_PER_NODE = 8

# A run that is requeued (Slurm) or preempted (spot) redoes the steps since its last checkpoint: save every this many
# optimizer steps, as the GPU recipes shipped in recipes/ do.
CHECKPOINT_EVERY_STEPS = 200

HEADER = """\
# Written by `advisor {command} --recipe-out`: the LoRA/QLoRA plan it costed, as a recipe. The `plan` section records
# the estimate it was chosen on: `advisor estimate` costs plan.tokens, `advisor launch` sets the job's time limit from
# plan.gpu_hours_high. micro_batch 1 and grad_accum 1 are what the estimate assumed; change them and re-estimate.
"""


def node_layout(gpus: int, per_node: int = GPUS_PER_NODE) -> tuple[int, int]:
    """(processes per node, nodes) for `gpus` GPUs: one node up to `per_node`, else full nodes of `per_node`."""
    if gpus <= per_node:
        return gpus, 1
    return per_node, math.ceil(gpus / per_node)


def recipe_name(model: str, method: str) -> str:
    """A run name from the model and method (`Llama-3.1-8B-lora`): characters a run folder may not have become '-'."""
    name = re.sub(r"[^A-Za-z0-9._+-]+", "-", f"{model}-{method}").strip("-._+") or "plan"
    return name[:RUN_NAME_MAX]


def data_path(data: str, recipe_dir: Path) -> str:
    """--data as the recipe names it: relative to the recipe's folder (recipes resolve data paths from there), so a
    folder copied to a cluster or a SkyPilot workdir keeps the two together."""
    return os.path.relpath(Path(data).expanduser().resolve(), Path(recipe_dir).expanduser().resolve())


def planned_recipe(option: Option, seq_len: int, epochs: float, base_model: str, chosen_by: str, data: str | None,
                   recipe_dir: Path = Path(".")) -> Recipe:
    """The option as a validated recipe: the model's hub id (or `base_model`'s folder when it is a local
    config.json), LoRA (or QLoRA) as the costing assumed it, the sequence length and epochs it was costed with, the
    decided sharding and checkpointing, GPU type and layout, and the estimate in `plan`. A tier the runner does not
    train (API, full fine-tune, pretraining) or a plan that fits no GPU count is refused in one line."""
    if option.tier != "peft" or option.method not in ("lora", "qlora"):
        raise AdvisorError(f"--recipe-out: the chosen option is {option.method} ({option.tier}); a recipe describes a "
                           "LoRA or QLoRA fine-tune, which is what the runner trains", flag="--recipe-out")
    if option.gpus < 1 or option.gpu is None or not math.isfinite(option.gpu_hours):
        raise AdvisorError(f"--recipe-out: the {option.method} plan fits no GPU count here ({option.note})",
                           flag="--recipe-out")
    arch, gpu = catalog.get_model(option.model), catalog.get_gpu(option.gpu)
    model_name = arch.hub_id or (base_model if Path(base_model).exists() else None)
    if model_name is None:
        raise AdvisorError(f"--recipe-out: {arch.name} has no hub id in the model catalog: give --base-model as a hub "
                           "id or a local model folder", flag="--recipe-out")
    if Path(model_name).name == "config.json":
        model_name = str(Path(model_name).resolve().parent)
    defaults = TrainingSetup(arch=arch)  # advisor.decide.costing costs TrainingSetup's defaults: spelled out here
    per_node, nodes = node_layout(option.gpus)
    half = "bfloat16" if gpu.bf16 else "float16"  # advisor.plan.sizing.bf16_conflict: fp16 where bf16 is absent
    raw: dict = {
        "name": recipe_name(arch.name, option.method),
        "model": {"name": model_name, "dtype": half},
        "lora": {"r": defaults.lora_rank, "alpha": 2 * defaults.lora_rank, "dropout": defaults.lora_dropout,
                 "targets": "all-linear"},
        **({"quant": {"compute_dtype": half}} if option.method == "qlora" else {}),
        "data": {"path": data_path(data, recipe_dir) if data else DATA_PLACEHOLDER,
                 "seq_len": min(seq_len, arch.max_position_embeddings)},
        "train": {"epochs": epochs, "micro_batch": defaults.micro_batch, "grad_accum": defaults.grad_accum,
                  "gradient_checkpointing": bool(option.gradient_checkpointing), "fused_loss": defaults.fused_loss,
                  "checkpoint_every": CHECKPOINT_EVERY_STEPS},
        "launch": {"gpu": gpu.name, "nproc_per_node": per_node, "nnodes": nodes,
                   "strategy": option.sharding if option.sharding in ("ddp", "fsdp") else "auto",
                   "cpu_offload": bool(option.cpu_offload)},
        "plan": {"chosen_by": chosen_by, "advisor_version": advisor.__version__, "gpu": gpu.name, "gpus": option.gpus,
                 "nodes": nodes, "tokens": option.tokens, "gpu_hours": option.gpu_hours,
                 "gpu_hours_low": option.gpu_hours_low, "gpu_hours_high": option.gpu_hours_high,
                 "memory_gib_per_gpu": option.memory_gib_per_gpu, "cost_usd": option.cost_usd},
    }
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        raise AdvisorError(describe_validation_error(exc, "--recipe-out"), flag="--recipe-out") from None


def recipe_text(recipe: Recipe, command: str) -> str:
    """The recipe as YAML (yaml.safe_dump: every value quoted as YAML needs) under a fixed comment header; only the keys
    the plan sets, the rest at their defaults (docs/recipe.md)."""
    keys = {"name", "model", "lora", "quant", "data", "train", "launch", "plan"}
    chosen = {"model": {"name", "dtype"}, "lora": {"r", "alpha", "dropout", "targets"}, "quant": {"compute_dtype"},
              "data": {"path", "seq_len"},
              "train": {"epochs", "micro_batch", "grad_accum", "gradient_checkpointing", "fused_loss",
                        "checkpoint_every"},
              "launch": {"gpu", "nproc_per_node", "nnodes", "strategy", "cpu_offload"}}
    include = {k: chosen.get(k, True) for k in keys}
    dumped = recipe.model_dump(mode="json", include=include, exclude_none=True)
    return HEADER.format(command=command) + yaml.safe_dump(dumped, sort_keys=False, allow_unicode=True)


def check_recipe_out(path: Path, overwrite: bool) -> None:
    """--recipe-out replaces an existing file only with --overwrite, and is a file path."""
    if path.is_dir():
        raise AdvisorError(f"--recipe-out {path} is a directory: give a file path such as plan.yaml", flag="--recipe-out")
    if path.exists() and not overwrite:
        raise AdvisorError(f"--recipe-out {path} exists: choose another path, or pass --overwrite to replace it",
                           flag="--recipe-out")
