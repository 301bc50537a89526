"""Verification a downstream reader can run: trusted, untrusted, tampered or unsigned.

The signature, the certificate chain and the hard binding are checked by the C2PA library's own
`Reader` (never by code of this project): the record's canonical bytes are the asset, the
manifest its sidecar.  Trust means the signing certificate chains to one of the PEM trust anchors
given; without any, a valid signature is `valid-untrusted`.  What this module adds is the check
that the answer's text hashes to the record's `output_sha256`, and that the record shown is the
one the manifest carries.  Nothing is fetched from the network (no OCSP, no remote manifests).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from broker.errors import ProvenanceError

from .embed import extract
from .record import ASSERTION_LABEL, ProvenanceRecord
from .signing import ASSET_FORMAT, c2pa_module

__all__ = ["Verdict", "Verification", "verify_document", "verify_path", "verify_record", "verify_text"]

#: validation codes that say only that the signer is not in the trust list
_UNTRUSTED = {"signingCredential.untrusted"}


class Verdict(str, Enum):
    TRUSTED = "valid-trusted"
    UNTRUSTED = "valid-untrusted"
    TAMPERED = "tampered"
    UNSIGNED = "unsigned"


@dataclass(frozen=True)
class Verification:
    """The verdict, why, and what was read (the record and who signed it, where known)."""

    verdict: Verdict
    reasons: tuple[str, ...] = ()
    record: ProvenanceRecord | None = None
    signer: Mapping[str, Any] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return self.verdict in (Verdict.TRUSTED, Verdict.UNTRUSTED)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "reasons": list(self.reasons),
            "record": None if self.record is None else self.record.to_dict(),
            "signer": dict(self.signer),
        }


def _context(c2pa: Any, trust_anchors: bytes | None) -> Any:
    verify: dict[str, Any] = {"verify_trust": True, "ocsp_fetch": False, "remote_manifest_fetch": False}
    settings: dict[str, Any] = {"verify": verify}
    if trust_anchors:
        settings["trust"] = {"trust_anchors": trust_anchors.decode("ascii", "replace")}
    return c2pa.Context(c2pa.Settings.from_dict(settings))


def _active(reader: Any) -> dict[str, Any]:
    store = json.loads(reader.json())
    return dict(store.get("manifests", {}).get(store.get("active_manifest"), {}))


def _assertion(manifest: Mapping[str, Any]) -> Any:
    for assertion in manifest.get("assertions", []):
        if assertion.get("label") == ASSERTION_LABEL:
            return assertion.get("data")
    return None


def verify_record(
    document: Mapping[str, Any], *, text: str | None = None, trust_anchors: bytes | None = None
) -> Verification:
    """Verify a record document (`SignedRecord.to_dict()`), and that `text` is its answer when given."""
    raw = document.get("record")
    if not isinstance(raw, Mapping):
        raise ProvenanceError("not a provenance record: no `record` object")
    try:
        record = ProvenanceRecord.from_dict(raw)
    except ProvenanceError as exc:
        return Verification(Verdict.TAMPERED, (str(exc),))
    encoded = document.get("c2pa_manifest")
    if encoded is None:
        return Verification(Verdict.UNSIGNED, ("the record carries no C2PA manifest",), record)
    try:
        manifest = base64.b64decode(str(encoded), validate=True)
    except (binascii.Error, ValueError):
        return Verification(Verdict.TAMPERED, ("the C2PA manifest is not valid base64",), record)
    c2pa = c2pa_module()
    try:
        reader = c2pa.Reader(
            ASSET_FORMAT, io.BytesIO(record.canonical()), manifest_data=manifest, context=_context(c2pa, trust_anchors)
        )
        state = reader.get_validation_state()
        results = reader.get_validation_results() or {}
        active = _active(reader)
    except c2pa.C2paError as exc:
        return Verification(Verdict.TAMPERED, (f"the C2PA reader refused the manifest: {exc}",), record)
    failures = tuple(
        str(f.get("code")) for f in results.get("activeManifest", {}).get("failure", []) if isinstance(f, Mapping)
    )
    info = active.get("signature_info") or {}
    signer = {k: info[k] for k in ("issuer", "common_name", "alg", "cert_serial_number") if k in info}
    reasons = list(failures)
    if _assertion(active) != record.to_dict():
        reasons.append("the record differs from the one its manifest carries")
    if text is not None and not record.matches(text):
        reasons.append("the text's SHA-256 differs from the record's output_sha256")
    if state == "Invalid" or (reasons and not set(reasons) <= _UNTRUSTED):
        return Verification(Verdict.TAMPERED, tuple(reasons), record, signer)
    if state == "Trusted":
        return Verification(Verdict.TRUSTED, tuple(reasons), record, signer)
    return Verification(Verdict.UNTRUSTED, tuple(reasons) or ("no trust anchor given",), record, signer)


def verify_text(text: str, *, trust_anchors: bytes | None = None) -> Verification:
    """Verify a text that carries its manifest (C2PA 2.4 unstructured text)."""
    manifest, clean = extract(text)
    if manifest is None:
        return Verification(Verdict.UNSIGNED, ("the text carries no C2PA manifest",))
    c2pa = c2pa_module()
    try:  # read the record the manifest carries; the second reading below validates it against that record
        reader = c2pa.Reader(ASSET_FORMAT, io.BytesIO(b""), manifest_data=manifest, context=_context(c2pa, None))
        carried = _assertion(_active(reader))
    except c2pa.C2paError as exc:
        return Verification(Verdict.TAMPERED, (f"the C2PA reader refused the embedded manifest: {exc}",))
    if not isinstance(carried, Mapping):
        return Verification(Verdict.TAMPERED, ("the embedded manifest carries no provenance record",))
    document = {"record": carried, "c2pa_manifest": base64.b64encode(manifest).decode("ascii")}
    return verify_record(document, text=clean, trust_anchors=trust_anchors)


def verify_document(content: str, *, text: str | None = None, trust_anchors: bytes | None = None) -> Verification:
    """Verify `content`: a record document (JSON with a `record` object), else a text carrying a manifest."""
    try:
        parsed = json.loads(content)
    except ValueError:
        parsed = None
    if isinstance(parsed, Mapping) and "record" in parsed:
        return verify_record(parsed, text=text, trust_anchors=trust_anchors)
    if text is not None:
        raise ProvenanceError("a text to compare was given, but the input is not a provenance record")
    return verify_text(content, trust_anchors=trust_anchors)


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProvenanceError(f"cannot read {what} {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ProvenanceError(f"{what} {path} is not UTF-8 text") from None


def verify_path(path: Path, *, text: Path | None = None, trust_anchors: Path | None = None) -> Verification:
    """`verify_document` over files (the text and trust anchors read as given)."""
    anchors = None
    if trust_anchors is not None:
        try:
            anchors = trust_anchors.read_bytes()
        except OSError as exc:
            raise ProvenanceError(f"cannot read trust anchors {trust_anchors}: {exc.strerror}") from None
    answer = _read(text, "text") if text is not None else None
    return verify_document(_read(path, "record or text"), text=answer, trust_anchors=anchors)
