"""Atomic checkpoints: safetensors for tensors, JSON for the rest, never pickle.

A checkpoint is a folder ``<dir>/step-<n>/`` holding ``weights.safetensors`` (model and
optimizer tensors, flattened by name) and ``state.json`` (step, epoch, RNG seeds, metrics...).
Every file is written to a temporary name and renamed, and the folder itself is renamed into
place last, so a kill at any moment leaves either the previous checkpoint or the new one,
never a torn one. ``latest_checkpoint`` finds the newest complete folder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from prefrec.safeio import atomic_write_bytes

COMPLETE = "state.json"


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def flatten_state(prefix: str, obj: Any, tensors: dict[str, torch.Tensor], meta: dict) -> Any:
    """Split a nested state (e.g. ``optimizer.state_dict()``) into tensors and a JSON skeleton."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[k if isinstance(k, (str, int)) else str(k),
                              flatten_state(f"{prefix}.{k}", v, tensors, meta)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [flatten_state(f"{prefix}.{i}", v, tensors, meta) for i, v in enumerate(obj)]
    return obj


def unflatten_state(skel: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skel, dict) and "__tensor__" in skel:
        return tensors[skel["__tensor__"]]
    if isinstance(skel, dict) and "__dict__" in skel:
        return {k: unflatten_state(v, tensors) for k, v in skel["__dict__"]}
    if isinstance(skel, list):
        return [unflatten_state(v, tensors) for v in skel]
    return skel


def save_checkpoint(root: str | Path, step: int, parts: dict[str, Any], state: dict[str, Any],
                    keep: int = 2) -> Path:
    """Save ``parts`` (name -> state_dict-like: model, optimizer, scheduler...) and JSON ``state``.

    Returns the checkpoint folder. Older checkpoints beyond ``keep`` are removed afterwards.
    """
    from safetensors.torch import save_file

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-step-"))
    try:
        tensors: dict[str, torch.Tensor] = {}
        skeleton = {name: flatten_state(name, obj, tensors, {}) for name, obj in parts.items()}
        # safetensors refuses shared storage; clone to be safe.
        save_file({k: v.clone() for k, v in tensors.items()}, str(tmp / "weights.safetensors"))
        (tmp / "skeleton.json").write_text(json.dumps(skeleton))
        atomic_write_text(tmp / COMPLETE, json.dumps({"step": step, **state}, indent=1, default=float))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in sorted(root.glob("step-*"))[:-keep] if keep > 0 else []:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(folder: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load (parts, state) written by :func:`save_checkpoint`."""
    from safetensors.torch import load_file

    folder = Path(folder)
    tensors = load_file(str(folder / "weights.safetensors"))
    skeleton = json.loads((folder / "skeleton.json").read_text())
    parts = {name: unflatten_state(s, tensors) for name, s in skeleton.items()}
    state = json.loads((folder / COMPLETE).read_text())
    return parts, state


def latest_checkpoint(root: str | Path) -> Path | None:
    """Newest complete checkpoint folder under ``root`` (incomplete temp folders are ignored)."""
    root = Path(root)
    if not root.exists():
        return None
    done = [p for p in sorted(root.glob("step-*")) if (p / COMPLETE).exists()]
    return done[-1] if done else None
