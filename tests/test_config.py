"""Typed config: YAML + dotted overrides, unknown keys name the closest valid key."""

from __future__ import annotations

import pytest

from prefrec.config import Config, config_hash, dump_config, load_config, parse_override
from prefrec.errors import ConfigError


class Train(Config):
    lr: float = 0.1
    epochs: int = 5


class Loss(Config):
    name: str = "psl"
    tau: float = 0.05


class Exp(Config):
    dataset: str = "ml-100k"
    train: Train = Train()
    loss: Loss = Loss()


def test_defaults_yaml_and_overrides_layer_in_order(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("dataset: gowalla\ntrain:\n  lr: 0.01\n")
    cfg = load_config(Exp, f, ["train.epochs=7", "loss.tau=1e-3"])
    assert cfg.dataset == "gowalla" and cfg.train.lr == 0.01 and cfg.train.epochs == 7
    assert cfg.loss.tau == pytest.approx(1e-3) and cfg.loss.name == "psl"


def test_unknown_key_names_closest(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  epocs: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(Exp, f)
    msg = str(e.value)
    assert "'train.epocs'" in msg and "'train.epochs'" in msg and str(f) in msg


def test_unknown_override_key():
    with pytest.raises(ConfigError, match="did you mean 'loss.tau'"):
        load_config(Exp, None, ["loss.tua=0.1"])


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(Exp, None, ["train.epochs=many"])


def test_bad_yaml_names_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("dataset: x\ntrain: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml, line \d"):
        load_config(Exp, f)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Exp, tmp_path / "nope.yaml")
    f = tmp_path / "list.yaml"
    f.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Exp, f)


def test_override_parsing():
    assert parse_override("a.b=1e-3") == (["a", "b"], 1e-3)
    assert parse_override("x=true") == (["x"], True)
    assert parse_override("x=[1, 2]") == (["x"], [1, 2])
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("novalue")


def test_dump_roundtrip_and_hash(tmp_path):
    cfg = load_config(Exp, None, ["train.lr=0.5"])
    dump_config(cfg, tmp_path / "out.yaml")
    again = load_config(Exp, tmp_path / "out.yaml")
    assert again == cfg
    assert config_hash(again) == config_hash(cfg)
    assert config_hash(load_config(Exp, None, ["train.lr=0.4"])) != config_hash(cfg)
