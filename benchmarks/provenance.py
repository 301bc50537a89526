"""What a signed provenance record and the decision audit trail cost per call.

    python benchmarks/provenance.py [--calls 300] [--runs 3]

Against the loopback OpenAI-compatible emulator, times `Broker.chat` (median of runs, per call):
  bare         audit trail off, provenance off
  audit        the decision audit trail on (the default), provenance off
  signed       audit on, a C2PA-signed record on every answer (c2pa-python, EC P-256)
  embedded     signed, and the manifest embedded in the answer's text (c2pa-text)
and, alone: signing one record, and verifying one through the C2PA reader.
The signing key and certificates are made for the run with `cryptography`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from broker import Broker
from broker.testing import OpenAICompatEmulator

MESSAGES = [{"role": "user", "content": "hello, what does a signature cost?"}]


def make_keys(folder: Path) -> tuple[Path, Path]:
    """A throwaway CA and an EC P-256 signing certificate it issued: (key file, chain file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME,
                          "bench"), x509.NameAttribute(NameOID.COUNTRY_NAME, "SE")])

    def usage(ca: bool) -> x509.KeyUsage:
        return x509.KeyUsage(True, False, False, False, False, ca, ca, False, False)

    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def cert(subject: str, public: Any, *, ca: bool) -> x509.Certificate:
        b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name("bench CA")).public_key(public)
             .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
             .not_valid_after(now + dt.timedelta(days=2))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
             .add_extension(usage(ca), critical=True)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False))
        if not ca:
            b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        return b.sign(ca_key, hashes.SHA256())

    ca, leaf = cert("bench CA", ca_key.public_key(), ca=True), cert("bench signer", key.public_key(), ca=False)
    key_file, chain_file = folder / "key.pem", folder / "chain.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    chain_file.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, ca)))
    return key_file, chain_file


def policy(url: str, ledger: Path, **top: Any) -> dict[str, Any]:
    route = {"id": "local", "provider": "local", "model": "llama-3.1-8b", "model_id": "bench",
             "endpoint": f"{url}/v1", "jurisdiction": "on-prem"}
    return {"version": 1, "ledger": f"sqlite:///{ledger}", "routes": [route],
            "tenants": {"default": {"residency": ["on-prem"]}}, **top}


def per_call_ms(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with OpenAICompatEmulator() as emu, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        key, chain = make_keys(tmp)
        signing = {"enabled": True, "key_file": str(key), "cert_file": str(chain)}
        setups = {
            "bare": {"audit": {"enabled": False}},
            "audit": {},
            "signed": {"provenance": signing},
            "embedded": {"provenance": {**signing, "embed_in_text": True}},
        }
        brokers = {name: Broker.from_policy(policy(emu.url, tmp / f"{name}.db", **top)) for name, top in setups.items()}
        try:
            calls = {name: (lambda b=b: b.chat(model="llama-3.1-8b", messages=MESSAGES)) for name, b in brokers.items()}
            for fn in calls.values():
                per_call_ms(fn, 30)  # warm up pools and caches
            results: dict[str, list[float]] = {name: [] for name in calls}
            for _ in range(args.runs):
                for name, fn in calls.items():  # interleaved, so drift in the machine hits each alike
                    results[name].append(per_call_ms(fn, args.calls))
            reply = calls["signed"]()
        finally:
            for b in brokers.values():
                b.close()
        from broker.provenance.verify import verify_record

        signer = brokers["signed"]._core.executor.outcomes.stamp.__self__  # type: ignore[union-attr]
        record = reply.provenance.record
        sign_ms = statistics.median(per_call_ms(lambda: signer.sign(record), 100) for _ in range(args.runs))
        document = reply.provenance.to_dict()
        verify_ms = statistics.median(
            per_call_ms(lambda: verify_record(document, text=reply.text), 50) for _ in range(args.runs)
        )
    med = {name: statistics.median(v) for name, v in results.items()}
    print(f"Broker.chat per call, median of {args.runs} runs x {args.calls} calls (loopback emulator, SQLite ledger)")
    for name, ms in med.items():
        extra = "" if name == "bare" else f"   (+{(ms - med['bare']) * 1e3:.0f} us over bare)"
        print(f"  {name:<9} {ms * 1e3:8.0f} us{extra}")
    print(f"  signing on vs off (signed - audit): +{(med['signed'] - med['audit']) * 1e3:.0f} us per call")
    print(f"sign one record alone: {sign_ms * 1e3:.0f} us; verify one (C2PA reader + hash): {verify_ms * 1e3:.0f} us")
    print(f"manifest: {len(reply.provenance.manifest or b'')} bytes; embedded, it adds that many invisible characters")


if __name__ == "__main__":
    main()
