"""Mechanism health of a training run: names, accumulation, the epoch summary and verdicts.

Every training step yields the statistics of :mod:`csetgraph.models.health`,
:class:`~csetgraph.nn.exchange.ExchangeStats` and :class:`~csetgraph.losses.TripletStats` as
detached device tensors; :func:`step_statistics` flattens them to ``{name: 0-d tensor}``, the
trainer sums them on the device and reads them back with the loss every ``train.log_every``
steps. Names (also the TensorBoard tags, under ``mechanisms/``):

========================================  ==================================================
``se/block<k>/<dir>/tokens_per_image``    edges per pair of the exchange after block ``k``
``se/block<k>/<dir>/a_diagonal``          mean ``A[i, i]`` of eq. 1 over receiving patches
``se/block<k>/<dir>/same_position``       share of edges whose sender sits at the receiver's
                                          position in the other image
``se/block<k>/<dir>/mean_score``          mean eq. 3 score of the selected edges
``se/<dir>/class_cosine``                 cosine of the mixed and clean class token after
                                          the last block (the receiving modality's stream)
``ca/distill``, ``ca/ce``                 the cross-distillation and cross-entropy terms
``ca/entropy``                            entropy (nats) of the softmax of the CA logits
``triplet/loss``                          the triplet term (eq. 9, mean over anchors)
``triplet/active``                        share of anchors with an open hinge (loss > 0)
``triplet/pos_dist``, ``triplet/neg_dist``  mean hardest positive and negative distance
``triplet_heads/...``                     the same four for a second term on the W' heads
``mhga/<relation>``                       attention mass per target on same, adjacent,
                                          distant neighbours
``mhga/uniform_<relation>``               the same for a uniform attention (the yardstick)
========================================  ==================================================

``<dir>`` is ``i2v`` (infrared tokens receive visible ones) or ``v2i``. Verdict thresholds
are the module constants below; docs/training.md ("Mechanism health") explains them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch only for annotations: `csetgraph inspect` needs no torch
    import torch

#: What the triplet loss trains, by :attr:`csetgraph.models.health.ModelHealth.triplet_feature`.
TRIPLET_FEATURES = {
    "heads": "the W' heads of the clean and mixed class tokens",
    "neck": "the neck input (the retrieval feature before its BatchNorm)",
    "retrieval": "the retrieval feature (the neck's BatchNorm output)",
    "neck+heads": "the neck input, and the W' heads of the clean and mixed class tokens",
    "retrieval+heads": "the retrieval feature, and the W' heads of the clean and mixed class "
    "tokens",
}

#: Receiving modality -> the SE direction that exchanges into it.
_DIRECTION_OF = {"vis": "v2i", "ir": "i2v"}
#: Order of the MHGA relations (the codes of :mod:`csetgraph.graph`).
RELATIONS = ("same", "adjacent", "distant")

# Verdict thresholds (docs/training.md, "Mechanism health").
#: Same-position share at or above which SE is a positional copy.
SE_COPY = 0.9
#: Same-position share above which SE is mostly positional (the issue's "at most half").
SE_MOSTLY_POSITIONAL = 0.5
#: Mean diagonal of ``A`` at or above which eq. 1 mostly votes for the receiver's position.
SE_A_DIAGONAL = 0.5
#: Class-token cosine at or above which the exchange barely changes the final feature.
SE_CLASS_COSINE = 0.98
#: CA logit entropy, as a share of ``log(classes)``, at or above which CA predicts no identity.
CA_UNIFORM = 0.9
#: Distillation / cross-entropy ratio below which CA has little to distil.
CA_DISTILL_RATIO = 0.05
#: Triplet term, as a share of its margin, from which the triplet loss sits at its margin
#: (stuck: eq. 9 gives little signal) ...
TRIPLET_STUCK = 0.9
#: ... up to this share; above it hardest positives are farther than hardest negatives.
TRIPLET_OPEN = 1.1
#: MHGA: every relation's mass within this factor of its uniform share = no preference.
MHGA_UNIFORM = 0.1

#: The verdict name of a second triplet term on the W' heads.
HEADS = "triplet (W' heads)"
#: Verdict levels, worst last.
LEVELS = ("alive", "weak", "degenerate")


def step_statistics(out, terms: dict[str, torch.Tensor], loss_stats) -> dict[str, torch.Tensor]:
    """The flat ``{name: 0-d tensor}`` statistics of one step (no host synchronisation).

    Args:
        out: the model's :class:`~csetgraph.models.cset.CSETOutput`.
        terms: the loss terms (``"ce"``, ``"tri"``, ``"cd"``) from the criterion.
        loss_stats: the criterion's :class:`~csetgraph.losses.LossStats`.
    """
    stats: dict[str, torch.Tensor] = {}
    health = out.health
    layers = health.se_layers if health is not None else ()
    for block, info in zip(layers, out.se_info, strict=False):
        for direction, edges in info.items():
            if edges is None or edges.stats is None:
                continue
            for name, value in edges.stats._asdict().items():
                stats[f"se/block{block}/{direction}/{name}"] = value
    if health is not None:
        for modality, value in health.class_cosine.items():
            stats[f"se/{_DIRECTION_OF[modality]}/class_cosine"] = value
        if health.ca_entropy is not None:
            stats["ca/entropy"] = health.ca_entropy
            stats["ca/distill"] = terms["cd"]
            stats["ca/ce"] = terms["ce"]
        if health.mhga_mass is not None:
            for i, rel in enumerate(RELATIONS):
                stats[f"mhga/{rel}"] = health.mhga_mass[i]
                stats[f"mhga/uniform_{rel}"] = health.mhga_uniform[i]
    # The triplet term (the log's ``tri``) and a second term on the W' heads when the loss
    # has one (``tri_heads``, :attr:`~csetgraph.losses.LossStats.head_triplet`).
    for prefix, term, triplet in (
        ("triplet", "tri", loss_stats.triplet),
        ("triplet_heads", "tri_heads", loss_stats.head_triplet),
    ):
        if triplet is None:
            continue
        if term in terms:
            stats[f"{prefix}/loss"] = terms[term]
        for name, value in triplet._asdict().items():
            stats[f"{prefix}/{name}"] = value
    return {k: v.detach().float() for k, v in stats.items()}


def static_info(out, margin: float) -> dict:
    """What does not change from step to step: what the triplet trains, its margin, classes."""
    health = out.health
    info = {"triplet_margin": float(margin)}
    if health is not None:
        info["triplet_feature"] = health.triplet_feature
        info["num_classes"] = int(health.num_classes)
        info["se_layers"] = list(health.se_layers)
    return info


def summary_line(means: dict[str, float]) -> str:
    """The one-line per-epoch summary ``log.txt`` prints (without the epoch prefix).

    One group per mechanism: per SE exchange the same-position share, ``A``'s diagonal and
    the tokens per image, then the class-token cosines; CA's distillation over cross-entropy
    and logit entropy; the triplet's active share and its distances; MHGA's relation masses.
    """
    parts = []
    se = [
        f"b{block}:{d} same {100 * means[f'{key}/same_position']:.0f}% "
        f"diagA {means[f'{key}/a_diagonal']:.2f} tok {means[f'{key}/tokens_per_image']:.3g}"
        for key, block, d in _se_exchanges(means)
    ]
    cos = [
        f"cos {d} {means[f'se/{d}/class_cosine']:.3f}"
        for d in ("i2v", "v2i")
        if f"se/{d}/class_cosine" in means
    ]
    if se or cos:
        parts.append("SE " + ", ".join(se + cos))
    if "ca/entropy" in means:
        parts.append(f"CA cd/ce {_ratio(means):.3f} H {means['ca/entropy']:.2f}")
    for prefix, short in (("triplet", "tri"), ("triplet_heads", "tri_heads")):
        if f"{prefix}/active" in means:
            parts.append(
                f"{short} active {100 * means[f'{prefix}/active']:.0f}% "
                f"d+ {means[f'{prefix}/pos_dist']:.3f} d- {means[f'{prefix}/neg_dist']:.3f}"
            )
    if "mhga/same" in means:
        parts.append("MHGA " + " ".join(f"{r[:3]} {means[f'mhga/{r}']:.2f}" for r in RELATIONS))
    return " | ".join(parts)


def _se_exchanges(means: dict[str, float]) -> list[tuple[str, int, str]]:
    """``(key prefix, block, direction)`` of every SE exchange in ``means``, in block order."""
    found = set()
    for key in means:
        parts = key.split("/")
        if len(parts) == 4 and parts[0] == "se" and parts[1].startswith("block"):
            found.add((int(parts[1][len("block") :]), parts[2]))
    return [(f"se/block{b}/{d}", b, d) for b, d in sorted(found)]


def _ratio(means: dict[str, float]) -> float:
    return means["ca/distill"] / max(means["ca/ce"], 1e-12)


def mechanisms_section(history: list[dict], static: dict) -> dict:
    """The ``mechanisms`` section of ``metrics.json``: per-epoch means, the last epoch's, the
    static facts and the verdicts."""
    last = history[-1]["stats"] if history else {}
    return {
        "static": static,
        "epochs": history,
        "last": last,
        "verdicts": [
            {"mechanism": m, "level": lv, "findings": f} for m, lv, f in verdicts(last, static)
        ],
    }


def verdicts(means: dict[str, float], static: dict) -> list[tuple[str, str, list[str]]]:
    """A plain-language verdict per mechanism present: ``(mechanism, level, findings)``.

    ``level`` is the worst of :data:`LEVELS` among the findings; ``findings`` are sentences
    naming the numbers that decided them, worst first (so the first says why the level).
    """
    out = []
    judges = (("SE", _se), ("CA", _ca), ("triplet", _triplet), (HEADS, _head_triplet),
              ("MHGA", _mhga))  # fmt: skip
    for mechanism, judge in judges:
        found = sorted(judge(means, static), key=lambda f: -LEVELS.index(f[0]))  # stable
        if found:
            out.append((mechanism, found[0][0], [text for _, text in found]))
    return out


def _se(means: dict[str, float], static: dict) -> list[tuple[str, str]]:
    found = []
    for key, block, d in _se_exchanges(means):
        same = means[f"{key}/same_position"]
        tokens = means[f"{key}/tokens_per_image"]
        where = f"{d} after block {block} ({tokens:.3g} tokens per image)"
        if same >= SE_COPY:
            text = f"{100 * same:.0f}% of exchanges are same-position: "
            text += "the exchange is a positional copy"
            level = "degenerate"
        elif same > SE_MOSTLY_POSITIONAL:
            text = f"{100 * same:.0f}% of exchanges are same-position: mostly positional"
            level = "weak"
        else:
            text = f"{100 * same:.0f}% same-position: tokens chosen by similarity"
            level = "alive"
        diag = means[f"{key}/a_diagonal"]
        if diag >= SE_A_DIAGONAL:
            text += (
                f" (A's diagonal holds {diag:.2f} of each row: eq. 1 votes for the own position)"
            )
        found.append((level, f"{where}: {text}"))
    for d in ("i2v", "v2i"):
        cos = means.get(f"se/{d}/class_cosine")
        if cos is None:
            continue
        if cos >= SE_CLASS_COSINE:
            found.append(
                (
                    "weak",
                    f"{d}: the mixed class token stays at cosine {cos:.3f} from the clean one: "
                    "the exchange barely changes the final feature",
                )
            )
        else:
            found.append(
                ("alive", f"{d}: the exchange moves the final class token (cos {cos:.3f})")
            )
    return found


def _ca(means: dict[str, float], static: dict) -> list[tuple[str, str]]:
    if "ca/entropy" not in means:
        return []
    found = []
    classes = static.get("num_classes")
    entropy = means["ca/entropy"]
    if classes and classes > 1:
        share = entropy / math.log(classes)
        if share >= CA_UNIFORM:
            found.append(
                (
                    "degenerate",
                    f"the CA logits are near uniform (entropy {entropy:.2f} nats, {share:.2f} of "
                    f"log {classes}): the CA branch predicts no identity",
                )
            )
        else:
            found.append(
                ("alive", f"the CA logits pick identities (entropy {share:.2f} of log {classes})")
            )
    ratio = _ratio(means)
    if ratio < CA_DISTILL_RATIO:
        found.append(
            (
                "weak",
                f"the distillation term is {ratio:.3f} of the cross-entropy "
                f"({means['ca/distill']:.3g} vs {means['ca/ce']:.3g}): CA has little to distil",
            )
        )
    else:
        found.append(("alive", f"distillation / cross-entropy {ratio:.3f}"))
    return found


def _triplet(
    means: dict[str, float], static: dict, prefix: str = "triplet"
) -> list[tuple[str, str]]:
    if f"{prefix}/active" not in means or f"{prefix}/loss" not in means:
        return []
    if prefix == "triplet":
        feature = TRIPLET_FEATURES.get(static.get("triplet_feature", ""), "an unrecorded feature")
    else:
        feature = TRIPLET_FEATURES["heads"]
    margin = static.get("triplet_margin")
    loss, active = means[f"{prefix}/loss"], means[f"{prefix}/active"]
    pos, neg = means[f"{prefix}/pos_dist"], means[f"{prefix}/neg_dist"]
    text = (
        f"trains {feature}; {100 * active:.0f}% of triplets active, "
        f"hardest positive {pos:.3f} vs negative {neg:.3f}"
    )
    if not margin:
        return [("alive", text)]
    share = loss / margin
    where = f"the term is {share:.2f}x its margin ({loss:.3f} vs {margin:g})"
    if share > TRIPLET_OPEN:
        return [
            (
                "weak",
                f"{text}; {where}: hardest positives lie farther than hardest negatives, the "
                "cross-modal ranking is not learnt",
            )
        ]
    if share >= TRIPLET_STUCK:
        return [
            (
                "degenerate",
                f"{text}; {where}: it sits at its margin, hardest positives as far as hardest "
                "negatives, so eq. 9 gives little signal",
            )
        ]
    return [("alive", f"{text}; {where}")]


def _head_triplet(means: dict[str, float], static: dict) -> list[tuple[str, str]]:
    return _triplet(means, static, "triplet_heads")


def _mhga(means: dict[str, float], static: dict) -> list[tuple[str, str]]:
    if "mhga/same" not in means:
        return []
    factors = {}
    for rel in RELATIONS:
        uniform = means[f"mhga/uniform_{rel}"]
        if uniform > 0:
            factors[rel] = means[f"mhga/{rel}"] / uniform
    text = ", ".join(
        f"{rel} {means[f'mhga/{rel}']:.3f} ({factors[rel]:.2f}x uniform)" for rel in factors
    )
    if all(abs(f - 1) <= MHGA_UNIFORM for f in factors.values()):
        return [
            ("weak", f"attention follows the edge count ({text}): relations make no difference")
        ]
    return [("alive", f"attention mass {text}")]


__all__ = [
    "LEVELS",
    "RELATIONS",
    "TRIPLET_FEATURES",
    "mechanisms_section",
    "static_info",
    "step_statistics",
    "summary_line",
    "verdicts",
]
