"""Checkpoints: safetensors round trip, atomic replace, latest-complete discovery."""

from __future__ import annotations

import torch

from prefrec.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint


def test_roundtrip_model_and_optimizer(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    save_checkpoint(tmp_path, 7, {"model": model.state_dict(), "optimizer": opt.state_dict()},
                    {"epoch": 2, "best": 0.5})
    folder = latest_checkpoint(tmp_path)
    parts, state = load_checkpoint(folder)
    assert state == {"step": 7, "epoch": 2, "best": 0.5}
    m2 = torch.nn.Linear(3, 2)
    m2.load_state_dict(parts["model"])
    o2 = torch.optim.Adam(m2.parameters(), lr=0.1)
    o2.load_state_dict(parts["optimizer"])
    for a, b in zip(model.parameters(), m2.parameters()):
        assert torch.equal(a, b)
    s1, s2 = opt.state_dict()["state"][0], o2.state_dict()["state"][0]
    assert torch.equal(s1["exp_avg"], s2["exp_avg"]) and s1["step"] == s2["step"]


def test_incomplete_checkpoint_is_ignored_and_old_pruned(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, {"w": {"x": torch.ones(2) * step}}, {}, keep=2)
    # A torn write (folder without state.json) must never be picked.
    (tmp_path / "step-00000009").mkdir()
    (tmp_path / ".tmp-step-abc").mkdir()
    latest = latest_checkpoint(tmp_path)
    assert latest.name == "step-00000003"
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000002", "step-00000003", "step-00000009"]
    parts, _ = load_checkpoint(latest)
    assert torch.equal(parts["w"]["x"], torch.full((2,), 3.0))


def test_no_checkpoint(tmp_path):
    assert latest_checkpoint(tmp_path / "missing") is None
    assert latest_checkpoint(tmp_path) is None
