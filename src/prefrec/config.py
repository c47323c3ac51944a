"""Typed configuration: YAML file + dotted command-line overrides, unknown keys are errors.

Every command has a pydantic model (subclass of :class:`Config`). Layers, last wins:
model defaults -> YAML file (``--config``) -> ``key.sub=value`` overrides. The resolved config
is written into the run directory so a run can always be repeated.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from prefrec.errors import ConfigError
from prefrec.safeio import yaml_load

C = TypeVar("C", bound="Config")


class Config(BaseModel):
    """Base of every config section: unknown keys are rejected, values are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def _valid_keys(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def _submodel(model: type[BaseModel], key: str) -> type[BaseModel] | None:
    field = model.model_fields.get(key)
    if field is None:
        return None
    ann = field.annotation
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _check_keys(model: type[BaseModel], data: Any, prefix: str, source: str) -> None:
    """Walk ``data`` against ``model`` and raise on the first unknown key, naming the closest one."""
    if not isinstance(data, dict):
        return
    valid = _valid_keys(model)
    for key, value in data.items():
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.5)
            hint = f"did you mean {prefix + close[0]!r}?" if close else f"valid keys here: {', '.join(valid)}"
            raise ConfigError(
                f"unknown config key {prefix + str(key)!r}",
                where=source,
                fix=f"remove or rename it ({hint})",
            )
        sub = _submodel(model, key)
        if sub is not None:
            _check_keys(sub, value, f"{prefix}{key}.", source)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value``; the value is read as YAML (so ``1e-3``, ``true``, ``[1,2]`` work)."""
    if "=" not in text:
        raise ConfigError(
            f"cannot read the override {text!r}",
            where="command line",
            fix="write overrides as key=value, e.g. train.lr=0.01",
        )
    key, raw = text.split("=", 1)
    key = key.strip().lstrip("-")
    if not key:
        raise ConfigError(f"override {text!r} has no key", where="command line", fix="write key=value")
    try:
        value = yaml_load(raw, f"override {text!r}") if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, float) and raw.strip().lower() in {"nan", ".nan", "inf", ".inf"}:
        value = raw
    # YAML reads "1e-3" as a string; accept plain numbers written that way.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            pass
    return key.split("."), value


def _set_path(data: dict, path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[path[-1]] = value


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping with ``safe_load``; errors name the file and line."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file {str(p)!r} does not exist", where="--config",
                          fix="check the path (relative paths are from the current directory)")
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} is a folder, not a file", where="--config",
                          fix="give the path of a YAML file")
    try:
        if p.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"the config file is over {MAX_CONFIG_BYTES >> 20} MiB", where=str(p),
                              fix="a config is a short YAML file; check the path")
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError("the config file is not UTF-8 text", where=str(p),
                          fix="save it as UTF-8 YAML") from e
    except OSError as e:
        raise ConfigError(f"cannot read the config file ({e.strerror or e})", where=str(p),
                          fix="check the file's permissions") from None
    try:
        data = yaml_load(text, str(p))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        loc = f"{p}, line {mark.line + 1}" if mark is not None else str(p)
        raise ConfigError(f"invalid YAML ({getattr(e, 'problem', e)})", where=loc,
                          fix="check indentation and quoting on that line") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("the config file must be a YAML mapping (key: value lines)", where=str(p),
                          fix="start the file with top-level keys such as 'dataset:'")
    return data


MAX_CONFIG_BYTES = 16 << 20
SEED_MAX = 2**32 - 1
"""Seeds are 0..2**32-1: numpy's seeding range (torch takes more, numpy does not)."""


def check_seeds(data: Any, source: str, prefix: str = "") -> None:
    """Every ``seed`` / ``*_seed`` value must be an integer in 0..2**32-1 (``seed=-1`` and
    ``seed=2**70`` used to fail deep inside numpy/torch with a traceback)."""
    if isinstance(data, dict):
        for k, v in data.items():
            key = f"{prefix}{k}"
            if (str(k) == "seed" or str(k).endswith("_seed")) and isinstance(v, int) and not isinstance(v, bool) \
                    and not 0 <= v <= SEED_MAX:
                raise ConfigError(f"{key} = {v} is outside 0..{SEED_MAX}", where=source,
                                  fix=f"set {key} to a non-negative integer below 2**32")
            check_seeds(v, source, f"{key}.")


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict | None = None) -> C:
    """Build a validated ``cls`` from defaults, an optional YAML file and dotted overrides."""
    data: dict = json.loads(json.dumps(base)) if base else {}
    source = "config"
    if path is not None:
        source = str(path)
        _deep_update(data, read_yaml(path))
    _check_keys(cls, data, "", source)
    for text in overrides or []:
        keys, value = parse_override(text)
        probe: dict = {}
        _set_path(probe, keys, value)
        _check_keys(cls, probe, "", f"override {text!r}")
        _set_path(data, keys, value)
    check_seeds(data, source)
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise ConfigError(f"invalid value for {loc!r}: {err['msg']} (got {err.get('input')!r})",
                          where=source, fix=f"set {loc} to a valid value") from e


def _deep_update(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v)
        else:
            dst[k] = v


def dump_config(cfg: BaseModel, path: str | Path) -> None:
    """Write the resolved config as YAML (the file a run can be repeated from)."""
    from prefrec.checkpoint import atomic_write_text  # a kill never leaves a torn config.yaml

    atomic_write_text(path, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


def config_hash(cfg: BaseModel | dict, n: int = 12) -> str:
    """Stable short hash of a config (used to key caches and skip finished stages)."""
    data = cfg.model_dump(mode="json") if isinstance(cfg, BaseModel) else cfg
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:n]
