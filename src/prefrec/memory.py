"""Process memory knobs for CPU training: keep freed tensor buffers from inflating peak RSS.

Why: glibc's malloc serves allocations above ``M_MMAP_THRESHOLD`` (128 KiB at start) with
``mmap`` and returns them to the OS on ``free``, but after the first large ``free`` it raises
that threshold dynamically (up to 32 MiB), so later activation and temporary buffers come from
the heap, where freed space is kept and fragmented. ``bench/sft_memory.py`` measured what that
costs an SFT step of SmolLM2-135M (batch 8 x 213 tokens, one thread): with gradient
checkpointing the step's peak RSS above its start was 2,983 MiB under the default malloc and
777 MiB with a fixed 64 KiB threshold (``MALLOC_MMAP_THRESHOLD_=65536``). :func:`tune_malloc`
sets the same thresholds from inside the process (``mallopt``), which also turns the dynamic
adjustment off. Elsewhere (macOS, Windows, musl) it does nothing. The price is system time (every
large buffer is a fresh ``mmap``): the README's SFT smoke run with gradient checkpointing went from
7.37 to 1.45 GiB peak RSS and from 131 to 265 CPU-seconds (docs/results_lm_speed.md, section 4).
Not called by default: the training engine decides (a proposal in that page).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def tune_malloc(threshold: int = 64 * 1024) -> bool:
    """Fix glibc's mmap and trim thresholds at ``threshold`` bytes; True when glibc accepted them."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, threshold) == 1 and mallopt(M_TRIM_THRESHOLD, threshold) == 1
