"""Routes: the data that says where a call can go.

A route is data, not code: provider name, logical model, provider model id, region and its
jurisdiction, an optional endpoint (base URL), credentials by reference, price, capabilities
and lifecycle.  Adapters read routes; the policy engine filters and ranks them.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
from collections.abc import Iterable
from decimal import Decimal
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError

if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover
    from typing_extensions import Self

from .errors import CredentialsError, PolicyError, PolicyIssue
from .types import RouteInfo

__all__ = [
    "Capabilities",
    "EnvName",
    "EnvRef",
    "Lifecycle",
    "OptionProblem",
    "Price",
    "Route",
    "RouteOptions",
]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _env_name(value: str) -> str:
    # the value is not echoed: a secret pasted where a variable name belongs must not be printed
    if not _ENV_NAME.fullmatch(value):
        raise ValueError("must name an environment variable (letters, digits and _), never hold a secret")
    return value


EnvName = Annotated[str, AfterValidator(_env_name)]
"""The name of an environment variable that holds a credential (credentials go by reference)."""


class OptionProblem(NamedTuple):
    """A problem with a route found without network or credential lookups.

    `field` is the dotted route key it concerns (`endpoint`, `region`, `options.location`), so
    the policy loader can point at its line.
    """

    field: str
    message: str


class EnvRef(NamedTuple):
    """An environment variable a route reads at call time, and the route key that names it."""

    field: str
    name: str


class Price(BaseModel):
    """USD per million tokens, with where the figure came from and when."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    input_per_mtok: Decimal = Field(ge=0)
    output_per_mtok: Decimal = Field(ge=0)
    cached_input_per_mtok: Decimal | None = Field(default=None, ge=0)
    source: str | None = None
    as_of: dt.date | None = None

    @property
    def version(self) -> str:
        """A short label for the price in force, metered with each event."""
        stamp = self.as_of.isoformat() if self.as_of else "undated"
        cached = f"/cached {self.cached_input_per_mtok}" if self.cached_input_per_mtok is not None else ""
        return f"{self.input_per_mtok}/{self.output_per_mtok}{cached}@{stamp}"

    def cost(self, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0) -> Decimal:
        """Cost in USD of a call with these token counts (cached input at its own rate if known)."""
        mtok = Decimal(1_000_000)
        cached_rate = self.cached_input_per_mtok if self.cached_input_per_mtok is not None else self.input_per_mtok
        fresh = max(0, input_tokens - cached_input_tokens)
        return (
            Decimal(fresh) * self.input_per_mtok
            + Decimal(cached_input_tokens) * cached_rate
            + Decimal(output_tokens) * self.output_per_mtok
        ) / mtok


class Capabilities(BaseModel):
    """What a route can do, declared as data and read by the capability filter."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    streaming: bool = True
    streaming_tools: bool = True
    """Streams a call that offers tools (else such a stream is one whole answer, replayed)."""
    tools: bool = True
    vision: bool = False
    json_mode: bool = True
    context_window: int = Field(default=131_072, gt=0)
    max_output_tokens: int = Field(default=8_192, gt=0)
    max_temperature: float = Field(default=2.0, ge=0)
    """The highest `temperature` the route accepts."""
    required_tool_choice: bool = True
    """Accepts `tool_choice: required` (a tool must be called)."""
    named_tool_choice: bool = True
    """Accepts a `tool_choice` that names one function."""
    seed: bool = True
    """Honours `seed` (else a request that sets one is not sent here)."""


class Lifecycle(BaseModel):
    """GA, deprecated (with the date it goes) or retired (with the date it went)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    status: Literal["ga", "preview", "deprecated", "retired"] = "ga"
    retires_on: dt.date | None = None
    note: str | None = None

    def is_retired(self, today: dt.date) -> bool:
        return self.status == "retired" or (self.retires_on is not None and today >= self.retires_on)

    def days_left(self, today: dt.date) -> int | None:
        return None if self.retires_on is None else (self.retires_on - today).days


class RouteOptions(BaseModel):
    """A route's `options:`, typed.

    This base holds the options every route may set whatever its provider, and accepts any
    other key (an adapter that declares no options model gets a plain mapping, read with
    `get`).  An adapter declares its own options as a subclass with `extra="forbid"` in its
    `options` class attribute; the policy loader validates each route against it and runs
    `check` at load, and `policy validate` reports `notes` and unset `env_refs`.
    """

    model_config = ConfigDict(extra="allow", frozen=True, defer_build=True)

    stream_fallback: bool = True
    """A route that cannot stream may answer a stream request with one whole answer."""
    latency_prior: dict[Literal["ttft_ms", "per_token_ms"], float] | None = None
    """Seed of the route's latency estimate (ms), before the first call is observed."""

    def get(self, key: str, default: Any = None) -> Any:
        """A declared option or an extra key, as from a mapping."""
        if key in type(self).model_fields:
            return getattr(self, key)
        return (self.model_extra or {}).get(key, default)

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)

    # -- static checks, shared by the policy loader and the adapter's constructor

    def check(self, route: Route) -> Iterable[OptionProblem]:
        """Problems the adapter would refuse at construction; no network, no credential lookup."""
        return ()

    def notes(self, route: Route) -> Iterable[OptionProblem]:
        """What can only be known at call time, worth a warning when a policy is validated."""
        return ()

    def env_refs(self, route: Route) -> Iterable[EnvRef]:
        """The environment variables the adapter reads at call time (credentials, project)."""
        if route.api_key_env:
            yield EnvRef("api_key_env", route.api_key_env)

    @classmethod
    def for_route(cls, route: Route, *, check: bool = True) -> Self:
        """The route's options as this model; with `check`, a failed `check` raises `PolicyError`."""
        raw = route.options
        if isinstance(raw, cls):
            options = raw
        else:
            data = raw.as_dict() if isinstance(raw, RouteOptions) else dict(raw)
            try:
                options = cls.model_validate(data)
            except ValidationError as exc:
                problems = "; ".join(f"options.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                raise PolicyError(f"route {route.id!r}: {problems}") from None
        if check:
            found = [PolicyIssue("<policy>", 0, f"route {route.id!r}: {p.message}") for p in options.check(route)]
            if found:
                raise PolicyError(found)
        return options


class Route(BaseModel):
    """One deployment a call may go to."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    id: str
    provider: str
    model: str
    model_id: str
    region: str | None = None
    jurisdiction: str
    endpoint: str | None = None
    api_key_env: EnvName | None = None
    price: Price | None = None
    capabilities: Capabilities = Field(default_factory=Capabilities)
    lifecycle: Lifecycle = Field(default_factory=Lifecycle)
    timeout_s: float = Field(default=60.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    expected_output_tokens: int = Field(default=256, gt=0)
    rpm: int | None = Field(default=None, gt=0)
    """The provider's requests-per-minute quota for this route (its account, model and region), if known."""
    tpm: int | None = Field(default=None, gt=0)
    """The provider's tokens-per-minute quota for this route, if known."""
    options: SerializeAsAny[RouteOptions] = Field(default_factory=RouteOptions)

    @property
    def info(self) -> RouteInfo:
        return RouteInfo(
            id=self.id,
            provider=self.provider,
            model=self.model,
            model_id=self.model_id,
            region=self.region,
            jurisdiction=self.jurisdiction,
        )

    def api_key(self, *, required: bool = True) -> str | None:
        """Resolve `api_key_env`; the error names the variable, never a value."""
        if not self.api_key_env:
            return None
        value = os.environ.get(self.api_key_env)
        if not value and required:
            raise CredentialsError(
                f"route {self.id!r}: environment variable {self.api_key_env} is not set"
            )
        return value
