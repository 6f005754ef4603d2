from pathlib import Path

import pytest

from csetgraph.config import Config, ConfigError, config_to_dict, load_config, save_config

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_and_overrides_apply_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 7\nmodel:\n  depth: 2\n")
    cfg = load_config(path, ["train.epochs=3", "model.se.layers=[1, 2]", "data.mean=null"])
    assert cfg.train.epochs == 3
    assert cfg.model.depth == 2
    assert cfg.model.se.layers == [1, 2]
    assert cfg.data.mean is None
    assert cfg.train.lr == Config().train.lr  # untouched default


def test_int_is_accepted_for_float_but_not_the_reverse():
    assert load_config(None, ["train.lr=1"]).train.lr == 1.0
    assert load_config(None, ["train.lr=3e-4"]).train.lr == 3e-4  # a string in YAML 1.1
    with pytest.raises(ConfigError, match=r"train\.epochs: expected an integer"):
        load_config(None, ["train.epochs=2.5"])


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("train.epoch=3", r"unknown config key 'train\.epoch'.*epochs"),
        ("nosuch.key=1", r"unknown config key 'nosuch'.*data, model, loss, train, eval"),
        ("model.se.alpha=high", r"model\.se\.alpha: expected a number"),
        ("model.mhga.enabled=1", r"model\.mhga\.enabled: expected true or false"),
        ("model.mhga.strengths=[1, x]", r"model\.mhga\.strengths\[1\]: expected a number"),
        ("train.epochs.x=1", r"'train\.epochs' is a value, not a section"),
        ("train.epochs", r"must look like section\.key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, [override])


def test_unknown_key_in_file_lists_valid_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  rooot: /x\n")
    with pytest.raises(
        ConfigError, match=r"unknown config key 'data\.rooot'; valid keys here: .*root"
    ):
        load_config(path)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(bad)


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(None, ["train.epochs=5", "model.mhga.strengths=[1, 0.5, 0.1]"])
    save_config(cfg, tmp_path / "out.yaml")
    assert config_to_dict(load_config(tmp_path / "out.yaml")) == config_to_dict(cfg)


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_shipped_recipes_load(name):
    load_config(ROOT / "configs" / name)


def test_synthetic_recipe_is_the_embedded_default():
    assert config_to_dict(load_config(ROOT / "configs" / "synthetic.yaml")) == config_to_dict(
        Config()
    )
