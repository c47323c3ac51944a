"""The CLI front door: help teaches, errors exit 2 without traceback, stats on real data."""

from __future__ import annotations

import pytest

from prefrec.cli import main


def test_help_lists_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for word in ("data", "train-cf", "sft", "sdpo", "key=value"):
        assert word in out


def test_unknown_dataset_exit_2_no_traceback(capsys, data_dir):
    assert main(["data", "stats", "gowala", "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'gowalla'" in err and "Traceback" not in err


def test_stats_ml100k(capsys, data_dir):
    assert main(["data", "stats", "ml-100k", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "943" in out and "1,682" in out and "100,000" in out


def test_stats_gowalla(capsys, data_dir):
    assert main(["data", "stats", "gowalla", "--data-dir", str(data_dir), "--json"]) == 0
    import json

    st = json.loads(capsys.readouterr().out)
    assert (st["users"], st["items"]) == (29858, 40988)
    assert (st["split/train"], st["split/test"]) == (810128, 217336)


def test_missing_data_dir_message(capsys, tmp_path):
    assert main(["data", "stats", "ml-100k", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "u.data" in err and "--data-dir" in err


def test_overrides_may_follow_options(tmp_path, data_dir, capsys):
    """`prefrec demo --dry-run key=value` and `... --data-dir D key=value`: overrides after options."""
    rc = main(["demo", "--dry-run", "--data-dir", str(data_dir), f"output_dir={tmp_path}", "lm=null"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "psl" in out and "sft" not in out  # lm=null after the options was applied
    with pytest.raises(SystemExit):
        main(["demo", "--dry-run", "--bogus-flag"])
