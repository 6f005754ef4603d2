"""The option groups of :class:`~csetgraph.models.CSET`, one small frozen dataclass per part.

Each group checks its own values when it is made and names the argument in its error
(:class:`OptionError`, a ``ValueError``), as PyG's layers and nanoGPT's ``GPTConfig`` do; the
model knows nothing of the project's config files. :func:`csetgraph.models.build_model`
translates ``model.*`` config keys into these groups and an :class:`OptionError` back into a
config error naming the key.

>>> se = SEOptions(direction="both", layers=(0, 1, 2), ratio=0.25, similarity="cosine")
>>> SEOptions(direction="sideways")  # doctest: +IGNORE_EXCEPTION_DETAIL
Traceback (most recent call last):
OptionError: se.direction must be one of ('none', 'i2v', 'v2i', 'both'), got 'sideways'

The defaults are the paper's mechanisms as written (the *literal* reading, every switch off);
the recipes in ``configs/`` choose the readings that keep each mechanism alive (docs/model.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from csetgraph.data.records import DIRECTIONS
from csetgraph.graph.similarity import SIMILARITIES
from csetgraph.nn.mhga import PAPER_STRENGTHS

SE_DIRECTIONS = ("none", *DIRECTIONS, "both")  # the shared "<query>2<gallery>" names
MHGA_GRAPHS = ("complete", "local")
MHGA_LAYERS = ("dense", "message_passing")
MHGA_ADJACENCIES = ("sequence", "grid")
#: What the image triplet term reads: the neck input (before the BNNeck's BatchNorm) or the
#: retrieval feature (the BatchNorm output, L2-normalised by the loss as at retrieval).
TRIPLET_FEATURES = ("neck", "retrieval")
#: With SE, the W' rows either replace the image rows in eq. 9 (the paper's text) or join them.
TRIPLET_HEADS = ("replace", "add")
TRIPLET_HEAD_FORMS = ("plain", "residual", "identity")
TRIPLET_HEAD_NORMS = ("none", "batch")


class OptionError(ValueError):
    """A model option out of range or an impossible combination.

    Attributes:
        argument: the option's name as ``group.field`` (``"se.ratio"``, ``"encoder.depth"``).
        reason: the message without the name.
    """

    def __init__(self, argument: str, reason: str) -> None:
        super().__init__(f"{argument}{'' if reason.startswith('=') else ' '}{reason}")
        self.argument = argument
        self.reason = reason


def _choice(group: str, name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise OptionError(f"{group}.{name}", f"must be one of {tuple(choices)}, got {value!r}")


def _fraction(group: str, name: str, value: float, *, closed: bool = True) -> None:
    ok = 0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0
    if not ok:
        bound = "[0, 1]" if closed else "[0, 1)"
        raise OptionError(f"{group}.{name}", f"must lie in {bound}, got {value}")


@dataclass(frozen=True)
class EncoderOptions:
    """The two modality encoders (:class:`~csetgraph.models.encoder.ViTEncoder`).

    Args:
        backbone: a timm ViT name.
        img_size: input ``(height, width)``.
        embed_dim, depth, num_heads: override the backbone's (``None`` keeps them).
        patch_stride: patch projection stride (``None``: the patch size).
        drop_path_rate: stochastic depth.
        pretrained: ``""`` (random init), a timm name or a checkpoint path.
        shared: one encoder for both modalities (a single-stream ablation, not CSET).
    """

    backbone: str = "vit_small_patch16_224"
    img_size: tuple[int, int] = (256, 128)
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    patch_stride: int | None = None
    drop_path_rate: float = 0.1
    pretrained: str = ""
    shared: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "img_size", tuple(self.img_size))
        _fraction("encoder", "drop_path_rate", self.drop_path_rate, closed=False)


@dataclass(frozen=True)
class SEOptions:
    """Similarity exchange (eq. 1-3, :class:`~csetgraph.nn.SimilarityExchange`).

    Args:
        direction: ``"none"``, ``"i2v"``, ``"v2i"`` or ``"both"`` (Table 1).
        layers: exchange after these blocks (0-based; ``k`` is between blocks ``k`` and
            ``k + 1``).
        alpha: weight of the Jaccard term of eq. 3.
        ratio: fraction of each image's patches that receive a partner's feature.
        temperature: softmax temperature of eq. 1.
        similarity: eq. 1's product: ``"dot"`` (raw tokens, as written), ``"scaled"``
            (``1/sqrt(d)``) or ``"cosine"`` (L2-normalised tokens).
    """

    direction: str = "none"
    layers: tuple[int, ...] = ()
    alpha: float = 0.7
    ratio: float = 0.1
    temperature: float = 1.0
    similarity: str = "dot"

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(sorted(set(self.layers))))
        _choice("se", "direction", self.direction, SE_DIRECTIONS)
        _choice("se", "similarity", self.similarity, SIMILARITIES)
        _fraction("se", "alpha", self.alpha)
        _fraction("se", "ratio", self.ratio)
        if self.temperature <= 0:
            raise OptionError("se.temperature", f"must be positive, got {self.temperature}")
        if self.enabled and not self.layers:
            raise OptionError(
                "se.layers",
                "is empty while se.direction is set: list the blocks after which SE happens, "
                "or set se.direction='none'",
            )

    @property
    def enabled(self) -> bool:
        return self.direction != "none"


@dataclass(frozen=True)
class TripletOptions:
    """What eq. 9 trains, and the ``W'`` heads that exist with SE.

    Args:
        feature: the image rows of the triplet term: ``"neck"`` (the neck input, before the
            BatchNorm) or ``"retrieval"`` (the BatchNorm output, the retrieval embedding).
        heads: with SE, the ``W'`` rows of the clean and mixed class tokens ``"replace"`` the
            image rows (the paper's text) or ``"add"`` a second triplet term beside them.
        head_dropout: dropout at the end of each ``W'`` head (the paper's 0.5 is literal).
        head_form: ``"plain"`` (the paper's feed-forward head, ``W'(x)``), ``"residual"``
            (``x + W'(x)``, the class token kept beside the head's output) or ``"identity"``
            (no head: eq. 9 reads the clean and mixed class tokens themselves).
        head_norm: ``"none"`` (the paper's head) or ``"batch"``: each head ends in a
            BatchNorm without affine parameters, so its modality's rows are standardised per
            dimension and the head cannot map every image to one point.
        head_identity: the ``W'`` rows also get identity logits (a BNNeck of their own), so
            the mixed streams' class tokens are trained by an identity loss (off: the paper's
            text, where only eq. 9 reads them).
    """

    feature: str = "neck"
    heads: str = "replace"
    head_dropout: float = 0.5
    head_form: str = "plain"
    head_norm: str = "none"
    head_identity: bool = False

    def __post_init__(self) -> None:
        _choice("triplet", "feature", self.feature, TRIPLET_FEATURES)
        _choice("triplet", "heads", self.heads, TRIPLET_HEADS)
        _fraction("triplet", "head_dropout", self.head_dropout, closed=False)
        _choice("triplet", "head_form", self.head_form, TRIPLET_HEAD_FORMS)
        _choice("triplet", "head_norm", self.head_norm, TRIPLET_HEAD_NORMS)


@dataclass(frozen=True)
class CAOptions:
    """Cross attention (mixed query, clean keys and values) with its ``W`` heads.

    Args:
        enabled: build the branch (it needs SE's mixed stream).
        heads: attention heads.
        dropout: dropout at the end of each ``W`` head (the paper's 0.5).
    """

    enabled: bool = False
    heads: int = 4
    dropout: float = 0.5

    def __post_init__(self) -> None:
        if self.heads < 1:
            raise OptionError("ca.heads", f"must be at least 1, got {self.heads}")
        _fraction("ca", "dropout", self.dropout, closed=False)


@dataclass(frozen=True)
class MHGAOptions:
    """The MHGA branch (:class:`~csetgraph.models.cset.MHGABranch`).

    Args:
        enabled: build the branch.
        heads: attention heads (must divide the token width).
        strengths: ``(λ1, λ2, λ3)`` of eq. 4.
        learn_strengths: learn the strengths instead of fixing them.
        adjacency: ``"sequence"`` (``|pos_i - pos_j| = 1``) or ``"grid"``.
        graph: ``"complete"`` or ``"local"`` (same and adjacent edges only).
        layer: complete graph: ``"dense"`` or ``"message_passing"``.
        pair_graph: in training, one graph over the ``2N`` tokens of a pair (off: each
            image's own ``N``-token graph, as at inference).
    """

    enabled: bool = False
    heads: int = 4
    strengths: tuple[float, ...] = PAPER_STRENGTHS
    learn_strengths: bool = False
    adjacency: str = "sequence"
    graph: str = "complete"
    layer: str = "dense"
    pair_graph: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "strengths", tuple(self.strengths))
        if self.heads < 1:
            raise OptionError("mhga.heads", f"must be at least 1, got {self.heads}")
        if len(self.strengths) != 3:
            raise OptionError("mhga.strengths", f"must hold 3 values, got {self.strengths}")
        _choice("mhga", "adjacency", self.adjacency, MHGA_ADJACENCIES)
        _choice("mhga", "graph", self.graph, MHGA_GRAPHS)
        _choice("mhga", "layer", self.layer, MHGA_LAYERS)
