"""Opening a ledger: every bad URL and unreachable server is a one-line `MeteringError`, never a password."""

from __future__ import annotations

from pathlib import Path

import pytest
from ledger_fixtures import *  # noqa: F403  (fixtures: pg_url, sqlite_url, ...)

from broker.errors import BrokerError, MeteringError
from broker.metering import LedgerNotFound, open_ledger
from broker.metering.location import ledger_kind, redact

SECRET = "s3cr3t-Pa55"
REFUSED = f"postgresql://broker:{SECRET}@127.0.0.1:1/usage"  # nothing listens on port 1


def refusal(url: str) -> MeteringError:
    with pytest.raises(MeteringError) as info:
        open_ledger(url)
    return info.value


def assert_one_clean_line(exc: BaseException) -> None:
    text = str(exc)
    assert text and "\n" not in text and len(text) < 600, text
    assert SECRET not in text and SECRET not in repr(exc)


def test_a_server_that_refuses_the_connection() -> None:
    exc = refusal(REFUSED)
    assert_one_clean_line(exc)
    assert "could not connect" in exc.args[0] and "127.0.0.1:1" in exc.args[0]
    assert "broker@127.0.0.1:1/usage" in exc.args[0]  # names the server, not the password
    import psycopg

    assert isinstance(exc.__cause__, psycopg.OperationalError)  # the original, for debugging


@pytest.mark.parametrize(
    "url",
    [
        f"mysql://root:{SECRET}@db/usage",
        f"postgresql://broker:{SECRET}@[::1/usage",  # unbalanced IPv6 bracket
        f"postgresql://broker:{SECRET}@127.0.0.1:notaport/usage",
        f"postgresql://broker@127.0.0.1:1/usage?password={SECRET}&sslmode=bogus",
        "sqlite://",
        "",
        "   ",
        "sqlite:///tmp/a\x00b.db",
    ],
    ids=["scheme", "ipv6", "port", "query", "no-path", "empty", "blank", "nul"],
)
def test_malformed_or_unsupported_urls(url: str) -> None:
    if not url:
        with pytest.raises(MeteringError):
            ledger_kind(url)
        return
    exc = refusal(url)
    assert_one_clean_line(exc)
    assert isinstance(exc, BrokerError)


def test_an_unsupported_scheme_names_the_forms_accepted() -> None:
    exc = refusal("mysql://x")
    assert "unsupported ledger URL 'mysql://x'" in str(exc) and "sqlite:///" in str(exc) and "postgresql://" in str(exc)


def test_a_sqlite_file_in_a_missing_folder_names_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "no" / "such"
    exc = refusal(f"sqlite://{folder / 'usage.db'}")
    assert_one_clean_line(exc)
    assert f"the folder {folder} does not exist" in str(exc)
    assert not (tmp_path / "no").exists()  # a folder the caller named is never created
    plain = refusal(str(folder / "usage.db"))  # a plain path, the same rule
    assert str(folder) in str(plain)


def test_the_default_location_creates_the_data_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMA_BROKER_DATA_DIR", str(tmp_path / "fresh" / "data"))
    ledger = open_ledger()
    assert Path(ledger.url[len("sqlite://") :]) == tmp_path / "fresh" / "data" / "usage.db"
    ledger.close()


def test_an_unusable_sqlite_file_is_a_metering_error(tmp_path: Path) -> None:
    not_a_db = tmp_path / "notes.db"
    not_a_db.write_text("this is not a database, " * 100)
    exc = refusal(f"sqlite://{not_a_db}")
    assert_one_clean_line(exc)
    assert "could not open" in str(exc)


def test_a_missing_ledger_is_both_a_metering_error_and_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(LedgerNotFound) as info:
        open_ledger(f"sqlite://{tmp_path / 'none.db'}", create=False)
    assert isinstance(info.value, MeteringError) and isinstance(info.value, FileNotFoundError)


def test_redact_masks_passwords_in_urls_and_keywords() -> None:
    assert redact(f"postgresql://u:{SECRET}@h/db") == "postgresql://u:***@h/db"
    assert SECRET not in redact(f"x postgres://:{SECRET}@h:5/db?password={SECRET}&a=b")
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"


def test_the_broker_raises_metering_error_for_a_ledger_it_cannot_open(tmp_path: Path) -> None:
    from broker import Broker

    with pytest.raises(MeteringError) as info:
        Broker(ledger=REFUSED)
    assert_one_clean_line(info.value)
    with pytest.raises(MeteringError, match="unsupported ledger URL"):
        Broker(ledger="mysql://x")
    with pytest.raises(MeteringError, match="does not exist"):
        Broker(ledger=f"sqlite://{tmp_path / 'missing' / 'u.db'}")


def test_reads_on_a_lost_server_are_metering_errors(pg_url) -> None:
    import psycopg

    ledger = open_ledger(pg_url)
    ledger.count()
    with psycopg.connect(pg_url, autocommit=True) as admin:  # the server ends the ledger's session
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
    try:
        first: int | None = ledger.count()  # the broken connection is noticed here: never a raw psycopg error
    except MeteringError as exc:
        assert_one_clean_line(exc)
        first = None
    assert first in (0, None)
    assert ledger.count() == 0  # and the next call reconnects
    ledger.close()
