"""Figures of trained models: ranked lists, token heat maps, modality t-SNE, training curves.

Every function here is what ``csetgraph visualize`` runs, so a notebook draws the same
figures. Figures are plain :class:`matplotlib.figure.Figure` objects built without pyplot:
no GUI backend and no global state (``fig.savefig`` renders with Agg; a notebook displays
them inline). Given a seed, the output is deterministic.

>>> model, cfg = load_run("runs/my_run")                      # doctest: +SKIP
>>> lists = compute_ranked_lists(model, cfg, num_queries=4)  # doctest: +SKIP
>>> fig, _ = plot_ranked_lists({"CSET": lists})              # doctest: +SKIP
"""

from csetgraph.visualization.curves import parse_log, plot_curves, read_scalars
from csetgraph.visualization.heatmap import (
    HeatMap,
    class_token_attention,
    compute_heatmaps,
    identity_pairs,
    mhga_class_attention,
    plot_heatmaps,
)
from csetgraph.visualization.ranked import (
    FRAME_COLORS,
    RankedEntry,
    RankedList,
    compute_ranked_lists,
    plot_ranked_lists,
    ranked_lists,
)
from csetgraph.visualization.run import eval_transform, load_run, run_folder
from csetgraph.visualization.testsets import retrieval_set, split_images
from csetgraph.visualization.tsne import (
    ModalityEmbeddings,
    embed_test_images,
    modality_distances,
    plot_tsne,
    tsne_2d,
)

__all__ = [
    "FRAME_COLORS",
    "HeatMap",
    "ModalityEmbeddings",
    "RankedEntry",
    "RankedList",
    "class_token_attention",
    "compute_heatmaps",
    "compute_ranked_lists",
    "embed_test_images",
    "eval_transform",
    "identity_pairs",
    "load_run",
    "mhga_class_attention",
    "modality_distances",
    "parse_log",
    "plot_curves",
    "plot_heatmaps",
    "plot_ranked_lists",
    "plot_tsne",
    "ranked_lists",
    "read_scalars",
    "retrieval_set",
    "run_folder",
    "split_images",
    "tsne_2d",
]
