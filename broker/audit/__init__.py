"""The audit trail: every decision stored with the ledger, every policy version by hash, residency proven.

    versions.py       the canonical document of a policy version and its SHA-256
    decisions.py      one stored decision (candidates, filters, scores, the route chosen)
    trail.py          the call hook that stores decisions in batches
    store.py          the store protocol and the residency audit's SQL
    store_sqlite.py   the tables in the SQLite ledger file
    store_postgres.py the tables in the PostgreSQL ledger database
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from broker.policy import Policy

    from .trail import AuditTrail

__all__ = ["open_trail"]

log = logging.getLogger("llama_broker.audit")


def open_trail(
    policy: Policy, ledger_url: str | None, *, durable: bool, now: Callable[[], dt.datetime], flush_interval_s: float
) -> AuditTrail | None:
    """The trail for `policy` in the ledger at `ledger_url`; None when the policy turns auditing off.

    A ledger without a URL the store knows (an injected object) gets no trail, with a warning.
    """
    if not policy.audit.enabled:
        return None
    if not ledger_url or not ledger_url.startswith(("sqlite:", "postgresql:", "postgres:")):
        log.warning("no audit trail: the ledger has no sqlite or postgresql URL")
        return None
    from .store import open_store
    from .trail import AuditTrail
    from .versions import snapshot

    return AuditTrail(open_store(ledger_url), snapshot(policy), durable=durable, now=now,
                      flush_interval_s=flush_interval_s)
