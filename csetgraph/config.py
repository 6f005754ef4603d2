"""Configuration: nested dataclasses, YAML files and dotted command-line overrides.

The dataclass defaults are the CPU-sized synthetic recipe that ``make train`` runs (also written
out as ``configs/synthetic.yaml``); the paper's recipes live in ``configs/`` (``sysu_mm01.yaml``,
``regdb.yaml``, ``llcm.yaml``) and set every value that differs.

>>> cfg = load_config("configs/synthetic.yaml", ["train.epochs=3", "model.depth=4"])

Unknown keys and values of the wrong type are errors that name the key and list the valid
keys. No config object is passed to a layer: :mod:`csetgraph.models` adapts it to keyword
arguments.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from csetgraph.errors import ConfigError
from csetgraph.files import write_atomic
from csetgraph.nn.mhga import PAPER_STRENGTHS

#: The autocast choices of ``train.amp`` and ``eval.amp`` (what ``auto`` means differs:
#: :func:`csetgraph.engine.distributed.autocast_context` for training,
#: :func:`csetgraph.evaluation.features.eval_autocast` for feature extraction).
AMP_MODES = ("auto", "off", "bf16", "fp16")


@dataclass
class SyntheticConfig:
    """The synthetic data set generated into ``data.root`` (see :mod:`csetgraph.data.synthetic`).

    Generated only into a missing or empty folder, or one generated before (its marker file
    records these values: the same values reuse it, others regenerate it); any other folder
    is refused, never written to. The real-data recipes set ``enabled: false``.
    """

    enabled: bool = True  # false: data.root is a real data set, never written to
    num_train_ids: int = 300
    num_val_ids: int = 24
    num_test_ids: int = 48
    images_per_camera: int = 3
    height: int = 128
    width: int = 64
    seed: int = 0


@dataclass
class DataConfig:
    dataset: str = "sysu_mm01"  # sysu_mm01 | regdb | llcm
    root: str = "data/synthetic_sysu_mm01"
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    train_split: str = "train+val"  # train+val (published numbers) | train (select on val)
    trial: int = 1  # RegDB split 1-10
    height: int = 128  # network input size (paper: 256 x 128)
    width: int = 64
    num_ids_per_batch: int = 8  # P identities per batch ...
    num_instances: int = 4  # ... x K images per identity and modality
    num_workers: int = 2
    mean: list[float] | None = None  # None: the backbone's pretrained statistics
    std: list[float] | None = None
    pad: int = 10
    flip_prob: float = 0.5
    erasing_prob: float = 0.0  # paper recipes: 0.5
    grayscale_prob: float = 0.5  # turn visible training images grey (channel augmentation)
    skip_corrupt: bool = False  # skip unreadable images (and report how many) instead of failing
    pipeline: str = "tensor"  # tensor (decode-once cache + on-device augmentation) | pil
    cache_dir: str = ""  # "" -> $XDG_CACHE_HOME/csetgraph or ~/.cache/csetgraph (docs/loader.md)


@dataclass
class SEConfig:
    direction: str = "both"  # none | i2v | v2i | both
    # exchange after these blocks: every block but the last, as the paper's recipes do
    layers: list[int] = field(default_factory=lambda: [0, 1, 2])
    alpha: float = 0.7
    ratio: float = 0.375  # fraction of each image's patches that receive a partner's feature
    temperature: float = 1.0
    # eq. 1's product: dot (raw tokens, the paper as written) | scaled (1/sqrt(d)) | cosine
    # (L2-normalised tokens; docs/model.md: on raw tokens A picks the receiver's own position)
    similarity: str = "cosine"


@dataclass
class CAConfig:
    enabled: bool = True
    heads: int = 4


@dataclass
class TripletConfig:
    """What eq. 9 trains (docs/model.md); the paper's text is feature=neck, heads=replace,
    head_dropout=0.5, head_form=plain, head_norm=none."""

    feature: str = "neck"  # neck (before the BNNeck's BatchNorm) | retrieval (after it)
    heads: str = "add"  # with SE, the W' rows: replace the image rows | add a second term
    head_dropout: float = 0.0  # dropout at the end of each W' head
    head_form: str = "residual"  # plain: W'(x), the paper's | residual: x + W'(x) | identity: x
    head_norm: str = "none"  # none: the paper's head | batch: a BatchNorm (no affine) after it
    head_identity: bool = False  # the W' rows' own identity loss (loss.head_identity_weight)


@dataclass
class MHGAConfig:
    enabled: bool = True
    heads: int = 4
    strengths: list[float] = field(default_factory=lambda: list(PAPER_STRENGTHS))
    learn_strengths: bool = False
    adjacency: str = "sequence"  # sequence (the paper's |pos_i - pos_j| = 1) | grid
    graph: str = "complete"  # complete (every token pair) | local (same + adjacent edges only)
    layer: str = "dense"  # complete graph: dense (relation matrix) | message_passing (PyG graph)
    pair_graph: bool = False  # True: train on the 2N-token graph of each pair (docs/design.md)


@dataclass
class ModelConfig:
    backbone: str = "vit_tiny_patch16_224"  # a timm ViT name
    # the shipped synthetic backbone (weights/README.md; a path relative to the project folder)
    pretrained: str = "weights/synthetic_vit_tiny.safetensors"  # "" random init | timm name | path
    embed_dim: int | None = 128  # None: the backbone's own width/depth/heads
    depth: int | None = 4
    num_heads: int | None = 4
    patch_stride: int | None = None  # None: = patch size; smaller gives overlapping patches
    drop_path_rate: float = 0.0
    dropout: float = 0.5  # dropout at the end of the W heads (CA); W' has model.triplet
    share_encoders: bool = False  # True: one encoder for both modalities (not CSET; ablation)
    se: SEConfig = field(default_factory=SEConfig)
    triplet: TripletConfig = field(default_factory=TripletConfig)
    ca: CAConfig = field(default_factory=CAConfig)
    mhga: MHGAConfig = field(default_factory=MHGAConfig)


@dataclass
class LossConfig:
    triplet_weight: float = 0.7  # beta
    margin: float = 0.3
    normalize_triplet: bool = True  # eq. 9 on L2-normalised features (False: raw features)
    label_smoothing: float = 0.0
    distill_weight: float = 1.0  # gamma, cross-distillation (only with model.ca.enabled)
    ca_identity_weight: float = 0.3  # the CA logits' own identity loss (0: the paper's text)
    head_identity_weight: float = 0.3  # the W' identity loss (model.triplet.head_identity)
    distill_mutual: bool = False  # true: both ways | false: the clean logits teach the CA ones


@dataclass
class TrainConfig:
    epochs: int = 14  # paper recipes: 120
    lr: float = 3.5e-4  # synthetic, from the shipped weights (tuned on val ids); paper: 3e-4
    weight_decay: float = 0.0  # paper recipes: 5e-4
    step_size: int = 12  # paper recipes: 40
    gamma: float = 0.1
    warmup_epochs: int = 1
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:1 ...
    amp: str = "auto"  # auto (bf16 on GPUs with native bf16, else fp32) | off | bf16 | fp16
    output_dir: str = "runs"
    run_name: str = ""  # "" -> a timestamped name
    resume: str = ""  # a run folder or checkpoint file
    eval_every: int = 0  # validate every N epochs (0: never during training)
    max_steps_per_epoch: int = 0  # 0: full epochs; >0 caps them (smoke tests)
    num_threads: int = 0  # 0: torch's default
    overwrite: bool = False  # True: move an existing run folder aside (renamed, never deleted)
    log_every: int = 20  # read the loss terms back from the device every N steps
    compile: bool = False  # torch.compile the model and the loss
    sync_bn: bool = False  # SyncBatchNorm across processes under torchrun
    ema_decay: float = 0.0  # >0: retrieve with a moving average of the weights (0: off)


@dataclass
class EvalConfig:
    modes: list[str] = field(default_factory=lambda: ["all", "indoor"])
    trials: int = 10
    batch_size: int = 128
    flip: bool = False  # average the embeddings of an image and its mirror
    metric: str = "cosine"
    amp: str = "auto"  # autocast of feature extraction: auto (on CUDA only) | off | bf16 | fp16


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# --------------------------------------------------------------------------------------------
# schema checking


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (arg,) = typing.get_args(tp)
        return f"list[{_type_name(arg)}]"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted where harmless."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return _build(tp, value, key)
    if origin is list:
        (arg,) = typing.get_args(tp)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        return [_coerce(v, arg, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {tp!r}")  # pragma: no cover - schema bug


def _build(cls: type, values: Mapping[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in hints:
            raise ConfigError(f"unknown config key {full!r}; valid keys here: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], full)
    try:
        return cls(**kwargs)
    except TypeError as err:  # pragma: no cover - all fields have defaults
        raise ConfigError(f"{prefix or 'config'}: {err}") from err


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    cls: Any = Config
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(cls)
        here = ".".join(parts[: i + 1])
        if part not in hints:
            valid = ", ".join(f.name for f in dataclasses.fields(cls))
            raise ConfigError(f"unknown config key {here!r}; valid keys here: {valid}")
        if i == len(parts) - 1:
            node[part] = value
            return
        cls = hints[part]
        if not dataclasses.is_dataclass(cls):
            raise ConfigError(f"{here!r} is a value, not a section; cannot set {dotted!r}")
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{here!r} must be a mapping")


class _YAMLLoader(yaml.SafeLoader):
    """YAML with YAML 1.2's booleans: only ``true``/``false``, so ``amp: off`` stays ``"off"``.

    PyYAML follows YAML 1.1, where ``off``, ``on``, ``yes``, ``no`` are booleans, which made
    the documented ``train.amp=off`` a type error.
    """


_YAMLLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _read_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_YAMLLoader)  # a SafeLoader: builds no arbitrary objects


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``"a.b=value"``; the value is read as YAML (``3``, ``true``, ``[1, 2]``, ``x``)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = _read_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(
            f"override {text!r}: cannot parse the value ({_yaml_problem(err)}); quote it"
        ) from err
    return key, value


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong and where (``line L, column C``), 1-based."""
    problem = getattr(err, "problem", None) or getattr(err, "context", None) or str(err)
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + " ".join(str(problem).split())


@dataclass(frozen=True)
class Range:
    """The valid interval of a numeric option (``None``: unbounded on that side)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: low itself is not allowed
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if not math.isfinite(value):  # NaN and the infinities are in no interval
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (
            self.high is not None and (value > self.high or (self.high_open and value == self.high))
        )

    def __str__(self) -> str:
        lo = "" if self.low is None else f"{'>' if self.low_open else '>='} {_number(self.low)}"
        hi = "" if self.high is None else f"{'<' if self.high_open else '<='} {_number(self.high)}"
        return " and ".join(p for p in (lo, hi) if p)


def _number(value: float) -> str:
    """A bound as people write it: ``1``, ``0.5``, ``4294967295`` (never ``4.29497e+09``)."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


_COUNT, _SIZE, _NONNEG = Range(1), Range(1), Range(0)
_PROB, _POSITIVE = Range(0, 1), Range(0, low_open=True)

#: Numeric options with a valid range, checked when a config is built (None values pass).
#: A straight table: one line per option; tests/test_config.py checks every key exists.
RANGES: dict[str, Range] = {
    "data.synthetic.num_train_ids": Range(2),
    "data.synthetic.num_val_ids": _NONNEG,
    "data.synthetic.num_test_ids": Range(2),
    "data.synthetic.images_per_camera": _COUNT,
    "data.synthetic.height": _SIZE,
    "data.synthetic.width": _SIZE,
    "data.trial": Range(1, 10),
    "data.height": _SIZE,
    "data.width": _SIZE,
    "data.num_ids_per_batch": Range(2),  # batch-hard triplets need another identity
    "data.num_instances": _COUNT,
    "data.num_workers": _NONNEG,
    "data.pad": _NONNEG,
    "data.flip_prob": _PROB,
    "data.erasing_prob": _PROB,
    "data.grayscale_prob": _PROB,
    "model.embed_dim": _COUNT,
    "model.depth": _COUNT,
    "model.num_heads": _COUNT,
    "model.patch_stride": _COUNT,
    "model.drop_path_rate": Range(0, 1, high_open=True),
    "model.dropout": Range(0, 1, high_open=True),
    "model.se.alpha": _PROB,
    "model.se.ratio": Range(0, 1, low_open=True),
    "model.se.temperature": _POSITIVE,
    "model.ca.heads": _COUNT,
    "model.mhga.heads": _COUNT,
    "loss.triplet_weight": _NONNEG,
    "loss.margin": _NONNEG,
    "loss.label_smoothing": Range(0, 1, high_open=True),
    "loss.distill_weight": _NONNEG,
    "loss.ca_identity_weight": _NONNEG,
    "loss.head_identity_weight": _POSITIVE,  # 0 would leave the W' classifier untrained
    "train.epochs": _COUNT,
    "train.lr": _POSITIVE,
    "train.weight_decay": _NONNEG,
    "train.step_size": _COUNT,
    "train.gamma": _POSITIVE,
    "train.warmup_epochs": _NONNEG,
    "train.seed": Range(0, 2**32 - 1),  # what every generator (torch, numpy, random) accepts
    "train.eval_every": _NONNEG,
    "train.max_steps_per_epoch": _NONNEG,
    "train.num_threads": Range(0, 1024),  # thousands of threads crash torch's thread pool
    "train.log_every": _COUNT,
    "train.ema_decay": Range(0, 1, high_open=True),
    "eval.trials": _COUNT,
    "eval.batch_size": _COUNT,
}


def check_ranges(cfg: Config) -> None:
    """Raise one :class:`ConfigError` naming the first option outside its :data:`RANGES`."""
    for key, valid in RANGES.items():
        value: Any = cfg
        for part in key.split("."):
            value = getattr(value, part)
        if value is not None and value not in valid:
            finite = "a finite number " if math.isinf(value) else ""
            raise ConfigError(f"{key}={value!r} is out of range: it must be {finite}{valid}")


#: ``data.train_split`` values: what the training split may hold (never the test ids).
TRAIN_SPLITS = ("train+val", "train", "val")


def check_combinations(cfg: Config) -> None:
    """Raise one :class:`ConfigError` for values that pass :data:`RANGES` but cannot work.

    Checked when a config is built, so a mistake stops a command before anything is
    written: a training split that is not one, input statistics that are not one finite
    number per colour channel (or a zero standard deviation, which divides by zero), MHGA
    strengths that are not one per relation, attention heads that do not divide
    ``model.embed_dim``, and a synthetic SYSU-MM01 set without validation identities
    (its ``exp/val_id.txt`` would be empty).
    """
    data, model = cfg.data, cfg.model
    if data.train_split not in TRAIN_SPLITS:
        raise ConfigError(
            f"data.train_split={data.train_split!r} is not a training split: use one of "
            f"{', '.join(TRAIN_SPLITS)} (the test identities are never trained on)"
        )
    for key, values in (("data.mean", data.mean), ("data.std", data.std)):
        if values is None:
            continue
        if len(values) != 3 or not all(math.isfinite(v) for v in values):
            raise ConfigError(
                f"{key}={values} must be three finite numbers, one per colour channel "
                "(e.g. [0.5, 0.5, 0.5]), or null for the backbone's own statistics"
            )
    if data.std is not None and min(data.std) <= 0:
        raise ConfigError(
            f"data.std={data.std}: every value must be > 0 (images are divided by it)"
        )
    strengths = model.mhga.strengths
    if len(strengths) != len(PAPER_STRENGTHS) or not all(math.isfinite(v) for v in strengths):
        raise ConfigError(
            f"model.mhga.strengths={strengths} must be {len(PAPER_STRENGTHS)} finite numbers, "
            f"one per relation (same, adjacent, distant), e.g. {list(PAPER_STRENGTHS)}"
        )
    if model.embed_dim is not None:
        heads = [("model.num_heads", model.num_heads)]
        heads += [("model.ca.heads", model.ca.heads)] if model.ca.enabled else []
        heads += [("model.mhga.heads", model.mhga.heads)] if model.mhga.enabled else []
        for key, count in heads:
            if count is not None and model.embed_dim % count:
                raise ConfigError(
                    f"{key}={count} does not divide model.embed_dim={model.embed_dim}: each "
                    "head takes an equal share of the width; pick a divisor"
                )
    syn = data.synthetic
    if syn.enabled and data.dataset == "sysu_mm01" and syn.num_val_ids < 1:
        raise ConfigError(
            f"data.synthetic.num_val_ids={syn.num_val_ids}: a synthetic SYSU-MM01 set needs at "
            "least one validation identity (it lists them in exp/val_id.txt); set it >= 1"
        )


def config_from_dict(values: Mapping[str, Any] | None) -> Config:
    """Build a :class:`Config` from a nested mapping (missing keys take their defaults).

    Raises:
        ConfigError: unknown keys, wrong types, a numeric value outside its range, or
            values that cannot work together (:func:`check_combinations`).
    """
    cfg = _build(Config, values or {})
    check_ranges(cfg)
    check_combinations(cfg)
    return cfg


def apply_overrides(tree: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply dotted ``key=value`` overrides to a nested config mapping, in place; returns it.

    Each key is checked against the schema as it is set, so a typo names the key at once.
    """
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    return tree


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Read a YAML recipe (or the defaults when ``path`` is None) and apply dotted overrides.

    Args:
        path: a YAML file whose nesting follows :class:`Config`.
        overrides: strings such as ``"train.epochs=3"``, applied in order after the file.

    Raises:
        ConfigError: unknown keys, wrong types, or an unreadable file.
    """
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise ConfigError(
                f"config file {str(path)!r} is a folder; pass a YAML file in it, such as "
                "configs/synthetic.yaml"
            )
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            text = path.read_bytes().decode("utf-8-sig")  # a byte-order mark is accepted
        except UnicodeDecodeError as err:
            raise ConfigError(
                f"config file {str(path)!r} is not UTF-8 text (byte {err.object[err.start]:#04x} "
                f"at offset {err.start}); save it as UTF-8"
            ) from err
        except OSError as err:
            raise ConfigError(
                f"cannot read config file {str(path)!r} ({err.strerror or err})"
            ) from err
        try:
            loaded = _read_yaml(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(err)}") from err
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        tree = loaded
    return config_from_dict(apply_overrides(tree, overrides))


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The config as plain nested dicts and lists (YAML/JSON-ready)."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically (it loads back with :func:`load_config`)."""
    write_atomic(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
