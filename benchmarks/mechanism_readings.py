#!/usr/bin/env python
"""What SE, CA and the triplet spaces of a trained run do on validation pairs, per reading.

The numbers behind docs/model.md. For a run folder (any configuration), on visible/infrared
pairs of the validation identities (no augmentation, eval mode; ``--pairing``, below):

* per SE layer and direction, the model's own statistics (tokens per image, mean diagonal of
  ``A``, same-position share, mean score), and, recomputed on the clean tokens entering the
  first exchange for every eq. 1 reading (``dot``, ``scaled``, ``layernorm`` = a
  parameter-free LayerNorm then ``1/sqrt(d)``, ``cosine``) and α in 0.1, 0.3, 0.7, 1: the
  diagonal of ``A``, the same-position share of the selected edges and the share of edges
  that differ from the Jaccard term alone;
* the cosine between the mixed and the clean class token after the last block, over all
  pairs and per (visible camera, infrared camera);
* the entropy of the CA logits against the clean ones, and how often their arg-max agree;
* for each triplet space (the neck input, the BatchNorm output, the ``W'`` rows) the
  batch-hard loss over the pairs, its active share and the mean hardest / all positive and
  negative distances (squared Euclidean of L2-normalised rows, as eq. 9 is trained);
* with residual ``W'`` heads, the norm and mean pairwise cosine of the class token and of
  the head's branch, per modality;
* MHGA, per modality on single images (the inference graph): the attention mass each relation
  receives and the mean attention entropy over ``log n``, with the model's strengths and again
  with every strength set to 1 (the same weights: what the learned attention alone prefers),
  beside a uniform attention's mass.

    python benchmarks/mechanism_readings.py runs/<run> [key=value overrides] [--json out.json]

``--pairing cameras`` (the default) pairs every visible camera with every infrared camera,
one pair per camera pair and identity (SYSU-MM01 layout: 4 x 2 = 8 pairs), as the training
sampler's draws do over an epoch; ``--pairing aligned`` takes the first ``--pairs`` images
of each modality, which all come from its first camera (visible camera 1, infrared camera 3),
the pairs of every validation-pair number in docs/model.md. The statistics depend on
the camera pair: the exchange moves the class tokens least between cameras 1 and 3.

Overrides apply to the run's config (a run trained before a switch existed needs the
switch's literal value, e.g. ``model.se.similarity=dot``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import torch
import torch.nn.functional as F

from csetgraph.data import get_dataset
from csetgraph.data.records import load_image
from csetgraph.engine.runs import eval_transform, load_run
from csetgraph.errors import run_command
from csetgraph.files import write_atomic
from csetgraph.graph.similarity import select_exchange_edges, tanimoto
from csetgraph.models.cset import ResidualHead
from csetgraph.models.health import logit_entropy, relation_codes, relation_mass, uniform_mass

READINGS = ("dot", "scaled", "layernorm", "cosine")
ALPHAS = (0.1, 0.3, 0.7, 1.0)


def intra(x: torch.Tensor, reading: str) -> torch.Tensor:
    """``A`` of eq. 1 under ``reading`` (``layernorm`` is measured only, not a model switch)."""
    d = x.shape[-1]
    if reading == "cosine":
        x = F.normalize(x, dim=-1)
    if reading == "layernorm":
        x = F.layer_norm(x, (d,))
    logits = x @ x.transpose(1, 2)  # (B, N, N)
    if reading in ("scaled", "layernorm"):
        logits = logits / math.sqrt(d)
    return logits.softmax(-1)


def same_position(scores: torch.Tensor, ratio: float) -> tuple[float, set]:
    edges, _ = select_exchange_edges(scores, ratio, 1)
    return float((edges[0] == edges[1]).float().mean()), set(map(tuple, edges.T.tolist()))


def reading_table(recv: torch.Tensor, send: torch.Tensor, ratio: float) -> dict:
    recv, send = recv.double(), send.double()
    t = tanimoto(recv, send)
    out = {}
    for reading in READINGS:
        a = intra(recv, reading)
        row = {"diag_A": float(a[:, 1:, 1:].diagonal(dim1=1, dim2=2).mean())}
        _, jaccard_edges = same_position(t, ratio)
        for alpha in ALPHAS:
            share, edges = same_position(alpha * t + (1 - alpha) * a, ratio)
            row[f"same_position@{alpha}"] = share
            if alpha == 0.7:
                row["differ_from_jaccard@0.7"] = 1 - len(edges & jaccard_edges) / len(edges)
        out[reading] = row
    return out


def triplet_space(feat: torch.Tensor, pids: torch.Tensor, mods: torch.Tensor) -> dict:
    f = F.normalize(feat.double(), dim=1)
    d = torch.cdist(f, f).pow(2)
    same, cross = pids[:, None] == pids[None], mods[:, None] != mods[None]
    pos, neg = same & cross, ~same & cross
    hp = d.masked_fill(~pos, -1).amax(1)
    hn = d.masked_fill(~neg, 1e9).amin(1)
    loss = (hp - hn + 0.3).clamp_min(0)
    return {
        "loss": float(loss.mean()),
        "active": float((loss > 0).float().mean()),
        "hardest_pos": float(hp.mean()),
        "hardest_neg": float(hn.mean()),
        "mean_pos": float(d[pos].mean()),
        "mean_neg": float(d[neg].mean()),
    }


def mean_cosine(x: torch.Tensor) -> float:
    """Mean cosine over the distinct pairs of rows of ``x``."""
    u = F.normalize(x.double(), dim=1)
    n = len(u)
    return float(((u @ u.T).sum() - n) / (n * (n - 1)))


def residual_branches(heads, cls: dict[str, torch.Tensor]) -> dict:
    """Per modality, for residual ``W'`` ``heads`` on the clean class tokens ``cls[m]``: the
    norms of the token ``x`` and of the branch ``h(x)``, and the mean pairwise cosine of each
    (a branch that maps every image to one point has cosine 1); ``{}`` for other heads."""
    if not all(isinstance(heads[m], ResidualHead) for m in cls):
        return {}
    res = {}
    for m, x in cls.items():
        h = heads[m].head(x)
        res[m] = {
            "token_norm": float(x.norm(dim=1).mean()),
            "branch_norm": float(h.norm(dim=1).mean()),
            "token_cosine": mean_cosine(x),
            "branch_cosine": mean_cosine(h),
        }
    return res


def mhga_attention(mhga, branch: torch.Tensor, modality: str) -> dict:
    """Relation mass and entropy of ``mhga``'s attention on one modality's ``branch`` tokens
    ``(B, n, C)`` (block ``L-1``), with its own strengths and with all strengths 1 (restored
    afterwards).

    Complete graphs only (``model.mhga.graph=complete``); ``n`` is one image's tokens.
    """
    h, w = mhga.grid_size
    rel = relation_codes(h, w, adjacency=mhga.adjacency, paired=False, device=branch.device)
    strengths = mhga.conv.strengths
    saved = strengths.detach().clone()
    res = {"uniform": [float(v) for v in uniform_mass(rel)], "strengths": saved.tolist()}
    try:
        for name, value in (("model", saved), ("equal", torch.ones_like(saved))):
            with torch.no_grad():
                strengths.copy_(value)
                _, alpha = mhga({modality: branch}, return_attention_weights=True)  # (B, H, n, n)
            ent = -(alpha * alpha.clamp_min(1e-12).log()).sum(-1).mean()
            res[name] = {
                "mass": [float(v) for v in relation_mass(alpha, rel)],
                "entropy_over_log_n": float(ent / math.log(alpha.shape[-1])),
            }
    finally:
        with torch.no_grad():
            strengths.copy_(saved)
    return res


def _by_camera(recs: list) -> dict[int, list]:
    """``recs`` grouped by camera, cameras in increasing order, file order within each."""
    groups: dict[int, list] = {}
    for r in recs:
        groups.setdefault(r.camid, []).append(r)
    return dict(sorted(groups.items()))


def pair_records(records: dict[str, list], pairing: str, pairs: int) -> list[tuple]:
    """Visible/infrared ``(vis, ir)`` record pairs of the identities both modalities hold.

    ``aligned``: per identity, the ``i``-th record of each modality for ``i < pairs`` (in
    file order, hence the first camera of each). ``cameras``: per identity, one pair for each
    (visible camera, infrared camera), the ``c``-th of those pairs taking the
    ``c mod n``-th image of each camera (``n`` the camera's image count).
    """
    by = {m: {} for m in ("vis", "ir")}  # modality -> pid -> its records, in file order
    for m in by:
        for r in records[m]:
            by[m].setdefault(r.pid, []).append(r)
    out = []
    for pid in sorted(set(by["vis"]) & set(by["ir"])):
        vis, ir = by["vis"][pid], by["ir"][pid]
        if pairing == "aligned":
            out += list(zip(vis[:pairs], ir[:pairs], strict=False))  # the shorter decides
            continue
        cams_vis, cams_ir = _by_camera(vis), _by_camera(ir)
        combos = [(va, ib) for va in cams_vis.values() for ib in cams_ir.values()]
        out += [(va[c % len(va)], ib[c % len(ib)]) for c, (va, ib) in enumerate(combos)]
    return out


def group_means(values: torch.Tensor, keys: list[tuple[int, int]]) -> dict[str, float]:
    """Mean of ``values`` per ``(visible camera, infrared camera)`` key, as ``"a-b"``."""
    groups: dict[str, list[float]] = {}
    for v, (a, b) in zip(values.tolist(), keys, strict=True):
        groups.setdefault(f"{a}-{b}", []).append(v)
    return {k: sum(g) / len(g) for k, g in sorted(groups.items())}


def measure(run: str, overrides: list[str], pairs: int, pairing: str = "cameras") -> dict:
    model, cfg = load_run(run, overrides=overrides)
    transform = eval_transform(model, cfg)
    records = get_dataset(cfg.data.dataset).all_records(cfg.data.root, "val", cfg.data.trial)
    chosen = pair_records(records, pairing, pairs)
    images = {
        m: torch.stack([transform(load_image(pair[k].path)) for pair in chosen])
        for k, m in enumerate(("vis", "ir"))
    }
    pid = torch.tensor([v.pid for v, _ in chosen])
    res: dict = {"pairs": len(pid), "identities": len(set(pid.tolist())), "pairing": pairing}
    with torch.no_grad():
        out = model(images["vis"], images["ir"], return_streams=True)
        for k, info in zip(model.se_layers, out.se_info, strict=True):
            for name, (recv, send) in (("i2v", ("ir", "vis")), ("v2i", ("vis", "ir"))):
                if info[name] is None:
                    continue
                entry = {"model": {k2: float(v) for k2, v in info[name].stats._asdict().items()}}
                if k == model.se_layers[0]:  # the clean tokens are exactly what it reads
                    clean = out.streams[k]["clean"]
                    entry["readings"] = reading_table(clean[recv], clean[send], model.se.ratio)
                    entry["token_norm"] = float(clean[recv][:, 1:].norm(dim=-1).mean())
                res[f"se/block{k}/{name}"] = entry
        last = out.streams[max(out.streams)]
        cls = {m: model.encoder(m).norm(last["clean"][m])[:, 0] for m in ("vis", "ir")}  # (n, C)
        if last["mixed"] is not None:
            cams = [(v.camid, i.camid) for v, i in chosen]
            for m in ("vis", "ir"):
                x = model.encoder(m).norm(last["mixed"][m])[:, 0]
                cos = F.cosine_similarity(cls[m], x)  # (n,)
                res[f"class_token_cosine/{m}"] = float(cos.mean())
                res[f"class_token_cosine_by_cameras/{m}"] = group_means(cos, cams)
        if out.ca_logits is not None:
            res["ca"] = {
                "entropy_ca": float(logit_entropy(out.ca_logits)),
                "entropy_clean": float(logit_entropy(out.logits)),
                "log_classes": math.log(out.logits.shape[1]),
                "argmax_agree": float(
                    (out.ca_logits.argmax(1) == out.logits.argmax(1)).float().mean()
                ),
            }
        pp, mods = torch.cat([pid, pid]), out.modality
        res["triplet/neck"] = triplet_space(out.feat, pp, mods)
        res["triplet/retrieval"] = triplet_space(out.retrieval_feat, pp, mods)
        if out.head_feat is not None:
            res["triplet/heads"] = triplet_space(
                out.head_feat, pp[out.head_rows], out.head_modality
            )
            res["heads/residual_branch"] = residual_branches(model.tri_heads, cls)
        if model.mhga is not None and model.mhga.graph == "complete":
            for m in ("vis", "ir"):
                _, branch = model.forward_features(images[m], m, return_branch=True)
                res[f"mhga/{m}"] = mhga_attention(model.mhga, branch, m)
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run")
    p.add_argument("overrides", nargs="*")
    p.add_argument(
        "--pairing",
        choices=("cameras", "aligned"),
        default="cameras",
        help="one pair per camera pair and identity, or the first --pairs images (see above)",
    )
    p.add_argument("--pairs", type=int, default=2, help="aligned pairs per validation identity")
    p.add_argument("--json", default="")
    p.add_argument("--debug", action="store_true")
    args = p.parse_intermixed_args(argv)

    def body() -> int:
        torch.manual_seed(0)
        res = measure(args.run, args.overrides, args.pairs, args.pairing)
        text = json.dumps(res, indent=1)
        print(text)
        if args.json:
            write_atomic(args.json, text + "\n")
        return 0

    return run_command(body, debug=args.debug, name="mechanism_readings")


if __name__ == "__main__":
    sys.exit(main())
