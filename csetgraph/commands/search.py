"""Search a gallery index (``csetgraph index``) with query images.

    csetgraph search galleries/test-vis query.jpg --modality ir
    csetgraph search galleries/test-vis q1.png q2.png --modality ir --k 5 --camid 3
    csetgraph search galleries/test-vis query.jpg --modality ir --json > results.json
    csetgraph search galleries/test-vis query.jpg --modality ir --run moved/runs/my-run

The queries are embedded by the run that built the index (recorded in it; ``--run`` if the
run folder has moved; other weights are refused). Prints a ranked table per query, nearest
first, with the cosine distance; ``--json`` prints ``[{"query", "results": [...],
"no_match"}, ...]``. Results beyond the index's calibrated threshold are marked "no match".
With ``--camid`` the protocol's camera rule stored in the index is applied.
"""

from __future__ import annotations

import argparse
import json

from csetgraph.errors import run_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="csetgraph search", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("index", help="an index folder written by `csetgraph index`")
    parser.add_argument("images", nargs="+", help="query image files")
    parser.add_argument("--modality", required=True, choices=["ir", "vis"], help="of the queries")
    parser.add_argument("--k", type=int, default=10, help="results per query")
    parser.add_argument("--camid", type=int, default=None, help="the queries' camera")
    parser.add_argument("--run", default=None, help="the run folder, if it has moved")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    return parser


def format_table(query: str, answer: dict) -> str:
    lines = [f"query {query}" + ("   -> no match" if answer["no_match"] else "")]
    lines.append(f"{'rank':>4}  {'distance':>8}  {'pid':>5}  {'camid':>5}  match  path")
    for r in answer["results"]:
        match = "yes" if r["match"] else "no"
        lines.append(
            f"{r['rank']:>4}  {r['distance']:>8.4f}  {r['pid']:>5}  {r['camid']:>5}  "
            f"{match:<5}  {r['path']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)

    def body() -> int:
        from csetgraph.data.records import load_image
        from csetgraph.deploy.searcher import GallerySearcher

        searcher = GallerySearcher.from_folder(args.index, run=args.run)
        try:
            images = [load_image(path) for path in args.images]  # the shared loader
            answers = searcher.search_images(images, args.modality, args.k, args.camid)
        finally:
            searcher.index.close()
        if args.json:
            out = [{"query": q, **a} for q, a in zip(args.images, answers, strict=True)]
            print(json.dumps(out, indent=2))
        else:
            print(
                "\n\n".join(format_table(q, a) for q, a in zip(args.images, answers, strict=True))
            )
        return 0

    return run_command(body, debug=args.debug, name="csetgraph search")


if __name__ == "__main__":
    raise SystemExit(main())
