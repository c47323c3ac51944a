"""One YAML file describes a study; :func:`run_experiment` runs it end to end.

Why: a comparison (MF with BPR vs SL vs PSL, an LM fine-tuned with SFT then S-DPO) is several
training stages plus an evaluation and a report. Writing that as one file makes the study
repeatable, and keying every stage by the hash of its resolved config (and of the stages it
depends on) lets a re-run skip what is already done: edit one loss's temperature and only that
run trains again; kill the study and the next ``prefrec run`` continues where it stopped.

Schema (``extra=forbid`` everywhere: an unknown key is an error naming the closest valid one)::

    name: demo                 # output goes to <output_dir>/<name>/
    output_dir: runs
    seed: 2024                 # one seed for every stage (a stage may not override it)
    cf:                        # optional: a grid of CF runs (backbones x losses)
      base: {...}              #   a prefrec.cf.config.CFConfig (data, model, loss, train)
      backbones: [mf]
      losses: [bpr, sl, psl]   #   labels; a label in `presets` applies its dotted overrides,
      presets: {psl: {loss.name: psl, loss.tau: 0.05}}   # otherwise it is the loss name
    lm:                        # optional: untuned -> SFT -> preference runs on a causal LM
      model: smollm2-135m      #   any HF id / local path / smollm2-135m
      dataset: ml-100k
      sft: {...}               #   a partial SFT config (prefrec.train.sft.SFTConfig)
      preference:              #   label -> partial preference config (prefrec.train.preference)
        sdpo: {loss: sdpo, num_negatives: 3}
      evaluate: {split: test, limit: 200, mode: both, base: true}
    report: {main_metric: NDCG@20, tensorboard: false}

Each stage writes into ``<output_dir>/<name>/<label>/`` and, when it finished, a
``stage.json`` holding its key; a stage whose ``stage.json`` key matches is skipped.
A stage folder whose key differs (the config changed) is renamed ``<label>@<old key>``, never
deleted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import Field

from prefrec.config import Config, config_hash, load_config
from prefrec.errors import ConfigError, PrefrecError
from prefrec.logtag import log_tag
from prefrec.study_lm import eval_intervals

log = logging.getLogger(__name__)

STAGE_FILE = "stage.json"


# ----------------------------------------------------------------------------- schema
def _cf_config_cls():
    from prefrec.cf.config import CFConfig

    return CFConfig


class CFStudy(Config):
    """A grid of CF runs sharing one base config."""

    base: dict[str, Any] = {}
    """A ``CFConfig`` as a mapping (data/model/loss/train); validated when the study loads."""
    backbones: list[str] = ["mf"]
    """``model.name`` values (mf, lightgcn, xsimgcl)."""
    losses: list[str] = ["bpr", "sl", "psl"]
    """Run labels: a key of ``presets`` or a loss name (``prefrec.train.cf.CF_LOSSES``: bpr, sl, sl_paper,
    psl, bsl, advinfonce, llpauc)."""
    presets: dict[str, dict[str, Any]] = {}
    """label -> dotted overrides, e.g. ``psl-relu: {loss.name: psl, loss.activation: relu}``."""


class LMEvalSpec(Config):
    """How every LM stage is evaluated: the same test cases for the base model, SFT and each
    preference run, so the rows of the table are comparable."""

    split: str = "test"
    limit: int | None = Field(200, ge=1)
    """Number of test cases: a seeded subsample of the split (the study seed; None = all)."""
    mode: str = Field("both", pattern="^(generate|rank|both)$")
    max_new_tokens: int = Field(20, ge=1)
    gen_batch_size: int = Field(8, ge=1)
    rank_batch_size: int = Field(4, ge=1)
    base: bool = True
    """Also evaluate the untuned model (the row SFT must beat)."""
    baselines: list[str] = ["random", "popularity"]
    """Baseline rows evaluated on exactly the same cases (:mod:`prefrec.study_lm`): random,
    popularity, sasrec (trains a small SASRec, a few CPU minutes). Needs ml-100k or llara-lastfm."""


class LMStudy(Config):
    """LM stages: the untuned model, SFT, then preference runs started from the SFT model.

    ``sft`` and each ``preference`` entry are partial trainer configs (``prefrec.train.sft``,
    ``prefrec.train.preference``); ``model``, ``dataset``, ``data_dir``, ``seed`` and
    ``output_dir`` are set by the study."""

    model: str = "smollm2-135m"
    dataset: str = "ml-100k"
    prompt: dict[str, Any] = {}
    """Prompt section shared by every LM stage and its evaluation (``prefrec.lm.styles.PromptConfig``:
    domain, template, chat_template)."""
    sft: dict[str, Any] | None = None
    preference: dict[str, dict[str, Any]] = {}
    """label -> preference config, e.g. ``{sdpo: {loss: sdpo, num_negatives: 3}, dpo: {loss: dpo, num_negatives: 1}}``."""
    evaluate: LMEvalSpec = LMEvalSpec()


class ReportSpec(Config):
    main_metric: str | None = None
    """Validation metric to plot (default: NDCG@20 when logged)."""
    columns: list[str] | None = None
    """Table columns (default: every final metric)."""
    tensorboard: bool = False
    """Also export metrics.jsonl as TensorBoard scalars (needs the tensorboard package)."""


class Experiment(Config):
    name: str = Field("study", pattern=r"^[A-Za-z0-9_.-]+$")
    output_dir: str = "runs"
    seed: int = 2024
    data_dir: str | None = None
    """Dataset folder (default: --data-dir, $PREFREC_DATA, ./data). Stage keys use its resolved real
    path, so ``../data``, ``/abs/data`` and ``$PREFREC_DATA`` naming the same folder give one key."""
    threads: int | None = Field(None, ge=1)
    """torch CPU threads for every stage (CF, SFT, preference, evaluation); None = torch's default
    (one per core). On a CPU shared with other jobs use 1."""
    cf: CFStudy | None = None
    lm: LMStudy | None = None
    report: ReportSpec = ReportSpec()


# ----------------------------------------------------------------------------- stages
@dataclass
class Stage:
    """One unit of work: a resolved config, where it writes, and how to run it."""

    label: str
    kind: str  # "cf", "sft", "sdpo", "evaluate-lm"
    config: Any  # a pydantic config of the stage's own trainer
    run_dir: Path
    runner: Callable[["Stage", bool], dict[str, Any]]
    upstream: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    """Stage settings outside the trainer config (e.g. the LM evaluation spec); part of the key."""
    key: str = ""
    in_report: bool = True
    data_dir: str | None = None
    """The study's data folder, resolved (``resolved_data_dir``); passed to the trainer explicitly."""
    threads: int | None = None

    def done(self) -> bool:
        f = self.run_dir / STAGE_FILE
        if not f.exists():
            return False
        try:
            info = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            return False
        return info.get("key") == self.key and info.get("status") == "done"


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[parts[-1]] = value


def _validate(cls: type, data: dict, where: str):
    """Validate a stage config mapping against its trainer's config class.

    Errors are re-worded to name the key as it is spelled in the study file (``cf.base.loss.tua``
    rather than ``loss.tua``), so the user can find the line.
    """
    try:
        return load_config(cls, base=data)
    except ConfigError as e:
        what = e.what.replace("config key '", f"config key '{where}.").replace("value for '", f"value for '{where}.")
        fix = (e.fix or "").replace("did you mean '", f"did you mean '{where}.").replace("set ", f"set {where}.", 1)
        raise ConfigError(what, where=where, fix=fix) from None


def _apply_dotted(data: dict, overrides: dict[str, Any]) -> dict:
    out = json.loads(json.dumps(data))
    for k, v in overrides.items():
        _set_dotted(out, str(k), v)
    return out


def cf_run_config(exp: Experiment, backbone: str, label: str):
    """The resolved ``CFConfig`` of one grid cell (backbone x label)."""
    cfg_cls = _cf_config_cls()
    assert exp.cf is not None
    base = json.loads(json.dumps(exp.cf.base))
    for k in ("name", "output_dir", "seed"):
        if k in base:
            raise ConfigError(f"cf.base.{k} is set by the study", where="cf.base",
                              fix=f"remove cf.base.{k}; the top-level {k!r} applies (runs are named after their label)")
    _validate(cfg_cls, base, "cf.base")  # report mistakes against the base first
    if exp.threads is not None:
        if "threads" in (base.get("train") or {}):
            raise ConfigError("cf.base.train.threads is set by the study", where="cf.base.train",
                              fix="remove cf.base.train.threads; the top-level 'threads' applies to every stage")
        base = _apply_dotted(base, {"train.threads": exp.threads})
    data = _apply_dotted(base, {"model.name": backbone})
    where = "cf.backbones"
    if label in exp.cf.presets:
        data = _apply_dotted(data, exp.cf.presets[label])
        where = f"cf.presets.{label}"
    else:
        data = _apply_dotted(data, {"loss.name": label})
        where = "cf.losses"
    data.update(name=run_label(exp, backbone, label), output_dir=str(study_dir(exp)), seed=exp.seed)
    cfg = _validate(cfg_cls, data, where)
    from prefrec.train.cf import CF_LOSSES

    if cfg.loss.name not in CF_LOSSES:
        import difflib

        close = difflib.get_close_matches(cfg.loss.name, list(CF_LOSSES) + list(exp.cf.presets), n=1)
        raise ConfigError(f"unknown CF loss {cfg.loss.name!r}", where=where,
                          fix=(f"did you mean {close[0]!r}? " if close else "")
                          + f"use one of {', '.join(CF_LOSSES)} or a label defined under cf.presets")
    _check_dataset_name(cfg.data.dataset, "cf.base.data.dataset", exp.data_dir)
    return cfg


def _check_dataset_name(name: str, key: str, data_dir: str | None = None) -> None:
    """Fail at load time (not after other stages trained) on a dataset name that cannot work."""
    from prefrec.data.registry import ACCEPTED_FORMS, DATASETS, dataset_known

    if dataset_known(name, data_dir):
        return
    import difflib

    close = difflib.get_close_matches(name, DATASETS.keys(), n=1)
    raise ConfigError(f"unknown dataset {name!r}", where=key,
                      fix=(f"did you mean {close[0]!r}? " if close else "") + "give " + ACCEPTED_FORMS)


def run_label(exp: Experiment, backbone: str, label: str) -> str:
    from prefrec.rundir import check_name

    assert exp.cf is not None
    return check_name(label if len(exp.cf.backbones) == 1 else f"{backbone}-{label}", "cf.losses")


def study_dir(exp: Experiment) -> Path:
    from prefrec.rundir import child

    return child(exp.output_dir, exp.name, "name")


def resolved_data_dir(exp: Experiment) -> str:
    """The study's data folder as an absolute real path (symlinks, ``..`` and the spelling resolved):
    what the data *is*, not how the folder was written on the command line or in $PREFREC_DATA."""
    from prefrec.data.datadir import data_dir

    return os.path.realpath(data_dir(exp.data_dir))


def _stage_key(kind: str, cfg: Any, upstream: list[str], options: dict[str, Any] | None = None,
               data_dir: str | None = None) -> str:
    data = {"kind": kind, "config": cfg.model_dump(mode="json") if hasattr(cfg, "model_dump") else cfg,
            "upstream": upstream}
    if options:
        data["options"] = options
    if data_dir is not None:
        data["data"] = data_dir
    return config_hash(data)


def plan(exp: Experiment) -> list[Stage]:
    """Every stage of the study in execution order, with its key (config hash incl. upstream)."""
    stages: list[Stage] = []
    root = study_dir(exp)
    data = resolved_data_dir(exp)
    if exp.cf is not None:
        if not exp.cf.backbones or not exp.cf.losses:
            raise ConfigError("cf needs at least one backbone and one loss", where="cf",
                              fix="e.g. backbones: [mf] and losses: [bpr, sl, psl]")
        for b in exp.cf.backbones:
            for label in exp.cf.losses:
                cfg = cf_run_config(exp, b, label)
                stages.append(Stage(label=cfg.name, kind="cf", config=cfg, run_dir=root / cfg.name,
                                    runner=_run_cf))
    if exp.lm is not None:
        stages += _plan_lm(exp, root)
    labels = [s.label for s in stages]
    dup = {x for x in labels if labels.count(x) > 1}
    if dup:
        raise ConfigError(f"two stages would write to the same folder ({', '.join(sorted(dup))})",
                          where="cf.losses", fix="list each loss label once")
    keys: dict[str, str] = {}
    for s in stages:
        s.data_dir, s.threads = data, exp.threads
        s.key = _stage_key(s.kind, s.config, [keys[u] for u in s.upstream], s.options, data)
        keys[s.label] = s.key
    if not stages:
        raise ConfigError("the study has no stages", where="experiment",
                          fix="add a 'cf:' section (losses/backbones) and/or an 'lm:' section (sft/sdpo)")
    return stages


# ----------------------------------------------------------------------------- stage runners
def _write_results(stage: Stage, metrics: dict[str, Any], wall: float, **extra: Any) -> None:
    """The final results JSON the report reads (``<run>/results.json``)."""
    from prefrec.checkpoint import atomic_write_text

    seed = stage.config.get("seed") if isinstance(stage.config, dict) else getattr(stage.config, "seed", None)
    atomic_write_text(stage.run_dir / "results.json", json.dumps(
        {"metrics": metrics, "wall_time_s": round(wall, 2), "seed": seed, "stage": stage.kind,
         "key": stage.key, "data_dir": stage.data_dir, **extra},
        indent=1, default=float))


def _run_cf(stage: Stage, resume: bool) -> dict[str, Any]:
    from prefrec.train.cf import train_cf

    t0 = time.time()
    res = train_cf(stage.config, data_dir=stage.data_dir, resume=resume, run_dir=stage.run_dir)
    metrics = dict(res.get("test", {}))
    _write_results(stage, metrics, time.time() - t0, best_epoch=res.get("best_epoch"),
                   train_seconds=res.get("train_seconds"))
    return metrics


LM_COLUMNS = ["n_cases", "HR@1", "ValidRatio", "rank HR@1", "rank HR@5", "rank NDCG@5"]
"""Report columns of LM stages: cases, generation HR@1 / ValidRatio, candidate-ranking HR@K / NDCG@K
(each with its 95 % interval in the report)."""


LM_NOTE = ("LM table: every row is evaluated on the same cases (`cases`). `HR@1`/`ValidRatio`: generation "
           "(greedy answer matched to a candidate title); `rank ...`: the candidates ranked by log-probability. "
           "Baselines: `random` is the exact expected value of a uniformly random ranking (no interval), "
           "`popularity` ranks candidates by training frequency; a baseline answers with its top candidate, so its "
           "`HR@1` equals its `rank HR@1` and its `ValidRatio` is 1.")


def _lm_stage_config(cls: type, data: dict, exp: Experiment, where: str, **fixed: Any):
    for k in ("output_dir", "seed", "data_dir") + (("threads",) if exp.threads is not None else ()):
        if k in data:
            raise ConfigError(f"{where}.{k} is set by the study", where=where,
                              fix=f"remove {where}.{k}; the study's output_dir/seed/data_dir/threads apply")
    if "prompt" in data:
        raise ConfigError(f"{where}.prompt is set by the study", where=where, fix="set lm.prompt once for all stages")
    merged = {"dataset": exp.lm.dataset, **data, **fixed, "seed": exp.seed, "data_dir": resolved_data_dir(exp),
              "prompt": dict(exp.lm.prompt)}
    if exp.threads is not None:
        merged["threads"] = exp.threads
    return _validate(cls, merged, where)


def _plan_lm(exp: Experiment, root: Path) -> list[Stage]:
    """Stages ``lm-base`` (untuned model, evaluation only), ``sft``, then one per preference label."""
    from prefrec.train.preference import PreferenceConfig, validate_config

    lm = exp.lm
    assert lm is not None
    _check_dataset_name(lm.dataset, "lm.dataset", exp.data_dir)
    stages: list[Stage] = []
    ev = {"evaluate": lm.evaluate.model_dump(mode="json")}
    stages += _plan_baselines(exp, root, ev)
    if lm.evaluate.base:
        stages.append(Stage(label="lm-base", kind="evaluate-lm", run_dir=root / "lm-base", runner=_run_lm_base,
                            config={"model": lm.model, "dataset": lm.dataset, "seed": exp.seed,
                                    **({"prompt": dict(lm.prompt)} if lm.prompt else {})}, options=ev))
    if lm.sft is None:
        if lm.preference:
            raise ConfigError("preference stages start from the SFT model", where="lm.preference",
                              fix="add an lm.sft section (e.g. sft: {max_steps: 20})")
        return stages
    from prefrec.train.sft import SFTConfig

    sft_dir = root / "sft"
    sft = _lm_stage_config(SFTConfig, dict(lm.sft), exp, "lm.sft", model=lm.model, output_dir=str(sft_dir))
    stages.append(Stage(label="sft", kind="sft", config=sft, run_dir=sft_dir, runner=_run_lm_training, options=ev))
    from prefrec.rundir import check_name

    for label, data in lm.preference.items():
        check_name(str(label), "lm.preference")
        if label in ("sft", "lm-base"):
            raise ConfigError(f"preference label {label!r} clashes with a built-in stage", where="lm.preference",
                              fix="name it e.g. sdpo, dpo, sdpo-k7")
        if "model" in data:
            raise ConfigError(f"lm.preference.{label}.model is set by the study (the SFT run)",
                              where=f"lm.preference.{label}", fix="remove it")
        run_dir = root / label
        cfg = _lm_stage_config(PreferenceConfig, dict(data), exp, f"lm.preference.{label}",
                               model=str(sft_dir), output_dir=str(run_dir))
        validate_config(cfg)
        stages.append(Stage(label=label, kind="preference", config=cfg, run_dir=run_dir,
                            runner=_run_lm_training, upstream=["sft"], options=ev))
    return stages


def _plan_baselines(exp: Experiment, root: Path, ev: dict[str, Any]) -> list[Stage]:
    """One evaluation-only stage per ``lm.evaluate.baselines`` name (rows of the LM table)."""
    from prefrec.commands.baseline import DATASETS
    from prefrec.study_lm import BASELINES

    lm = exp.lm
    assert lm is not None
    names = lm.evaluate.baselines
    for name in names:
        if name not in BASELINES:
            import difflib

            close = difflib.get_close_matches(name, BASELINES, n=1)
            raise ConfigError(f"unknown baseline {name!r}", where="lm.evaluate.baselines",
                              fix=(f"did you mean {close[0]!r}? " if close else "") + f"use {', '.join(BASELINES)}")
    clash = set(names) & set(lm.preference)
    if clash:
        raise ConfigError(f"preference label {sorted(clash)[0]!r} clashes with a baseline row", where="lm.preference",
                          fix="rename the preference stage (e.g. sdpo-k3)")
    if names and lm.dataset not in DATASETS:
        if "baselines" in lm.evaluate.model_fields_set:
            raise ConfigError(f"baselines need sequence cases; dataset {lm.dataset!r} has none",
                              where="lm.evaluate.baselines", fix=f"use {', '.join(DATASETS)} or set baselines: []")
        return []
    return [Stage(label=name, kind="baseline", run_dir=root / name, runner=_run_lm_baseline,
                  config={"model": name, "dataset": lm.dataset, "seed": exp.seed}, options=ev) for name in names]


def _run_lm_baseline(stage: Stage, resume: bool) -> dict[str, Any]:
    from prefrec.study_lm import run_baseline

    t0 = time.time()
    spec = LMEvalSpec(**stage.options["evaluate"])
    metrics, ci = run_baseline(stage.config["model"], stage.config["dataset"], spec.split, spec.limit,
                               stage.config["seed"], stage.data_dir, stage.run_dir)
    _write_results(stage, metrics, time.time() - t0, ci=ci, model=stage.config["model"])
    return metrics


def _evaluate_lm_stage(stage: Stage, model, tokenizer, dataset: str, seed: int, prompt=None) -> dict[str, Any]:
    """Evaluate on the study's test cases; flat metrics for the report + ``eval/`` details."""
    from prefrec.lm.evaluate import evaluate_lm
    from prefrec.lm.prompts import lm_samples, style_for
    from prefrec.lm.styles import chat_wrap

    spec = LMEvalSpec(**stage.options["evaluate"])
    style = style_for(dataset, prompt)
    samples = lm_samples(dataset, spec.split, data_dir=stage.data_dir, limit=spec.limit, seed=seed, prompt=style)
    samples = chat_wrap(samples, tokenizer, style)
    res = evaluate_lm(model, tokenizer, samples, mode=spec.mode, out_dir=stage.run_dir / "eval",
                      max_new_tokens=spec.max_new_tokens, gen_batch_size=spec.gen_batch_size,
                      rank_batch_size=spec.rank_batch_size, meta={"stage": stage.label, "dataset": dataset})
    flat: dict[str, Any] = {"n_cases": len(samples)}
    if "generate" in res:
        flat.update({"HR@1": res["generate"]["HR@1"], "ValidRatio": res["generate"]["ValidRatio"]})
    if "rank" in res:
        flat.update({f"rank {k}": v for k, v in res["rank"].items() if "@" in k or k == "MRR"})
    return flat


def _run_lm_base(stage: Stage, resume: bool) -> dict[str, Any]:
    from types import SimpleNamespace

    from prefrec.train.preference import load_reference_model

    t0 = time.time()
    model, tok = load_reference_model(SimpleNamespace(model=stage.config["model"], seed=stage.config["seed"]))
    metrics = _evaluate_lm_stage(stage, model, tok, stage.config["dataset"], stage.config["seed"],
                                 stage.config.get("prompt"))
    _write_results(stage, metrics, time.time() - t0, model=stage.config["model"],
                   ci=eval_intervals(stage.run_dir / "eval"))
    return metrics


def _run_lm_training(stage: Stage, resume: bool) -> dict[str, Any]:
    """Train (SFT or preference; resumes a killed stage), then evaluate the final model."""
    from prefrec.models.lm import for_inference, inference_options, load_trained_lm, resolve_device

    t0 = time.time()
    cfg = stage.config
    if stage.kind == "sft":
        from prefrec.train.sft import train_sft as train
        extra: dict[str, Any] = {}
    else:
        from prefrec.train.preference import train_preference as train
        extra = {"loss": cfg.loss, "num_negatives": cfg.num_negatives}
    res = train(cfg, resume=resume)
    dev = resolve_device(getattr(cfg, "device", "auto"))
    model, tok = load_trained_lm(stage.run_dir, options=inference_options(dev))
    metrics = _evaluate_lm_stage(stage, for_inference(model, dev), tok, cfg.dataset, cfg.seed, cfg.prompt)
    _write_results(stage, metrics, time.time() - t0, train_steps=res.steps,
                   ci=eval_intervals(stage.run_dir / "eval"), **extra)
    return metrics


# ----------------------------------------------------------------------------- loading
def load_experiment(path: str | Path | None, overrides: list[str] | None = None,
                    data_dir: str | None = None) -> Experiment:
    """Read and validate a study file (+ dotted overrides); every stage config is validated too."""
    exp = load_config(Experiment, path, overrides)
    if data_dir:
        exp.data_dir = data_dir
    plan(exp)  # validates every stage's config now, before anything trains
    return exp


# ----------------------------------------------------------------------------- running
@dataclass
class StudyResult:
    report: Path
    stages: list[Stage]
    ran: list[str]
    skipped: list[str]
    wall_time: float


def _progress_enabled() -> bool:
    return sys.stderr.isatty()


@contextlib.contextmanager
def _threads(n: int | None):
    """torch's intra-op threads set to ``n`` for one stage (the study's one policy), then restored."""
    if not n:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_only(stages: list[Stage], only: list[str] | None) -> None:
    """Every ``--only`` name must be a stage label (checked before anything runs, dry runs too)."""
    labels = [s.label for s in stages]
    unknown = [o for o in only or [] if o not in labels]
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], labels, n=1)
        raise ConfigError(f"no stage named {', '.join(map(repr, unknown))}", where="--only",
                          fix=(f"did you mean {close[0]!r}? " if close else "") + "stages: " + ", ".join(labels))


def _archive_stale(stage: Stage) -> None:
    """A folder from a different config is kept under ``<label>@<old key>``, never deleted."""
    d = stage.run_dir
    f = d / STAGE_FILE
    if not d.exists() or not f.exists():
        return
    try:
        old = json.loads(f.read_text()).get("key", "old")
    except (OSError, json.JSONDecodeError):
        old = "old"
    if old == stage.key:
        return
    if not (isinstance(old, str) and old.isalnum()):  # a hand-edited stage.json cannot steer the rename
        old = "old"
    from prefrec.rundir import move_aside

    target = move_aside(d, f"@{old}")
    log.info("config of stage %s changed; previous output kept in %s", stage.label, target)


def _write_stage_file(stage: Stage, status: str, **extra: Any) -> None:
    from prefrec.checkpoint import atomic_write_text

    stage.run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(stage.run_dir / STAGE_FILE, json.dumps(
        {"key": stage.key, "kind": stage.kind, "label": stage.label, "status": status,
         "upstream": stage.upstream, **extra}, indent=1, default=str))


def run_experiment(exp: Experiment, *, force: bool = False, only: list[str] | None = None,
                   study_text: str | None = None, echo: Callable[[str], None] | None = None) -> StudyResult:
    """Run every stage that is not already done (same key), then write ``report.md``."""
    echo = echo or (lambda s: print(s, file=sys.stderr))
    stages = plan(exp)
    check_only(stages, only)
    from prefrec.rundir import claim

    with claim(study_dir(exp), remove_unused=False):  # one `prefrec run` per study folder at a time
        return _run_stages(exp, stages, force, only, study_text, echo)


def _run_stages(exp: Experiment, stages: list[Stage], force: bool, only: list[str] | None,
                study_text: str | None, echo: Callable[[str], None]) -> StudyResult:
    from prefrec.report import write_report
    from prefrec.rundir import holds_run, move_aside

    root = study_dir(exp)
    if study_text is not None:
        (root / "experiment.yaml").write_text(study_text, encoding="utf-8")
    t0 = time.time()
    ran, skipped = [], []
    for i, stage in enumerate(stages, 1):
        head = f"[{i}/{len(stages)}] {stage.kind} {stage.label} (key {stage.key})"
        selected = not only or stage.label in only
        if stage.done() and not (force and selected):
            echo(f"{head}: done already, skipped")
            skipped.append(stage.label)
            continue
        if not selected:
            echo(f"{head}: not selected (--only), not run")
            skipped.append(stage.label)
            continue
        _archive_stale(stage)
        if force and holds_run(stage.run_dir):  # --force: a fresh run, the old one kept aside
            move_aside(stage.run_dir)
        resume = (stage.run_dir / STAGE_FILE).exists() and not force
        _write_stage_file(stage, "running")
        echo(f"{head}: {'resuming' if resume else 'running'} -> {stage.run_dir}")
        ts = time.time()
        with _threads(stage.threads), log_tag(stage.label):
            results = stage.runner(stage, resume)
        wall = time.time() - ts
        _write_stage_file(stage, "done", wall_time_s=wall, results=results)
        echo(f"{head}: finished in {wall:.1f} s")
        ran.append(stage.label)
    runs = [s.run_dir for s in stages if s.in_report and s.run_dir.exists()]
    columns: Any = exp.report.columns
    if exp.lm is not None:
        columns = {"LM recommenders (same test cases, 20 candidates each)": LM_COLUMNS}
        if exp.cf is not None:
            columns = {"Embedding recommenders (full ranking)": exp.report.columns or ["Recall@20", "NDCG@20"],
                       **columns}
    notes = [LM_NOTE] if exp.lm is not None else []
    report = write_report(runs, root, title=f"{exp.name}: prefrec study", main_metric=exp.report.main_metric,
                          columns=columns, study_config=study_text, notes=notes,
                          tensorboard=exp.report.tensorboard)
    return StudyResult(report=report, stages=stages, ran=ran, skipped=skipped, wall_time=time.time() - t0)


def table_of(report: Path) -> str:
    """The results table(s) of a report (for printing at the end of a study)."""
    lines = report.read_text(encoding="utf-8").splitlines()
    start = lines.index("## Results") if "## Results" in lines else 0
    out: list[str] = []
    for line in lines[start + 1:]:
        if line.startswith("## "):
            break
        if line.startswith("|") or line.startswith("### "):
            if line.startswith("### ") and out:
                out.append("")
            out.append(line)
    return "\n".join(out)


__all__ = ["Experiment", "CFStudy", "LMStudy", "ReportSpec", "Stage", "StudyResult", "load_experiment",
           "plan", "run_experiment", "table_of", "check_only", "resolved_data_dir", "PrefrecError"]
