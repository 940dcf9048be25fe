"""Measurements the estimators are checked against: bytes autograd keeps for backward, per layer and token."""

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


def saved_activation_bytes(model, input_ids: torch.Tensor, autocast_dtype: torch.dtype | None = torch.bfloat16) -> int:
    """Bytes of distinct tensor storages autograd saves during one forward with labels (parameters excluded).

    This is what stays alive from forward to backward: the activation memory of a step, measured exactly on
    any device (here, the CPU) through torch.autograd.graph.saved_tensors_hooks.
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    device = input_ids.device.type
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast(device, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            model(input_ids=input_ids, labels=input_ids, use_cache=False)
    return sum(seen.values())


def activation_bytes_per_layer_token(build, hidden: int, intermediate: int, heads: int, kv_heads: int, tokens: int = 256,
                                     batch: int = 4, autocast_dtype: torch.dtype | None = torch.bfloat16) -> float:
    """Per-layer, per-token saved bytes: the difference between a 3-layer and a 1-layer model, so embedding,
    final norm and LM head cancel out. `build(config) -> model` adds adapters or not."""
    from transformers import LlamaConfig
    totals = []
    for layers in (1, 3):
        torch.manual_seed(0)
        config = LlamaConfig(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                             num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=64,
                             attn_implementation="sdpa", use_cache=False)
        model = build(config)
        ids = torch.randint(0, 64, (batch, tokens))
        totals.append(saved_activation_bytes(model, ids, autocast_dtype))
    return (totals[1] - totals[0]) / 2 / (tokens * batch)


def lora_builder(targets, rank: int = 8, dropout: float = 0.0, dtype: torch.dtype = torch.bfloat16):
    """A `build` for activation_bytes_per_layer_token: bf16 base, peft LoRA adapters (fp32), train mode."""
    def build(config):
        from peft import LoraConfig, get_peft_model
        from transformers import LlamaForCausalLM
        model = LlamaForCausalLM(config).to(dtype)
        if targets:
            model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, lora_dropout=dropout))
        return model.train()
    return build


def qlora_builder(targets, rank: int = 8, upcast: bool = False):
    """A `build` for activation_bytes_per_layer_token as the runner builds QLoRA: the bf16 model saved, reloaded
    in NF4 with double quantisation, frozen, LoRA on top; the unquantised parameters stay bf16 as in
    runners.model.attach_adapters (`upcast`: peft's prepare_model_for_kbit_training casts them to fp32)."""
    def build(config):
        import tempfile

        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig, LlamaForCausalLM
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.bfloat16)
        with tempfile.TemporaryDirectory() as folder:
            LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
            model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=quant, dtype=torch.bfloat16,
                                                         device_map={"": "cpu"})
        if upcast:
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        return get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(targets))).train()
    return build


class LiveBytes(TorchDispatchMode):
    """Peak bytes of the storages that ops create while the mode is active (parameters and inputs excluded),
    tracked on any device: each new storage counts until the last tensor holding it is garbage."""

    def __init__(self):
        super().__init__()
        self.refs: dict[int, int] = {}
        self.size: dict[int, int] = {}
        self.current = self.peak = 0

    def _release(self, key: int) -> None:
        self.refs[key] -= 1
        if self.refs[key] == 0:
            self.current -= self.size.pop(key)
            del self.refs[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {a.untyped_storage().data_ptr() for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)}
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
                continue
            key = tensor.untyped_storage().data_ptr()
            if key == 0 or (key not in self.refs and key in inputs):  # a view or in-place result: no new memory
                continue
            if key not in self.refs:
                self.refs[key], self.size[key] = 0, tensor.untyped_storage().nbytes()
                self.current += self.size[key]
                self.peak = max(self.peak, self.current)
            self.refs[key] += 1
            weakref.finalize(tensor, self._release, key)
        return out


def step_peak_bytes(model, input_ids: torch.Tensor, autocast_dtype: torch.dtype | None = torch.bfloat16) -> int:
    """Peak bytes allocated during one forward and backward with labels: activations, logits and gradients
    (weights and optimizer state are allocated before the step and not counted)."""
    mode = LiveBytes()
    with mode:
        with torch.autocast(input_ids.device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            out = model(input_ids=input_ids, labels=input_ids, use_cache=False)
        out.loss.backward()
    return mode.peak
