"""The gateway's Prometheus metrics (`GET /metrics`), labelled by tenant, provider and model.

| metric                                          | kind      | labels                                  |
|-------------------------------------------------|-----------|-----------------------------------------|
| `llama_broker_gateway_requests_total`           | counter   | tenant, provider, model, status         |
| `llama_broker_gateway_errors_total`             | counter   | tenant, provider, model, kind           |
| `llama_broker_gateway_tokens_total`             | counter   | tenant, provider, model, direction      |
| `llama_broker_gateway_cost_usd_total`           | counter   | tenant, provider, model                 |
| `llama_broker_gateway_request_duration_seconds` | histogram | tenant, provider, model                 |

`provider` and `model` are empty when the call reached no route; `tenant` is empty for a
request without a valid key.  Each gateway has its own registry; with several workers
(`PROMETHEUS_MULTIPROC_DIR` set, as `llama-broker serve --workers N` does) every worker writes
its samples to that folder and `/metrics` sums them over the workers.
"""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Any

__all__ = ["GatewayMetrics"]

_LABELS = ("tenant", "provider", "model")
_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class GatewayMetrics:
    """The counters and the latency histogram of one gateway, and their exposition."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry()
        own: Any = None if self.multiprocess else self.registry  # multiprocess: samples go to files
        prefix = "llama_broker_gateway"
        self.requests = Counter(f"{prefix}_requests", "Chat-completion requests answered.",
                                (*_LABELS, "status"), registry=own)
        self.errors = Counter(f"{prefix}_errors", "Chat-completion requests answered with an error.",
                              (*_LABELS, "kind"), registry=own)
        self.tokens = Counter(f"{prefix}_tokens", "Tokens metered.", (*_LABELS, "direction"), registry=own)
        self.cost = Counter(f"{prefix}_cost_usd", "Metered cost in US dollars.", _LABELS, registry=own)
        self.latency = Histogram(f"{prefix}_request_duration_seconds", "Time to the last byte of the answer.",
                                 _LABELS, buckets=_BUCKETS, registry=own)
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]

    def observe(
        self,
        *,
        tenant: str,
        provider: str,
        model: str,
        status: int,
        seconds: float,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: Decimal | None = None,
        error_kind: str | None = None,
    ) -> None:
        """Count one answered request."""
        self.requests.labels(tenant, provider, model, str(status)).inc()
        self.latency.labels(tenant, provider, model).observe(seconds)
        if error_kind is not None:
            self.errors.labels(tenant, provider, model, error_kind).inc()
        if input_tokens:
            self.tokens.labels(tenant, provider, model, "input").inc(input_tokens)
        if output_tokens:
            self.tokens.labels(tenant, provider, model, "output").inc(output_tokens)
        if cost_usd is not None:
            self.cost.labels(tenant, provider, model).inc(float(cost_usd))

    def exposition(self) -> tuple[bytes, str]:
        """The text format and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
