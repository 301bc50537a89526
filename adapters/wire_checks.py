"""Type checks for the fields of a provider's answer, shared by the pure shape modules.

A provider answer is JSON someone else wrote: each reader here takes one field, checks it has
the type the wire format promises, and raises `Malformed` (naming the field) when it does not.
The shape modules turn `Malformed` into a `ProtocolError` with the provider and route, so a
malformed answer is never read as an empty success and never escapes as a raw `TypeError`.

Token counts must be JSON integers: floats (`1e300`), strings and booleans are malformed.
Integers pass through unchanged, however large or negative; the core decides which counts
are plausible.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "PARSE_FAILURES",
    "Malformed",
    "mapping",
    "optional_list",
    "optional_mapping",
    "optional_str",
    "raised_in",
    "token_count",
]

#: What an SDK's own parser raises, unwrapped, on a body of the wrong shape (a JSON list where an
#: object belongs, bytes that are not UTF-8).  Adapters map these to `ProtocolError` only when
#: `raised_in` the SDK's parsing code: anywhere else they are bugs, and stay unmapped.
PARSE_FAILURES = (AttributeError, TypeError, ValueError, KeyError, IndexError)


class Malformed(Exception):
    """A field of a provider answer has the wrong type or is missing; `str()` names the field."""


def mapping(value: Any, name: str) -> Mapping[str, Any]:
    """`value` as a JSON object, or `Malformed`."""
    if not isinstance(value, Mapping):
        raise Malformed(f"{name} is {_kind(value)}, not an object")
    return value


def optional_mapping(value: Any, name: str) -> Mapping[str, Any] | None:
    """A JSON object or null."""
    return None if value is None else mapping(value, name)


def optional_list(value: Any, name: str) -> list[Any] | None:
    """A JSON array or null."""
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        raise Malformed(f"{name} is {_kind(value)}, not a list")
    return list(value)


def optional_str(value: Any, name: str) -> str | None:
    """A JSON string or null."""
    if value is None or isinstance(value, str):
        return value
    raise Malformed(f"{name} is {_kind(value)}, not a string")


def token_count(value: Any, name: str) -> int:
    """A token count: a JSON integer (null or absent reads as 0); any other type is `Malformed`."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise Malformed(f"{name} is {_kind(value)}, not an integer")
    return value


def raised_in(exc: BaseException, files: tuple[str, ...]) -> bool:
    """Whether the innermost frame of `exc` runs in a file whose path ends with one of `files`."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename.replace("\\", "/").endswith(files)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list", tuple: "a list"}
    return names.get(type(value), "an object" if isinstance(value, Mapping) else type(value).__name__)
