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
from .routes import Capabilities, Lifecycle, Price, Route, RouteOptions
from .types import ChatRequest, ChatResponse, RouteInfo, StreamEvent, ToolCall, ToolCallDelta, Usage

if TYPE_CHECKING:
    from .adapter import Adapter, AdapterBase, AdapterRegistry
    from .client import AsyncBroker, Broker
    from .policy.decision import Candidate, Decision
    from .transport import TransportOptions

__version__ = "0.1.0"

# The client, the engine and the transport are imported on first use, so that importing the
# errors and types (as adapters and the test plugin do) stays cheap.
_LAZY = {
    "Adapter": "broker.adapter",
    "AdapterBase": "broker.adapter",
    "AdapterRegistry": "broker.adapter",
    "AsyncBroker": "broker.client",
    "Broker": "broker.client",
    "Candidate": "broker.policy.decision",
    "Decision": "broker.policy.decision",
    "TransportOptions": "broker.transport",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'broker' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

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
