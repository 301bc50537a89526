"""A Bedrock Runtime emulator: Converse (JSON) and ConverseStream (binary AWS event-stream).

    POST /model/{modelId}/converse          -> {"output": {"message": ...}, "stopReason", "usage", "metrics"}
    POST /model/{modelId}/converse-stream   -> application/vnd.amazon.eventstream: messageStart,
                                               [contentBlockStart], contentBlockDelta..., contentBlockStop,
                                               messageStop, metadata{usage, metrics}

boto3's real `bedrock-runtime` client talks to it with any fake keys (the SigV4 signature is not
checked; pass `access_key_id=` to refuse every other key id, as AWS does for an unknown key).
Like the service, it refuses (400 ValidationException, with the service's words) conversations
whose roles do not alternate, blank text blocks, tool blocks without a `toolConfig`, a
`temperature` above 1, and for Llama model ids: ConverseStream with a `toolConfig` ("This model
doesn't support tool use in streaming mode.") and a `toolChoice` of `tool` or `any`.  Plain
ConverseStream works for every Llama, Llama 4 included.  A base model id called in a region (read
from the SigV4 credential scope) where the built-in catalog lists it only behind an inference
profile is refused as on-demand throughput that "isn't supported".  A system prompt that asks for
JSON gets a JSON answer (that is how the broker asks for JSON mode on Bedrock).  As the service
does, every event-stream payload carries a `p` padding field and answers carry
`usage.serverToolUsage`; clients ignore both.

Errors are Bedrock's: the HTTP status, `x-amzn-errortype: <Code>`, `x-amzn-requestid` and a
`{"message": ...}` body; `fail(429, retry_after=1.5)` also sends `x-amz-retry-after: 1500` (ms).
`fail(status, code="ModelNotReadyException")` picks the code; by default it follows the status.
`stream_exception("throttlingException", after=2)` sends two events of the next ConverseStream
answer, then an in-stream exception event (a Converse call that draws it gets the same exception
as an HTTP error).  `malformed()` answers an unreadable JSON body, or for a stream, an event whose
checksum is wrong; `malformed(kind)` sends the other kinds of `broker.testing.malformed` in
Converse's shapes (`output: {}` for no_choices, `message: null`, a number as a text block or
delta, no `stopReason`, odd `usage` in the answer or in the `metadata` event, and so on).
`known_models=[...]` answers every other id as the service does: 400 ValidationException "The
provided model identifier is invalid."
"""

from __future__ import annotations

import base64
import json
import re
import struct
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from .malformed import NOT_JSON, USAGE_KINDS, encode, text_with_bad_bytes
from .server import Answer, Emulator, Fault, Recorded, ReplyPlan

__all__ = ["BedrockEmulator", "StreamException", "encode_event", "encode_message"]

EVENT_STREAM = "application/vnd.amazon.eventstream"
_PATH = re.compile(r"^/model/(?P<model>.+)/(?P<op>converse|converse-stream)$")
_SCOPE_REGION = re.compile(r"Credential=[^/]+/\d{8}/(?P<region>[a-z0-9-]+)/bedrock/")

INVALID_MODEL_ID = "The provided model identifier is invalid."
ON_DEMAND_REFUSED = ("Invocation of model ID {model} with on-demand throughput isn\u2019t supported. Retry your "
                     "request with the ID or ARN of an inference profile that contains this model.")
NO_STREAMING_TOOLS = "This model doesn't support tool use in streaming mode."
TOOL_CHOICE_REFUSED = ("This model doesn't support the toolConfig.toolChoice.{kind} field. Remove "
                       "toolConfig.toolChoice.{kind} and try again.")
#: The `p` padding the service adds to every event payload (a run of this alphabet, of varying length).
_PADDING = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

ERROR_CODE_BY_STATUS = {
    400: "ValidationException",
    401: "UnrecognizedClientException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
_STATUS_BY_CODE = {code.lower(): status for status, code in ERROR_CODE_BY_STATUS.items()}
_STATUS_BY_CODE.update({"modelstreamerrorexception": 424, "modelnotreadyexception": 429,
                        "servicequotaexceededexception": 400})

#: OpenAI-style finish reasons (as `Reply.finish_reason` or the plan gives them) -> Converse stopReason.
_STOP_REASON = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                "content_filter": "content_filtered"}


# --------------------------------------------------------------------------- event-stream framing


def _header(name: str, value: str) -> bytes:
    key, val = name.encode(), value.encode()
    return struct.pack(">B", len(key)) + key + b"\x07" + struct.pack(">H", len(val)) + val


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude (total, headers length, CRC), string headers, payload, CRC."""
    head = b"".join(_header(k, v) for k, v in headers.items())
    prelude = struct.pack(">II", 12 + len(head) + len(payload) + 4, len(head))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + head + payload
    return message + struct.pack(">I", zlib.crc32(message))


def encode_event(event_type: str, body: dict[str, Any]) -> bytes:
    """A ConverseStream event message (`:message-type` event) with a JSON payload."""
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    return encode_message(headers, json.dumps(body, separators=(",", ":")).encode())


def encode_exception(code: str, message: str) -> bytes:
    """An in-stream exception message; botocore raises it as `EventStreamError` with this code."""
    headers = {":exception-type": code, ":content-type": "application/json", ":message-type": "exception"}
    return encode_message(headers, json.dumps({"message": message}).encode())


@dataclass
class StreamException(Fault):
    """An in-stream exception event after `after` events of a ConverseStream answer."""

    after: int = 2


# --------------------------------------------------------------------------- emulator


def _is_base64(value: Any) -> bool:
    try:
        return bool(base64.b64decode(str(value), validate=True))
    except ValueError:
        return False


def _block_texts(blocks: list[dict[str, Any]]) -> str:
    texts = []
    for block in blocks:
        if "text" in block:
            texts.append(block["text"])
        elif "toolResult" in block:
            texts.extend(c.get("text", "") for c in block["toolResult"].get("content") or ())
    return " ".join(texts)


def _needs_profile(region: str, model_id: str) -> bool:
    """Whether the built-in catalog lists `model_id` in `region` only behind an inference profile."""
    from broker.policy.catalog import builtin_catalog  # the catalog loads on first use, not on import

    return builtin_catalog().profile_for("bedrock", region, model_id) is not None


def _padded(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload with the service's `p` padding field."""
    return {**payload, "p": _PADDING[: 10 + len(json.dumps(payload)) % 40]}


def _encode_payload(event_type: str, payload: Any) -> bytes:
    """An event message; a payload that is not a plain dict goes out as `malformed.encode` writes it."""
    if type(payload) is dict:
        return encode_event(event_type, _padded(payload))
    data = payload if isinstance(payload, bytes) else encode(payload)
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    return encode_message(headers, data)


class _Marked(dict[str, Any]):
    """A payload holding marks for bytes that are not UTF-8 (written by `malformed.encode`)."""


def _bedrock_usage(kind: str, holder: dict[str, Any]) -> None:
    usage = holder.get("usage")
    if kind == "missing_usage":
        holder.pop("usage", None)
    elif not isinstance(usage, dict):
        return
    elif kind == "absurd_usage":
        usage["inputTokens"] = 2**63
        usage["totalTokens"] = 2**63 + int(usage.get("outputTokens") or 0)
    elif kind == "negative_usage":
        usage.update(inputTokens=-1000, outputTokens=-1000, totalTokens=-2000)
    elif kind == "usage_wrong_types":
        usage.update(inputTokens=1e300, outputTokens="12")


def _corrupt_converse(kind: str, body: dict[str, Any]) -> bytes:
    """A Converse answer body changed as `kind` says."""
    message = body["output"]["message"]
    if kind in USAGE_KINDS:
        _bedrock_usage(kind, body)
    elif kind == "json_list":
        return encode([body])
    elif kind == "no_choices":
        body["output"] = {}
    elif kind == "null_message":
        body["output"]["message"] = None
    elif kind == "wrong_types":
        message["content"] = [{"text": 42}]
    elif kind == "no_finish_reason":
        body.pop("stopReason", None)
    elif kind == "invalid_utf8":
        texts = [b for b in message["content"] if "text" in b] or [{"text": ""}]
        texts[0]["text"] = text_with_bad_bytes(texts[0]["text"])
        message["content"] = texts + [b for b in message["content"] if "text" not in b]
    return encode(body)


def _corrupt_events(kind: str, events: Iterator[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
    """ConverseStream events changed as `kind` says (the first text delta, or every one)."""
    first = True
    for event_type, payload in events:
        if event_type == "contentBlockDelta" and "text" in payload["delta"]:
            if kind == "no_choices":
                continue
            if kind == "null_message":
                payload["delta"] = None
            elif kind == "wrong_types":
                payload["delta"]["text"] = 42
            elif first and kind == "not_json":
                payload = NOT_JSON
            elif first and kind == "json_list":
                payload = [payload]
            elif first and kind == "invalid_utf8":
                payload = _Marked(payload, delta={"text": text_with_bad_bytes(payload["delta"]["text"])})
            first = False
        elif kind == "no_choices" and event_type in ("contentBlockStart", "contentBlockStop", "messageStop"):
            continue
        elif event_type == "messageStop" and kind == "no_finish_reason":
            payload = {}
        elif event_type == "metadata" and kind in USAGE_KINDS:
            _bedrock_usage(kind, payload)
        yield event_type, payload


class BedrockEmulator(Emulator):
    """Loopback Bedrock Runtime speaking Converse and ConverseStream."""

    name = "bedrock"

    def __init__(self, *, known_models: list[str] | None = None, access_key_id: str | None = None,
                 **kw: Any) -> None:
        super().__init__(**kw)
        self.known_models = known_models
        self.access_key_id = access_key_id

    def stream_exception(self, code: str = "throttlingException", *, after: int = 2,
                         message: str = "injected stream exception", times: int = 1) -> BedrockEmulator:
        """Cut the next ConverseStream answer after `after` events with an exception event `code`."""
        for _ in range(times):
            self._faults.append(StreamException(None, message=message, code=code, after=after))
        return self

    # ------------------------------------------------------------------ request side

    def _refusal(self, request: Recorded, model: str, op: str, body: dict[str, Any]) -> Fault | None:
        auth = request.headers.get("Authorization") or request.headers.get("authorization") or ""
        if self.access_key_id is not None and f"Credential={self.access_key_id}/" not in auth:
            return Fault(403, message="The security token included in the request is invalid.",
                         code="UnrecognizedClientException")
        if self.known_models is not None and model not in self.known_models:
            return Fault(400, message=INVALID_MODEL_ID, code="ValidationException")
        scope = _SCOPE_REGION.search(auth)
        if scope is not None and _needs_profile(scope["region"], model):
            return Fault(400, message=ON_DEMAND_REFUSED.format(model=model), code="ValidationException")
        messages = body.get("messages") or []
        if not messages or messages[0].get("role") != "user":
            return Fault(400, message="A conversation must start with a user message.")
        for i, m in enumerate(messages):
            if i and m.get("role") == messages[i - 1].get("role"):
                return Fault(400, message="A conversation must alternate between user and assistant roles.")
            for j, block in enumerate(m.get("content") or ()):
                if "text" in block and not str(block["text"]).strip():
                    return Fault(400, message=f"The text field in the ContentBlock object at messages.{i}.content.{j}"
                                              " is blank.")
                if ("toolUse" in block or "toolResult" in block) and not body.get("toolConfig"):
                    return Fault(400, message="The toolConfig field must be defined when using toolUse and "
                                              "toolResult content blocks.")
                if "image" in block and not _is_base64(block["image"].get("source", {}).get("bytes")):
                    return Fault(400, message=f"messages.{i}.content.{j}.image.source.bytes is not base64.")
        return self._parameter_refusal(model, op, body)

    @staticmethod
    def _parameter_refusal(model: str, op: str, body: dict[str, Any]) -> Fault | None:
        temperature = (body.get("inferenceConfig") or {}).get("temperature")
        if isinstance(temperature, int | float) and temperature > 1:
            return Fault(400, message=f"1 validation error detected: Value '{temperature}' at "
                                      "'inferenceConfig.temperature' failed to satisfy constraint: "
                                      "Member must have value less than or equal to 1")
        if "llama" not in model.lower():
            return None
        tool_config = body.get("toolConfig")
        if op == "converse-stream" and tool_config:
            return Fault(400, message=NO_STREAMING_TOOLS)
        for kind in ("tool", "any"):
            if kind in ((tool_config or {}).get("toolChoice") or {}):
                return Fault(400, message=TOOL_CHOICE_REFUSED.format(kind=kind))
        return None

    def plan_for(self, body: dict[str, Any]) -> ReplyPlan:
        system = [b.get("text", "") for b in body.get("system") or ()]
        texts = system + [_block_texts(m.get("content") or []) for m in body.get("messages") or ()]
        tools = [t["toolSpec"]["name"] for t in (body.get("toolConfig") or {}).get("tools") or ()]
        return self.plan(
            texts,
            tools=tools or None,
            json_mode=any("json" in s.lower() for s in system),
            max_tokens=(body.get("inferenceConfig") or {}).get("maxTokens"),
        )

    def handle(self, request: Recorded, fault: Fault | None) -> Answer:
        match = _PATH.match(request.path)
        if match is None:
            return self.error_answer(Fault(404, message=f"no route {request.path}", code="UnknownOperationException"),
                                     request)
        model, op = unquote(match["model"]), match["op"]
        body = request.json or {}
        refusal = self._refusal(request, model, op, body)
        if refusal is not None:
            return self.error_answer(refusal, request)
        plan = self.plan_for(body)
        rid = str(uuid.uuid4())
        if op == "converse-stream":
            after = fault.after if isinstance(fault, StreamException) else None
            chunks = self.stream_events(plan, exception=fault if after is not None else None)
            return Answer(200, {"Content-Type": EVENT_STREAM, "x-amzn-RequestId": rid}, chunks=chunks)
        if isinstance(fault, StreamException):
            code = fault.code or "internalServerException"
            status = _STATUS_BY_CODE.get(code.lower(), 500)
            return self.error_answer(Fault(status, message=fault.message, code=code[:1].upper() + code[1:]), request)
        self.report(plan.input_tokens, plan.output_tokens)
        return Answer.json(self.converse_body(plan), headers={"x-amzn-RequestId": rid})

    # ------------------------------------------------------------------ answer side

    @staticmethod
    def stop_reason(plan: ReplyPlan) -> str:
        return _STOP_REASON.get(plan.finish_reason, plan.finish_reason)

    def usage(self, plan: ReplyPlan) -> dict[str, Any]:
        return {"inputTokens": plan.input_tokens, "outputTokens": plan.output_tokens,
                "totalTokens": plan.input_tokens + plan.output_tokens, "serverToolUsage": {}}

    def latency_ms(self, plan: ReplyPlan) -> int:
        """The `metrics.latencyMs` it reports: its configured latency plus 1 ms per output token."""
        return int(self.latency_s * 1000) + plan.output_tokens

    def converse_body(self, plan: ReplyPlan) -> dict[str, Any]:
        content: list[dict[str, Any]] = [{"text": plan.text}] if plan.text else []
        content += [{"toolUse": {"toolUseId": cid, "name": name, "input": json.loads(args)}}
                    for cid, name, args in plan.tool_calls]
        return {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": self.stop_reason(plan),
            "usage": self.usage(plan),
            "metrics": {"latencyMs": self.latency_ms(plan)},
        }

    def _events(self, plan: ReplyPlan) -> Iterator[tuple[str, Any]]:
        """The ConverseStream events of an answer, as (event type, payload) pairs."""
        yield "messageStart", {"role": "assistant"}
        index = 0
        if plan.text:
            for piece in plan.text_chunks():
                yield "contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}}
            yield "contentBlockStop", {"contentBlockIndex": 0}
            index = 1
        for offset, (cid, name, args) in enumerate(plan.tool_calls):
            block = index + offset
            start = {"toolUse": {"toolUseId": cid, "name": name}}
            yield "contentBlockStart", {"contentBlockIndex": block, "start": start}
            half = len(args) // 2
            for part in (args[:half], args[half:]):
                yield "contentBlockDelta", {"contentBlockIndex": block, "delta": {"toolUse": {"input": part}}}
            yield "contentBlockStop", {"contentBlockIndex": block}
        yield "messageStop", {"stopReason": self.stop_reason(plan)}
        self.report(plan.input_tokens, plan.output_tokens)  # usage goes out in the next event
        yield "metadata", {"usage": self.usage(plan), "metrics": {"latencyMs": self.latency_ms(plan)}}

    def stream_events(
        self, plan: ReplyPlan, *, exception: Fault | None = None, kind: str | None = None
    ) -> Iterator[bytes]:
        """The ConverseStream body, message by message (one HTTP chunk each); `kind` malforms it."""
        events: Iterator[tuple[str, Any]] = self._events(plan)
        if kind is not None:
            events = _corrupt_events(kind, events)
        if exception is None:
            for event_type, payload in events:
                yield _encode_payload(event_type, payload)
            return
        after = exception.after if isinstance(exception, StreamException) else 0
        for _ in range(after):
            item = next(events, None)
            if item is None:
                break
            yield _encode_payload(*item)
        yield encode_exception(exception.code or "internalServerException", exception.message)

    def malformed_answer(self, request: Recorded, kind: str = "truncated") -> Answer:
        """The usual answer changed as `kind` says (see `broker.testing.malformed`), in Bedrock's shapes."""
        stream = request.path.endswith("/converse-stream")
        if kind == "html_page" or (kind in ("truncated", "not_json") and not stream):
            return super().malformed_answer(request, kind)
        if kind == "truncated":
            bad = bytearray(encode_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "x"}}))
            bad[9] ^= 0xFF  # the prelude checksum no longer matches
            start = encode_event("messageStart", {"role": "assistant"})
            return Answer(200, {"Content-Type": EVENT_STREAM}, chunks=[start, bytes(bad)])
        match = _PATH.match(request.path)
        if match is None:
            return self.handle(request, None)
        model, op = unquote(match["model"]), match["op"]
        body = request.json or {}
        refusal = self._refusal(request, model, op, body)
        if refusal is not None:
            return self.error_answer(refusal, request)
        plan = self.plan_for(body)
        headers = {"x-amzn-RequestId": str(uuid.uuid4())}
        if stream:
            return Answer(200, {"Content-Type": EVENT_STREAM, **headers}, chunks=self.stream_events(plan, kind=kind))
        return Answer(
            200, {"Content-Type": "application/json", **headers}, _corrupt_converse(kind, self.converse_body(plan))
        )

    def error_answer(self, fault: Fault, request: Recorded) -> Answer:
        status = fault.status or 500
        code = fault.code or ERROR_CODE_BY_STATUS.get(status) or (
            "InternalServerException" if status >= 500 else "ValidationException")
        headers = {"x-amzn-errortype": f"{code}:http://internal.amazon.com/coral/com.amazon.bedrock/",
                   "x-amzn-RequestId": str(uuid.uuid4())}
        if fault.retry_after is not None:
            headers["x-amz-retry-after"] = str(int(fault.retry_after * 1000))
        return Answer.json({"message": fault.message}, status, headers)
