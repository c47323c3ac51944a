"""Golden test of the report on fabricated run directories: table, bold best, valid PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefrec.report import load_run, lower_is_better, results_table, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _fake_run(root: Path, name: str, ndcg: list[float], loss: list[float], final: dict, lm: bool = False) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(f"name: {name}\nseed: 7\ntrain:\n  epochs: {len(loss)}\n")
    rows = []
    for i, (n, l) in enumerate(zip(ndcg, loss)):
        row = {"step": (i + 1) * 10, "epoch": i, "loss": l, "NDCG@20": n}
        if lm:
            row.update({"rewards/chosen": 0.1 * i, "rewards/margins": 0.2 * i})
        rows.append(json.dumps(row))
    (d / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    (d / "results.json").write_text(json.dumps({"metrics": final, "wall_time_s": 12.5}))
    return d


@pytest.fixture()
def runs(tmp_path):
    a = _fake_run(tmp_path, "bpr", [0.1, 0.2, 0.25], [0.9, 0.5, 0.4], {"NDCG@20": 0.25, "Recall@20": 0.30})
    b = _fake_run(tmp_path, "psl", [0.15, 0.3, 0.33], [1.2, 0.8, 0.7], {"NDCG@20": 0.33, "Recall@20": 0.29}, lm=True)
    return [a, b]


def test_report_golden(runs, tmp_path):
    out = tmp_path / "report"
    path = write_report(runs, out, title="golden")
    text = path.read_text()
    # The table, with the best value per column in bold.
    assert "| run | NDCG@20 | Recall@20 |" in text
    assert "| bpr | 0.2500 | **0.3000** |" in text
    assert "| psl | **0.3300** | 0.2900 |" in text
    # Seeds, wall times, versions, resolved configs.
    assert "| bpr | " in text and "| 7 |" in text and "12.5 s" in text
    for pkg in ("prefrec", "torch", "transformers"):
        assert f"| {pkg} |" in text
    assert "epochs: 3" in text
    # Every linked plot exists and is a real PNG image.
    links = [line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert {"plots/loss.png", "plots/valid_NDCG_20.png", "plots/rewards.png", "plots/metrics.png"} <= set(links)
    from PIL import Image

    for link in links:
        p = out / link
        assert p.read_bytes()[:8] == PNG_MAGIC
        with Image.open(p) as im:
            im.verify()
            assert im.size[0] > 100 and im.size[1] > 100


def test_lower_is_better_and_ties():
    assert lower_is_better("loss") and lower_is_better("valid/loss") and lower_is_better("wall_time_s")
    assert not lower_is_better("NDCG@20") and not lower_is_better("rewards/margins")


def test_loss_column_bold_is_minimum(tmp_path):
    a = _fake_run(tmp_path, "a", [0.1], [0.5], {"loss": 0.5, "HR@1": 0.2})
    b = _fake_run(tmp_path, "b", [0.1], [0.3], {"loss": 0.3, "HR@1": 0.2})
    table = results_table([load_run(a), load_run(b)])
    assert "| a | 0.5000 | **0.2000** |" not in table  # column order: HR@1 first
    assert "| a | **0.2000** | 0.5000 |" in table
    assert "| b | **0.2000** | **0.3000** |" in table  # a tie is bold in both rows


def test_torn_last_line_and_no_results(tmp_path):
    d = tmp_path / "killed"
    d.mkdir()
    (d / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0, "NDCG@20": 0.1}\n{"step": 2, "lo')
    rec = load_run(d)
    assert rec.results == {"loss": 1.0, "NDCG@20": 0.1}


def test_missing_run_dir_is_a_clear_error(tmp_path):
    from prefrec.errors import DataError

    with pytest.raises(DataError, match="run directory not found"):
        load_run(tmp_path / "nope")


def test_tensorboard_flag(runs, tmp_path):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        from prefrec.errors import ConfigError

        with pytest.raises(ConfigError, match="pip install tensorboard"):
            write_report(runs, tmp_path / "r", tensorboard=True)
    else:
        path = write_report(runs, tmp_path / "r", tensorboard=True)
        assert list((tmp_path / "r" / "tensorboard").rglob("events.out.tfevents.*"))
        assert "tensorboard --logdir" in path.read_text()
