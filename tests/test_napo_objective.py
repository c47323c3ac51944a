"""NapoObjective: the preference trainer's hook for ``loss: napo`` (fake batches, tiny SASRec)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from prefrec.errors import ConfigError, DataError
from prefrec.lm.napo import (SCORES_KEY, STATE_KEY, NapoObjective, NapoOptions, RunningMean,
                             attach_sequential_signals, napo_batch_loss)
from prefrec.lm.samples import LMSample

N_ITEMS = 30


def _sasrec():
    from prefrec.models.sasrec import SASRec, SASRecConfig

    torch.manual_seed(0)
    return SASRec(SASRecConfig(n_items=N_ITEMS, hidden=8, blocks=1, max_len=5, dropout=0.0))


def _samples(n=6, c=5):
    g = torch.Generator().manual_seed(3)
    out = []
    for i in range(n):
        ids = torch.randperm(N_ITEMS, generator=g)[: c + 3].tolist()
        out.append(LMSample(prompt=f"p{i}", history=[str(x) for x in ids[c:]], candidates=[f"t{x}" for x in ids[:c]],
                            target_index=0, user=i, history_ids=ids[c:], item_ids=ids[:c]))
    return out


def _batch(samples, rows, k=2, beta=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    cols = torch.stack([torch.cat([torch.tensor([s.target_index]), torch.arange(1, 1 + k)]) for s in
                        (samples[i] for i in rows)])
    policy = torch.randn(len(rows), 1 + k, generator=g, dtype=torch.float64).requires_grad_(True)
    reference = torch.randn(len(rows), 1 + k, generator=g, dtype=torch.float64)
    return SimpleNamespace(policy=policy, reference=reference, rows=rows, cols=cols, samples=samples, beta=beta)


def test_attach_signals_match_the_sequential_model():
    model, samples = _sasrec(), _samples()
    attach_sequential_signals(samples, model)
    with torch.no_grad():
        st = model.user_state([s.history_ids for s in samples])
        sc = model.score_items([s.history_ids for s in samples], [s.item_ids for s in samples])
    torch.testing.assert_close(torch.tensor([s.extra[STATE_KEY] for s in samples]), st)
    torch.testing.assert_close(torch.tensor([s.extra[SCORES_KEY] for s in samples]), sc)


def test_attach_needs_item_ids():
    s = LMSample(prompt="p", history=["a"], candidates=["x", "y"], target_index=0)
    with pytest.raises(DataError, match="item_ids"):
        attach_sequential_signals([s], _sasrec())


def test_objective_equals_batch_loss_and_eval_does_not_touch_running_mean():
    samples = _samples()
    opts = NapoOptions(share_ratio=0.5, use_reference=True, beta=0.5)
    obj = NapoObjective(opts, sasrec=_sasrec())
    b = _batch(samples, [4, 1, 2, 5], beta=0.5)
    loss, per_row, extra = obj(b)
    assert {"napo/gamma", "napo/M_b", "napo/shared_k"} <= set(extra) and extra["napo/shared_k"] == 1
    ex = [samples[i].extra for i in b.rows]
    scores = torch.tensor([[e[SCORES_KEY][j] for j in c] for e, c in zip(ex, b.cols[:, 1:].tolist())],
                          dtype=torch.float64)
    states = torch.tensor([e[STATE_KEY] for e in ex])
    ref = napo_batch_loss(b.policy[:, 0], b.policy[:, 1:], opts, ref_pos=b.reference[:, 0],
                          ref_neg=b.reference[:, 1:], neg_scores=scores, user_states=states,
                          example_ids=torch.tensor(b.rows), running_mean=RunningMean(0.9))
    torch.testing.assert_close(per_row, ref.per_row)
    loss.backward()
    assert b.policy.grad is not None
    mbar = obj.running_mean.value
    with torch.no_grad():
        obj(_batch(samples, [0, 3], beta=0.5, seed=1))
    assert obj.running_mean.value == mbar and obj.running_mean.steps == 1
    state = obj.state_dict()
    other = NapoObjective(opts, sasrec=_sasrec())
    other.load_state_dict(state)
    assert other.running_mean.value == mbar


def test_batch_beta_wins_and_reference_free_ignores_reference():
    samples = _samples()
    attach_sequential_signals(samples, _sasrec())
    obj = NapoObjective(NapoOptions(share_negatives=False, gamma0=0.0, use_reference=False))
    b = _batch(samples, [0, 1, 2], beta=2.0)
    _, per_row, _ = obj(b)
    from prefrec.losses import sdpo

    torch.testing.assert_close(per_row, sdpo(2 * b.policy[:, 0], 2 * b.policy[:, 1:]))


def test_missing_sequential_model_is_a_config_error():
    obj = NapoObjective(NapoOptions())
    with pytest.raises(ConfigError, match="sequential model"):
        obj(_batch(_samples(), [0, 1]))


def test_sasrec_from_another_split_is_rejected(tmp_path):
    from prefrec.models.sasrec import save_sasrec

    save_sasrec(_sasrec(), tmp_path / "sas", {"train_split": "0000000000000000"})
    case = SimpleNamespace(user=0, history=(1, 2), target=3)
    obj = NapoObjective(NapoOptions(), sasrec=tmp_path / "sas", train_cases=lambda: [case])
    with pytest.raises(DataError, match="another split"):
        obj(_batch(_samples(), [0, 1]))


def _cfg(**napo):
    from pydantic import Field

    from prefrec.config import Config
    from prefrec.lm.napo import NapoConfig

    class Cfg(Config):  # the fields the preference trainer config carries
        beta: float = 1.0
        reference_free: bool = False
        per_device_train_batch_size: int = 4
        dataset: str = "ml-100k"
        seed: int = 0
        data_dir: str | None = None
        napo: NapoConfig = Field(default_factory=NapoConfig)

    return Cfg


def test_napo_config_section_yaml_and_errors(tmp_path):
    from prefrec.config import load_config
    from prefrec.lm.napo import napo_options

    Cfg = _cfg()
    y = tmp_path / "c.yaml"
    y.write_text("reference_free: true\nnapo:\n  share_ratio: 0.5\n  alpha: 0\n  sasrec: x\n")
    cfg = load_config(Cfg, y, ["napo.gamma0=2"])
    opts = napo_options(cfg)
    assert (opts.share_ratio, opts.alpha, opts.gamma0, opts.use_reference) == (0.5, 0.0, 2.0, False)
    with pytest.raises(ConfigError, match="napo.share_ratoi"):
        load_config(Cfg, None, ["napo.share_ratoi=0.5"])
    with pytest.raises(ConfigError, match="share_ratio"):
        napo_options(load_config(Cfg, None, ["napo.share_ratio=1.5", "napo.sasrec=x"]))
    with pytest.raises(ConfigError, match="at least 2 examples"):
        napo_options(load_config(Cfg, None, ["per_device_train_batch_size=1", "napo.sasrec=x"]))
    napo_options(load_config(Cfg, None, ["per_device_train_batch_size=1", "napo.sasrec=x"]), world_size=2)
    with pytest.raises(ConfigError, match="reference_free"):
        napo_options(load_config(Cfg, None, ["reference_free=true", "napo.use_reference=true", "napo.sasrec=x"]))
    with pytest.raises(ConfigError, match="napo.sasrec"):
        napo_options(load_config(Cfg, None, []))
    # neither sharing nor an adaptive margin: no sequential model needed
    napo_options(load_config(Cfg, None, ["napo.share_negatives=false", "napo.alpha=0"]))


def test_napo_objective_rejects_missing_sasrec_folder(tmp_path):
    from prefrec.config import load_config
    from prefrec.lm.napo import napo_objective

    Cfg = _cfg()
    with pytest.raises(ConfigError, match="does not exist"):
        napo_objective(load_config(Cfg, None, [f"napo.sasrec={tmp_path / 'nope'}"]))
