"""The provenance record of one answer: where it was made, under which rules, and a hash of its text.

The record names no prompt and no tenant: it travels with the answer to whoever reads it.
`canonical()` is the byte form that is signed (JSON, sorted keys, no whitespace, UTF-8), so
one changed field changes the bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any
from urllib.parse import urlsplit

from broker.errors import ProvenanceError

__all__ = ["TRAINED_ALGORITHMIC_MEDIA", "ProvenanceRecord", "endpoint_host", "text_sha256"]

#: IPTC digital source type for content made by a model trained on sampled content
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"

#: the label of the record's assertion inside a C2PA manifest
ASSERTION_LABEL = "org.llama-broker.provenance"
RECORD_FORMAT = "llama-broker.provenance/1"


def text_sha256(text: str) -> str:
    """The SHA-256 (hex) of the UTF-8 bytes of `text`."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def endpoint_host(endpoint: str | None) -> str | None:
    """The host (and port) of a route's endpoint URL; None for the provider's default endpoint."""
    if not endpoint:
        return None
    try:
        return urlsplit(endpoint).netloc.rsplit("@", 1)[-1] or None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class ProvenanceRecord:
    """What is known of how an answer was made (see the module docstring)."""

    logical_model: str
    provider: str
    provider_model_id: str
    model_revision: str | None
    region: str | None
    jurisdiction: str
    endpoint_host: str | None
    policy_version: str
    policy_sha256: str
    decision_id: str | None
    request_id: str
    timestamp: str
    output_sha256: str
    digital_source_type: str = TRAINED_ALGORITHMIC_MEDIA
    format: str = RECORD_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def canonical(self) -> bytes:
        """The bytes that are signed."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProvenanceRecord:
        """A record from its dict; a missing or unknown field is a `ProvenanceError`."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ProvenanceError(f"provenance record has unknown fields: {', '.join(unknown)}")
        try:
            return cls(**dict(data))
        except TypeError as exc:
            raise ProvenanceError(f"provenance record is incomplete: {exc}") from None

    def matches(self, text: str) -> bool:
        """Whether `text` is the answer this record describes."""
        return text_sha256(text) == self.output_sha256
