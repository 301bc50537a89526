"""The adapter contract and the registry that finds adapters by provider name.

An adapter turns the broker's `ChatRequest` into one provider's API call and the provider's
answer, stream and errors back into broker types.  It is built once per route and holds
that route's SDK client or HTTP session.  Everything else (routing, retries, metering)
lives in the core.

Adapters are found by name: the built-in table below, then the entry-point group
`llama_broker.adapters`, so a third party adds a provider by declaring::

    [project.entry-points."llama_broker.adapters"]
    myprovider = "my_package.module:MyAdapter"
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Iterator
from types import ModuleType
from typing import ClassVar, Protocol, runtime_checkable

from broker.errors import AdapterNotFound, ErrorContext, MissingDependency
from broker.redaction import register_secret
from broker.routes import Route, RouteOptions
from broker.transport import HttpClients
from broker.types import ChatRequest, ChatResponse, StreamEvent

__all__ = [
    "BUILTIN_ADAPTERS",
    "Adapter",
    "AdapterBase",
    "AdapterFactory",
    "AdapterRegistry",
    "require",
]

ENTRY_POINT_GROUP = "llama_broker.adapters"

BUILTIN_ADAPTERS: dict[str, str] = {
    "local": "adapters.local:LocalAdapter",
    "bedrock": "adapters.bedrock:BedrockAdapter",
    "vertex": "adapters.vertex:VertexAdapter",
    "azure": "adapters.azure:AzureAdapter",
    "groq": "adapters.groq:GroqAdapter",
}


@runtime_checkable
class Adapter(Protocol):
    """What the core calls.  Sync and async twins of `chat` and `stream`, and closing.

    `stream` / `astream` yield `StreamEvent`s; the last one a provider sends carries `usage`
    when the provider reported it.  Errors are raised as `broker.errors.ProviderError`
    subclasses, never as SDK exceptions.
    """

    provider: ClassVar[str]

    def chat(self, request: ChatRequest) -> ChatResponse: ...
    def stream(self, request: ChatRequest) -> Iterator[StreamEvent]: ...
    async def achat(self, request: ChatRequest) -> ChatResponse: ...
    def astream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]: ...
    def close(self) -> None: ...
    async def aclose(self) -> None: ...


class AdapterFactory(Protocol):
    def __call__(self, route: Route, *, http: HttpClients) -> Adapter: ...


class AdapterBase:
    """Shared defaults: keeps the route and the shared HTTP clients; closing does nothing."""

    provider: ClassVar[str] = ""
    #: the typed `options:` of this adapter's routes (a strict `RouteOptions` subclass); the
    #: policy loader reads it through `AdapterRegistry.options_model`, without importing the SDK
    options: ClassVar[type[RouteOptions]] = RouteOptions

    def __init__(self, route: Route, *, http: HttpClients) -> None:
        self.route = route
        self.http = http

    def close(self) -> None:
        return None

    async def aclose(self) -> None:
        self.close()

    def error_context(self) -> ErrorContext:
        """The keyword arguments every `ProviderError` of this adapter carries."""
        return {"provider": self.route.provider, "route_id": self.route.id}

    def redact_secrets(self, *values: str | None) -> None:
        """Register credential values this adapter sends, so no error text or log record shows them."""
        register_secret(*values)


def require(module: str, *, provider: str, package: str, extra: str) -> ModuleType:
    """Import a provider SDK lazily; a missing one raises `MissingDependency` naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(provider, package, extra) from exc


class AdapterRegistry:
    """Provider name -> adapter class, resolved lazily and cached per registry."""

    def __init__(self, extra: dict[str, str | AdapterFactory] | None = None) -> None:
        self._targets: dict[str, str | AdapterFactory] = {**BUILTIN_ADAPTERS, **(extra or {})}
        self._resolved: dict[str, AdapterFactory] = {}
        self._entry_points_loaded = False

    def register(self, name: str, target: str | AdapterFactory) -> None:
        """Add or replace a provider: a class/factory or an import path "module:Class"."""
        self._targets[name] = target
        self._resolved.pop(name, None)

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._targets)

    def __contains__(self, name: str) -> bool:
        if name not in self._targets:
            self._load_entry_points()
        return name in self._targets

    def get(self, name: str) -> AdapterFactory:
        found = self._resolved.get(name)
        if found is not None:
            return found
        if name not in self._targets:
            self._load_entry_points()
        target = self._targets.get(name)
        if target is None:
            raise AdapterNotFound(
                f"no adapter for provider {name!r}; known: {', '.join(sorted(self._targets))}"
            )
        factory = _import_target(target) if isinstance(target, str) else target
        self._resolved[name] = factory
        return factory

    def options_model(self, name: str) -> type[RouteOptions] | None:
        """The options model an adapter declares in its `options` class attribute, or None.

        Importing an adapter module never imports its SDK (adapters import SDKs on first use),
        so this is safe at policy load.
        """
        model = getattr(self.get(name), "options", None)
        return model if isinstance(model, type) and issubclass(model, RouteOptions) else None

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        from importlib.metadata import entry_points  # costs tens of ms: only when a registry is consulted

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            self._targets.setdefault(ep.name, ep.value)


def _import_target(target: str) -> AdapterFactory:
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    factory: AdapterFactory = getattr(module, attr)
    return factory
