"""A run folder belongs to one run: the rules every trainer (train-cf, SASRec, SFT, preference,
``prefrec run`` stages) applies to the folder it writes.

Why one module: a folder that mixes two runs (another run's checkpoints resumed, two processes
writing at once, a resume under a changed config) gives a result that looks fine and is wrong.
The rules:

* **One process at a time.** :func:`claim` holds an exclusive ``flock`` on ``<run>/.lock`` for
  the run's life; the file records pid, host and start time so a refused second process is told
  who holds it. The kernel drops the lock when its holder dies (even by SIGKILL), so a stale
  lock file is simply taken over: no pid guessing, no manual cleanup.
* **A fresh run never reuses a folder holding another run** (checkpoints, metrics, weights,
  summary): :func:`check_start` refuses it; ``--overwrite`` (:func:`move_aside`) first renames
  the old run to a timestamped sibling ``<run>.old-<UTC time>``, never deletes it.
* **--resume verifies the stored config**: every key that differs from ``config.yaml`` is listed
  and the resume refused, except keys in :data:`SAFE_ON_RESUME` (e.g. more CF epochs: Adam
  has no schedule there; more LM steps, the LR schedule re-planned with a warning; thread
  counts; logging). Trainers verify the data fingerprint.
* **Resume falls back** to the newest checkpoint that loads (:func:`restore_newest`).
* **Temp files of interrupted writes** (``.tmp-*`` folders, ``.<name>.*.tmp`` files) are
  removed when a run claims its folder; **a refused or failed-at-start run leaves no folder**.
* **Names cannot leave output_dir** (:func:`check_name`, :func:`child`).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from prefrec.errors import ConfigError, DataError, PrefrecError

log = logging.getLogger(__name__)
T = TypeVar("T")

LOCK = ".lock"
RUN_MARKERS = ("checkpoints", "metrics.jsonl", "best.safetensors", "summary.json", "final", "results.json",
               "report.md")
"""Entries that mean "a run wrote here" (``config.yaml`` alone is not a run: nothing trained)."""

REPLAN = ("a longer run continues from the checkpoint with the LR schedule re-planned over the new total "
          "(the steps already taken followed the old plan, so the result differs from a run planned that long "
          "from the start); a total below the checkpoint's step is refused")

SAFE_ON_RESUME: dict[str, dict[str, str]] = {
    "cf": {
        "train.epochs": "more (or fewer) epochs continue the same run: CF training has no LR schedule; "
                        "fewer epochs than the checkpoint is refused",
        "train.threads": "thread count", "train.progress": "progress bar", "train.eval_chunk": "evaluation memory",
        "train.keep_checkpoints": "checkpoint retention", "train.checkpoint_every": "checkpoint frequency",
    },
    "lm": {
        "threads": "thread count", "logging_steps": "logging", "plots": "plots",
        "per_device_eval_batch_size": "evaluation batching", "save_total_limit": "checkpoint retention",
        "data_dir": "where the data is read (the data fingerprint is verified instead)",
        "max_steps": REPLAN, "num_train_epochs": REPLAN,
    },
}
"""Config keys a ``--resume`` may change, per trainer kind, and why each is safe (logged when used)."""

IGNORED_ON_RESUME = ("name", "output_dir", "run_dir")
"""Where the run lives is not part of what it computes (a moved folder can be resumed)."""

_HELD: dict[Path, RunLock] = {}


# ----------------------------------------------------------------------------- names
def check_name(name: str, key: str) -> str:
    """A run/study/stage/preset name is one folder name: no separators, not '.', '..' or hidden."""
    bad = (not name or name in (".", "..") or name.startswith(".") or "/" in name or "\\" in name
           or "\x00" in name or os.path.isabs(name) or len(name) > 200)
    if bad:
        raise ConfigError(f"{key} {name!r} is not a plain folder name (it would write outside output_dir)",
                          where=key, fix="use letters, digits, '-', '_', '.' (not starting with '.'), no '/'")
    return name


def child(root: str | Path, name: str, key: str) -> Path:
    """``root/name`` after :func:`check_name`, verified to resolve inside ``root``."""
    root = Path(root)
    path = root / check_name(str(name), key)
    if root.resolve() not in path.resolve().parents:
        raise ConfigError(f"{key} {name!r} resolves outside {root}", where=key, fix="use a plain folder name")
    return path


def check_folder(path: Path, key: str = "output_dir") -> None:
    """``path`` and every existing parent must be folders (``output_dir`` pointing at a file)."""
    for p in [path, *path.parents]:
        if p.exists() and not p.is_dir():
            raise ConfigError(f"{p} is a file, not a folder", where=key,
                              fix=f"set {key} to a folder path (or move the file away)")
        if p.exists():
            return


# ----------------------------------------------------------------------------- lock
class RunLock:
    """Exclusive ``flock`` on ``<run>/.lock`` (released by the kernel if the holder dies)."""

    def __init__(self, run: Path):
        self.run = run
        self.path = run / LOCK
        self.fd: int | None = None
        self.count = 0

    def acquire(self) -> None:
        import fcntl

        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except OSError as e:  # a symlink planted as .lock (ELOOP), a read-only folder, ...
                raise ConfigError(f"cannot open the run folder's lock file ({e.strerror or e})", where=str(self.path),
                                  fix="remove it if it is not a regular file, and check the folder is writable") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP):  # a filesystem without locks
                    log.warning("%s: this filesystem does not support locks; two runs into this folder at "
                                "once would not be refused", self.run)
                    break
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                raise ConfigError(f"another process is using this run folder ({_holder(self.path)})",
                                  where=str(self.run), fix="wait for it to finish, or write to another "
                                  "folder (a different name/output_dir)") from None
            # the holder may have unlinked the file between our open and flock: retry on the new one
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                          time.gmtime())}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self.fd)
        self.fd = None


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"pid {info['pid']} on {info['host']}, since {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


def _is_main() -> bool:
    """Rank 0 (or no distributed launch): only it owns the folder."""
    try:
        return int(os.environ.get("RANK", "0")) == 0
    except ValueError:
        return True


@contextlib.contextmanager
def claim(run: str | Path, key: str = "output_dir", main: bool | None = None,
          remove_unused: bool = True) -> Iterator[Path]:
    """Hold ``run`` for the block: lock it, clean temp files of interrupted writes; if the block
    fails before a run wrote anything (a refused start, a typo found while loading), remove the
    folder again when this claim created it (``remove_unused``). Re-entrant within a process (a study stage, a
    trainer called by a command that already claimed the folder)."""
    run = Path(run)
    main = _is_main() if main is None else main
    if not main:
        yield run
        return
    check_folder(run, key)
    real = run.resolve()
    held = _HELD.get(real)
    if held is not None:
        held.count += 1
        try:
            yield run
        finally:
            held.count -= 1
        return
    created = not run.exists()
    try:
        run.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the run folder ({e.strerror})", where=str(run),
                          fix=f"set {key} to a writable folder") from None
    lock = RunLock(run)
    try:
        lock.acquire()
    except BaseException:
        if created:
            shutil.rmtree(run, ignore_errors=True)
        raise
    _HELD[real] = lock
    lock.count = 1
    try:
        clean_temp(run)
        yield run
    except BaseException:
        if created and remove_unused and not holds_run(run):
            lock.release()
            shutil.rmtree(run, ignore_errors=True)
        raise
    finally:
        _HELD.pop(real, None)
        lock.release()


def holds_run_dir(path_of: Callable[..., str | Path]) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator form of :func:`claim` for a trainer: ``path_of(*args, **kwargs)`` is its folder."""
    def deco(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            with claim(path_of(*args, **kwargs)):
                return fn(*args, **kwargs)
        return wrapper
    return deco


def clean_temp(run: Path) -> list[Path]:
    """Remove what interrupted atomic writes left: ``.tmp-step-*`` (checkpoints), ``.tmp-final-*``
    (the saved LM), ``.<name>.*.tmp`` (files written by :func:`prefrec.safeio.atomic_write_bytes`)."""
    gone = []
    for folder in (run, run / "checkpoints", run / "final", run / "eval"):
        if not folder.is_dir() or folder.is_symlink():
            continue
        for p in folder.iterdir():
            if p.name.startswith(".tmp-") or (p.name.startswith(".") and p.name.endswith(".tmp")):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                gone.append(p)
    if gone:
        log.info("removed %d temp file(s) of interrupted writes in %s", len(gone), run)
    return gone


# ----------------------------------------------------------------------------- fresh / resume
def holds_run(run: str | Path) -> bool:
    run = Path(run)
    return run.is_dir() and any((run / m).exists() for m in RUN_MARKERS)


def move_aside(run: str | Path, suffix: str | None = None) -> Path | None:
    """Rename a folder holding a run to ``<run><suffix>`` (default ``.old-<UTC time>``; ``.1``,
    ``.2`` ... appended if taken): kept, never deleted; refused while another process holds it.
    ``--overwrite`` and ``prefrec run``'s stale stages use it. Returns the new path (None: nothing there)."""
    run = Path(run)
    check_folder(run)
    if not run.exists() or not any(run.iterdir()):
        return None
    with claim(run):
        base = run.with_name(run.name + (suffix or f".old-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"))
        target, n = base, 1
        while target.exists():
            target = base.with_name(f"{base.name}.{n}")
            n += 1
        run.rename(target)
    (target / LOCK).unlink(missing_ok=True)  # the claim's lock file moved with the folder
    log.warning("the previous run in %s was moved to %s", run, target)
    return target


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> ``{"a.b": value}`` (lists are values)."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: data}


def config_diff(old: dict, new: dict, kind: str) -> tuple[list[str], list[str]]:
    """(refused, allowed) lines ``key: old -> new`` between a stored and a new config."""
    a, b = flatten(old), flatten(new)
    safe = SAFE_ON_RESUME.get(kind, {})
    refused, allowed = [], []
    for k in sorted(set(a) | set(b)):
        if k in IGNORED_ON_RESUME or a.get(k, "<unset>") == b.get(k, "<unset>"):
            continue
        line = f"{k}: {a.get(k, '<unset>')!r} -> {b.get(k, '<unset>')!r}"
        (allowed if k in safe else refused).append(line)
    return refused, allowed


def check_start(run: str | Path, config: dict, *, resume: bool, kind: str) -> None:
    """Before a run writes anything: a fresh run refuses a folder holding another run; a resume
    refuses a config that differs from the stored ``config.yaml`` in keys not safe to change."""
    run = Path(run)
    if not resume:
        if holds_run(run):
            raise ConfigError(f"{run} already holds a run ({', '.join(m for m in RUN_MARKERS if (run / m).exists())})",
                              where="output_dir", fix="pass --resume to continue it, --overwrite to move it "
                              "aside (kept as <folder>.old-<time>), or choose another name/output_dir")
        return
    stored = run / "config.yaml"
    if not stored.exists():
        return
    import yaml

    try:
        old = yaml.safe_load(stored.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as e:
        raise DataError(f"the stored config cannot be read ({type(e).__name__})", where=str(stored),
                        fix="restore it, or start a new run with --overwrite") from None
    if not isinstance(old, dict):
        raise DataError("the stored config is not a mapping", where=str(stored),
                        fix="restore it, or start a new run with --overwrite")
    refused, allowed = config_diff(old, config, kind)
    if refused:
        shown = "; ".join(refused[:8]) + (f"; ... {len(refused) - 8} more" if len(refused) > 8 else "")
        raise ConfigError(f"--resume with a changed config: {shown}", where=str(stored),
                          fix="resume with the stored settings (keys safe to change: "
                          + (", ".join(SAFE_ON_RESUME.get(kind, {})) or "none")
                          + "), or start a new run (--overwrite or another name)")
    safe = SAFE_ON_RESUME.get(kind, {})
    for line in allowed:
        log.warning("resume with %s: %s", line, safe[line.split(":", 1)[0]])


def check_resumed_step(step: int, total: int, key: str = "max_steps / num_train_epochs") -> None:
    """A checkpoint past the planned total cannot be resumed (the run would end without training
    and report a summary without training metrics)."""
    if step > total:
        raise ConfigError(f"the checkpoint is at step {step}, after the {total} steps the config plans", where=key,
                          fix=f"resume with at least {step} steps (or the original settings)")


def restore_newest(root: str | Path, restore: Callable[[Path], T]) -> tuple[Path, T] | None:
    """``restore(folder)`` on the newest complete checkpoint under ``root`` that loads; a corrupt
    one is skipped with a warning. None if there is no checkpoint; an error if none loads."""
    from prefrec.checkpoint import COMPLETE

    root = Path(root)
    found = [p for p in sorted(root.glob("step-*"), reverse=True) if (p / COMPLETE).exists()] if root.is_dir() else []
    if not found:
        return None
    last: BaseException | None = None
    for ck in found:
        try:
            return ck, restore(ck)
        except PrefrecError:  # a check of the trainer (other config/data): not corruption
            raise
        except Exception as e:  # noqa: BLE001 - every way a file can be torn or foreign
            last = e
            log.warning("checkpoint %s cannot be loaded (%s: %s); trying an older one", ck, type(e).__name__,
                        one_line(e))
    raise DataError(f"none of the {len(found)} checkpoint(s) can be loaded (last: {type(last).__name__}: "
                    f"{one_line(last)})", where=str(root),
                    fix="start the run afresh with --overwrite (the folder is kept aside), or fix the config "
                    "if it no longer matches the checkpoint (model sizes)")


def one_line(e: object, n: int = 200) -> str:
    """An exception's text on one line, cut to ``n`` characters (messages are one paragraph)."""
    t = " ".join(str(e).split())
    return t if len(t) <= n else t[:n] + "..."


def read_jsonl(path: str | Path) -> list[dict]:
    """Rows of a metrics log; a torn LAST line (a kill mid-write) is dropped with a warning, a bad
    line elsewhere is an error naming it."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (UnicodeDecodeError, OSError) as e:
        raise DataError(f"cannot read the metrics log ({type(e).__name__})", where=str(path),
                        fix="delete the file (its rows are rewritten from the checkpoint on resume)") from None
    rows = []
    for i, ln in enumerate(lines, 1):
        if not ln.strip():
            continue
        try:
            row = json.loads(ln)
            if not isinstance(row, dict):
                raise ValueError("not an object")
        except ValueError:
            if i == len(lines):
                log.warning("%s, line %d: torn last line dropped", path, i)
                continue
            raise DataError("not a JSON object", where=f"{path}, line {i}",
                            fix="delete that line (or the file) and resume again") from None
        rows.append(row)
    return rows


def keep_rows(path: str | Path, keep: Callable[[dict], bool]) -> None:
    """Rewrite a metrics log with the rows ``keep`` accepts (on resume: drop rows after the checkpoint)."""
    from prefrec.checkpoint import atomic_write_text

    rows = [r for r in read_jsonl(path) if keep(r)]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def finished_summary(run: str | Path, step: int) -> dict | None:
    """The ``summary.json`` of a run that already finished at ``step`` (resuming it again is a
    no-op that returns the stored result, not a summary with empty training metrics)."""
    p = Path(run) / "summary.json"
    try:
        s = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return s if isinstance(s, dict) and s.get("steps") == step and s.get("train") else None


def overwrite_if_asked(args: Any, run: str | Path) -> None:
    """The commands' ``--overwrite``: move a previous run aside (rank 0 only) before training."""
    if getattr(args, "overwrite", False) and _is_main():
        if getattr(args, "resume", False):
            raise ConfigError("--overwrite and --resume contradict each other", where="command line",
                              fix="--resume continues the run in the folder; --overwrite starts a new one")
        move_aside(run)
