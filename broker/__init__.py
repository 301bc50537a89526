"""llama-broker: one client for Llama chat calls across providers, routed by policy, metered per tenant.

    from broker import Broker
    with Broker() as broker:
        reply = broker.chat(model="llama-3.3-70b", messages=[{"role": "user", "content": "Hi"}])
"""

from typing import TYPE_CHECKING, Any

from .errors import (
    AdapterBug,
    AdapterNotFound,
    AuthError,
    BrokerError,
    BudgetExceeded,
    ContentFiltered,
    ContextTooLong,
    CredentialsError,
    InvalidRequest,
    MeteringError,
    MissingDependency,
    ModelNotAvailable,
    NoEligibleRoute,
    PolicyError,
    PolicyIssue,
    ProtocolError,
    ProviderError,
    ResidencyViolation,
    Throttled,
    Timeout,
    Unavailable,
    UnknownTenant,
)

if TYPE_CHECKING:
    from .adapter import Adapter, AdapterBase, AdapterRegistry
    from .client import AsyncBroker, Broker
    from .policy.decision import Candidate, Decision
    from .routes import Capabilities, Lifecycle, Price, Route, RouteOptions
    from .transport import TransportOptions
    from .types import ChatRequest, ChatResponse, RouteInfo, StreamEvent, ToolCall, ToolCallDelta, Usage

__version__ = "0.1.0"

# Only the errors are imported with the package.  The client, the engine, the transport and the
# pydantic-based types are imported on first use, so `import broker` (and code that only catches
# the broker's errors) does not pay for pydantic, the policy engine or the HTTP stacks.
_LAZY = {
    "Adapter": "broker.adapter",
    "AdapterBase": "broker.adapter",
    "AdapterRegistry": "broker.adapter",
    "AsyncBroker": "broker.client",
    "Broker": "broker.client",
    "Candidate": "broker.policy.decision",
    "Capabilities": "broker.routes",
    "ChatRequest": "broker.types",
    "ChatResponse": "broker.types",
    "Decision": "broker.policy.decision",
    "Lifecycle": "broker.routes",
    "Price": "broker.routes",
    "Route": "broker.routes",
    "RouteInfo": "broker.types",
    "RouteOptions": "broker.routes",
    "StreamEvent": "broker.types",
    "ToolCall": "broker.types",
    "ToolCallDelta": "broker.types",
    "TransportOptions": "broker.transport",
    "Usage": "broker.types",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'broker' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})

__all__ = [
    "Adapter",
    "AdapterBase",
    "AdapterBug",
    "AdapterNotFound",
    "AdapterRegistry",
    "AsyncBroker",
    "AuthError",
    "Broker",
    "BrokerError",
    "BudgetExceeded",
    "Candidate",
    "Capabilities",
    "ChatRequest",
    "ChatResponse",
    "ContentFiltered",
    "ContextTooLong",
    "CredentialsError",
    "Decision",
    "InvalidRequest",
    "Lifecycle",
    "MeteringError",
    "MissingDependency",
    "ModelNotAvailable",
    "NoEligibleRoute",
    "PolicyError",
    "PolicyIssue",
    "Price",
    "ProtocolError",
    "ProviderError",
    "ResidencyViolation",
    "Route",
    "RouteInfo",
    "RouteOptions",
    "StreamEvent",
    "Throttled",
    "Timeout",
    "ToolCall",
    "ToolCallDelta",
    "TransportOptions",
    "Unavailable",
    "UnknownTenant",
    "Usage",
    "__version__",
]
