import socket

import pytest

from broker.testing.pytest_plugin import NonLoopbackConnection


def test_non_loopback_connection_is_refused() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        with pytest.raises(NonLoopbackConnection):
            s.connect(("10.1.2.3", 80))


def test_loopback_connection_is_allowed() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    with server, socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.connect(server.getsockname())
