"""The HTTP service over one gallery index: search by upload or by example, and one page.

Routes:

* ``POST /search`` (multipart): ``image`` (a file) or ``example`` (an example's id), form
  fields ``modality`` (``vis``/``ir``), ``k`` and optional ``camid``. Returns
  ``{"results": [{"rank", "index", "path", "pid", "camid", "distance", "match"}, ...],
  "no_match": bool, "query": {...}}``, nearest first.
* ``GET /gallery/{i}``: gallery image ``i`` (the ``index`` of a result).
* ``GET /examples`` and ``GET /examples/{i}``: the data set's query images to pick from.
* ``GET /health``: the index's size, kind, modality and threshold.
* ``GET /``: the page (``static/index.html``).

A bad request (not an image, an empty or huge file, an unknown modality, ``k`` out of range)
gets a 4xx answer whose ``detail`` says what is wrong; it never stops the server.
"""

from __future__ import annotations

import io
import itertools
from pathlib import Path
from typing import Annotated, Any

from PIL import Image, UnidentifiedImageError

from csetgraph.data.records import MODALITIES, Record, load_image, other_modality
from csetgraph.deploy.searcher import GallerySearcher
from csetgraph.errors import UserError, missing_dependency

STATIC = Path(__file__).resolve().parent / "static"
MAX_UPLOAD_BYTES = 8 * 1024 * 1024
MAX_PIXELS = 40_000_000  # a decoded upload larger than this is refused (decompression bombs)
MAX_RESULTS = 100


try:  # the deploy extra; create_app names what is missing
    import python_multipart  # noqa: F401  (FastAPI's form parser)
    from fastapi import FastAPI, File, Form, UploadFile
    from fastapi.responses import FileResponse, JSONResponse
except ImportError:  # pragma: no cover - only without the deploy extra
    FastAPI = None


def decode_upload(data: bytes, max_bytes: int = MAX_UPLOAD_BYTES) -> Image.Image:
    """An uploaded file as an RGB image, or an :class:`UploadError` (status and message)."""
    if not data:
        raise UploadError(400, "the uploaded file is empty; choose an image file")
    if len(data) > max_bytes:
        raise UploadError(
            413, f"the upload is larger than {max_bytes:,} bytes; send a smaller image"
        )
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_PIXELS:
                raise UploadError(413, f"the image has more than {MAX_PIXELS} pixels")
            return img.convert("RGB")
    except Image.DecompressionBombError:
        raise UploadError(413, f"the image has more than {MAX_PIXELS} pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise UploadError(
            400, "the upload is not an image this server can read (JPEG, PNG, BMP or WebP)"
        ) from None


class UploadError(Exception):
    """A request the service refuses: an HTTP status and a message for the person."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def check_form(modality: str, k: int) -> None:
    if modality not in MODALITIES:
        raise UploadError(422, f"modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
    if not 1 <= k <= MAX_RESULTS:
        raise UploadError(422, f"k must be between 1 and {MAX_RESULTS}, got {k}")


def example_info(examples: list[Record]) -> list[dict[str, Any]]:
    return [
        {"id": i, "pid": r.pid, "camid": r.camid, "modality": r.modality, "name": Path(r.path).name}
        for i, r in enumerate(examples)
    ]


def create_app(
    searcher: GallerySearcher,
    examples: list[Record] | None = None,
    *,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
):
    """The FastAPI application over ``searcher`` (see the module docstring for the routes)."""
    if FastAPI is None:
        raise missing_dependency("fastapi and python-multipart", "deploy")
    app = FastAPI(title="csetgraph gallery search", version="1")
    examples = list(examples or [])

    @app.exception_handler(UploadError)
    def _refused(_request, err: UploadError):
        return JSONResponse({"detail": err.message}, status_code=err.status)

    @app.exception_handler(UserError)
    def _user_error(_request, err: UserError):
        return JSONResponse({"detail": str(err)}, status_code=400)

    _add_read_routes(app, searcher, examples)
    _add_search_route(app, searcher, examples, max_upload_bytes)
    return app


def _file(path: str, what: str):
    if not Path(path).is_file():
        raise UploadError(404, f"{what} file is missing on the server")
    return FileResponse(path)


def _add_read_routes(app, searcher: GallerySearcher, examples: list[Record]) -> None:
    """``GET /``, ``/health``, ``/gallery/{i}``, ``/examples`` and ``/examples/{i}``."""
    index = searcher.index

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/health")
    def health() -> dict[str, Any]:
        man = index.manifest
        return {
            "status": "ok",
            "size": len(index),
            "kind": man.kind,
            "dim": man.dim,
            "modality": man.preprocess.get("modality"),
            "threshold": man.threshold,
            "examples": len(examples),
        }

    @app.get("/gallery/{i}")
    def gallery(i: int):
        if not 0 <= i < len(index.metadata):
            raise UploadError(404, f"no gallery item {i}; the gallery holds {len(index.metadata)}")
        return _file(index.metadata[i]["path"], f"gallery item {i}'s")

    @app.get("/examples")
    def list_examples() -> list[dict[str, Any]]:
        return example_info(examples)

    @app.get("/examples/{i}")
    def example(i: int):
        if not 0 <= i < len(examples):
            raise UploadError(404, f"no example {i}; there are {len(examples)}")
        return _file(examples[i].path, f"example {i}'s")


def _add_search_route(
    app, searcher: GallerySearcher, examples: list[Record], max_upload_bytes: int
) -> None:
    """``POST /search``: an uploaded image or a picked example, ranked against the gallery."""

    @app.post("/search")
    def search(
        modality: Annotated[str, Form()],
        k: Annotated[int, Form()] = 10,
        camid: Annotated[int | None, Form()] = None,
        example: Annotated[int | None, Form()] = None,
        image: Annotated[UploadFile | None, File()] = None,
    ) -> dict[str, Any]:
        check_form(modality, k)
        query: dict[str, Any] = {"pid": -1, "camid": camid, "modality": modality}
        if image is not None:
            img = decode_upload(image.file.read(max_upload_bytes + 1), max_upload_bytes)
            query["name"] = image.filename
        elif example is not None:
            if not 0 <= example < len(examples):
                raise UploadError(422, f"no example {example}; there are {len(examples)}")
            rec = examples[example]
            img = load_image(rec.path)
            # A picked example brings its identity (for the frames) and camera (for the rule).
            query.update(pid=rec.pid, camid=rec.camid if camid is None else camid)
            query["name"] = Path(rec.path).name
        else:
            raise UploadError(422, "send an image file (field 'image') or an example id")
        answer = searcher.search_images([img], modality, k, query["camid"])[0]
        return {**answer, "query": query, "threshold": searcher.threshold}


def query_examples(searcher: GallerySearcher, limit: int = 48) -> list[Record]:
    """Query images to pick from: the other modality of the split the gallery came from.

    Spread over identities (one image per identity in turn) so the first few already show
    several people. An index built from a plain folder has none.
    """
    from csetgraph.deploy.gallery import split_records

    source = searcher.index.manifest.source
    modality = searcher.index.manifest.preprocess.get("modality")
    if "split" not in source or modality not in MODALITIES or limit <= 0:
        return []
    records = split_records(searcher.embedder, source["split"], modality)[other_modality(modality)]
    by_pid: dict[int, list[Record]] = {}
    for rec in records:
        by_pid.setdefault(rec.pid, []).append(rec)
    rounds = itertools.zip_longest(*by_pid.values())
    spread = [r for group in rounds for r in group if r is not None]
    return spread[:limit]
