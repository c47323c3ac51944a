"""The one place prefrec issues ``torch.distributed`` collectives.

Why: NCCL only moves CUDA tensors ("No backend type associated with device type cpu"), gloo
only CPU ones, and a mixed group ("cpu:gloo,cuda:nccl") picks by the tensor's device. Every
collective therefore runs on :func:`comm_device` -- the device the process group's backend
serves -- and the result is copied back into the caller's tensor wherever it lives. Callers keep
their tensors where they are convenient (CPU metric sums, device gradients) and never think about
the backend. tests/test_distributed_devices.py checks that no other module calls a collective.

Without an initialised process group (or with one process) every function is a no-op that
returns its input, so single-process code needs no branches.
"""

from __future__ import annotations

import os

import torch

__all__ = ["launched_processes", "refuse_under_launcher", "world_rank", "comm_device", "set_comm_device", "all_reduce_sum", "all_gather",
           "all_gather_autograd", "barrier"]

_OVERRIDE: torch.device | None = None


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def world_rank(group=None) -> tuple[int, int]:
    """``(world size, rank)`` of ``group``; ``(1, 0)`` without a process group."""
    dist = _dist()
    if dist is None:
        return 1, 0
    return dist.get_world_size(group), dist.get_rank(group)


def launched_processes() -> int:
    """How many processes a launcher (torchrun, ``accelerate launch``) started: ``WORLD_SIZE``."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def refuse_under_launcher(what: str) -> None:
    """Single-process trainers (CF, SASRec) under a multi-process launcher would run N copies into
    one run folder; stop every copy with the same clear message instead."""
    n = launched_processes()
    if n > 1:
        from prefrec.errors import ConfigError

        raise ConfigError(f"{what} runs in one process, but the launcher started {n} (WORLD_SIZE={n}); "
                          "every copy would train the same model into the same run folder", where="launcher",
                          fix=f"run `prefrec {what} ...` directly, without accelerate launch / torchrun "
                              "(the LM commands sft, dpo, sdpo, napo, recpo are the ones that use several processes)")


def set_comm_device(device: torch.device | str | None) -> None:
    """Pin the collective device (the training engine sets ``accelerator.device``); ``None``
    returns to reading it off the backend."""
    global _OVERRIDE
    _OVERRIDE = None if device is None else torch.device(device)


def _backend_devices(backend: str) -> list[str]:
    """Device types a backend string serves: "gloo" -> [cpu], "nccl" -> [cuda],
    "cpu:gloo,cuda:nccl" -> [cpu, cuda], "cuda:gloo" -> [cuda]."""
    out = []
    for part in (x.strip() for x in backend.split(",")):
        if ":" in part:
            out.append(part.split(":", 1)[0])
        else:
            out.append("cuda" if part == "nccl" else "cpu")  # gloo and mpi serve CPU tensors
    return out


def comm_device(group=None) -> torch.device:
    """The device collectives of ``group`` run on: the pinned one, else CPU when the backend
    serves CPU, else the current device of the first device type it serves."""
    if _OVERRIDE is not None:
        return _OVERRIDE
    dist = _dist()
    if dist is None:
        return torch.device("cpu")
    kinds = _backend_devices(str(dist.get_backend(group)))
    if "cpu" in kinds or not kinds:
        return torch.device("cpu")
    kind = kinds[0]
    index = torch.cuda.current_device() if kind == "cuda" and torch.cuda.is_available() else 0
    return torch.device(kind, index)


def all_reduce_sum(t: torch.Tensor, group=None) -> torch.Tensor:
    """Sum ``t`` over the ranks of ``group`` in place (on :func:`comm_device`) and return it."""
    dist = _dist()
    if dist is None or dist.get_world_size(group) == 1:
        return t
    dev = comm_device(group)
    buf = t if t.device == dev else t.to(dev)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=group)
    if buf is not t:
        t.copy_(buf)
    return t


def all_gather(t: torch.Tensor, group=None) -> list[torch.Tensor]:
    """Every rank's ``t`` (same shape on all ranks), on ``t``'s device; no gradient."""
    dist = _dist()
    if dist is None or dist.get_world_size(group) == 1:
        return [t]
    dev = comm_device(group)
    src = t.detach().contiguous().to(dev)
    parts = [torch.empty_like(src) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, src, group=group)
    return [p.to(t.device) for p in parts]


def all_gather_autograd(t: torch.Tensor, group=None) -> list[torch.Tensor]:
    """:func:`all_gather` whose outputs route gradients back to their owners (every rank must
    then run backward). ``t`` must live on :func:`comm_device` (it does on a real accelerator)."""
    dist = _dist()
    if dist is None or dist.get_world_size(group) == 1:
        return [t]
    from torch.distributed.nn.functional import all_gather as ag_autograd

    dev = comm_device(group)
    return [p.to(t.device) for p in ag_autograd(t.contiguous().to(dev), group=group)]


def barrier(group=None) -> None:
    """Wait for every rank (no-op alone)."""
    dist = _dist()
    if dist is not None and dist.get_world_size(group) > 1:
        dist.barrier(group=group)
