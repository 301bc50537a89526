"""OpenTelemetry for the broker: GenAI spans and metrics for every call, off by default.

Turned on by the policy (`telemetry: {enabled: true}`) or by passing `tracer_provider=` /
`meter_provider=` to `Broker`.  While it is off, nothing here imports `opentelemetry`.

    telemetry:
      enabled: true
      capture_content: false        # prompt and completion text in spans only when true
      service_name: llama-broker    # the resource of the providers built for otlp_endpoint
      otlp_endpoint: http://collector:4318   # optional; else the process's global providers

Spans, metrics and their attributes: `broker.telemetry.hook` and `broker.telemetry.names`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..policy.schema import TelemetrySettings
    from .hook import TelemetryHook
    from .providers import OwnedProviders
    from .server import ServerSpans

__all__ = ["Telemetry", "build_telemetry"]


@dataclass(frozen=True)
class Telemetry:
    """The telemetry hook of a broker, and the providers it built (shut down with the broker)."""

    hook: TelemetryHook
    owned: OwnedProviders | None = None

    def shutdown(self) -> None:
        if self.owned is not None:
            self.owned.shutdown()

    def server_spans(self) -> ServerSpans:
        """A `ServerSpans` for an HTTP front (the gateway) on the same tracer as the call spans."""
        from .server import ServerSpans

        return ServerSpans(self.hook.tracer)


def build_telemetry(
    settings: TelemetrySettings, *, tracer_provider: Any = None, meter_provider: Any = None, version: str | None = None
) -> Telemetry | None:
    """The telemetry of a broker, or None when it is off (then `opentelemetry` is not imported)."""
    if not settings.enabled and tracer_provider is None and meter_provider is None:
        return None
    from ..errors import MissingDependency

    try:
        from .hook import TelemetryHook
    except ImportError as exc:
        raise MissingDependency("telemetry", "opentelemetry-api", "otel") from exc
    owned = None
    if settings.otlp_endpoint and tracer_provider is None and meter_provider is None:
        try:
            from .providers import otlp_providers

            owned = otlp_providers(settings.otlp_endpoint, settings.service_name)
        except ImportError as exc:
            raise MissingDependency("telemetry", "opentelemetry-exporter-otlp-proto-http", "otel") from exc
        tracer_provider, meter_provider = owned.tracer_provider, owned.meter_provider
    hook = TelemetryHook(tracer_provider=tracer_provider, meter_provider=meter_provider,
                         capture_content=settings.capture_content, version=version)
    return Telemetry(hook, owned)
