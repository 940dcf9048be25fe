"""Activation offloading (train.activation_offloading): tensors saved for backward wait in CPU memory."""

import contextlib

import torch

# Saved tensors smaller than this stay on the GPU: a copy's fixed cost outweighs what it frees (torchtune's
# OffloadActivations: min_offload_size=1024 bytes).
MIN_OFFLOAD_BYTES = 1024


def offload_saved_tensors(model: torch.nn.Module, device: torch.device, enabled: bool, force: bool = False):
    """A context for the forward: each tensor autograd saves goes to CPU memory (pinned on CUDA) and comes back to
    its device when backward unpacks it, as torchtune's OffloadActivations does with torch's saved_tensors_hooks
    (synchronous copies here, without its side streams). Parameters stay where they are. With checkpointing the only
    tensors saved outside the checkpointed layers are their inputs, so those are what moves. On a CPU device there is
    nothing to offload: a null context, unless `force` (tests: copies within host memory, same arithmetic)."""
    if not enabled or (device.type != "cuda" and not force):
        return contextlib.nullcontext()
    return SavedTensorsToHost(model, pin=device.type == "cuda")


class SavedTensorsToHost(torch.autograd.graph.saved_tensors_hooks):
    """The hooks of `offload_saved_tensors`; `moved_bytes` counts what went to host memory."""

    def __init__(self, model: torch.nn.Module, pin: bool):
        self.params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.pin, self.moved_bytes = pin, 0
        super().__init__(self.pack, self.unpack)

    def pack(self, tensor: torch.Tensor):
        size = tensor.numel() * tensor.element_size()
        if isinstance(tensor, torch.nn.Parameter) or tensor.untyped_storage().data_ptr() in self.params \
                or size < MIN_OFFLOAD_BYTES:
            return tensor
        host = torch.empty_like(tensor, device="cpu", pin_memory=self.pin)  # same strides (preserve_format)
        host.copy_(tensor)
        self.moved_bytes += size
        return tensor.device, host

    @staticmethod
    def unpack(packed):
        if isinstance(packed, torch.Tensor):
            return packed
        where, host = packed
        return host.to(where, non_blocking=True) if where.type != "cpu" else host


def offload_notices(activation_offloading: bool, cpu_offload: bool, device: torch.device) -> list[str]:
    """What a CPU run says about offloading it was asked for: on the CPU it moves nothing."""
    if device.type == "cuda":
        return []
    out = []
    if activation_offloading:
        out.append("train.activation_offloading: this run is on the CPU, where activations already live in host "
                   "memory; nothing is offloaded")
    if cpu_offload:
        out.append("launch.cpu_offload: this run is on the CPU; FSDP's CPU offload runs but moves nothing")
    return out
