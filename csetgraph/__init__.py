"""csetgraph: the cross-modality similarity exchange transformer (CSET) for VI-ReID."""

__version__ = "0.1.0"
