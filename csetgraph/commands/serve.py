"""Serve a gallery index over HTTP, with a page to search it from a browser.

    csetgraph serve galleries/test-vis                       # http://127.0.0.1:8000
    csetgraph serve galleries/test-vis --host 0.0.0.0 --port 8080
    csetgraph serve galleries/test-vis --run moved/runs/my-run --examples 24

Routes: ``POST /search`` (multipart ``image`` or ``example``, form ``modality``, ``k``,
optional ``camid``) returns ``{"results": [{"rank", "path", "pid", "camid", "distance",
...}], "no_match": bool}``; ``GET /gallery/{i}`` a gallery image; ``GET /health``; ``GET /``
the page (upload or pick a query, choose the modality, see the ranked thumbnails). Bad
uploads get a 4xx answer with a message. Needs the ``deploy`` extra.
"""

from __future__ import annotations

import argparse

from csetgraph.errors import missing_dependency, run_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="csetgraph serve", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("index", help="an index folder written by `csetgraph index`")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument("--run", default=None, help="the run folder, if it has moved")
    parser.add_argument("--examples", type=int, default=48, help="query images offered")
    parser.add_argument("--max-upload-mb", type=float, default=8.0, help="largest upload")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)

    def body() -> int:
        try:
            import uvicorn
        except ImportError as err:
            raise missing_dependency("uvicorn", "deploy") from err
        from csetgraph.deploy.searcher import GallerySearcher
        from csetgraph.serve import create_app, query_examples

        searcher = GallerySearcher.from_folder(args.index, run=args.run)
        examples = query_examples(searcher, args.examples)
        app = create_app(searcher, examples, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024))
        print(
            f"serving {len(searcher.index)} gallery images on http://{args.host}:{args.port}",
            flush=True,
        )
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
        return 0

    return run_command(body, debug=args.debug, name="csetgraph serve")


if __name__ == "__main__":
    raise SystemExit(main())
