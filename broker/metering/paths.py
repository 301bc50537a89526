"""Where the broker keeps its files, and how a ledger URL is shown without its password.

A leaf module: the ledger backends and `broker.metering.location` both use it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["data_dir", "redact"]


def data_dir() -> Path:
    """The broker's data directory (``$LLAMA_BROKER_DATA_DIR`` overrides the platform default)."""
    override = os.environ.get("LLAMA_BROKER_DATA_DIR")
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("llama-broker"))


_USERINFO = re.compile(r"(://[^/@\s:]*):[^@\s]*@")
_PASSWORD_KEY = re.compile(r"(?i)(password\s*=\s*)('[^']*'|[^\s&]*)")


def redact(text: str) -> str:
    """`text` with the password of any URL (``user:SECRET@``) or ``password=`` value in it masked."""
    return _PASSWORD_KEY.sub(r"\1***", _USERINFO.sub(r"\1:***@", text))
