"""Merge a trained adapter into its 16-bit base model and save the result as safetensors."""

from pathlib import Path

import torch

from advisor.plan.recipe import Recipe


def merge_adapter(recipe: Recipe, adapter_dir: Path, out_dir: Path, cache_root: Path) -> None:
    """Load the base unquantised on the CPU (a 4-bit base cannot hold merged weights exactly), apply the adapter,
    merge it (W + alpha/r B A) and save the plain model: in float32 when the run trained in float32, else bfloat16."""
    from peft import PeftModel

    from runners.model import load_model
    from runners.tokenizer import load_tokenizer
    dtype = "float32" if recipe.model.dtype == "float32" or not torch.cuda.is_available() else "bfloat16"
    plain = recipe.model_copy(update={"quant": None, "model": recipe.model.model_copy(update={"dtype": dtype})})
    base = load_model(plain, torch.device("cpu"), cache_root, recipe.train.seed)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    tokenizer = load_tokenizer(recipe)
    merged.generation_config = generation_config(merged, tokenizer)
    merged.config.use_cache = True  # for inference; training turned it off
    merged.save_pretrained(str(tmp), safe_serialization=True)  # weights, config.json, generation_config.json
    tokenizer.save_pretrained(str(tmp))  # so AutoTokenizer.from_pretrained(merged) and pipelines work from the folder
    from runners.io import atomic_replace_dir
    from runners.rundir import mark_output
    mark_output(tmp, out_dir.parent)  # the run's id: merged/ is replaced only by a run that wrote it (runners.rundir)
    atomic_replace_dir(tmp, out_dir)


def generation_config(model, tokenizer):
    """The merged model's generation defaults: the model's own, with the tokenizer's bos, eos and pad ids."""
    from transformers import GenerationConfig
    config = model.generation_config if getattr(model, "generation_config", None) is not None else GenerationConfig()
    config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    return config
