"""Signing provenance records as C2PA manifests (through `c2pa-python`, the official bindings).

The manifest is a sidecar (not embedded in any container): its hard binding (`c2pa.hash.data`)
covers the record's canonical bytes, and the record itself rides in the manifest as the
`org.llama-broker.provenance` assertion next to a `c2pa.actions.v2` "created" action whose
digital source type is IPTC's `trainedAlgorithmicMedia`.  The record binds the answer through
its `output_sha256`.  The key and certificate chain are read once, by reference (a file, or an
environment variable holding a path or the PEM text); `c2pa-python` is imported only when a
policy turns provenance on (the ``provenance`` extra).
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import logging
import os
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from broker.errors import MissingDependency, ProvenanceError

from .record import ASSERTION_LABEL, TRAINED_ALGORITHMIC_MEDIA, ProvenanceRecord, endpoint_host, text_sha256

if TYPE_CHECKING:
    from broker.attempts import CallMeta
    from broker.policy.schema import ProvenanceSettings
    from broker.routes import Route
    from broker.types import ChatResponse

log = logging.getLogger("llama_broker.provenance")

__all__ = ["ASSET_FORMAT", "ProvenanceSigner", "SignedRecord", "c2pa_module", "read_pem"]

#: the media type the manifest's hard binding is declared for: the record's canonical JSON bytes
ASSET_FORMAT = "application/json"


def c2pa_module() -> Any:
    """The `c2pa` bindings, or `MissingDependency` naming the extra."""
    try:
        import c2pa
    except ImportError as exc:
        err = MissingDependency("provenance", "c2pa-python", "provenance")
        err.args = ("provenance records need c2pa-python: pip install 'llama-broker[provenance]'",)
        raise err from exc
    return c2pa


def read_pem(what: str, file: str | None, env: str | None) -> bytes:
    """The PEM named by `file`, or by environment variable `env` (a path, or the PEM text itself)."""
    if env:
        value = os.environ.get(env)
        if not value:
            raise ProvenanceError(f"provenance {what}: environment variable {env} is not set")
        if value.lstrip().startswith("-----BEGIN"):
            return value.encode()
        file = value
    if not file:
        raise ProvenanceError(f"provenance {what}: no file or environment variable named")
    try:
        return Path(file).expanduser().read_bytes()
    except OSError as exc:
        raise ProvenanceError(f"provenance {what}: cannot read {file}: {exc.strerror}") from None


@dataclass(frozen=True, slots=True)
class SignedRecord:
    """A provenance record and the C2PA manifest that signs it (None: unsigned)."""

    record: ProvenanceRecord
    manifest: bytes | None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"record": self.record.to_dict()}
        if self.manifest is not None:
            out["c2pa_manifest"] = base64.b64encode(self.manifest).decode("ascii")
        return out

    def to_json(self, *, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent, ensure_ascii=False)

    @property
    def header(self) -> str:
        """The record for an HTTP header: URL-safe base64 of its compact JSON."""
        return base64.urlsafe_b64encode(self.to_json().encode()).decode("ascii")


def _algorithm(c2pa: Any, key_pem: bytes) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ProvenanceError(f"provenance key: not an unencrypted PEM private key ({exc})") from None
    alg = c2pa.C2paSigningAlg
    if isinstance(key, ec.EllipticCurvePrivateKey):
        by_curve = {"secp256r1": alg.ES256, "secp384r1": alg.ES384, "secp521r1": alg.ES512}
        if key.curve.name not in by_curve:
            raise ProvenanceError(f"provenance key: curve {key.curve.name} is not one C2PA signs with")
        return by_curve[key.curve.name]
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return alg.ED25519
    if isinstance(key, rsa.RSAPrivateKey):
        return alg.PS256
    raise ProvenanceError(f"provenance key: a {type(key).__name__} is not a key type C2PA signs with")


def _check_chain(cert_pem: bytes) -> None:
    from cryptography import x509

    try:
        if not x509.load_pem_x509_certificates(cert_pem):
            raise ValueError("no certificate")
    except ValueError as exc:
        raise ProvenanceError(f"provenance certificate: not a PEM certificate chain ({exc})") from None


class ProvenanceSigner:
    """Signs the record of each answer; built once per broker from the policy's `provenance:` settings."""

    def __init__(
        self,
        settings: ProvenanceSettings,
        *,
        policy_sha256: str,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
    ) -> None:
        self.c2pa = c2pa_module()
        self.key_pem = read_pem("key", settings.key_file, settings.key_env)
        self.cert_pem = read_pem("certificate", settings.cert_file, settings.cert_env)
        self.alg = _algorithm(self.c2pa, self.key_pem)
        _check_chain(self.cert_pem)
        self.embed = settings.embed_in_text
        self.policy_sha256 = policy_sha256
        self.now = now
        self._local = threading.local()  # one native signer per thread
        from importlib.metadata import PackageNotFoundError, version

        try:
            self._generator = {"name": "llama-broker", "version": version("llama-broker")}
        except PackageNotFoundError:
            self._generator = {"name": "llama-broker"}
        # signed once with the library's check after signing, so a key that does not match its
        # certificate fails here; calls then sign without re-reading their own manifest (about 2.5x faster)
        self._sign(_probe_record(), None)

    def _signer(self) -> Any:
        signer = getattr(self._local, "signer", None)
        if signer is None:
            info = self.c2pa.C2paSignerInfo(self.alg, self.cert_pem, self.key_pem, None)
            try:
                signer = self.c2pa.Signer.from_info(info)
            except self.c2pa.C2paError as exc:
                raise ProvenanceError(f"provenance: the C2PA signer refused the key or certificate: {exc}") from None
            self._local.signer = signer
        return signer

    def manifest_definition(self, record: ProvenanceRecord) -> dict[str, Any]:
        return {
            "claim_generator_info": [self._generator],
            "title": f"provenance of answer {record.request_id}",
            "format": ASSET_FORMAT,
            "assertions": [
                {
                    "label": "c2pa.actions.v2",
                    "data": {"actions": [{"action": "c2pa.created", "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA}]},
                },
                {"label": ASSERTION_LABEL, "data": record.to_dict()},
            ],
        }

    def _context(self) -> Any:
        context = getattr(self._local, "context", None)
        if context is None:
            settings = self.c2pa.Settings.from_dict({"verify": {"verify_after_sign": False}})
            context = self._local.context = self.c2pa.Context(settings)
        return context

    def sign(self, record: ProvenanceRecord) -> SignedRecord:
        """The record with its C2PA manifest (a `ProvenanceError` if the library refuses)."""
        return self._sign(record, self._context())

    def _sign(self, record: ProvenanceRecord, context: Any) -> SignedRecord:
        c2pa = self.c2pa
        try:
            builder = c2pa.Builder(self.manifest_definition(record), context=context)
            builder.set_no_embed()
            manifest = builder.sign(self._signer(), ASSET_FORMAT, io.BytesIO(record.canonical()), io.BytesIO())
        except c2pa.C2paError as exc:
            raise ProvenanceError(f"provenance: C2PA signing failed: {exc}") from None
        return SignedRecord(record, bytes(manifest))

    def record(self, text: str, route: Route, meta: CallMeta) -> ProvenanceRecord:
        return ProvenanceRecord(
            logical_model=route.model,
            provider=route.provider,
            provider_model_id=route.model_id,
            model_revision=None,
            region=route.region,
            jurisdiction=route.jurisdiction,
            endpoint_host=endpoint_host(route.endpoint),
            policy_version=meta.policy_version,
            policy_sha256=self.policy_sha256,
            decision_id=meta.decision_id,
            request_id=meta.request_id,
            timestamp=self.now().astimezone(dt.timezone.utc).isoformat(),
            output_sha256=text_sha256(text),
        )

    def stamp(self, response: ChatResponse, meta: CallMeta, route: Route) -> ChatResponse:
        """`response` with its signed record; its text carries the manifest too when the policy opts in.

        Signing never fails a call that was answered (and metered): if the library refuses, the
        answer goes back without a record and the failure is logged.
        """
        text = unicodedata.normalize("NFC", response.text) if self.embed else response.text
        try:
            signed = self.sign(self.record(text, route, meta))
        except ProvenanceError as exc:
            log.error("answer %s left unsigned: %s", meta.request_id, exc)
            return response
        if self.embed and signed.manifest is not None:
            from .embed import embed

            text = embed(text, signed.manifest)
        return replace(response, text=text, provenance=signed)


def _probe_record() -> ProvenanceRecord:
    return ProvenanceRecord(
        logical_model="probe", provider="probe", provider_model_id="probe", model_revision=None, region=None,
        jurisdiction="on-prem", endpoint_host=None, policy_version="probe", policy_sha256="", decision_id=None,
        request_id="probe", timestamp="1970-01-01T00:00:00+00:00", output_sha256=text_sha256(""),
    )
