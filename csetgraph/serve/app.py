"""The HTTP service over one gallery index: search, add and remove people, and one page.

Routes:

* ``POST /search`` (multipart): ``image`` (a file) or ``example`` (an example's id), form
  fields ``modality`` (``vis``/``ir``), ``k`` and optional ``camid``. Returns
  ``{"results": [{"rank", "id", "path", "pid", "camid", "distance", "match"}, ...],
  "no_match": bool, "query": {...}}``, nearest first; ``path`` is relative to the gallery's
  root (the absolute file path only with ``absolute_paths=True``).
* ``POST /gallery`` (multipart, needs the write token): one or more ``image`` files, form
  fields ``modality``, ``camid`` and optional ``pid`` and ``time``. Embeds and adds them;
  they are searchable in the next request and on disk before the answer (the index's
  addition log). Returns ``{"added": [{"id", "path", "name"}, ...], "size", "last_added"}``.
* ``DELETE /gallery/{id}`` (needs the write token): removes the item, and its uploaded file.
* ``GET /gallery/{id}``: gallery image ``id`` (a result's ``id``), only if the file lies
  under the gallery's roots once symbolic links are resolved.
* ``GET /examples`` and ``GET /examples/{i}``: the data set's query images to pick from.
* ``GET /health``: the index's size, kind, modality, threshold, time of the last addition.
* ``GET /``: the page (``static/index.html``).

The write token goes in an ``Authorization: Bearer <token>`` header; without a token set
at start-up, writes are refused (403). A bad request (not an image, an empty or huge file
or body, too many pixels, an unknown modality, ``k`` out of range) gets a 4xx answer whose
``detail`` says what is wrong; it never stops the server. A request body larger than the
limit is refused from its ``Content-Length`` (or as soon as the bytes received pass it)
before it is parsed, and uploads are decoded and embedded by ``max_decodes`` worker threads
only (the request threads wait for them), so memory stays bounded under many concurrent
uploads: the decoding buffers, and the malloc arenas that keep them after use, belong to
those few threads, however many requests arrive at once.
"""

from __future__ import annotations

import hmac
import io
import itertools
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

from PIL import Image, UnidentifiedImageError

from csetgraph.data.records import MODALITIES, Record, load_image, other_modality
from csetgraph.deploy.searcher import UPLOADS, GallerySearcher
from csetgraph.errors import CorruptImageError, UserError, missing_dependency
from csetgraph.retrieval import GalleryItemError

STATIC = Path(__file__).resolve().parent / "static"
MAX_UPLOAD_BYTES = 8 * 1024 * 1024
#: A person crop needs far fewer pixels; a decoded upload above this is refused (its header
#: is read first, so a small file that decodes to a huge image is never decoded).
MAX_PIXELS = 4_000_000
MAX_DECODES = 2  # uploads decoded and embedded at the same time
MAX_ADD_FILES = 8  # images per POST /gallery
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and form fields beside the files
MAX_RESULTS = 100
SUFFIXES = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "WEBP": ".webp"}


try:  # the deploy extra; create_app names what is missing
    import python_multipart  # noqa: F401  (FastAPI's form parser)
    from fastapi import FastAPI, File, Form, Header, UploadFile
    from fastapi.responses import FileResponse, JSONResponse
except ImportError:  # pragma: no cover - only without the deploy extra
    FastAPI = None


class UploadError(Exception):
    """A request the service refuses: an HTTP status and a message for the person."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def decode_upload(
    data: bytes, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS
) -> Image.Image:
    """An uploaded file as an RGB image, or an :class:`UploadError` (status and message).

    The pixel count is read from the header before anything is decoded; the decoding is the
    shared loader's (:func:`csetgraph.data.records.load_image`, which also scales 16-bit
    images), so an upload is prepared as a gallery file is.
    """
    if not data:
        raise UploadError(400, "the uploaded file is empty; choose an image file")
    if len(data) > max_bytes:
        raise UploadError(
            413, f"the upload is larger than {max_bytes:,} bytes; send a smaller image"
        )
    too_many = UploadError(
        413,
        f"the image has more than {max_pixels:,} pixels; crop the person or scale it down",
    )
    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only
            if img.width * img.height > max_pixels:
                raise too_many
        return load_image(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise too_many from None
    except (UnidentifiedImageError, CorruptImageError, OSError, SyntaxError, ValueError):
        raise UploadError(
            400, "the upload is not an image this server can read (JPEG, PNG, BMP or WebP)"
        ) from None


def image_suffix(data: bytes) -> str:
    with Image.open(io.BytesIO(data)) as img:
        return SUFFIXES.get(img.format or "", ".img")


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


class BodyLimit:
    """ASGI middleware: refuse a request body above ``limit(path)`` bytes before parsing it.

    A ``Content-Length`` above the limit is answered 413 without reading the body; a body
    sent without one (chunked) is counted as it arrives and cut off at the limit.
    """

    def __init__(self, app, limit) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        limit = self.limit(scope["path"])
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return await _too_large(send, limit)
        received = 0
        started = False

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _BodyTooLarge:
            if not started:
                await _too_large(send, limit)


class _BodyTooLarge(Exception):
    pass


async def _too_large(send, limit: int) -> None:
    body = json.dumps(
        {"detail": f"the request body is larger than {limit:,} bytes; send a smaller image"}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(
    searcher: GallerySearcher,
    examples: list[Record] | None = None,
    *,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_PIXELS,
    max_decodes: int = MAX_DECODES,
    write_token: str | None = None,
    docs: bool = False,
    absolute_paths: bool = False,
):
    """The FastAPI application over ``searcher`` (see the module docstring for the routes).

    Args:
        searcher: the gallery and its run; open it ``writable=True`` for durable additions.
        examples: query images offered on the page.
        max_upload_bytes: largest image file; a body above this (times the files a route
            takes, plus the form) is refused before it is parsed.
        max_pixels: largest image, in pixels, read from its header before decoding.
        max_decodes: uploads decoded and embedded at the same time.
        write_token: the token ``POST /gallery`` and ``DELETE /gallery/{id}`` need;
            ``None``: writes are refused.
        docs: serve ``/docs``, ``/redoc`` and ``/openapi.json``.
        absolute_paths: add each result's absolute file path (``absolute_path``).
    """
    if FastAPI is None:
        raise missing_dependency("fastapi and python-multipart", "deploy")
    app = FastAPI(
        title="csetgraph gallery search",
        version="1",
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    examples = list(examples or [])
    limits = {"/gallery": max_upload_bytes * MAX_ADD_FILES + FORM_OVERHEAD}
    app.add_middleware(
        BodyLimit, limit=lambda path: limits.get(path, max_upload_bytes + FORM_OVERHEAD)
    )
    service = _Service(
        searcher, examples, max_upload_bytes, max_pixels, max_decodes, write_token, absolute_paths
    )

    @app.exception_handler(UploadError)
    def _refused(_request, err: UploadError):
        return JSONResponse({"detail": err.message}, status_code=err.status)

    @app.exception_handler(GalleryItemError)
    def _no_item(_request, err: GalleryItemError):
        return JSONResponse({"detail": str(err)}, status_code=404)

    @app.exception_handler(UserError)
    def _user_error(_request, err: UserError):
        return JSONResponse({"detail": str(err)}, status_code=400)

    _add_read_routes(app, service)
    _add_search_route(app, service)
    _add_write_routes(app, service)
    return app


class _Service:
    """What the routes share: the searcher, the limits, the token and the decode slots."""

    def __init__(
        self,
        searcher: GallerySearcher,
        examples: list[Record],
        max_upload_bytes: int,
        max_pixels: int,
        max_decodes: int,
        write_token: str | None,
        absolute_paths: bool,
    ) -> None:
        self.searcher = searcher
        self.examples = examples
        self.max_upload_bytes = max_upload_bytes
        self.max_pixels = max_pixels
        # Decoding and embedding run on these threads only (see the module docstring).
        self.workers = ThreadPoolExecutor(max(1, max_decodes), thread_name_prefix="decode")
        self.write_token = write_token
        self.absolute_paths = absolute_paths

    def run(self, job):
        """``job()`` on a decode worker; its result or its exception, here."""
        return self.workers.submit(job).result()

    def read(self, upload) -> bytes:
        return upload.file.read(self.max_upload_bytes + 1)

    def decode(self, data: bytes) -> Image.Image:
        return decode_upload(data, self.max_upload_bytes, self.max_pixels)

    def check_token(self, authorization: str | None) -> None:
        if not self.write_token:
            raise UploadError(
                403,
                "this server takes no additions or removals: start it with --write-token "
                "(or CSETGRAPH_WRITE_TOKEN) to allow them",
            )
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self.write_token.encode()
        ):
            raise UploadError(
                401, "a valid write token is needed (header 'Authorization: Bearer <token>')"
            )

    def public(self, answer: dict[str, Any]) -> dict[str, Any]:
        """Results with relative paths (and the absolute one only if the operator asked)."""
        for r in answer["results"]:
            if self.absolute_paths:
                r["absolute_path"] = r["path"]
            r["path"] = self.searcher.relative_path(r["path"])
        return answer


def _add_read_routes(app, service: _Service) -> None:
    """``GET /``, ``/health``, ``/gallery/{id}``, ``/examples`` and ``/examples/{i}``."""
    searcher, examples = service.searcher, service.examples
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
            "store": man.store.get("engine", "faiss"),
            "dim": man.dim,
            "modality": man.preprocess.get("modality"),
            "threshold": man.threshold,
            "examples": len(examples),
            "last_added": man.last_added,
            "writable": bool(service.write_token),
        }

    @app.get("/gallery/{item_id}")
    def gallery(item_id: int):
        item = index.item(item_id)
        path = searcher.servable_file(item["path"])
        if path is None:
            raise UploadError(
                404, f"gallery item {item_id}'s file is missing or outside the gallery's folders"
            )
        return FileResponse(path)

    @app.get("/examples")
    def list_examples() -> list[dict[str, Any]]:
        return example_info(examples)

    @app.get("/examples/{i}")
    def example(i: int):
        if not 0 <= i < len(examples):
            raise UploadError(404, f"no example {i}; there are {len(examples)}")
        if not Path(examples[i].path).is_file():
            raise UploadError(404, f"example {i}'s file is missing on the server")
        return FileResponse(examples[i].path)


def _add_search_route(app, service: _Service) -> None:
    """``POST /search``: an uploaded image or a picked example, ranked against the gallery."""
    searcher, examples = service.searcher, service.examples

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
            data = service.read(image)
            query["name"] = image.filename
            load = lambda: service.decode(data)  # noqa: E731
        elif example is not None:
            if not 0 <= example < len(examples):
                raise UploadError(422, f"no example {example}; there are {len(examples)}")
            rec = examples[example]
            load = lambda: load_image(rec.path)  # noqa: E731
            # A picked example brings its identity (for the frames) and camera (the rule).
            query.update(pid=rec.pid, camid=rec.camid if camid is None else camid)
            query["name"] = Path(rec.path).name
        else:
            raise UploadError(422, "send an image file (field 'image') or an example id")
        answer = service.run(
            lambda: searcher.search_images([load()], modality, k, query["camid"])[0]
        )
        return {**service.public(answer), "query": query, "threshold": searcher.threshold}


def _add_write_routes(app, service: _Service) -> None:
    """``POST /gallery`` and ``DELETE /gallery/{id}``, behind the write token."""
    searcher = service.searcher

    @app.post("/gallery")
    def add(
        modality: Annotated[str, Form()],
        camid: Annotated[int, Form()],
        image: Annotated[list[UploadFile], File()],
        pid: Annotated[int, Form()] = -1,
        time: Annotated[str | None, Form(max_length=64)] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        service.check_token(authorization)
        check_form(modality, 1)
        if not 1 <= len(image) <= MAX_ADD_FILES:
            raise UploadError(422, f"send 1 to {MAX_ADD_FILES} images, got {len(image)}")
        if camid < 0:
            raise UploadError(422, f"camid must be a camera number >= 0, got {camid}")
        blobs = [service.read(f) for f in image]

        def job():
            images = [service.decode(b) for b in blobs]
            paths = [searcher.store_upload(b, image_suffix(b)) for b in blobs]
            names = [Path(f.filename or "image").name for f in image]
            ids = searcher.add_images(
                images, paths, modality, camid, pid=pid, time=time, names=names
            )
            return ids, paths

        ids, paths = service.run(job)
        added = [
            {"id": i, "path": searcher.relative_path(str(p)), "name": f.filename}
            for i, p, f in zip(ids, paths, image, strict=True)
        ]
        man = searcher.index.manifest
        return {"added": added, "size": len(searcher.index), "last_added": man.last_added}

    @app.delete("/gallery/{item_id}")
    def remove(
        item_id: int, authorization: Annotated[str | None, Header()] = None
    ) -> dict[str, Any]:
        service.check_token(authorization)
        item = searcher.index.remove(item_id)
        uploads = (searcher.folder / UPLOADS).resolve()
        path = Path(item["path"])
        if path.parent.resolve() == uploads:  # each addition has its own file
            path.unlink(missing_ok=True)  # the image goes with its entry
        return {"removed": item_id, "size": len(searcher.index)}


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
