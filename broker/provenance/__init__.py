"""Provenance: a signed record of how each answer was made, and its verification.

    record.py    the record (model, provider, region, jurisdiction, policy, decision, output hash)
    signing.py   the signer: a C2PA manifest through c2pa-python, key and certificate by reference
    embed.py     the manifest inside the answer's text (C2PA 2.4 unstructured text, c2pa-text)
    verify.py    trusted / untrusted / tampered / unsigned, through the C2PA library's reader

Off unless a policy says `provenance: {enabled: true, ...}`; nothing here is imported before then.
"""

from __future__ import annotations

from .record import TRAINED_ALGORITHMIC_MEDIA, ProvenanceRecord, text_sha256

__all__ = ["TRAINED_ALGORITHMIC_MEDIA", "ProvenanceRecord", "text_sha256"]
