"""csetgraph: the cross-modality similarity exchange transformer (CSET) for VI-ReID."""

import warnings

__version__ = "0.1.0"

# PyG (imported by csetgraph.nn and csetgraph.graph) calls torch.jit.script when it is
# imported, and PyTorch 2.9 warns about that in two lines before any output of ours, so no
# error message would be one line. The warning concerns PyG's code, not the user's: hidden
# once, here, for that message only.
warnings.filterwarnings(
    "ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning
)
