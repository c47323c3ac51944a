"""Run reports: one ``report.md`` (+ PNG plots) from one or more run directories.

Why a report module of its own: every trainer writes the same three things into its run
directory (``config.yaml``, ``metrics.jsonl`` with one JSON object per logged step, and a final
results JSON), so one reader can compare any mix of CF and LM runs side by side without
knowing which trainer produced them. The report is plain Markdown with relative image links,
so it renders on GitHub and in any editor.

Layout read from each run directory (every file optional except that *something* must exist):

* ``config.yaml`` -- the resolved config (shown verbatim; ``seed`` is looked up in it);
* ``metrics.jsonl`` -- ``{"step":.., "epoch":.., "loss":.., "NDCG@20":.., "rewards/chosen":..}``;
* ``results.json`` (or one of :data:`RESULT_FILES`) -- final metrics, flat or under ``"metrics"``;
  optional ``wall_time`` / ``wall_time_s`` / ``seed`` keys.

Heavy imports (matplotlib) happen inside the plotting functions, with the Agg backend, so
``import prefrec.report`` is cheap and works without a display.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from prefrec.errors import ConfigError, DataError

RESULT_FILES = ("results.json", "final_metrics.json", "metrics.json", "eval.json", "test_metrics.json")
PLOTS_DIR = "plots"
# Keys of a history row that are bookkeeping, not curves.
_BOOKKEEPING = {"step", "epoch", "time", "elapsed", "wall_time", "wall_time_s", "lr", "learning_rate",
                "split", "stage", "global_step", "seconds"}
# History rows that are not training/validation curves (the CF trainer logs data stats and the
# final test metrics into metrics.jsonl too).
_NOT_CURVES = {"data", "test"}
# Columns where smaller is better (everything else: larger is better).
_LOWER_IS_BETTER = re.compile(r"(^|/)(loss|.*_loss|ppl|perplexity|wall_time.*|time.*|.*rank)$", re.I)


@dataclass
class RunRecord:
    """Everything the report needs from one run directory."""

    name: str
    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    config_text: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    results: dict[str, float] = field(default_factory=dict)
    wall_time: float | None = None
    seed: int | None = None
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    """95 % intervals of final metrics (``results.json`` key ``ci``: ``{metric: [lo, hi]}``)."""

    @property
    def x_unit(self) -> str:
        """What a curve of this run is plotted against: LM trainers log optimizer ``step``s,
        the CF trainer logs ``epoch``s."""
        return "step" if any("step" in row for row in self.history) else "epoch"


# ----------------------------------------------------------------------------- reading
def _flat_numbers(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a (nested) dict, with ``a/b`` keys for nested ones."""
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            out[key] = float(v)
        elif isinstance(v, dict):
            out.update(_flat_numbers(v, key + "/"))
    return out


def _find_key(d: Any, key: str) -> Any:
    """First value of ``key`` anywhere in a nested dict (breadth first)."""
    queue = [d]
    while queue:
        node = queue.pop(0)
        if isinstance(node, dict):
            if key in node and not isinstance(node[key], dict):
                return node[key]
            queue.extend(v for v in node.values() if isinstance(v, dict))
    return None


def load_run(run_dir: str | Path, name: str | None = None) -> RunRecord:
    """Read one run directory (see module docstring for the files)."""
    import yaml

    path = Path(run_dir)
    if not path.is_dir():
        raise DataError("run directory not found", where=str(path),
                        fix="pass a folder written by a prefrec training command (it holds config.yaml)")
    rec = RunRecord(name=name or path.name, path=path)
    cfg_path = path / "config.yaml"
    if cfg_path.exists():
        rec.config_text = cfg_path.read_text(encoding="utf-8", errors="replace")
        try:
            loaded = yaml.safe_load(rec.config_text)
        except yaml.YAMLError:
            loaded = None
        rec.config = loaded if isinstance(loaded, dict) else {}
    hist = path / "metrics.jsonl"
    if hist.exists():
        from prefrec.rundir import read_jsonl  # a torn last line is skipped

        rec.history = read_jsonl(hist)
    raw: dict[str, Any] = {}
    for fname in RESULT_FILES:
        f = path / fname
        if f.exists():
            try:
                raw = json.loads(f.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                raise DataError("results file is not valid JSON", where=str(f),
                                fix="re-run the evaluation stage, or delete the file") from None
            break
    if isinstance(raw, dict):
        metrics = raw.get("metrics") if isinstance(raw.get("metrics"), dict) else raw
        nums = _flat_numbers(metrics)
        for k in ("wall_time", "wall_time_s", "seed", "step", "epoch", "best_epoch"):
            nums.pop(k, None)
        rec.results = nums
        wt = raw.get("wall_time_s", raw.get("wall_time"))
        if isinstance(wt, (int, float)):
            rec.wall_time = float(wt)
        if isinstance(raw.get("seed"), int):
            rec.seed = raw["seed"]
        if isinstance(raw.get("ci"), dict):
            rec.ci = {k: (float(v[0]), float(v[1])) for k, v in raw["ci"].items()
                      if isinstance(v, (list, tuple)) and len(v) == 2}
    if rec.wall_time is None:
        times = [r.get("elapsed", r.get("time")) for r in rec.history]
        times = [t for t in times if isinstance(t, (int, float))]
        if times:
            rec.wall_time = float(max(times))
    if rec.seed is None:
        s = _find_key(rec.config, "seed")
        rec.seed = s if isinstance(s, int) else None
    if not rec.results and rec.history:
        # No final JSON: the last logged value of each metric stands in.
        for row in rec.history:
            if row.get("split") == "data":
                continue
            for k, v in _flat_numbers(row).items():
                if k not in _BOOKKEEPING:
                    rec.results[k] = v
    if not (rec.config or rec.history or rec.results):
        raise DataError("the run directory holds no config.yaml, metrics.jsonl or results JSON",
                        where=str(path), fix="point at a finished run (or re-run it)")
    return rec


# ----------------------------------------------------------------------------- tables
def lower_is_better(column: str) -> bool:
    """Loss-like columns are minimised; metrics (NDCG, Recall, HR, rewards...) maximised."""
    return bool(_LOWER_IS_BETTER.search(column))


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if abs(v) >= 1000 or v == int(v) and abs(v) >= 10:
        return f"{v:,.0f}"
    return f"{v:.4f}"


def _metric_order(cols: Iterable[str]) -> list[str]:
    """Ranking metrics first (by name then K), then the rest alphabetically."""
    def key(c: str):
        m = re.match(r"^(.*?)@(\d+)$", c)
        if m:
            return (0, m.group(1), int(m.group(2)))
        return (1, c, 0)
    return sorted(cols, key=key)


COUNT_COLUMNS = {"n_cases": "cases"}
"""Columns that are counts, not metrics: shown as integers under a readable header, never bold."""


def _cell(r: RunRecord, c: str) -> str:
    v = r.results.get(c)
    if c in COUNT_COLUMNS:
        return "–" if v is None else f"{v:,.0f}"
    s = _fmt(v)
    if v is not None and c in r.ci:
        lo, hi = r.ci[c]
        s += f" [{lo:.3f}, {hi:.3f}]"
    return s


def results_table(runs: Sequence[RunRecord], columns: Sequence[str] | None = None) -> str:
    """Markdown table, one row per run, best value of each column in **bold** (ties all bold);
    a metric with a 95 % interval (``RunRecord.ci``) is shown as ``value [lo, hi]``."""
    cols = list(columns) if columns else _metric_order({k for r in runs for k in r.results})
    header = "| run | " + " | ".join(COUNT_COLUMNS.get(c, c) for c in cols) + " |"
    sep = "| --- | " + " | ".join("---:" for _ in cols) + " |"
    best: dict[str, float] = {}
    for c in cols:
        vals = [r.results[c] for r in runs if c in r.results and not math.isnan(r.results[c])]
        if len(vals) >= 2 and c not in COUNT_COLUMNS:
            best[c] = min(vals) if lower_is_better(c) else max(vals)
    lines = [header, sep]
    for r in runs:
        cells = []
        for c in cols:
            v = r.results.get(c)
            s = _cell(r, c)
            if v is not None and c in best and _fmt(v) == _fmt(best[c]):
                s = f"**{s}**"
            cells.append(s)
        lines.append(f"| {r.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- plots
def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _series(run: RunRecord, key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    unit = run.x_unit
    for i, row in enumerate(run.history):
        if row.get("split") in _NOT_CURVES:
            continue
        v = row.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            x = row.get(unit, i)
            xs.append(float(x) if isinstance(x, (int, float)) else float(i))
            ys.append(float(v))
    return xs, ys


X_LABELS = {"epoch": "epoch", "step": "optimizer step"}


def _panels(n: int, title: str):
    """A figure with ``n`` side-by-side axes (at most 4 per row), each with its own y scale."""
    plt = _plt()
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(6.4, 3.6 * cols), 3.4 * rows), dpi=100, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig, list(axes.flat[:n])


def _plot_line(ax, xs, ys, label: str) -> None:
    ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=label)


def _label_axes(ax, title: str, unit: str, ylabel: str, legend: bool = True) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(X_LABELS[unit])
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=8)


def _loss_plot(runs: Sequence[RunRecord], keys: Sequence[str], unit: str, out: Path) -> Path | None:
    """One panel per run (losses of different runs have different scales: BPR vs SL, SFT vs S-DPO)."""
    runs = [r for r in runs if any(_series(r, k)[0] for k in keys)]
    if not runs:
        return None
    fig, axes = _panels(len(runs), f"training loss per {X_LABELS[unit]}")
    for ax, run in zip(axes, runs):
        for k in keys:
            xs, ys = _series(run, k)
            if xs:
                _plot_line(ax, xs, ys, k)
        name = run.config.get("loss") if isinstance(run.config.get("loss"), str) else None
        if isinstance(run.config.get("loss"), dict):
            name = run.config["loss"].get("name")
        _label_axes(ax, run.name, unit, f"loss ({name})" if name else "loss",
                    legend=len([k for k in keys if _series(run, k)[0]]) > 1)
    return _save(fig, out)


def _metric_curve(runs: Sequence[RunRecord], key: str, unit: str, out: Path) -> Path | None:
    """One quantity (same scale for every run) on one axis, one line per run."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    drawn = False
    for run in runs:
        xs, ys = _series(run, key)
        if xs:
            _plot_line(ax, xs, ys, run.name)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    _label_axes(ax, f"validation {key} per {X_LABELS[unit]}", unit, f"{key} (validation, 0-1)")
    return _save(fig, out)


def _reward_plot(runs: Sequence[RunRecord], keys: Sequence[str], unit: str, out: Path) -> Path | None:
    """One panel per reward quantity (chosen, rejected, margins, accuracies have different scales)."""
    keys = [k for k in keys if any(_series(r, k)[0] for r in runs)]
    if not keys:
        return None
    fig, axes = _panels(len(keys), f"LM rewards per {X_LABELS[unit]} (beta * log-ratio to the reference)")
    for ax, k in zip(axes, keys):
        for run in runs:
            xs, ys = _series(run, k)
            if xs:
                _plot_line(ax, xs, ys, run.name)
        _label_axes(ax, k, unit, "fraction of pairs" if k.endswith("accuracies") else "reward (nats x beta)")
    return _save(fig, out)


def _save(fig, out: Path) -> Path:
    """Lay out, write and close one figure (closing frees it: reports draw many)."""
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    _plt().close(fig)
    return out


def _bar_plot(runs: Sequence[RunRecord], cols: Sequence[str], out: Path, title: str = "final metrics",
              ylabel: str = "value (0-1, higher is better)") -> Path | None:
    """Grouped bars (one group per metric, one bar per run) with 95 % intervals where known."""
    cols = [c for c in cols if c not in COUNT_COLUMNS and any(c in r.results for r in runs)]
    runs = [r for r in runs if any(c in r.results for c in cols)]
    if not cols or not runs:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(min(12.0, max(6.4, 1.1 * len(cols) * max(len(runs), 1) ** 0.5 + 2)), 4.2),
                           dpi=100)
    width = 0.8 / len(runs)
    for j, run in enumerate(runs):
        xs = [i + j * width for i in range(len(cols))]
        vals = [run.results.get(c, float("nan")) for c in cols]
        err = None
        if any(c in run.ci for c in cols):
            nan = float("nan")  # no whisker where a metric has no interval
            err = [[max(0.0, v - run.ci[c][0]) if c in run.ci else nan for c, v in zip(cols, vals)],
                   [max(0.0, run.ci[c][1] - v) if c in run.ci else nan for c, v in zip(cols, vals)]]
        ax.bar(xs, vals, width=width, label=run.name, yerr=err, capsize=2 if err else 0)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cols))])
    ax.set_xticklabels(cols, rotation=20, ha="right", fontsize=9)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(len(runs), 4))
    return _save(fig, out)


def _history_keys(runs: Sequence[RunRecord]) -> set[str]:
    return {k for r in runs for row in r.history if row.get("split") not in _NOT_CURVES
            for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _safe_name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_") or "metric"


def table_figure_name(caption: str) -> str:
    """File name of a results table's figure: ``metrics_<first words of the caption>.png``."""
    return f"metrics_{_safe_name(caption.split('(')[0].strip().lower())}.png"


def table_figures(runs: Sequence[RunRecord], tables: dict[str, Sequence[str]], out_dir: Path) -> dict[str, Path]:
    """One bar chart per results table (caption -> PNG), only that table's runs and columns."""
    figs: dict[str, Path] = {}
    for caption, cols in tables.items():
        group = [r for r in runs if any(c in r.results for c in cols)]
        ci = any(r.ci for r in group)
        p = _bar_plot(group, cols, out_dir / table_figure_name(caption), title=caption,
                      ylabel="value (0-1, higher is better)" + ("; bars: 95 % interval" if ci else ""))
        if p:
            figs[caption] = p
    return figs


def make_plots(runs: Sequence[RunRecord], out_dir: Path, main_metric: str | None = None,
               tables: dict[str, Sequence[str]] | None = None) -> dict[str, Path]:
    """Training curves (loss, validation metric, LM rewards; runs logged per epoch and per step
    apart) and one bar chart per results table (``tables``: caption -> columns; default one table
    of every final metric, ``metrics.png``)."""
    plots: dict[str, Path] = {}
    units = sorted({r.x_unit for r in runs if r.history})
    for unit in units:
        group = [r for r in runs if r.x_unit == unit and r.history]
        sfx = "" if len(units) == 1 else f"_per_{unit}"
        keys = _history_keys(group)
        loss_keys = sorted(k for k in keys if k == "loss" or k.endswith("/loss") or k.endswith("_loss"))
        if loss_keys:
            p = _loss_plot(group, loss_keys, unit, out_dir / f"loss{sfx}.png")
            if p:
                plots[f"training loss per {X_LABELS[unit]}"] = p
        metric_keys = _metric_order(k for k in keys if "@" in k)
        if main_metric and main_metric in keys:
            metric_keys = [main_metric]
        elif metric_keys:
            pref = [k for k in metric_keys if k.startswith("NDCG@20")] or [k for k in metric_keys if k.startswith("NDCG")]
            metric_keys = pref[:1] or metric_keys[:1]
        for k in metric_keys:
            p = _metric_curve(group, k, unit, out_dir / f"valid_{_safe_name(k)}{sfx}.png")
            if p:
                plots[f"validation {k} per {X_LABELS[unit]}"] = p
        reward_keys = sorted(k for k in keys if k.startswith("rewards/"))
        if reward_keys:
            p = _reward_plot(group, reward_keys, unit, out_dir / f"rewards{sfx}.png")
            if p:
                plots["LM rewards"] = p
    if tables is None:
        cols = [c for c in _metric_order({k for r in runs for k in r.results}) if not lower_is_better(c)]
        bar_cols = [c for c in cols if "@" in c] or cols
        p = _bar_plot(runs, bar_cols[:12], out_dir / "metrics.png")
        if p:
            plots["final metrics"] = p
    return plots


def run_plots(runs: Sequence[RunRecord]) -> list[tuple[str, Path]]:
    """Plots a trainer wrote into its own run folder (``<run>/plots/*.png``), per run."""
    return [(r.name, p) for r in runs for p in sorted((r.path / PLOTS_DIR).glob("*.png"))]


# ----------------------------------------------------------------------------- environment
def package_versions(names: Sequence[str] = ("prefrec", "torch", "transformers", "peft", "numpy")) -> dict[str, str]:
    """Installed versions from package metadata (no heavy imports)."""
    out = {}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            out[n] = "not installed"
    return out


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    if s < 60:
        return f"{s:.1f} s"
    return f"{int(s // 60)} min {s % 60:04.1f} s"


# ----------------------------------------------------------------------------- tensorboard
class TensorBoardWriter:
    """Tiny adapter over ``torch.utils.tensorboard.SummaryWriter`` (lazy; optional dependency)."""

    def __init__(self, logdir: str | Path):
        try:
            import tensorboard  # noqa: F401  (SummaryWriter needs it)
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("TensorBoard logging was requested but the tensorboard package is not installed",
                              where="--tensorboard",
                              fix="pip install tensorboard (or pip install 'prefrec[tensorboard]'), "
                                  "or drop the flag") from None
        self._w = SummaryWriter(log_dir=str(logdir))

    def log(self, row: dict[str, Any], step: int) -> None:
        for k, v in _flat_numbers(row).items():
            if k not in _BOOKKEEPING:
                self._w.add_scalar(k, v, step)

    def close(self) -> None:
        self._w.flush()
        self._w.close()


def export_tensorboard(runs: Sequence[RunRecord], logdir: str | Path) -> Path:
    """Write every run's metrics.jsonl as TensorBoard scalars under ``logdir/<run>``."""
    logdir = Path(logdir)
    for run in runs:
        w = TensorBoardWriter(logdir / _safe_name(run.name))
        for i, row in enumerate(run.history):
            step = row.get("step", i)
            w.log(row, int(step) if isinstance(step, (int, float)) else i)
        w.close()
    return logdir


# ----------------------------------------------------------------------------- the report
def _rel(path: Path, out: Path) -> str:
    """``path`` relative to the report folder (links that work wherever the folder is moved)."""
    import os

    try:
        return Path(os.path.relpath(path.resolve(), out.resolve())).as_posix()
    except ValueError:  # another drive (Windows)
        return str(path)


def write_report(run_dirs: Sequence[str | Path] | Sequence[RunRecord], out_dir: str | Path, *,
                 title: str = "prefrec report", main_metric: str | None = None,
                 columns: Sequence[str] | dict[str, Sequence[str]] | None = None, study_config: str | None = None,
                 tensorboard: bool = False, notes: Sequence[str] = ()) -> Path:
    """Write ``out_dir/report.md`` and ``out_dir/plots/*.png`` for the given runs; returns the path.

    ``columns`` may map table titles to column lists (a study with CF and LM stages has two
    tables with different metrics); a run goes into every table for which it has a value."""
    runs = [r if isinstance(r, RunRecord) else load_run(r) for r in run_dirs]
    if not runs:
        raise ConfigError("no runs to report on", where="report", fix="pass at least one run directory")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = dict(columns) if isinstance(columns, dict) else None
    plots = make_plots(runs, out / PLOTS_DIR, main_metric=main_metric, tables=tables)
    figures = table_figures(runs, tables, out / PLOTS_DIR) if tables else {}
    lines = [f"# {title}", "",
             f"Generated {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by prefrec.",
             ""]
    lines += ["## Results", "", "Best value of each column in **bold** "
              "(lowest for losses and times, highest otherwise)"
              + ("; `[lo, hi]` is a 95 % interval over the evaluation cases (Wilson for hit rates, "
                 "bootstrap for NDCG)" if any(r.ci for r in runs) else "") + ".", ""]
    if tables is not None:
        for caption, cols in tables.items():
            group = [r for r in runs if any(c in r.results for c in cols)]
            if group:
                lines += [f"### {caption}", "", results_table(group, cols), ""]
                if caption in figures:
                    lines += [f"![{caption}]({figures[caption].relative_to(out).as_posix()})", ""]
    else:
        lines += [results_table(runs, columns), ""]
    for n in notes:
        lines += [n, ""]
    lines += ["## Runs", "", "| run | directory | seed | wall time | logged steps |", "| --- | --- | ---: | ---: | ---: |"]
    for r in runs:
        rel = _rel(r.path, out)
        lines.append(f"| {r.name} | `{rel}` | {r.seed if r.seed is not None else '–'} | "
                     f"{_fmt_seconds(r.wall_time)} | {len(r.history)} |")
    total = sum(r.wall_time for r in runs if r.wall_time is not None)
    lines += ["", f"Total wall time: {_fmt_seconds(total)}.", ""]
    if plots:
        lines += ["## Plots", ""]
        for caption, p in plots.items():
            lines += [f"### {caption}", "", f"![{caption}]({p.relative_to(out).as_posix()})", ""]
    own = run_plots(runs)
    if own:
        lines += ["## Per-run plots", "", "Plots each trainer wrote into its own folder:", ""]
        for name, p in own:
            lines.append(f"- {name}: [{p.name}]({_rel(p, out)})")
        lines.append("")
    lines += ["## Environment", "", "| package | version |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in package_versions().items()]
    lines.append("")
    if study_config:
        lines += ["## Study config", "", "```yaml", study_config.rstrip(), "```", ""]
    lines += ["## Resolved configs", ""]
    for r in runs:
        if r.config_text:
            lines += [f"<details><summary>{r.name}</summary>", "", "```yaml", r.config_text.rstrip(), "```", "",
                      "</details>", ""]
    if tensorboard:
        tb = export_tensorboard(runs, out / "tensorboard")
        lines += ["## TensorBoard", "", f"`tensorboard --logdir {tb}`", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
