"""Evaluation protocols: the SYSU-MM01, RegDB and LLCM trials, through the data-set table.

A data set's module in :data:`csetgraph.data.DATASETS` says everything the evaluation needs:
its ``PROTOCOL`` (the ranking rules of :func:`~csetgraph.evaluation.metrics.rank_metrics`),
its ``DIRECTIONS``, the trials one evaluation runs (``eval_trials``) and each trial's query
and gallery (``test_split``). :func:`evaluate_trials` runs any of them:

1. every (setting, trial) query and gallery is read;
2. every distinct image is embedded once per modality (queries once for all trials, each
   gallery image once however many galleries hold it), in path order;
3. each trial's distance matrix is ranked under the protocol's rules (docs/design.md,
   "Evaluation protocols"), optionally after k-reciprocal re-ranking; mean and std over trials.

A *setting* is one row of the results table: a direction (``"i2v"``, ``"v2i"``), or for
SYSU-MM01, whose protocol has infrared queries only, a search mode (``"all"``,
``"indoor"``). :func:`evaluate_dataset` is the one entry point of training and the
``evaluate`` command; :func:`evaluate_sysu`, :func:`evaluate_regdb` and
:func:`evaluate_llcm` are shorthands with each protocol's options:

* SYSU-MM01: infrared queries, one visible gallery per trial (0-9) and search mode, drawn
  as the community code does;
* RegDB: one trial per model (``data.trial``), visible-to-thermal and thermal-to-visible,
  every test image used;
* LLCM: IR-to-VIS and VIS-to-IR, one random gallery image per identity and camera per
  trial (0-9).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType

import numpy as np
import torch

from csetgraph.config import AMP_MODES, Config
from csetgraph.data import get_dataset
from csetgraph.data.records import DIRECTIONS, Record
from csetgraph.errors import ConfigError
from csetgraph.evaluation.features import extract_features
from csetgraph.evaluation.metrics import pairwise_distance, rank_metrics
from csetgraph.evaluation.reranking import k_reciprocal_rerank

METRIC_KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")


def summarise(trials: list[dict[str, float]]) -> dict:
    """Mean and standard deviation over trials of each metric (fractions in [0, 1])."""
    keys = [k for k in METRIC_KEYS if k in trials[0]]
    return {
        "trials": trials,
        "mean": {k: float(np.mean([t[k] for t in trials])) for k in keys},
        "std": {k: float(np.std([t[k] for t in trials])) for k in keys},
    }


def _check_features(feat: torch.Tensor, records: Sequence[Record], what: str) -> None:
    if not records:
        raise ValueError(
            f"the {what} is empty: no images to rank; check the data set folder and split"
        )
    if feat.shape[0] != len(records):  # pragma: no cover - extract_features invariant
        raise RuntimeError(f"{what}: {feat.shape[0]} features for {len(records)} images")


def _score(
    q_feat: torch.Tensor,
    query: Sequence[Record],
    g_feat: torch.Tensor,
    gallery: Sequence[Record],
    *,
    protocol: str,
    metric: str,
    rerank: bool,
    q_q: torch.Tensor | None = None,
) -> dict[str, float]:
    """Rank one query set against one gallery; the metrics of one trial (fractions).

    With ``rerank`` the distances go through k-reciprocal re-ranking
    (:func:`~csetgraph.evaluation.reranking.k_reciprocal_rerank`, default parameters);
    ``q_q`` is the query x query distance matrix when the caller already has it.
    """
    _check_features(q_feat, query, "query set")
    _check_features(g_feat, gallery, "gallery")
    dist = pairwise_distance(q_feat, g_feat, metric=metric)
    if rerank:
        if q_q is None:
            q_q = pairwise_distance(q_feat, q_feat, metric=metric)
        g_g = pairwise_distance(g_feat, g_feat, metric=metric)
        dist = k_reciprocal_rerank(dist, q_q, g_g)
    m = rank_metrics(
        dist,
        np.array([r.pid for r in query]),
        np.array([r.pid for r in gallery]),
        np.array([r.camid for r in query]),
        np.array([r.camid for r in gallery]),
        protocol=protocol,
    )
    out = m.as_dict()
    out["num_query"] = len(query)
    out["num_gallery"] = len(gallery)
    out["num_invalid_queries"] = m.num_invalid_queries
    return out


@dataclass(frozen=True)
class Setting:
    """One row of the results table: its name, its direction, and the data set's
    ``test_split`` options for it (SYSU-MM01: the search mode, shots, gallery draw)."""

    name: str
    direction: str
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class EvalOptions:
    """How images are embedded and ranked (from ``cfg.eval`` in :func:`evaluate_dataset`)."""

    transform: Callable
    split: str = "test"
    metric: str = "cosine"
    rerank: bool = False
    batch_size: int = 128
    device: torch.device | str = "cpu"
    flip: bool = False
    num_workers: int = 0
    progress: bool = True
    amp: str = "auto"


class Embeddings:
    """Every distinct image of some query/gallery lists, embedded once per modality."""

    def __init__(self, model: torch.nn.Module, lists: Sequence[Sequence[Record]], opts):
        by_modality: dict[str, dict[str, Record]] = {}
        for records in lists:
            for r in records:
                by_modality.setdefault(r.modality, {})[r.path] = r
        self.row: dict[str, int] = {}
        self.features: dict[str, torch.Tensor] = {}
        for modality in sorted(by_modality):
            records = [by_modality[modality][p] for p in sorted(by_modality[modality])]
            self.row.update((r.path, i) for i, r in enumerate(records))
            self.features[modality] = extract_features(
                model,
                records,
                modality,
                transform=opts.transform,
                batch_size=opts.batch_size,
                device=opts.device,
                flip=opts.flip,
                num_workers=opts.num_workers,
                progress=opts.progress,
                desc=f"{modality} images",
                amp=opts.amp,
            )  # (n_modality, D) on the device

    def of(self, records: Sequence[Record]) -> torch.Tensor:
        """The features of ``records`` (one modality), in their order.

        Shapes:
            output: ``(len(records), D)``.
        """
        feats = self.features[records[0].modality]
        index = [self.row[r.path] for r in records]
        return feats[torch.tensor(index, dtype=torch.long, device=feats.device)]


def evaluate_trials(
    model: torch.nn.Module,
    ds: ModuleType,
    root,
    settings: Sequence[Setting],
    trials: Sequence[int],
    opts: EvalOptions,
) -> dict[str, dict]:
    """Run the ``trials`` of each setting of data set ``ds`` (a module of the table).

    Returns:
        ``{setting name: {"trials": [...], "mean": {...}, "std": {...}, "protocol": ...,
        "query": ..., "gallery": ..., "trial_numbers": [...]}}``, metrics as fractions.
    """
    if not settings:
        raise ConfigError("nothing to evaluate: no search mode or direction was given")
    if not trials:
        raise ConfigError("nothing to evaluate: eval.trials must be >= 1")
    splits = {
        (s.name, t): ds.test_split(
            root, split=opts.split, direction=s.direction, trial=t, **s.options
        )
        for s in settings
        for t in trials
    }
    emb = Embeddings(model, [r for pair in splits.values() for r in pair], opts)
    q_q_cache: dict[tuple[str, ...], torch.Tensor] = {}
    results = {}
    for s in settings:
        per_trial = []
        for t in trials:
            query, gallery = splits[s.name, t]
            q_feat = emb.of(query)
            q_q = None
            if opts.rerank:  # the query set is the same in every trial: its distances too
                key = tuple(r.path for r in query)
                if key not in q_q_cache:
                    q_q_cache[key] = pairwise_distance(q_feat, q_feat, metric=opts.metric)
                q_q = q_q_cache[key]
            scores = _score(
                q_feat, query, emb.of(gallery), gallery,
                protocol=ds.PROTOCOL, metric=opts.metric, rerank=opts.rerank, q_q=q_q,
            )  # fmt: skip
            per_trial.append(scores)
        q_mod, g_mod = DIRECTIONS[s.direction]
        results[s.name] = {
            **summarise(per_trial),
            "protocol": ds.PROTOCOL,
            "query": q_mod,
            "gallery": g_mod,
            "trial_numbers": list(trials),
        }
    return results


def protocol_settings(
    ds: ModuleType, root, modes: Sequence[str] = ("all", "indoor"), shots: int = 1,
    gallery: str = "random",
) -> list[Setting]:  # fmt: skip
    """The rows a data set reports: SYSU-MM01's search modes, else its directions.

    ``shots`` and ``gallery`` (``"random"`` | ``"official"``) are SYSU-MM01's gallery options;
    the other protocols draw single-shot galleries only.
    """
    if ds.PROTOCOL == "sysu":  # infrared queries only; one row per search mode
        perm = None
        if gallery == "official":
            path = ds.official_perm_path(ds.check_root(root))
            if path is not None:  # a missing file is reported by test_split
                perm = ds.load_rand_perm(path)
        options = dict(shots=shots, gallery=gallery, perm=perm)
        return [Setting(mode, "i2v", {"mode": mode, **options}) for mode in modes]
    if shots != 1 or gallery != "random":
        raise ConfigError(
            f"--shots and --gallery official are SYSU-MM01 options; {ds.NAME} draws "
            "single-shot galleries only"
        )
    return [Setting(d, d) for d in ds.DIRECTIONS]


def evaluate_sysu(
    model: torch.nn.Module,
    root,
    *,
    transform: Callable,
    modes: Sequence[str] = ("all", "indoor"),
    trials: int = 10,
    shots: int = 1,
    gallery: str = "random",
    **options,
) -> dict[str, dict]:
    """Infrared-to-visible retrieval on SYSU-MM01 (or the synthetic set in its layout).

    Each trial's gallery is drawn by :func:`csetgraph.data.sysu_mm01.test_split`
    (``gallery="random"``: the seeded community draw, ``shots`` images per id and camera;
    ``"official"``: the permutations of ``rand_perm_cam.mat``), ranked with
    ``protocol="sysu"``. ``options`` are :class:`EvalOptions` fields.

    Returns:
        ``{mode: {...}}`` as :func:`evaluate_trials`.
    """
    if trials < 1:
        raise ConfigError(f"trials must be >= 1, got {trials}")
    ds = get_dataset("sysu_mm01")
    settings = protocol_settings(ds, root, modes, shots, gallery)
    opts = EvalOptions(transform=transform, **options)
    return evaluate_trials(model, ds, root, settings, ds.eval_trials(num_trials=trials), opts)


def evaluate_regdb(
    model: torch.nn.Module, root, *, transform: Callable, trial: int = 1, **options
) -> dict[str, dict]:
    """Visible-to-thermal (``"v2i"``) and thermal-to-visible (``"i2v"``) retrieval on RegDB.

    One trial only: the RegDB protocol trains one model per trial (``data.trial``, 1-10)
    and tests it on that trial's test split; the ``evaluate`` command averages ten runs
    when given their folders. Every test image of one modality is a query and every image
    of the other the gallery; nothing is dropped (``protocol="regdb"``). ``split="val"``
    evaluates on the held-out training identities (:func:`csetgraph.data.regdb.val_ids`).

    Returns:
        ``{"v2i": {...}, "i2v": {...}}`` as :func:`evaluate_trials`.
    """
    ds = get_dataset("regdb")
    opts = EvalOptions(transform=transform, **options)
    return evaluate_trials(
        model,
        ds,
        root,
        protocol_settings(ds, root),
        ds.eval_trials(num_trials=1, data_trial=trial),
        opts,
    )


def evaluate_llcm(
    model: torch.nn.Module, root, *, transform: Callable, trials: int = 10, **options
) -> dict[str, dict]:
    """IR-to-VIS (``"i2v"``) and VIS-to-IR (``"v2i"``) retrieval on LLCM, trials 0..trials-1.

    As DEEN's reference code: the query is every test image of one modality; each trial's
    gallery is one image per identity and camera of the other modality drawn with
    ``random.seed(trial)`` (:func:`csetgraph.data.llcm.sample_gallery`), ranked under
    ``protocol="llcm"`` (:func:`~csetgraph.evaluation.metrics.ignored_gallery`).
    ``split="val"`` evaluates on the held-out training identities.

    Returns:
        ``{"i2v": {...}, "v2i": {...}}`` as :func:`evaluate_trials`.
    """
    if trials < 1:
        raise ConfigError(f"trials must be >= 1, got {trials}")
    ds = get_dataset("llcm")
    opts = EvalOptions(transform=transform, **options)
    return evaluate_trials(
        model, ds, root, protocol_settings(ds, root), ds.eval_trials(num_trials=trials), opts
    )


METRICS = ("cosine", "euclidean")
SEARCH_MODES = ("all", "indoor")


def check_eval_config(cfg: Config) -> None:
    """Refuse ``eval.*`` values that cannot work, before a model is built or an image read."""
    ev = cfg.eval
    if ev.metric not in METRICS:
        raise ConfigError(f"eval.metric must be one of {', '.join(METRICS)}, got {ev.metric!r}")
    if ev.amp not in AMP_MODES:
        raise ConfigError(f"eval.amp must be one of {', '.join(AMP_MODES)}, got {ev.amp!r}")
    bad = [m for m in ev.modes if m not in SEARCH_MODES]
    if bad or not ev.modes:
        raise ConfigError(
            f"eval.modes must list SYSU-MM01 search modes ({', '.join(SEARCH_MODES)}), "
            f"got {ev.modes}"
        )
    for key in ("trials", "batch_size"):
        if getattr(ev, key) < 1:
            raise ConfigError(f"eval.{key} must be >= 1, got {getattr(ev, key)}")


def evaluate_dataset(
    model: torch.nn.Module,
    cfg: Config,
    *,
    device: torch.device | str,
    transform: Callable,
    split: str = "test",
    progress: bool = True,
    shots: int = 1,
    gallery: str = "random",
    rerank: bool = False,
) -> dict[str, dict]:
    """The configured data set's protocol: the one entry point for training and commands.

    The data set is ``cfg.data.dataset``'s module of the table; its trials are
    ``eval_trials`` (the gallery draws of SYSU-MM01 and LLCM; RegDB's own ``data.trial``);
    its rows are SYSU-MM01's ``cfg.eval.modes`` or the data set's directions. ``cfg.eval``
    gives the metric, batch size, flip averaging and autocast (``eval.amp``).
    ``shots`` and ``gallery`` apply to SYSU-MM01 only.
    """
    check_eval_config(cfg)
    ds = get_dataset(cfg.data.dataset)
    root = cfg.data.root
    opts = EvalOptions(
        transform=transform,
        split=split,
        metric=cfg.eval.metric,
        rerank=rerank,
        batch_size=cfg.eval.batch_size,
        device=device,
        flip=cfg.eval.flip,
        num_workers=cfg.data.num_workers,
        progress=progress,
        amp=cfg.eval.amp,
    )
    settings = protocol_settings(ds, root, cfg.eval.modes, shots, gallery)
    trials = ds.eval_trials(num_trials=cfg.eval.trials, data_trial=cfg.data.trial)
    return evaluate_trials(model, ds, root, settings, trials, opts)


def format_table(results: dict[str, dict], title: str = "") -> str:
    """The table the papers print: Rank-1/5/10/20, mAP, mINP in percent, mean ± std."""
    header = ["setting", "R-1", "R-5", "R-10", "R-20", "mAP", "mINP"]
    rows = []
    for name, res in results.items():
        cells = [name]
        for k in METRIC_KEYS:
            if k in res["mean"]:
                cells.append(f"{100 * res['mean'][k]:.2f} ± {100 * res['std'][k]:.2f}")
            else:
                cells.append("-")
        rows.append(cells)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [title] if title else []
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)
