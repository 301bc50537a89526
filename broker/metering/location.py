"""Where the ledger lives, and opening one from its URL.

Without a URL the ledger is ``usage.db`` under the data directory: ``$LLAMA_BROKER_DATA_DIR``
when set, else ``platformdirs.user_data_dir("llama-broker")``.
"""

from __future__ import annotations

import os
from pathlib import Path

from broker.metering.ledger import Ledger, LedgerNotFound

__all__ = ["data_dir", "default_ledger_url", "open_ledger", "sqlite_path_from_url"]


def data_dir() -> Path:
    """The broker's data directory (``$LLAMA_BROKER_DATA_DIR`` overrides the platform default)."""
    override = os.environ.get("LLAMA_BROKER_DATA_DIR")
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("llama-broker"))


def default_ledger_url() -> str:
    """``sqlite:///<data dir>/usage.db``."""
    return "sqlite://" + str((data_dir() / "usage.db").resolve())


def sqlite_path_from_url(url: str) -> str:
    """The file path of a ``sqlite://`` URL (``sqlite:///abs/x.db`` -> ``/abs/x.db``).

    ``sqlite://rel/x.db`` is relative to the working directory; ``sqlite://:memory:`` is an
    in-memory ledger (one connection; for experiments, not for a broker).
    """
    rest = url[len("sqlite:") :]
    if rest.startswith("//"):
        rest = rest[2:]
    rest = rest.split("?", 1)[0]
    if not rest:
        raise ValueError(f"no path in ledger URL {url!r}")
    if rest in (":memory:", "/:memory:"):
        return ":memory:"
    if rest.startswith("/"):
        rest = "/" + rest.lstrip("/")  # sqlite:////abs/x.db (SQLAlchemy style) is the same file
    return os.path.expanduser(rest)


def open_ledger(url: str | None = None, *, create: bool = True) -> Ledger:
    """Open the ledger at `url` (default: `default_ledger_url()`).

    ``sqlite://...`` or a plain file path opens a `SQLiteLedger`; ``postgresql://`` or
    ``postgres://`` a `PostgresLedger`.  With ``create=False`` a SQLite file that does not
    exist raises `LedgerNotFound` instead of being created (reports use this).
    """
    url = url or default_ledger_url()
    scheme = url.split(":", 1)[0].lower() if "://" in url else ""
    if scheme in ("postgresql", "postgres"):
        from broker.metering.postgres import PostgresLedger

        return PostgresLedger(url)
    if scheme in ("sqlite", ""):
        from broker.metering.sqlite import SQLiteLedger

        path = sqlite_path_from_url(url) if scheme else os.path.expanduser(url)
        if not create and path != ":memory:" and not os.path.exists(path):
            raise LedgerNotFound(f"no ledger at {path}")
        return SQLiteLedger(path)
    raise ValueError(f"unsupported ledger URL {url!r}: use sqlite:///path or postgresql://...")
