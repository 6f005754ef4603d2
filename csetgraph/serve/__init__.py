"""The HTTP service (FastAPI) and its page over one gallery index: ``csetgraph serve``."""

from csetgraph.serve.app import create_app, decode_upload, query_examples

__all__ = ["create_app", "decode_upload", "query_examples"]
