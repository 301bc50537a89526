"""Malformed answers an emulator sends on request: `emulator.malformed(kind)`.

Each kind is the answer the emulator would have sent, changed in one way, in the provider's own
wire format: the OpenAI chat-completions shape (local runners, Vertex, Groq, Azure) or Converse
JSON and the ConverseStream event stream (Bedrock), plain and streamed.  The status stays 200 and
headers and ids stay as usual, as when a proxy, a buggy server build or a half-written deployment
answers.  Authentication and model checks still apply first, as they do at the real service.

| kind              | plain answer                                   | streamed answer                                 |
|-------------------|------------------------------------------------|-------------------------------------------------|
| truncated         | JSON cut off mid-object (the default)          | an SSE data line cut off mid-JSON (Bedrock: an  |
|                   |                                                | event whose checksum is wrong)                  |
| not_json          | a text body that is not JSON                   | a data line (event payload) that is not JSON    |
| html_page         | an HTML error page, `text/html`, status 200    | the same page instead of the event stream       |
| json_list         | a JSON list where the object belongs           | a data line (event payload) holding a list      |
| invalid_utf8      | the answer text holds bytes that are not UTF-8 | a text delta holds bytes that are not UTF-8     |
| no_choices        | `choices: []` (Bedrock: `output: {}`)          | chunks without `choices` (Bedrock: no content   |
|                   |                                                | events and no `messageStop`)                    |
| null_message      | `message: null`                                | `delta: null` on the text chunks                |
| wrong_types       | the message content is a number                | the text deltas are numbers                     |
| no_finish_reason  | `finish_reason: null` (Bedrock: no stopReason) | the same on the final chunk (`messageStop`)     |
| absurd_usage      | prompt tokens 2**63                            | the same in the usage chunk (`metadata` event)  |
| negative_usage    | prompt and completion tokens -1000             | the same in the usage chunk (`metadata` event)  |
| missing_usage     | no `usage` member                              | no usage anywhere in the stream                 |
| usage_wrong_types | prompt tokens 1e300, completion tokens "12"    | the same in the usage chunk (`metadata` event)  |

A malformed answer is not counted in the emulator's `reported` tokens: its usage is not
something a client could bill.  This module holds the kinds and the OpenAI-shape changes;
the Bedrock emulator applies the same kinds to its own shapes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = [
    "BAD_UTF8",
    "HTML_PAGE",
    "MALFORMED_KINDS",
    "USAGE_KINDS",
    "corrupt_chunk",
    "corrupt_completion",
    "corrupt_sse",
    "encode",
    "text_with_bad_bytes",
]

#: kind -> what it sends (see the table above)
MALFORMED_KINDS: dict[str, str] = {
    "truncated": "JSON cut off mid-object",
    "not_json": "a body or data line that is not JSON",
    "html_page": "an HTML error page with status 200",
    "json_list": "a JSON list where an object belongs",
    "invalid_utf8": "answer text with bytes that are not UTF-8",
    "no_choices": "no choices (Bedrock: no output message)",
    "null_message": "a null message (stream: null deltas)",
    "wrong_types": "the content (text delta) is a number",
    "no_finish_reason": "no finish reason (Bedrock: no stopReason)",
    "absurd_usage": "prompt tokens 2**63",
    "negative_usage": "prompt and completion tokens -1000",
    "missing_usage": "no usage",
    "usage_wrong_types": "prompt tokens 1e300, completion tokens a string",
}

#: the kinds that change only the usage numbers
USAGE_KINDS = frozenset({"absurd_usage", "negative_usage", "missing_usage", "usage_wrong_types"})

HTML_PAGE = (
    b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    b"<body><h1>Bad Gateway</h1><p>The upstream server sent an invalid response.</p></body></html>"
)
TRUNCATED_JSON = b'{"choices": [ {"mess'
TRUNCATED_CHUNK = b'data: {"choices": [ {"delt\n\n'
NOT_JSON = b"upstream connect error or disconnect/reset before headers"

#: stands in for the bad bytes while a payload is a Python object; `encode` swaps them in
_MARK = "\ue000"
#: a UTF-8 lead byte without its continuation, then a byte UTF-8 never uses
BAD_UTF8 = b"\xc3\x28\xff"


def text_with_bad_bytes(text: str | None) -> str:
    """`text` marked so that `encode` writes bytes that are not UTF-8 into it."""
    return _MARK + (text or "")


def encode(payload: Any) -> bytes:
    """A payload as compact JSON bytes, with the bad bytes in place of each mark."""
    data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return data.replace(_MARK.encode(), BAD_UTF8)


def _usage(kind: str, holder: dict[str, Any], key: str = "usage") -> None:
    usage = holder.get(key)
    if kind == "missing_usage":
        holder.pop(key, None)
    elif not isinstance(usage, dict):
        return
    elif kind == "absurd_usage":
        usage["prompt_tokens"] = 2**63
        usage["total_tokens"] = 2**63 + int(usage.get("completion_tokens") or 0)
    elif kind == "negative_usage":
        usage.update(prompt_tokens=-1000, completion_tokens=-1000, total_tokens=-2000)
    elif kind == "usage_wrong_types":
        usage.update(prompt_tokens=1e300, completion_tokens="12")


def _all_usage(kind: str, payload: dict[str, Any]) -> None:
    _usage(kind, payload)
    x_groq = payload.get("x_groq")
    if isinstance(x_groq, dict):
        _usage(kind, x_groq)


def corrupt_completion(kind: str, payload: dict[str, Any]) -> bytes:
    """A chat-completion JSON body, changed as `kind` says (body-level kinds included)."""
    if kind == "truncated":
        return TRUNCATED_JSON
    if kind == "not_json":
        return NOT_JSON
    if kind == "html_page":
        return HTML_PAGE
    if kind == "json_list":
        return encode([payload])
    if kind in USAGE_KINDS:
        _all_usage(kind, payload)
        return encode(payload)
    choice = payload["choices"][0]
    message = choice.get("message")
    if kind == "no_choices":
        payload["choices"] = []
    elif kind == "null_message":
        choice["message"] = None
    elif kind == "wrong_types" and isinstance(message, dict):
        message["content"] = 42
    elif kind == "no_finish_reason":
        choice["finish_reason"] = None
    elif kind == "invalid_utf8" and isinstance(message, dict):
        message["content"] = text_with_bad_bytes(message.get("content"))
    return encode(payload)


def _is_text_chunk(chunk: dict[str, Any]) -> bool:
    choices = chunk.get("choices") or ()
    return any(isinstance(c, dict) and (c.get("delta") or {}).get("content") for c in choices)


def corrupt_chunk(kind: str, chunk: dict[str, Any], first_text: bool) -> bytes | None:
    """One stream chunk's `data:` payload changed as `kind` says; None drops the chunk.

    Usage kinds change the usage chunk, `no_choices` and `no_finish_reason` every chunk, and the
    rest the text chunks (`first_text`: this is the first of them).
    """
    if kind in USAGE_KINDS:
        _all_usage(kind, chunk)
        if kind == "missing_usage" and chunk.get("choices") == [] and "usage" not in chunk:
            return None  # the usage-only chunk, left with nothing
        return encode(chunk)
    if kind == "no_choices":
        chunk.pop("choices", None)
        return encode(chunk)
    if kind == "no_finish_reason":
        for choice in chunk.get("choices") or ():
            choice["finish_reason"] = None
        return encode(chunk)
    if not _is_text_chunk(chunk):
        return encode(chunk)
    if kind == "null_message":
        for choice in chunk["choices"]:
            choice["delta"] = None
    elif kind == "wrong_types":
        for choice in chunk["choices"]:
            choice["delta"]["content"] = 42
    elif first_text and kind == "truncated":
        return TRUNCATED_CHUNK[len(b"data: ") : -2]
    elif first_text and kind == "not_json":
        return NOT_JSON
    elif first_text and kind == "json_list":
        return encode([chunk])
    elif first_text and kind == "invalid_utf8":
        for choice in chunk["choices"]:
            choice["delta"]["content"] = text_with_bad_bytes(choice["delta"].get("content"))
    return encode(chunk)


def corrupt_sse(kind: str, events: Iterable[bytes]) -> Iterator[bytes]:
    """An SSE body (one `data: ...` event per item) with every chunk changed as `kind` says."""
    first_text = True
    for event in events:
        line = event.strip()
        if not line.startswith(b"data:"):
            yield event
            continue
        data = line[len(b"data:") :].strip()
        if data == b"[DONE]":
            yield event
            continue
        chunk = json.loads(data)
        text = isinstance(chunk, dict) and _is_text_chunk(chunk)
        out = corrupt_chunk(kind, chunk, first_text) if isinstance(chunk, dict) else data
        if text:
            first_text = False
        if out is not None:
            yield b"data: " + out + b"\n\n"
