"""Shared helpers for runner tests: reload a trained adapter and evaluate it the way the runner does."""

import json
from pathlib import Path

import torch

from advisor.plan.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"


def train_tiny_lora(out: Path, steps: int) -> Path:
    """The tiny LoRA recipe trained for `steps` steps into `out` (no checkpoints, no eval during training): the run
    the eval tests score."""
    from advisor.cli import main
    assert main(["run", str(RECIPES / "tiny-cpu-lora.yaml"), "--out", str(out), "--set", f"train.max_steps={steps}",
                 "--set", "train.warmup_steps=5", "--set", "train.checkpoint_every=0", "--set", "train.eval_every=0"]) == 0
    return out


def metrics(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]


def train_losses(out_dir: Path) -> list[float]:
    return [m["loss"] for m in metrics(out_dir) if "loss" in m]


def reload_eval_loss(out_dir: Path) -> float:
    """Base model rebuilt from the recipe + the saved adapter via PeftModel.from_pretrained, evaluated on the
    run's validation split with the runner's own evaluate()."""
    from peft import PeftModel

    from runners.prepare import build_dataset
    from runners.distributed import DistContext
    from runners.model import compute_dtype, load_model
    from runners.environment import cache_root
    from runners.tokenizer import load_tokenizer
    from runners.train import evaluate

    recipe = load_recipe(Path(out_dir) / "recipe.resolved.yaml")
    device = torch.device("cpu")
    tokenizer = load_tokenizer(recipe)
    data = build_dataset(recipe, tokenizer, cache_root())
    base = load_model(recipe, device, cache_root(), recipe.train.seed)
    model = PeftModel.from_pretrained(base, str(Path(out_dir) / "adapter"))
    ctx = DistContext(rank=0, local_rank=0, world_size=1, device=device)
    return evaluate(model, data, recipe, ctx, tokenizer.pad_token_id, compute_dtype(recipe, device))


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under a folder and its bytes (the lock file's holder line aside: it is ours and says who holds it)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*"))
            if p.is_file() and p.name != ".rightsize-lock"}


def one_line_error(code, err, *needles):
    """A refusal as the product promises it: exit code 2, one `advisor: error:` line, no traceback, naming each needle."""
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and err.startswith("advisor: error: "), err
    for needle in needles:
        assert needle in err, (needle, err)
