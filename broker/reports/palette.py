"""Stable colours: the same provider or tenant gets the same colour in every report.

The five built-in providers have fixed colours (far apart, readable on white and in print);
any other name is coloured from a hash of its text (SHA-256, not Python's salted `hash`), so
the colour depends on the name alone, never on the data, the order or the run.  Unpriced
usage always has its own grey, which no name can get.
"""

from __future__ import annotations

import colorsys
import hashlib

__all__ = ["UNPRICED_COLOUR", "colour_for"]

#: The colour of unpriced usage (tokens and calls without a known price) in every chart.
UNPRICED_COLOUR = "#8a8f98"

_FIXED = {
    "provider:bedrock": "#e8871e",
    "provider:vertex": "#2f6fdb",
    "provider:azure": "#0f9d8f",
    "provider:groq": "#c2185b",
    "provider:local": "#6a4fb3",
}


def colour_for(kind: str, name: str | None) -> str:
    """The colour of `name` as a `kind` (``provider``, ``tenant``, ``model``...): ``#rrggbb``."""
    label = "(none)" if name is None else str(name)
    fixed = _FIXED.get(f"{kind}:{label}")
    if fixed is not None:
        return fixed
    digest = hashlib.sha256(f"{kind}:{label}".encode()).digest()
    hue = int.from_bytes(digest[:2], "big") / 65536
    lightness = 0.42 + (digest[2] % 12) / 100  # 0.42 .. 0.53: never close to the unpriced grey
    saturation = 0.55 + (digest[3] % 30) / 100
    r, g, b = colorsys.hls_to_rgb(hue, lightness, saturation)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"
