"""Tracer and meter providers the broker builds itself when a policy names an OTLP/HTTP endpoint.

Spans are batched (`BatchSpanProcessor`) and metrics exported periodically, both to
`{otlp_endpoint}/v1/traces` and `/v1/metrics`, under the resource `service.name`.  The
broker shuts them down (flushing what is pending) when it closes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["OwnedProviders", "otlp_providers"]


@dataclass(frozen=True)
class OwnedProviders:
    tracer_provider: Any
    meter_provider: Any

    def shutdown(self) -> None:
        try:
            self.tracer_provider.shutdown()
        finally:
            self.meter_provider.shutdown()


def otlp_providers(endpoint: str, service_name: str, *, export_interval_s: float = 10.0) -> OwnedProviders:
    """SDK providers exporting over OTLP/HTTP (protobuf) to `endpoint` (a base URL)."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    base = endpoint.rstrip("/")
    resource = Resource.create({"service.name": service_name})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces")))
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{base}/v1/metrics"), export_interval_millis=export_interval_s * 1000
    )
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    return OwnedProviders(tracer_provider, meter_provider)
