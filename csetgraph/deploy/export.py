"""ONNX export of a run's two embedders, checked against PyTorch before it is reported done.

``export_onnx`` writes into one folder:

* ``embed_vis.onnx`` and ``embed_ir.onnx``: input ``images`` float32 ``(B, 3, H, W)``,
  normalised as the run's evaluation transform; output ``embeddings`` ``(B, D)``,
  L2-normalised; the batch axis is dynamic;
* ``preprocess.json``: height, width, mean, std, and the modality of each file.

Each file is run with ONNX Runtime at a batch size *other than* the one it was exported with
and compared with ``model.embed``: a batch-dependent constant captured during export (the
failure torchreid never checks for) shows up as a large difference there. The legacy
TorchScript exporter does capture one in this model, so the dynamo exporter is used.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from csetgraph.data.records import MODALITIES
from csetgraph.deploy.embedder import RunEmbedder, check_modality
from csetgraph.errors import IndexFolderError, MissingDependencyError, missing_dependency
from csetgraph.files import atomic_path, write_atomic

EXPORT_BATCH = 2  # the example batch traced at export; parity is checked at another size
PARITY_BATCH = 3
TOLERANCE = 1e-4


class ExportParityError(RuntimeError):
    """The exported file's embeddings differ from PyTorch's: a bug to report, not a user error."""


def onnx_name(modality: str) -> str:
    return f"embed_{modality}.onnx"


class _Embed(torch.nn.Module):
    """``model.embed`` for one modality as a one-input module the exporter can trace."""

    def __init__(self, model: torch.nn.Module, modality: str) -> None:
        super().__init__()
        self.model = model
        self.modality = modality

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.embed(images, self.modality)  # (B, D)


def _ort():
    try:
        import onnxruntime
    except ImportError as err:
        raise missing_dependency("onnxruntime", "deploy") from err
    return onnxruntime


def export_one(model: torch.nn.Module, modality: str, path: Path, height: int, width: int) -> None:
    """Export one modality's embedder to ``path`` (written beside, then renamed into place)."""
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError as err:
        raise missing_dependency("onnxscript", "deploy") from err
    if tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 5):
        raise MissingDependencyError(
            f"the ONNX export needs torch>=2.5 (dynamo exporter), this is {torch.__version__}; "
            "pip install -c constraints.txt torch torchvision"
        )
    example = torch.randn(EXPORT_BATCH, 3, height, width)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        # The exporter prints its stages, and its own imports use a deprecated torch.jit API.
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        program = torch.onnx.export(
            _Embed(model, modality).eval(),
            (example,),
            input_names=["images"],
            output_names=["embeddings"],
            dynamic_shapes={"images": {0: batch}},
            dynamo=True,
            verbose=False,
        )
    with atomic_path(path) as tmp:
        program.save(str(tmp))


class OnnxEmbedder:
    """An exported ``embed_<modality>.onnx`` run with ONNX Runtime on the CPU."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        ort = _ort()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """``(B, 3, H, W)`` float32 normalised images -> ``(B, D)`` embeddings."""
        return self.session.run(["embeddings"], {"images": np.asarray(images, np.float32)})[0]


def parity(model: torch.nn.Module, path: Path, modality: str, images: torch.Tensor) -> float:
    """Max absolute difference between ONNX Runtime and ``model.embed`` on ``images``."""
    ours = model.embed(images, modality).float().numpy()
    theirs = OnnxEmbedder(path)(images.numpy())
    return float(np.abs(ours - theirs).max())


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and how closely it matches PyTorch."""

    folder: str
    files: dict[str, str]
    max_abs_diff: dict[str, float]
    parity_batch: int
    seconds: float


def export_onnx(
    embedder: RunEmbedder, output: str | Path, *, tolerance: float = TOLERANCE, seed: int = 0
) -> ExportReport:
    """Export both modalities, write ``preprocess.json``, and check parity with PyTorch.

    Raises:
        ExportParityError: an exported file differs from ``model.embed`` by more than
            ``tolerance`` (the files stay on disk for inspection).
    """
    start = time.perf_counter()
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    h, w = embedder.preprocess["height"], embedder.preprocess["width"]
    model = embedder.model.to("cpu").eval()
    images = torch.randn(PARITY_BATCH, 3, h, w, generator=torch.Generator().manual_seed(seed))
    diffs = {}
    for modality in MODALITIES:
        path = folder / onnx_name(modality)
        export_one(model, modality, path, h, w)
        diffs[modality] = parity(model, path, modality, images)
    info = preprocess_json(embedder, diffs)
    write_atomic(folder / "preprocess.json", json.dumps(info, indent=2).encode())
    bad = {m: d for m, d in diffs.items() if not d <= tolerance}
    if bad:
        raise ExportParityError(
            f"exported embeddings differ from PyTorch by {bad} (> {tolerance}); report this "
            "with the run's config, and do not deploy these files"
        )
    files = {m: str(folder / onnx_name(m)) for m in MODALITIES}
    return ExportReport(str(folder), files, diffs, PARITY_BATCH, time.perf_counter() - start)


def preprocess_json(embedder: RunEmbedder, diffs: dict[str, float]) -> dict[str, Any]:
    """The contents of ``preprocess.json``: how to prepare an image for each file."""
    return {
        **embedder.preprocess,
        "input": {"name": "images", "dtype": "float32", "layout": "(B, 3, height, width)"},
        "output": {"name": "embeddings", "layout": "(B, D)", "l2_normalised": True},
        "files": {onnx_name(m): {"modality": m} for m in MODALITIES},
        "model": embedder.stamp,
        "parity_max_abs_diff": diffs,
    }


def read_preprocess(folder: str | Path, modality: str) -> tuple[dict[str, Any], Path]:
    """``preprocess.json`` of an export folder and the file for ``modality``."""
    folder = Path(folder)
    check_modality(modality)
    path = folder / "preprocess.json"
    if not path.is_file() or not (folder / onnx_name(modality)).is_file():
        raise IndexFolderError(
            f"{str(folder)!r} holds no ONNX export for {modality!r}; write one with "
            "`csetgraph export RUN --output DIR`"
        )
    return json.loads(path.read_text()), folder / onnx_name(modality)
