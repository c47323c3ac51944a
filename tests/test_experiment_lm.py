"""A study with LM stages (untuned -> SFT -> S-DPO) on a tiny random Llama and real ml-100k cases:
every stage runs, the report has the LM table, and a second run skips everything."""

import json

import pytest

from prefrec.experiment import load_experiment, plan, run_experiment, table_of

STUDY = """\
name: lmstudy
output_dir: {out}
seed: 3
data_dir: {data}
lm:
  model: tiny
  dataset: ml-100k
  sft: {{train_limit: 8, max_steps: 2, eval_limit: 0, per_device_train_batch_size: 4, plots: false}}
  preference:
    sdpo: {{loss: sdpo, num_negatives: 3, train_limit: 8, max_steps: 2, eval_limit: 0,
           per_device_train_batch_size: 4, plots: false}}
  evaluate: {{limit: 4, max_new_tokens: 4}}
"""


@pytest.mark.slow
def test_lm_study_runs_then_skips(tmp_path, data_dir):
    f = tmp_path / "study.yaml"
    f.write_text(STUDY.format(out=tmp_path / "runs", data=data_dir))
    exp = load_experiment(f)
    stages = plan(exp)
    labels = ["random", "popularity", "lm-base", "sft", "sdpo"]
    assert [(s.label, s.kind) for s in stages] == [("random", "baseline"), ("popularity", "baseline"),
                                                   ("lm-base", "evaluate-lm"), ("sft", "sft"),
                                                   ("sdpo", "preference")]
    assert stages[4].upstream == ["sft"] and stages[4].config.model == str(stages[3].run_dir)
    res = run_experiment(exp, echo=lambda s: None)
    assert res.ran == labels
    for s in stages:
        res_json = json.loads((s.run_dir / "results.json").read_text())
        m = res_json["metrics"]
        assert m["n_cases"] == 4
        if s.label != "random":  # the random row is an exact expectation: no interval
            lo, hi = res_json["ci"]["rank HR@1"]
            assert lo <= m["rank HR@1"] <= hi
        assert 0 <= m["HR@1"] <= m["ValidRatio"] <= 1 and 0 <= m["rank HR@1"] <= m["rank HR@5"] <= 1
    table = table_of(res.report)
    assert "### LM recommenders" in table and "| sdpo |" in table and "| lm-base |" in table
    assert "| random |" in table and "| popularity |" in table
    again = run_experiment(load_experiment(f), echo=lambda s: None)
    assert again.ran == [] and again.skipped == labels
    # changing the evaluation re-runs every LM stage (it is part of their key), nothing else moves
    exp3 = load_experiment(f, ["lm.evaluate.limit=3"])
    assert all(a.key != b.key for a, b in zip(plan(exp3), stages))


def test_lm_study_errors(tmp_path, data_dir):
    from prefrec.errors import ConfigError

    f = tmp_path / "study.yaml"
    f.write_text(STUDY.format(out=tmp_path / "runs", data=data_dir))
    with pytest.raises(ConfigError, match="set by the study"):
        load_experiment(f, ["lm.sft.seed=4"])
    with pytest.raises(ConfigError, match="beta"):
        load_experiment(f, ["lm.preference.sdpo.beta=0"])
    with pytest.raises(ConfigError, match="start from the SFT model"):
        load_experiment(f, ["lm.sft=null"])
