"""Where the ledger lives, and opening one from its URL.

Without a URL the ledger is ``usage.db`` under the data directory: ``$LLAMA_BROKER_DATA_DIR``
when set, else ``platformdirs.user_data_dir("llama-broker")``.
"""

from __future__ import annotations

import os
from pathlib import Path

from broker.errors import MeteringError
from broker.metering.ledger import Ledger, LedgerNotFound
from broker.metering.paths import data_dir, redact

__all__ = ["data_dir", "default_ledger_url", "ledger_kind", "open_ledger", "redact", "sqlite_path_from_url"]


def default_ledger_url() -> str:
    """``sqlite:///<data dir>/usage.db``."""
    return "sqlite://" + str((data_dir() / "usage.db").resolve())


def sqlite_path_from_url(url: str) -> str:
    """The file path of a ``sqlite://`` URL (``sqlite:///abs/x.db`` -> ``/abs/x.db``).

    ``sqlite://rel/x.db`` is relative to the working directory; ``sqlite://:memory:`` is an
    in-memory ledger (one connection; for experiments, not for a broker).  A URL without a
    path is `MeteringError`.
    """
    rest = url[len("sqlite:") :]
    if rest.startswith("//"):
        rest = rest[2:]
    rest = rest.split("?", 1)[0]
    if not rest:
        raise MeteringError(f"no path in ledger URL {redact(url)!r}: use sqlite:///abs/path.db")
    if rest in (":memory:", "/:memory:"):
        return ":memory:"
    if rest.startswith("/"):
        rest = "/" + rest.lstrip("/")  # sqlite:////abs/x.db (SQLAlchemy style) is the same file
    return os.path.expanduser(rest)


def ledger_kind(url: str) -> str:
    """``"sqlite"`` or ``"postgresql"`` for a ledger URL (a plain path is SQLite); else `MeteringError`.

    Checks the URL's form only; nothing is opened.
    """
    if "\x00" in url:
        raise MeteringError("malformed ledger URL: it contains a NUL character")
    if "://" not in url:
        if not url.strip():
            raise MeteringError("empty ledger URL: use sqlite:///abs/path.db or postgresql://...")
        return "sqlite"
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("postgresql", "postgres"):
        return "postgresql"
    if scheme == "sqlite":
        sqlite_path_from_url(url)
        return "sqlite"
    raise MeteringError(
        f"unsupported ledger URL {redact(url)!r}: use sqlite:///abs/path.db or postgresql://user@host/db"
    )


def open_ledger(url: str | None = None, *, create: bool = True) -> Ledger:
    """Open the ledger at `url` (default: `default_ledger_url()`).

    ``sqlite://...`` or a plain file path opens a `SQLiteLedger`; ``postgresql://`` or
    ``postgres://`` a `PostgresLedger`.  With ``create=False`` a SQLite file that does not
    exist raises `LedgerNotFound` instead of being created (reports use this).

    Every failure is a `MeteringError` with a one-line message that never shows the URL's
    password: an unsupported or malformed URL, a server that cannot be reached, a SQLite
    file whose folder does not exist.  The default location's folder (the data directory) is
    created; a folder named by the caller is not.
    """
    default = not url
    url = url or default_ledger_url()
    if ledger_kind(url) == "postgresql":
        from broker.metering.postgres import PostgresLedger

        return PostgresLedger(url)
    from broker.metering.sqlite import SQLiteLedger

    path = sqlite_path_from_url(url) if "://" in url else os.path.expanduser(url)
    if path != ":memory:":
        if not create and not os.path.exists(path):
            raise LedgerNotFound(f"no ledger at {path}")
        folder = Path(path).parent
        if default:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise MeteringError(f"cannot create the data directory {folder}: {exc.strerror or exc}") from exc
        elif not folder.is_dir():
            raise MeteringError(f"cannot open the SQLite ledger {path}: the folder {folder} does not exist")
    return SQLiteLedger(path)
