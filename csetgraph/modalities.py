"""The two modalities and the retrieval directions between them: one vocabulary for the package.

A visible image is ``"vis"``, an infrared (near-infrared or thermal) one ``"ir"``. A direction
is written ``"<query>2<gallery>"`` in lower case: ``"i2v"`` searches visible galleries with
infrared queries, ``"v2i"`` the reverse. Data sets, token graphs (whose node types are the
modalities), the model's encoders and the deployment code all use these names. The module
imports nothing, so the reusable layers can use it without pulling in the rest of csetgraph.
"""

from __future__ import annotations

MODALITIES: tuple[str, str] = ("vis", "ir")
#: ``"<query>2<gallery>"`` -> (query modality, gallery modality).
DIRECTIONS: dict[str, tuple[str, str]] = {"i2v": ("ir", "vis"), "v2i": ("vis", "ir")}


def other_modality(modality: str) -> str:
    """The modality a query of ``modality`` is matched against: ``"vis"`` <-> ``"ir"``."""
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    return MODALITIES[1 - MODALITIES.index(modality)]


__all__ = ["DIRECTIONS", "MODALITIES", "other_modality"]
