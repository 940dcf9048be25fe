"""Host memory the process no longer uses goes back to the OS at each CPU step's end (glibc's malloc_trim).

glibc keeps freed heap memory for reuse, so a CPU run's resident memory (RSS) climbs to the largest step's
allocations plus whatever fragments were left behind, and stays there between steps. malloc_trim(0) returns the free
pages of every arena (madvise(MADV_DONTNEED) since glibc 2.8), so each step starts from what is really alive (the RSS
after every step is in bench/speed.py's `rss_step_ends_gib`). The pages are faulted in again by the next step: that is
the cost, inside the step times bench/speed.py measures. On CUDA the tensors live in the caching
allocator, not malloc, so nothing is done; off glibc (macOS, musl) neither.
"""

import ctypes
import ctypes.util
import functools


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
