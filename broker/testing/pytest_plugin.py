"""Pytest plugin: keep a test run on loopback and away from real credentials.

Enable with `-p broker.testing.pytest_plugin` (the project's own pytest configuration does).
It refuses any socket connection to an address outside 127.0.0.0/8 and ::1, turns off the
AWS and Google metadata-server probes, and clears provider credentials from the environment,
so a test can never reach a real cloud account.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any

import pytest

__all__ = ["NonLoopbackConnection", "guard_sockets"]

_CLEARED_PREFIXES = ("AWS_", "AZURE_", "GOOGLE_", "GROQ_", "OPENAI_", "VERTEX_", "CLOUDSDK_")
_SAFE_ENV = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "NO_GCE_CHECK": "true",
    "GCE_METADATA_HOST": "127.0.0.1:9",
    "GCE_METADATA_IP": "127.0.0.1:9",
}


class NonLoopbackConnection(RuntimeError):
    """A test tried to open a connection to a host other than the loopback interface."""


def _is_loopback(address: Any) -> bool:
    if isinstance(address, (tuple, list)) and address:
        host = address[0]
    else:
        return True  # unix sockets and the like
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name that is not localhost would need a DNS lookup: refused


def guard_sockets() -> None:
    """Patch `socket.socket.connect` / `connect_ex` to refuse non-loopback addresses."""
    if getattr(socket.socket, "_llama_broker_guarded", False):
        return
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex

    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            raise NonLoopbackConnection(f"test tried to reach {address!r}; only 127.0.0.1 is allowed")
        return original_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            raise NonLoopbackConnection(f"test tried to reach {address!r}; only 127.0.0.1 is allowed")
        return original_connect_ex(self, address)

    socket.socket.connect = connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign,assignment]
    socket.socket._llama_broker_guarded = True  # type: ignore[attr-defined]


def pytest_configure(config: pytest.Config) -> None:
    for name in list(os.environ):
        if name.startswith(_CLEARED_PREFIXES):
            del os.environ[name]
    os.environ.update(_SAFE_ENV)
    guard_sockets()

