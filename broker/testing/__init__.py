"""Loopback emulators of every provider, with fault injection, for the broker's tests and yours.

Each emulator speaks its provider's wire protocol closely enough that the provider's real
SDK client accepts it, runs on 127.0.0.1 on a free port, records requests, injects faults
and counts the tokens it reported.  Provider modules are imported on first use.

`emulator.malformed(kind)` sends a malformed answer of one of `MALFORMED_KINDS` in the
provider's own wire format; `broker.testing.malformed` describes each kind.
"""

from .malformed import MALFORMED_KINDS
from .openai_compat import OpenAICompatEmulator
from .server import Answer, Emulator, Fault, Recorded, Reply, TokenCount, count_tokens
from .suite import EMULATORS, EmulatorSuite

__all__ = [
    "EMULATORS",
    "MALFORMED_KINDS",
    "Answer",
    "Emulator",
    "EmulatorSuite",
    "Fault",
    "OpenAICompatEmulator",
    "Recorded",
    "Reply",
    "TokenCount",
    "count_tokens",
]
