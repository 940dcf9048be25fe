"""Host memory on the CPU: the `train.host_memory: release` policy (large tensors get their own mappings, freed
memory goes back to the OS at each step's end: glibc's mallopt and malloc_trim), and, always, a 4-bit model letting
go of its memory-mapped checkpoint.

glibc keeps freed heap memory for reuse, so a CPU run's resident memory (RSS) climbs to the largest step's
allocations plus whatever fragments were left behind, and stays there between steps. malloc_trim(0) returns the free
pages of every arena (madvise(MADV_DONTNEED) since glibc 2.8), so each step starts from what is really alive (the RSS
after every step is in bench/speed.py's `rss_step_ends_gib`). The pages are faulted in again by the next step. A
fixed mmap threshold of CPU_MMAP_THRESHOLD_BYTES gives every tensor at least that large its own mapping, returned to
the OS when the tensor is freed (mallopt(3): "M_MMAP_THRESHOLD ... disables dynamic adjustment"), and each mapping
costs page faults on first touch. Both trade speed for resident memory; neither makes a step faster.

Measured (bench/speed.py, identical batches, our runner with the policy against without it, bench/README.md): the
policy made steps slower and lowered the peak RSS by a few percent, so it is off by default (`allocator`, the recipe
default) and kept as a setting for CPU runs that are short of memory. On CUDA the tensors live in the caching
allocator, not malloc, so nothing is done; off glibc (macOS, musl) neither.
"""

import ctypes
import ctypes.util
import functools
import os

M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
# Policy (with train.host_memory: release): tensors of 8 MiB and more are mmapped on the CPU; a user's own
# MALLOC_MMAP_THRESHOLD_ wins.
CPU_MMAP_THRESHOLD_BYTES = 8 * 2**20


@functools.cache
def _glibc():
    """The C library if it is glibc (it has malloc_trim), else None."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "gnu_get_libc_version") else None
    except OSError:
        return None


def release_freed_host_memory(device_type: str) -> bool:
    """Policy: after each optimizer step on the CPU, hand malloc's free pages back to the OS (glibc only). Returns
    whether memory was trimmed."""
    libc = _glibc() if device_type == "cpu" else None
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def map_large_host_tensors(device_type: str) -> bool:
    """Policy: on the CPU (glibc), allocations of CPU_MMAP_THRESHOLD_BYTES and more get their own mappings, so a
    freed activation or gradient leaves the process instead of fragmenting the heap; not where the user set
    MALLOC_MMAP_THRESHOLD_ themselves. Returns whether the threshold was set."""
    libc = _glibc() if device_type == "cpu" else None
    if libc is None or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, CPU_MMAP_THRESHOLD_BYTES))


def detach_from_checkpoint_file(model, device_type: str, quantized: bool) -> int:
    """Policy: after a 4-bit load on the CPU, copy the parameters and buffers that stayed in the compute dtype
    (embeddings, LM head, norms) out of the memory-mapped checkpoint, so the mapping closes.

    transformers loads safetensors through a memory map and, on the CPU, keeps every tensor it does not convert as a
    view of that map. After a 4-bit load those few views keep the whole file mapped, and with it every page the
    quantiser read: resident memory for weights the model holds only in 4-bit. Copying the unquantised tensors
    turns most of that file-backed memory into a smaller anonymous one (bench/README.md has the figures at the
    Qwen2.5-0.5B shape). A 16-bit model is left
    alone: there the map holds the weights themselves, once, and the kernel may drop its clean pages under pressure.
    The trade: the copies are anonymous memory the kernel cannot drop, where the map's pages were reclaimable; they
    are the embeddings and LM head every step reads, resident either way, while the quantiser's pages of the 16-bit
    weights (most of the map) were read once and, mapped, count against the process and its cgroup. On CUDA the
    tensors were copied to the device already. Returns the number of tensors copied."""
    if device_type != "cpu" or not quantized:
        return 0
    copied = 0
    for tensor in [*model.parameters(), *model.buffers()]:  # tied weights appear once
        if type(tensor).__name__ != "Params4bit":
            tensor.data = tensor.data.clone()
            copied += 1
    return copied
