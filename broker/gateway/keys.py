"""API keys to tenants: the gateway's one way of knowing who is calling.

A policy names each tenant's keys by reference only (`broker.policy.schema.ApiKeyRef`)::

    tenants:
      acme-eu:
        residency: [eu]
        api_keys:
          - env: ACME_EU_GATEWAY_KEY          # read once, when the gateway starts
          - sha256: 9f86d081884c7d65...       # printf %s "$KEY" | sha256sum

The table keeps SHA-256 digests, never a key.  A presented key is hashed and compared with
every digest in constant time (`hmac.compare_digest`, no early exit), so neither the answer nor
its timing tells which entry came close.  A key listed under two tenants is refused at start.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import CredentialsError, PolicyError, PolicyIssue
from ..policy import Policy

__all__ = ["KeyTable", "key_digest"]


def key_digest(key: str) -> bytes:
    """The SHA-256 of a key's UTF-8 bytes (what a policy's `sha256:` entry holds, in hex)."""
    return hashlib.sha256(key.encode("utf-8")).digest()


@dataclass(frozen=True, slots=True)
class _Entry:
    digest: bytes
    tenant: str


class KeyTable:
    """Digest -> tenant, built from a policy's `api_keys` entries."""

    def __init__(self, entries: Mapping[bytes, str]) -> None:
        self._entries = tuple(_Entry(d, t) for d, t in entries.items())

    @classmethod
    def from_policy(cls, policy: Policy, environ: Mapping[str, str] | None = None) -> KeyTable:
        """Resolve every tenant's key references; an unset variable is a `CredentialsError` naming it."""
        env = os.environ if environ is None else environ
        owners: dict[bytes, str] = {}
        problems: list[PolicyIssue] = []
        for tenant in policy.tenants.values():
            for ref in tenant.api_keys:
                if ref.env is not None:
                    value = env.get(ref.env)
                    if not value:
                        raise CredentialsError(
                            f"tenant {tenant.name!r}: api_keys names environment variable {ref.env}, which is not set"
                        )
                    digest, label = key_digest(value), f"env {ref.env}"
                else:
                    digest, label = bytes.fromhex(str(ref.sha256)), f"sha256 {str(ref.sha256)[:8]}..."
                other = owners.get(digest)
                if other is not None and other != tenant.name:
                    problems.append(PolicyIssue(policy.source, 0, f"tenants {other!r} and {tenant.name!r} share one "
                                                f"API key ({label}); a key maps to exactly one tenant"))
                owners.setdefault(digest, tenant.name)
        if problems:
            raise PolicyError(problems)
        return cls(owners)

    def __len__(self) -> int:
        return len(self._entries)

    def tenant_for(self, key: str) -> str | None:
        """The tenant a presented key belongs to, or None.  Every entry is compared, match or not."""
        presented = key_digest(key)
        found: str | None = None
        for entry in self._entries:
            if hmac.compare_digest(entry.digest, presented):
                found = entry.tenant
        return found
