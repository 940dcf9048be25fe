"""Merge a trained adapter into its 16-bit base model and save the result as safetensors."""

from pathlib import Path

import torch

from advisor.recipe import Recipe


def merge_adapter(recipe: Recipe, adapter_dir: Path, out_dir: Path, cache_root: Path) -> None:
    """Load the base unquantised on the CPU (a 4-bit base cannot hold merged weights exactly), apply the adapter,
    merge it (W + alpha/r B A) and save the plain model: in float32 when the run trained in float32, else bfloat16."""
    from peft import PeftModel

    from runners.model import load_model
    dtype = "float32" if recipe.model.dtype == "float32" or not torch.cuda.is_available() else "bfloat16"
    plain = recipe.model_copy(update={"quant": None, "model": recipe.model.model_copy(update={"dtype": dtype})})
    base = load_model(plain, torch.device("cpu"), cache_root, recipe.train.seed)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    merged.save_pretrained(str(tmp), safe_serialization=True)
    from runners.io import atomic_replace_dir
    atomic_replace_dir(tmp, out_dir)
