from pathlib import Path

import pytest

from csetgraph.config import (
    RANGES,
    Config,
    ConfigError,
    config_to_dict,
    load_config,
    save_config,
)

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


BAD_OVERRIDES = [
    ("train.epoch=3", r"unknown config key 'train\.epoch'.*epochs"),
    ("nosuch.key=1", r"unknown config key 'nosuch'.*data, model, loss, train, eval"),
    ("model.se.alpha=high", r"model\.se\.alpha: expected a number"),
    ("model.mhga.enabled=1", r"model\.mhga\.enabled: expected true or false"),
    ("model.mhga.strengths=[1, x]", r"model\.mhga\.strengths\[1\]: expected a number"),
    ("train.epochs.x=1", r"'train\.epochs' is a value, not a section"),
    ("train.epochs", r"must look like section\.key=value"),
]


def test_the_bad_override_list_is_not_empty():
    assert len(BAD_OVERRIDES) >= 5


@pytest.mark.parametrize(("override", "pattern"), BAD_OVERRIDES)
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


RECIPES = sorted(p.name for p in (ROOT / "configs").glob("*.yaml"))


def test_the_recipe_list_is_not_empty():
    assert {"synthetic.yaml", "sysu_mm01.yaml", "regdb.yaml", "llcm.yaml"} <= set(RECIPES)


@pytest.mark.parametrize("name", RECIPES)
def test_shipped_recipes_load(name):
    load_config(ROOT / "configs" / name)


def test_synthetic_recipe_is_the_embedded_default():
    assert config_to_dict(load_config(ROOT / "configs" / "synthetic.yaml")) == config_to_dict(
        Config()
    )


# ------------------------------------------------------------------ numeric ranges

#: (override, message) pairs: each value just outside its range, checked by hand against the
#: option's meaning (not against RANGES).
OUT_OF_RANGE = [
    ("train.epochs=0", "train.epochs=0 is out of range: it must be >= 1"),
    ("train.lr=0", "train.lr=0.0 is out of range: it must be > 0"),
    ("train.lr=-1e-3", "train.lr=-0.001 is out of range: it must be > 0"),
    ("train.lr=.nan", "train.lr=nan is out of range: it must be > 0"),
    ("data.num_ids_per_batch=1", "data.num_ids_per_batch=1 is out of range: it must be >= 2"),
    ("data.num_instances=0", "data.num_instances=0 is out of range: it must be >= 1"),
    ("data.num_workers=-1", "data.num_workers=-1 is out of range: it must be >= 0"),
    ("data.flip_prob=1.5", "data.flip_prob=1.5 is out of range: it must be >= 0 and <= 1"),
    ("data.height=0", "data.height=0 is out of range: it must be >= 1"),
    ("data.trial=11", "data.trial=11 is out of range: it must be >= 1 and <= 10"),
    ("eval.trials=0", "eval.trials=0 is out of range: it must be >= 1"),
    ("eval.batch_size=0", "eval.batch_size=0 is out of range: it must be >= 1"),
    ("model.dropout=1", "model.dropout=1.0 is out of range: it must be >= 0 and < 1"),
    ("model.se.ratio=0", "model.se.ratio=0.0 is out of range: it must be > 0 and <= 1"),
    ("loss.margin=-0.1", "loss.margin=-0.1 is out of range: it must be >= 0"),
    ("loss.ca_identity_weight=-1", "loss.ca_identity_weight=-1.0 is out of range: it must be >= 0"),
    (
        "loss.head_identity_weight=0",
        "loss.head_identity_weight=0.0 is out of range: it must be > 0",
    ),
    ("train.log_every=0", "train.log_every=0 is out of range: it must be >= 1"),
]


def test_the_out_of_range_list_is_not_empty():
    assert len(OUT_OF_RANGE) >= 10


@pytest.mark.parametrize(("override", "message"), OUT_OF_RANGE)
def test_out_of_range_values_are_refused_at_load_time(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert str(err.value) == message


@pytest.mark.parametrize(
    "override",
    ["train.epochs=1", "train.lr=1e-9", "data.flip_prob=1", "model.se.ratio=1", "model.depth=null"],
)
def test_values_at_the_edge_of_their_range_are_accepted(override):
    load_config(None, [override])


def test_every_ranged_key_exists_and_its_default_is_in_range():
    cfg = Config()
    assert RANGES
    for key, valid in RANGES.items():
        value = cfg
        for part in key.split("."):
            assert hasattr(value, part), key
            value = getattr(value, part)
        assert value is None or value in valid, key


def test_a_range_checked_in_a_file_names_the_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  num_ids_per_batch: 1\n")
    with pytest.raises(ConfigError, match=r"data\.num_ids_per_batch=1 is out of range"):
        load_config(path)


def test_off_and_no_are_strings_as_in_yaml_1_2(tmp_path):
    """PyYAML's YAML 1.1 reads off/on/yes/no as booleans, which refused train.amp=off."""
    cfg = load_config(None, ["train.amp=off", "eval.amp=off", "train.compile=true"])
    assert (cfg.train.amp, cfg.eval.amp, cfg.train.compile) == ("off", "off", True)
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  amp: off\n  compile: false\neval:\n  amp: bf16\n")
    cfg = load_config(path)
    assert (cfg.train.amp, cfg.train.compile, cfg.eval.amp) == ("off", False, "bf16")
    with pytest.raises(ConfigError, match=r"train\.compile: expected true or false, got 'yes'"):
        load_config(None, ["train.compile=yes"])


# ------------------------------------------------------- values that cannot work together

#: (override, message) pairs that pass the range table but crashed later (issue 22): each
#: message checked by hand against what the option means.
UNWORKABLE = [
    ("data.train_split=test", "data.train_split='test' is not a training split"),
    ("data.mean=[0.5, 0.5]", r"data.mean=[0.5, 0.5] must be three finite numbers"),
    ("data.std=[0.5]", r"data.std=[0.5] must be three finite numbers"),
    ("data.std=[0, 0, 0]", r"data.std=[0.0, 0.0, 0.0]: every value must be > 0"),
    ("data.mean=[.inf, 0, 0]", r"data.mean=[inf, 0.0, 0.0] must be three finite numbers"),
    ("model.mhga.strengths=[1, 0.5]", "model.mhga.strengths=[1.0, 0.5] must be 3 finite"),
    ("model.num_heads=3", "model.num_heads=3 does not divide model.embed_dim=128"),
    ("model.ca.heads=3", "model.ca.heads=3 does not divide model.embed_dim=128"),
    ("train.seed=-1", "train.seed=-1 is out of range: it must be >= 0 and <= 4294967295"),
    ("train.seed=4294967296", "train.seed=4294967296 is out of range"),
    ("train.num_threads=100000000", "train.num_threads=100000000 is out of range"),
    ("train.lr=.inf", "train.lr=inf is out of range: it must be a finite number > 0"),
    ("loss.margin=.inf", "loss.margin=inf is out of range: it must be a finite number >= 0"),
    ("data.synthetic.num_val_ids=0", "data.synthetic.num_val_ids=0: a synthetic SYSU-MM01"),
]


def test_the_unworkable_list_is_not_empty():
    assert len(UNWORKABLE) >= 10


@pytest.mark.parametrize(("override", "message"), UNWORKABLE)
def test_values_that_cannot_work_are_refused_at_load_time(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert str(err.value).startswith(message), str(err.value)


@pytest.mark.parametrize(
    "overrides",
    [
        ["data.train_split=train"],
        ["data.mean=[0.5, 0.5, 0.5]", "data.std=[0.25, 0.25, 0.25]"],
        ["model.num_heads=8", "model.ca.heads=2", "model.mhga.heads=1"],
        ["model.ca.enabled=false", "model.ca.heads=3"],  # heads of a disabled branch
        ["train.seed=4294967295", "train.num_threads=1024"],
        ["data.synthetic.num_val_ids=0", "data.dataset=regdb"],  # RegDB holds out its own
        ["data.synthetic.num_val_ids=0", "data.synthetic.enabled=false"],
    ],
)
def test_workable_neighbours_are_accepted(overrides):
    load_config(None, overrides)


def test_a_config_that_is_a_folder_or_not_utf8_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"config file '.*' is a folder; pass a YAML file"):
        load_config(tmp_path)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("train:\n  run_name: café\n".encode("latin-1"))  # é at 7 + 12 + 3
    with pytest.raises(ConfigError, match=r"is not UTF-8 text \(byte 0xe9 at offset 22\)"):
        load_config(latin1)


def test_a_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes("train:\n  epochs: 3\n".encode("utf-8-sig"))
    assert load_config(path).train.epochs == 3


def test_a_yaml_error_is_one_line_naming_file_line_and_column(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("train:\n  epochs: 3\n  lr: [1, 2\n")  # the list never closes
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "\n" not in message
    # PyYAML reports the problem where the next token starts: line 4 (the end), column 1.
    assert message.startswith(f"{path}: not valid YAML: line 4, column 1: ")
    tabbed = tmp_path / "tab.yaml"
    tabbed.write_text("train:\n\tepochs: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(tabbed)
    assert "\n" not in str(err.value) and "line 2, column 1" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.mean=[1, 2"])
    assert "\n" not in str(err.value) and "cannot parse the value" in str(err.value)
