"""The manifest inside the answer's text: C2PA 2.4 unstructured text, through `c2pa-text`.

The wrapper is a run of Unicode variation selectors appended to the NFC-normalized text; it is
invisible, survives UTF-8 files and JSON strings, and is taken off again before the text's hash
is compared with the record's `output_sha256`.
"""

from __future__ import annotations

from typing import Any

from broker.errors import MissingDependency

__all__ = ["embed", "extract"]


def _c2pa_text() -> Any:
    try:
        import c2pa_text
    except ImportError as exc:
        err = MissingDependency("provenance", "c2pa-text", "provenance")
        err.args = ("text embedding needs c2pa-text: pip install 'llama-broker[provenance]'",)
        raise err from exc
    return c2pa_text


def embed(text: str, manifest: bytes) -> str:
    """`text` (NFC-normalized) with `manifest` appended as an invisible C2PA text wrapper."""
    return str(_c2pa_text().embed_manifest(text, manifest))


def extract(text: str) -> tuple[bytes | None, str]:
    """The manifest a text carries (None if it has none) and the text without it (NFC)."""
    manifest, clean = _c2pa_text().extract_manifest(text)
    return (None if manifest is None else bytes(manifest)), str(clean)
