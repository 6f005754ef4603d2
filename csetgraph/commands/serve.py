"""Serve a gallery index over HTTP, with a page to search it (and add people) from a browser.

    csetgraph serve galleries/test-vis                       # http://127.0.0.1:8000
    csetgraph serve galleries/test-vis --host 0.0.0.0 --port 8080
    csetgraph serve galleries/test-vis --write-token "$(openssl rand -hex 16)"
    csetgraph serve galleries/test-vis --run moved/runs/my-run --examples 24 --docs

Routes: ``POST /search`` (multipart ``image`` or ``example``, form ``modality``, ``k``,
optional ``camid``) returns ``{"results": [{"rank", "id", "path", "pid", "camid",
"distance", ...}], "no_match": bool}`` with paths relative to the gallery's root;
``POST /gallery`` adds images (form ``modality``, ``camid``, optional ``pid`` and ``time``)
and ``DELETE /gallery/{id}`` removes one, both with ``Authorization: Bearer <token>``;
``GET /gallery/{id}`` a gallery image; ``GET /health``; ``GET /`` the page.

Writes need ``--write-token`` (or the ``CSETGRAPH_WRITE_TOKEN`` environment variable, which
keeps the token out of the process list); without one the gallery is read-only. Every
accepted addition is on disk before its answer (the index's addition log). Uploads above
``--max-upload-mb`` or ``--max-pixels`` are refused before they are decoded, and at most
``--max-decodes`` are decoded at once. ``--port 0`` picks a free port (printed).
``/docs`` and ``/openapi.json`` are off unless ``--docs``. Needs the ``deploy`` extra.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket

from csetgraph.commands.arguments import int_at_least, positive_float
from csetgraph.errors import ConfigError, missing_dependency, run_command

TOKEN_ENV = "CSETGRAPH_WRITE_TOKEN"
MIN_TOKEN = 8


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="csetgraph serve", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("index", help="an index folder written by `csetgraph index`")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port", type=int_at_least(0), default=8000, help="port to listen on (0: any free)"
    )
    parser.add_argument("--run", default=None, help="the run folder, if it has moved")
    parser.add_argument("--examples", type=int_at_least(0), default=48, help="query images")
    parser.add_argument(
        "--max-upload-mb", type=positive_float, default=8.0, help="largest image file (MB)"
    )
    parser.add_argument(
        "--max-pixels",
        type=int_at_least(1),
        default=4_000_000,
        help="largest image in pixels, read from its header before decoding (default 4 MP)",
    )
    parser.add_argument(
        "--max-decodes", type=int_at_least(1), default=2, help="uploads decoded at once"
    )
    parser.add_argument(
        "--write-token",
        default=None,
        help=f"token for POST/DELETE /gallery (or set {TOKEN_ENV}); none: read-only",
    )
    parser.add_argument(
        "--absolute-paths",
        action="store_true",
        help="also send each result's absolute file path (off: paths relative to the gallery)",
    )
    parser.add_argument(
        "--docs",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="serve /docs, /redoc and /openapi.json (default: off)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    return parser


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or one clear error when the port is taken."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise ConfigError(f"--host {host!r} is not an address this machine has ({err})") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is already in use; pick another with --port "
                "(or --port 0 for any free one)"
            ) from None
        raise ConfigError(f"cannot listen on {host}:{port} ({err.strerror})") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)

    def body() -> int:
        try:
            import uvicorn
        except ImportError as err:
            raise missing_dependency("uvicorn", "deploy") from err
        from csetgraph.deploy.searcher import GallerySearcher
        from csetgraph.serve import create_app, query_examples

        token = args.write_token or os.environ.get(TOKEN_ENV) or None
        if token is not None and len(token) < MIN_TOKEN:
            raise ConfigError(f"the write token must have at least {MIN_TOKEN} characters")
        sock = bind(args.host, args.port)  # before the slow loading: a taken port fails fast
        try:
            searcher = GallerySearcher.from_folder(args.index, run=args.run, writable=bool(token))
            examples = query_examples(searcher, args.examples)
            app = create_app(
                searcher,
                examples,
                max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
                max_pixels=args.max_pixels,
                max_decodes=args.max_decodes,
                write_token=token,
                docs=args.docs,
                absolute_paths=args.absolute_paths,
            )
            host, port = sock.getsockname()[:2]
            writes = "writes with the token" if token else "read-only"
            print(
                f"serving {len(searcher.index)} gallery images on http://{host}:{port} ({writes})",
                flush=True,
            )
            server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
            server.run(sockets=[sock])
        finally:
            sock.close()
        return 0

    return run_command(body, debug=args.debug, name="csetgraph serve")


if __name__ == "__main__":
    raise SystemExit(main())
