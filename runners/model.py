"""Models and adapters: the only place recipe fields become transformers / peft / bitsandbytes keywords."""

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from advisor.core.errors import AdvisorError
from advisor.formulas.params import is_all_linear
from advisor.plan.recipe import LoraSection, QuantSection, Recipe

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def notice(message: str) -> None:
    """A line the user should see (once, from rank 0), outside any logging configuration."""
    if os.environ.get("RANK", "0") == "0":
        print(f"advisor: note: {message}", file=sys.stderr, flush=True)


def compute_dtype(recipe: Recipe, device: torch.device) -> torch.dtype:
    """auto: bfloat16 on CUDA (float16 on GPUs without bf16), float32 on CPU."""
    if recipe.model.dtype != "auto":
        return DTYPES[recipe.model.dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def to_bnb_config(quant: QuantSection, storage_dtype: torch.dtype | None = None):
    """QuantSection -> transformers' BitsAndBytesConfig (4-bit). With FSDP the packed 4-bit weights are stored in
    a float dtype so FSDP can shard them (bnb_4bit_quant_storage)."""
    from transformers import BitsAndBytesConfig
    kwargs: dict[str, Any] = dict(load_in_4bit=True, bnb_4bit_quant_type=quant.quant_type, bnb_4bit_use_double_quant=quant.double_quant,
                  bnb_4bit_compute_dtype=DTYPES[quant.compute_dtype])
    if storage_dtype is not None:
        kwargs["bnb_4bit_quant_storage"] = storage_dtype
    return BitsAndBytesConfig(**kwargs)


def to_peft_config(lora: LoraSection):
    """LoraSection -> peft's LoraConfig for a causal LM."""
    from peft import LoraConfig
    # all-linear, or all seven Llama projection names (which it resolves to): peft's own all-linear, which on MoE and
    # Phi-3 models reaches their fused projections, experts and routers (advisor.formulas.params.lora_tensor_shapes)
    targets = "all-linear" if is_all_linear(lora.target_modules) else list(lora.target_modules)
    init = {"default": True, "gaussian": "gaussian", "pissa": "pissa", "olora": "olora"}[lora.init]
    # peft annotates lora_alpha as int, but scales by alpha / r and takes a float as well
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha,  # pyright: ignore[reportArgumentType]
                      lora_dropout=lora.dropout, target_modules=targets,
                      bias="none", task_type="CAUSAL_LM", use_rslora=lora.use_rslora, use_dora=lora.use_dora,
                      init_lora_weights=init, modules_to_save=list(lora.modules_to_save) or None)


def adapter_dtype(lora: LoraSection) -> torch.dtype:
    """lora.dtype -> the torch dtype of the trainable adapter tensors."""
    return DTYPES[lora.dtype]


def set_adapter_dtype(model, dtype: torch.dtype) -> None:
    """Cast every trainable tensor (the adapters, DoRA's magnitudes, modules_to_save) to `dtype`: peft otherwise
    upcasts adapters of a 16-bit base to fp32 and leaves those of a 4-bit base in the default dtype."""
    for param in model.parameters():
        if param.requires_grad and param.dtype != dtype:
            param.data = param.data.to(dtype)


def _hf_config(recipe: Recipe):
    from transformers import AutoConfig
    arch = recipe.model.resolve_arch()
    return AutoConfig.for_model(**arch.hf_config_dict())


def random_checkpoint(recipe: Recipe, dtype: torch.dtype, cache_root: Path, seed: int) -> Path:
    """A randomly initialised model saved once as safetensors, so the 4-bit loader can quantise it like real weights.
    Safe against concurrent callers: each writes its own temporary directory and the first rename wins."""
    import shutil

    from transformers import AutoModelForCausalLM
    config = _hf_config(recipe)
    key = hashlib.sha256(json.dumps([config.to_dict(), str(dtype), seed], sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = Path(cache_root) / "random-init" / key
    if not (path / "config.json").is_file():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        model.save_pretrained(tmp, safe_serialization=True)
        try:
            os.replace(tmp, path)  # atomic; fails if another process published it first
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def load_model(recipe: Recipe, device: torch.device, cache_root: Path, seed: int, fsdp: bool = False):
    """The base model on `device`: from the hub or a local path (safetensors only), or randomly initialised from
    an architecture (inline, or the catalog's for `random_init`); 4-bit NF4 when the recipe has `quant`."""
    from transformers import AutoModelForCausalLM
    dtype = compute_dtype(recipe, device)
    common = dict(dtype=dtype, attn_implementation=recipe.model.attn_implementation)
    random_model = recipe.model.arch is not None or recipe.model.random_init
    if recipe.model.trust_remote_code:
        notice(f"model.trust_remote_code is ON: code shipped with {recipe.model.name or 'the model'} will run")
    if recipe.quant is not None:
        source = random_checkpoint(recipe, dtype, cache_root, seed) if random_model else recipe.model.name
        model = AutoModelForCausalLM.from_pretrained(
            str(source), quantization_config=to_bnb_config(recipe.quant, dtype if fsdp else None),
            device_map={"": device}, use_safetensors=True, trust_remote_code=recipe.model.trust_remote_code, **common)
    elif random_model:
        torch.manual_seed(seed)
        with device:
            model = AutoModelForCausalLM.from_config(_hf_config(recipe), **common)
    else:
        assert recipe.model.name is not None, "ModelSection: a model without arch or random_init has a name"
        model = AutoModelForCausalLM.from_pretrained(
            recipe.model.name, device_map={"": device}, use_safetensors=True,
            trust_remote_code=recipe.model.trust_remote_code, **common)
    model.config.use_cache = False
    return model


def attach_adapters(model, recipe: Recipe, checkpointing: bool):
    """Freeze the base, enable checkpointing (the recipe's choice, `auto` resolved by the estimate), add LoRA adapters
    (whose fp32 input copies autograd saves as their 16-bit source, runners.upcast), fuse the loss. A 4-bit model keeps its unquantised parameters (embeddings, norms, LM head) in the compute dtype:
    peft's prepare_model_for_kbit_training would cast them to fp32, which costs memory for the same loss
    (bench/qlora_dtype.py, bench/results/qlora_dtype_cpu.json); with non-reentrant checkpointing it does nothing else
    the run needs (freezing is get_peft_model's, input gradients only matter to reentrant checkpointing)."""
    from peft import get_peft_model, prepare_model_for_kbit_training
    kwargs = {"use_reentrant": False}
    if recipe.quant is not None:
        for param in model.parameters():
            param.requires_grad_(False)
        if recipe.quant.unquantized_dtype == "float32":  # peft's upcast of the unquantised parameters, on request
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model = get_peft_model(model, to_peft_config(recipe.lora), autocast_adapter_dtype=recipe.lora.dtype == "float32")
    if recipe.lora.dtype != "float32":  # float32: peft's own choice, unchanged
        set_adapter_dtype(model, adapter_dtype(recipe.lora))
    from runners.upcast import keep_upcast_sources
    keep_upcast_sources(model)  # fp32 adapters on a 16-bit base: save the 16-bit input (train_step's saved_as_source)
    if recipe.train.fused_loss:
        from runners.loss import supports_fused_loss, use_fused_loss
        why_not = supports_fused_loss(model.get_base_model())
        if why_not is None:
            use_fused_loss(model.get_base_model())
        else:
            notice(f"train.fused_loss is off for this model: {why_not}")
    return model


def compile_layers(model) -> int:
    """Regional compilation: torch.compile every decoder layer in place (transformers' GradientCheckpointingLayer
    subclasses). The layers share one class and shapes, so one compiled graph serves them all, and the per-layer
    compile is cheaper and less fragile than compiling the whole model (PyTorch's "regional compilation" recipe).
    Returns the number of layers compiled."""
    from transformers.modeling_layers import GradientCheckpointingLayer
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    for layer in layers:
        layer.compile()
    return len(layers)


def check_vocab(model, tokenizer) -> None:
    size = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > size:
        raise AdvisorError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocabulary has {size}: "
                           "raise model.arch.vocab_size or pick the model's own tokenizer (model.tokenizer)")


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def total_parameters(model) -> int:
    """Parameters of the unquantised model: bitsandbytes packs two 4-bit weights per byte, so count them back."""
    total = 0
    for p in model.parameters():
        if type(p).__name__ == "Params4bit":
            total += p.quant_state.shape.numel() if getattr(p, "quant_state", None) is not None else p.numel() * 2
        else:
            total += p.numel()
    return total
