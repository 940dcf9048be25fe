"""fp32 adapters on a 16-bit base: autograd keeps each adapter input as its 16-bit source, not the fp32 copy.

peft runs LoRA in the adapter's dtype: `lora_A(x.to(float32))` on a bf16 (or fp16) base without autocast (the CPU
with model.dtype bfloat16, or a 4-bit base computing in bf16). lora_A's matmul saves its input for the weight's
gradient, so every adapted projection keeps an fp32 copy of its input from forward to backward: 4 bytes per element
where the source is 2, and q/k/v (and gate/up), which read the same input, each keep their own copy. Casting a bf16
or fp16 tensor to fp32 is exact, so saving the source and casting again in backward gives the same gradients bit for
bit, with half the bytes and one copy per distinct input (measured in tests/runners/test_upcast.py and bench/speed.py).
Under autocast (the GPU) peft's fp32 copy is cast back to bf16 before the matmul and is not what gets saved, so
nothing changes there.
"""

from contextlib import contextmanager

import torch

_SOURCE = "_rightsize_upcast_source"  # attribute on an fp32 copy naming the 16-bit tensor it was cast from
EXACT_UPCASTS = {(torch.bfloat16, torch.float32), (torch.float16, torch.float32)}


def _cast_input_dtype(self, x, dtype: torch.dtype):
    """peft's LoraLayer._cast_input_dtype, remembering the source of an exact upcast on the copy."""
    if x is None or not getattr(self, "cast_input_dtype_enabled", True) or x.dtype == dtype:
        return x
    y = x.to(dtype=dtype)
    if (x.dtype, dtype) in EXACT_UPCASTS and torch.is_grad_enabled():
        setattr(y, _SOURCE, x)
    return y


def keep_upcast_sources(model) -> int:
    """Make every peft LoRA layer of `model` mark its fp32 input copies (this instance only); returns how many."""
    import types

    from peft.tuners.lora import LoraLayer
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    for layer in layers:
        layer._cast_input_dtype = types.MethodType(_cast_input_dtype, layer)
    return len(layers)


def _pack(tensor: torch.Tensor):
    """A marked copy, or a whole contiguous view of one (nn.Linear saves its 3-D input flattened to 2-D), is kept as
    (source, dtype, shape); anything else as itself."""
    copy = tensor if hasattr(tensor, _SOURCE) else tensor._base
    source = getattr(copy, _SOURCE, None) if copy is not None else None
    if source is None or not (tensor.is_contiguous() and tensor.storage_offset() == 0 and tensor.numel() == source.numel()):
        return tensor
    return source, tensor.dtype, tensor.shape


def _unpack(packed):
    if isinstance(packed, tuple):
        source, dtype, shape = packed
        return source.to(dtype).view(shape)
    return packed


@contextmanager
def saved_as_source():
    """While active, a marked fp32 copy that autograd saves is stored as its 16-bit source (see the module)."""
    with torch.autograd.graph.saved_tensors_hooks(_pack, _unpack):
        yield
