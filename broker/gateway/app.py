"""The gateway's ASGI application: OpenAI's chat-completions API over one `AsyncBroker`.

    POST /v1/chat/completions   a chat call, whole or streamed (SSE), as the key's tenant
    GET  /v1/models             the logical models the key's tenant may use (and /v1/models/{id})
    GET  /healthz               the process answers
    GET  /readyz                the usage ledger answers (503 while it does not, or while shutting down)
    GET  /metrics               Prometheus text (`broker.gateway.metrics`); a bearer token when one is set

Every answer carries `x-request-id`.  A whole answer also carries where the call went:

    x-llama-broker-route, -provider, -region, -jurisdiction   the route taken
    x-llama-broker-decision-id                                the call's request id in the ledger
    x-llama-broker-cost-usd                                   the metered cost (`unknown` without a price)
    x-llama-broker-attempts, x-llama-broker-policy-version

and, when the request says `x-llama-broker-explain: true`, `x-llama-broker-explanation`: the
decision as JSON (every candidate route and why it won or lost, for this tenant's rules only).
A stream's headers leave before the route is known, so a stream carries the same facts in its
last chunk, under `llama_broker`.  Tags for the ledger come from `x-llama-broker-tags: k=v,k2=v2`
and the body's `user`; the tenant's policy tags win over both.  The lifespan's shutdown closes the
broker, which flushes the ledger, after the server has drained the calls in flight.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import itertools
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import replace
from typing import Any

from ..core import PolicySource
from ..policy.decision import Decision
from ..policy.schema import TenantPolicy
from ..types import ChatResponse, StreamEvent
from .asgi import ClientGone, Headers, Receive, Scope, Send, dumps, header_value, read_body, send_bytes, send_json, sse
from .errors import ErrorAnswer, HttpRefusal, answer_for
from .keys import KeyTable, key_digest
from .metrics import GatewayMetrics
from .openai_shape import ChatCall, chunk, completion_body, parse_chat_body, parse_tags_header, usage_chunk

__all__ = ["METRICS_TOKEN_ENV", "Gateway"]

log = logging.getLogger("llama_broker.gateway")

METRICS_TOKEN_ENV = "LLAMA_BROKER_METRICS_TOKEN"
_MAX_BODY_BYTES = 16 * 1024 * 1024
_TRUE = frozenset({b"1", b"true", b"yes"})
_SSE_HEADERS: Headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
                         (b"x-accel-buffering", b"no")]


class Gateway:
    """An ASGI application serving one policy's tenants through one `AsyncBroker`.

    `policy` is what `AsyncBroker` takes (a path, a mapping or a loaded `Policy`); `broker_options`
    go to it too.  Keys are resolved from `environ` (default `os.environ`) when the gateway is made.
    """

    def __init__(
        self,
        policy: PolicySource | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        max_body_bytes: int = _MAX_BODY_BYTES,
        broker_options: Mapping[str, Any] | None = None,
    ) -> None:
        from ..client import AsyncBroker

        env = os.environ if environ is None else environ
        self.broker = AsyncBroker(policy, **dict(broker_options or {}))
        self.policy = self.broker.policy
        try:
            self.keys = KeyTable.from_policy(self.policy, env)
        except BaseException:
            self.broker.meter.close()
            raise
        if not len(self.keys):
            log.warning("policy %s lists no api_keys: every chat call will be refused (401)", self.policy.source)
        token = env.get(METRICS_TOKEN_ENV)
        self._metrics_digest = key_digest(token) if token else None
        self.metrics = GatewayMetrics()
        self.max_body_bytes = max_body_bytes
        self.closing = False
        self._closed = False
        # request ids: a random prefix per process and a counter (uuid4 per request costs a urandom call)
        self._id_prefix = uuid.uuid4().hex[:16]
        self._id_counter = itertools.count()
        # with telemetry on, a SERVER span per request, the parent of its call spans (broker/telemetry/)
        telemetry = self.broker._core.telemetry
        self._server_spans = telemetry.server_spans() if telemetry is not None else None

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and self._server_spans is not None:
            await self._server_spans.serve(self._http, scope, receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.aclose()
                except Exception as exc:  # the ledger could not take the last events: say so, do not hang
                    await send({"type": "lifespan.shutdown.failed", "message": f"{type(exc).__name__}: {exc}"})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def aclose(self) -> None:
        """Close provider clients and flush the ledger (once)."""
        self.closing = True
        if not self._closed:
            self._closed = True
            await self.broker.aclose()

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = f"{self._id_prefix}{next(self._id_counter):016x}"
        path, method = scope["path"], scope["method"]
        headers = dict(scope["headers"])
        own = [(b"x-request-id", rid.encode())]
        try:
            if path == "/v1/chat/completions":
                _allow(method, "POST")
                await self._chat(headers, receive, send, rid, own)
            elif path == "/v1/models" or path.startswith("/v1/models/"):
                _allow(method, "GET")
                tenant = self._authenticate(headers)
                await self._models(send, self.policy.tenant(tenant), path.removeprefix("/v1/models").strip("/"), own)
            elif path == "/healthz":
                await send_json(send, 200, {"status": "ok"}, own)
            elif path == "/readyz":
                await self._ready(send, own)
            elif path == "/metrics":
                _allow(method, "GET")
                self._metrics_allowed(headers)
                body, content_type = self.metrics.exposition()
                await send_bytes(send, 200, body, content_type, own)
            else:
                raise HttpRefusal("gateway:not_found", f"no such endpoint: {method} {path}")
        except ClientGone:
            return
        except Exception as exc:
            answer = answer_for(exc)
            await send_json(send, answer.status, answer.body, [*own, *answer.headers])

    # ------------------------------------------------------------------ who is calling

    def _authenticate(self, headers: Mapping[bytes, bytes]) -> str:
        auth = headers.get(b"authorization", b"")
        if auth[:7].lower() != b"bearer " or not auth[7:].strip():
            raise HttpRefusal("gateway:bad_key", "missing API key: send it as Authorization: Bearer <key>")
        tenant = self.keys.tenant_for(auth[7:].strip().decode("latin-1"))
        if tenant is None:
            raise HttpRefusal("gateway:bad_key", "invalid API key")
        return tenant

    def _metrics_allowed(self, headers: Mapping[bytes, bytes]) -> None:
        if self._metrics_digest is None:
            return
        auth = headers.get(b"authorization", b"")
        presented = key_digest(auth[7:].strip().decode("latin-1")) if auth[:7].lower() == b"bearer " else b""
        if not hmac.compare_digest(presented, self._metrics_digest):
            raise HttpRefusal("gateway:bad_key", f"/metrics needs the bearer token in {METRICS_TOKEN_ENV}")

    # ------------------------------------------------------------------ chat

    async def _chat(self, headers: Mapping[bytes, bytes], receive: Receive, send: Send, rid: str,
                    own: Headers) -> None:
        started = time.perf_counter()
        tenant = ""
        rules: TenantPolicy | None = None
        explain = headers.get(b"x-llama-broker-explain", b"").lower() in _TRUE
        try:
            tenant = self._authenticate(headers)
            rules = self.policy.tenant(tenant)
            call = self._read_call(await read_body(receive, self.max_body_bytes))
            tags = parse_tags_header(headers.get(b"x-llama-broker-tags", b"").decode("latin-1"))
            if call.user is not None:
                tags["user"] = call.user
            tags.update(rules.tags)  # the tenant's own tags are the policy's to set
            if call.stream:
                await self._stream(call, tenant, tags, receive, send, rid, own, explain, started)
                return
            reply = await self.broker.chat(model=call.model, messages=call.messages, tenant=tenant, tags=tags,
                                           **call.params)
        except ClientGone:
            raise
        except Exception as exc:
            answer = self._failed(exc, tenant, rules, started, rid)
            extra = _explanation(getattr(exc, "decision", None)) if explain else []
            await send_json(send, answer.status, answer.body, [*own, *answer.headers, *extra])
            return
        body = completion_body(reply, completion_id=f"chatcmpl-{rid}", model=_model_of(reply, call))
        out = [*own, *self._route_headers(reply)]
        if explain:
            out.extend(_explanation(reply.decision))
        await send_json(send, 200, body, out)
        self._observed(tenant, reply, 200, started)

    def _read_call(self, raw: bytes) -> ChatCall:
        try:
            body = json.loads(raw)
        except ValueError:
            raise HttpRefusal("gateway:bad_request", "the request body is not valid JSON") from None
        call = parse_chat_body(body)
        if self.policy.catalog.model_for(call.model) is None:
            served = ", ".join(self.policy.models) or "none"
            raise HttpRefusal("gateway:unknown_model", f"the model {call.model!r} does not exist; this gateway "
                                                       f"serves: {served}", param="model")
        return replace(call, model=self.policy.resolve_model(call.model))

    async def _stream(self, call: ChatCall, tenant: str, tags: dict[str, str], receive: Receive, send: Send,
                      rid: str, own: Headers, explain: bool, started: float) -> None:
        events = self.broker.stream(model=call.model, messages=call.messages, tenant=tenant, tags=tags, **call.params)
        async with aclosing(events) as stream:  # type: ignore[type-var]  # an async generator
            first = await anext(stream)  # errors before the first token still get their own status
            await send({"type": "http.response.start", "status": 200, "headers": [*_SSE_HEADERS, *own]})
            gone = asyncio.ensure_future(_disconnected(receive))
            try:
                final = await self._relay(first, stream, call, rid, send, gone)
            except Exception as exc:  # after the headers: the error goes in the stream, as OpenAI sends it
                answer = self._failed(exc, tenant, self.policy.tenant(tenant), started, rid)
                await _send_chunk(send, sse({"error": answer.body["error"]}), more=False)
                return
            finally:
                gone.cancel()
        if final is None:  # the client hung up: the closed stream was metered as abandoned
            return
        reply, finish = final
        facts = self._route_facts(reply)
        if explain:
            facts["explanation"] = reply.decision.to_dict() if isinstance(reply.decision, Decision) else None
        cid, created = f"chatcmpl-{rid}", int(time.time())
        last = chunk(completion_id=cid, model=call.model, created=created, finish_reason=finish,
                     include_usage=call.include_usage)
        if call.include_usage:
            await _send_chunk(send, sse(last))
            last = usage_chunk(completion_id=cid, model=call.model, created=created, usage=reply.usage)
        last["llama_broker"] = facts  # the route and cost, known only now: on the stream's last chunk
        await _send_chunk(send, sse(last) + b"data: [DONE]\n\n", more=False)
        self._observed(tenant, reply, 200, started)

    async def _relay(self, event: StreamEvent, stream: AsyncIterator[StreamEvent], call: ChatCall, rid: str,
                     send: Send, gone: asyncio.Future[None]) -> tuple[ChatResponse, str] | None:
        """Send the stream's chunks; the final answer and its finish reason, or None when the client left."""
        cid, created, model = f"chatcmpl-{rid}", int(time.time()), call.model
        usage = call.include_usage
        await _send_chunk(send, sse(chunk(completion_id=cid, model=model, created=created, role=True,
                                          include_usage=usage)))
        finish: str | None = None
        while event.response is None:
            if gone.done():
                return None
            if event.text or event.tool_calls:
                await _send_chunk(send, sse(chunk(completion_id=cid, model=model, created=created, event=event,
                                                  include_usage=usage)))
            finish = event.finish_reason or finish
            try:
                event = await anext(stream)
            except StopAsyncIteration:
                raise RuntimeError("the broker's stream ended without its final event") from None
        return event.response, finish or event.response.finish_reason or "stop"

    # ------------------------------------------------------------------ answers

    def _route_facts(self, reply: ChatResponse) -> dict[str, Any]:
        route = reply.route
        return {
            "route": route.id if route else None,
            "model": route.model if route else None,
            "provider": route.provider if route else None,
            "region": route.region if route else None,
            "jurisdiction": route.jurisdiction if route else None,
            "decision_id": reply.request_id,
            "cost_usd": str(reply.cost_usd) if reply.cost_usd is not None else None,
            "attempts": reply.attempts,
            "policy_version": self.policy.version,
        }

    def _route_headers(self, reply: ChatResponse) -> Headers:
        facts = self._route_facts(reply)
        return [
            (b"x-llama-broker-route", header_value(facts["route"] or "")),
            (b"x-llama-broker-provider", header_value(facts["provider"] or "")),
            (b"x-llama-broker-region", header_value(facts["region"] or "")),
            (b"x-llama-broker-jurisdiction", header_value(facts["jurisdiction"] or "")),
            (b"x-llama-broker-decision-id", header_value(facts["decision_id"] or "")),
            (b"x-llama-broker-cost-usd", header_value(facts["cost_usd"] or "unknown")),
            (b"x-llama-broker-attempts", str(reply.attempts).encode()),
            (b"x-llama-broker-policy-version", header_value(self.policy.version)),
        ]

    def _failed(self, exc: BaseException, tenant: str, rules: TenantPolicy | None, started: float,
                rid: str) -> ErrorAnswer:
        answer = answer_for(exc, tenant=rules, now=dt.datetime.now(dt.timezone.utc))
        self.metrics.observe(tenant=tenant, provider=getattr(exc, "provider", None) or "", model="",
                             status=answer.status, seconds=time.perf_counter() - started, error_kind=answer.kind)
        if answer.status >= 500:
            log.warning("request %s (tenant %r) answered %d: %s", rid, tenant, answer.status, answer.kind,
                        exc_info=answer.status == 500)
        return answer

    def _observed(self, tenant: str, reply: ChatResponse, status: int, started: float) -> None:
        route = reply.route
        self.metrics.observe(
            tenant=tenant, provider=route.provider if route else "", model=route.model if route else "",
            status=status, seconds=time.perf_counter() - started, input_tokens=reply.usage.input_tokens,
            output_tokens=reply.usage.output_tokens, cost_usd=reply.cost_usd,
        )

    async def _models(self, send: Send, tenant: TenantPolicy, wanted: str, own: Headers) -> None:
        today = dt.datetime.now(dt.timezone.utc).date()
        usable = [
            m for m in self.policy.models
            if tenant.allows_model(m) and any(
                tenant.allows_jurisdiction(r.jurisdiction) and tenant.allows_provider(r.provider)
                and not r.lifecycle.is_retired(today)
                for r in self.policy.routes_for(m)
            )
        ]
        cards = [{"id": m, "object": "model", "created": 0, "owned_by": "llama-broker"} for m in usable]
        if not wanted:
            await send_json(send, 200, {"object": "list", "data": cards}, own)
            return
        logical = self.policy.catalog.model_for(wanted)
        for card in cards:
            if card["id"] == logical:
                await send_json(send, 200, card, own)
                return
        raise HttpRefusal("gateway:unknown_model", f"the model {wanted!r} does not exist", param="model")

    async def _ready(self, send: Send, own: Headers) -> None:
        if self.closing:
            await send_json(send, 503, {"status": "shutting down"}, own)
            return
        ledger = self.broker.meter.ledger
        try:
            await asyncio.to_thread(ledger.spend, "", dt.datetime.now(dt.timezone.utc))
        except Exception as exc:
            await send_json(send, 503, {"status": "ledger unavailable", "error": type(exc).__name__}, own)
            return
        await send_json(send, 200, {"status": "ready", "ledger": "ok"}, own)


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise HttpRefusal("gateway:method", f"method {method} not allowed here; use {allowed}")


def _model_of(reply: ChatResponse, call: ChatCall) -> str:
    return reply.route.model if reply.route is not None else call.model


def _explanation(decision: object) -> Headers:
    if not isinstance(decision, Decision):
        return []
    return [(b"x-llama-broker-explanation", dumps(decision.to_dict()))]


async def _send_chunk(send: Send, data: bytes, *, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
