"""Routes: the data that says where a call can go.

A route is data, not code: provider name, logical model, provider model id, region and its
jurisdiction, an optional endpoint (base URL), credentials by reference, price, capabilities
and lifecycle.  Adapters read routes; the policy engine filters and ranks them.
"""

from __future__ import annotations

import datetime as dt
import os
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import CredentialsError
from .types import RouteInfo

__all__ = ["Capabilities", "Lifecycle", "Price", "Route"]


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
    tools: bool = True
    vision: bool = False
    json_mode: bool = True
    context_window: int = Field(default=131_072, gt=0)
    max_output_tokens: int = Field(default=8_192, gt=0)


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
    api_key_env: str | None = None
    price: Price | None = None
    capabilities: Capabilities = Field(default_factory=Capabilities)
    lifecycle: Lifecycle = Field(default_factory=Lifecycle)
    timeout_s: float = Field(default=60.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    expected_output_tokens: int = Field(default=256, gt=0)
    options: dict[str, Any] = Field(default_factory=dict)

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
