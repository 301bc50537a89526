"""The broker's one error hierarchy.

::

    BrokerError
    ├── PolicyError              a policy file is wrong (carries every issue with file and line)
    ├── UnknownTenant            a tenant the policy does not name (unless `unknown_tenants: default`)
    ├── NoEligibleRoute          every candidate was removed by a hard filter (names the filters)
    ├── ResidencyViolation       a route outside the tenant's jurisdictions reached the last guard
    ├── BudgetExceeded           a budget (tenant, group or provider scope) refuses the call or a route of it
    ├── RateLimited              a tenant or group rate limit refuses the call; carries `retry_after` seconds
    ├── AdapterNotFound          no adapter is registered for a route's provider
    ├── MissingDependency        the provider's SDK is not installed (names the pip extra)
    ├── CredentialsError         a credential reference could not be resolved (names the variable)
    ├── MeteringError            the usage ledger refused a write (events kept for the next flush)
    ├── ProvenanceError          a provenance key, certificate or record could not be read or signed
    ├── AdapterBug               an adapter raised an exception it does not map (the original as cause)
    └── ProviderError            a provider refused or failed the call
        ├── Throttled            429 and friends; carries `retry_after` seconds when the provider said
        ├── Unavailable          5xx, connection refused, overloaded
        ├── Timeout              the provider or the network took too long
        ├── AuthError            401/403: bad or missing credentials, no model access
        ├── InvalidRequest       400/422: the provider rejects the request itself
        │   └── ContextTooLong   the prompt does not fit the model's context window
        ├── ContentFiltered      a safety filter blocked the prompt or the answer
        ├── ModelNotAvailable    the model id is unknown, retired or not enabled on this route
        └── ProtocolError        an answer the broker cannot read (malformed body, cut stream)

`retryable` says whether the same route may be tried again; `failover` whether the next
route may be tried.  The rule: a property of the route (unknown id, profile required, context
too long for this route) fails over; a property of the request (bad argument, content
filtered) does not; a transient fault retries.  Errors never carry credentials: adapters build messages from status
codes and provider error text only, and `ProviderError` redacts that text of every credential
the broker sent (`broker.redaction`).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TypedDict

from .redaction import bounded, redact

__all__ = [
    "AdapterBug",
    "AdapterNotFound",
    "AuthError",
    "BrokerError",
    "BudgetExceeded",
    "ContentFiltered",
    "ContextTooLong",
    "CredentialsError",
    "ErrorContext",
    "GuardrailBlocked",
    "InvalidRequest",
    "LicenceRefused",
    "MeteringError",
    "MissingDependency",
    "ModelNotAvailable",
    "NoEligibleRoute",
    "PolicyError",
    "PolicyIssue",
    "ProtocolError",
    "ProvenanceError",
    "ProviderError",
    "RateLimited",
    "ResidencyViolation",
    "Throttled",
    "Timeout",
    "Unavailable",
    "UnknownTenant",
]


class BrokerError(Exception):
    """Base of every error the broker raises."""

    retryable: bool = False
    failover: bool = False


@dataclass(frozen=True)
class PolicyIssue:
    """One problem in a policy file, located by file and line (1-based; 0 when unknown)."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class PolicyError(BrokerError):
    """A policy file failed to load; `issues` lists every problem found, not only the first."""

    def __init__(self, issues: list[PolicyIssue] | PolicyIssue | str) -> None:
        if isinstance(issues, str):
            issues = [PolicyIssue("<policy>", 0, issues)]
        elif isinstance(issues, PolicyIssue):
            issues = [issues]
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


class UnknownTenant(BrokerError):
    """The tenant is not named in the policy, and the policy does not say `unknown_tenants: default`."""


class NoEligibleRoute(BrokerError):
    """No route survived the hard filters; `reasons` maps route id to the filter that removed it."""

    def __init__(self, message: str, *, reasons: dict[str, str] | None = None, decision: object = None) -> None:
        self.reasons = dict(reasons or {})
        self.decision = decision
        super().__init__(message)


class GuardrailBlocked(BrokerError):
    """A guardrail of the tenant's policy blocked the call's input (before any provider) or its output.

    `check` names the guardrail, `stage` is `input` or `output`, `categories` the classifier's
    categories where it gave some.  The message never quotes the text that was blocked.
    """

    def __init__(self, message: str, *, check: str, stage: str, categories: tuple[str, ...] = ()) -> None:
        self.check = check
        self.stage = stage
        self.categories = categories
        super().__init__(message)


class LicenceRefused(BrokerError):
    """The model's licence terms, as the tenant declared its product, do not allow this call.

    `term` is the licence term (`mau`, or a restriction id such as `eu-multimodal`) and `clause`
    names the clause of the licence or acceptable-use policy it rests on.
    """

    def __init__(self, message: str, *, tenant: str, model: str, term: str, clause: str) -> None:
        self.tenant = tenant
        self.model = model
        self.term = term
        self.clause = clause
        super().__init__(message)


class ResidencyViolation(BrokerError):
    """A route outside the tenant's allowed jurisdictions reached the guard in front of the adapter."""


class BudgetExceeded(BrokerError):
    """A budget refuses this call (or a route of it); raised before that route's provider is called.

    The figures of the limit that spoke: `spent_usd` (settled), `reserved_usd` (other calls' open
    reservations), `estimate_usd` (this call's reservation), `limit_usd`, `period` (``month`` or
    ``day``) and `scope` (``tenant:<id>``, ``group:<name>``, or either with ``/provider:<p>``).
    """

    def __init__(
        self, message: str, *, tenant: str, spent_usd: Decimal | None = None, limit_usd: Decimal | None = None,
        reserved_usd: Decimal | None = None, estimate_usd: Decimal | None = None, period: str | None = None,
        scope: str | None = None,
    ) -> None:
        self.tenant = tenant
        self.spent_usd = spent_usd
        self.reserved_usd = reserved_usd
        self.estimate_usd = estimate_usd
        self.limit_usd = limit_usd
        self.period = period
        self.scope = scope
        super().__init__(message)


class RateLimited(BrokerError):
    """A tenant or group rate limit refuses the call before any provider is called.

    `retry_after` is how many seconds until the call would be admitted, `limit` names the limit
    (`rpm` or `tpm`) and `scope` what it applies to (`tenant:<id>` or `group:<name>`).
    """

    def __init__(self, message: str, *, retry_after: float, limit: str, scope: str) -> None:
        self.retry_after = retry_after
        self.limit = limit
        self.scope = scope
        super().__init__(message)


class AdapterNotFound(BrokerError):
    """No adapter is registered (built in or by entry point) under the route's provider name."""


class MissingDependency(BrokerError):
    """A provider SDK is not installed; the message names the extra to install."""

    def __init__(self, provider: str, package: str, extra: str) -> None:
        self.provider, self.package, self.extra = provider, package, extra
        super().__init__(
            f"the {provider} adapter needs {package}: pip install 'llama-broker[{extra}]'"
        )


class CredentialsError(BrokerError):
    """A credential reference (for example `api_key_env`) could not be resolved."""


class MeteringError(BrokerError):
    """The usage ledger could not take a write; the events stay buffered for the next flush."""


class ProvenanceError(BrokerError):
    """A provenance signing key, certificate, trust list or record could not be read, or signing failed."""


class AdapterBug(BrokerError):
    """An adapter raised an exception it does not map to a broker error: a bug, not a provider fault.

    Raised at once: never retried, never failed over, not counted against the route's circuit.
    The original exception is the `__cause__`; the message names only its type and the route.
    """

    def __init__(self, message: str, *, provider: str | None = None, route_id: str | None = None) -> None:
        self.provider = provider
        self.route_id = route_id
        super().__init__(message)


class ErrorContext(TypedDict, total=False):
    """Where a `ProviderError` came from: what an adapter stamps on every error it raises."""

    provider: str
    route_id: str


class ProviderError(BrokerError):
    """A provider refused or failed a call.

    Carries the provider, the route id, the HTTP status (when there was one), the provider's
    request id (when it sent one), its own error code and its wait hint (`retry_after`, in
    seconds) when it sent one.  The message is redacted of every registered credential and
    known credential shape, then cut to `broker.redaction.MAX_ERROR_TEXT` characters.
    """

    failover = True

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        route_id: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.message = message = bounded(message)
        self.retry_after = retry_after
        self.provider = provider
        self.route_id = route_id
        self.status = status
        self.request_id = redact(request_id) if request_id else request_id
        self.code = redact(code) if code else code
        super().__init__(message)

    def __str__(self) -> str:
        where = ", ".join(
            f"{k}={v}"
            for k, v in (
                ("provider", self.provider),
                ("route", self.route_id),
                ("status", self.status),
                ("code", self.code),
                ("request_id", self.request_id),
            )
            if v is not None
        )
        return f"{self.message} ({where})" if where else self.message

    @property
    def kind(self) -> str:
        """Short name of the error class, as metered in `UsageEvent.error_kind`."""
        return type(self).__name__


class Throttled(ProviderError):
    """The provider rate-limited the call; `retry_after` is its wait hint in seconds, if any."""

    retryable = True


class Unavailable(ProviderError):
    """The provider is down, overloaded or unreachable (5xx, connection refused)."""

    retryable = True


class Timeout(ProviderError):
    """The provider or the network took longer than the route's timeout."""

    retryable = True


class AuthError(ProviderError):
    """Credentials are missing or wrong, or the account has no access to the model."""


class InvalidRequest(ProviderError):
    """The provider rejected the request itself; another route would reject it too."""

    failover = False


class ContextTooLong(InvalidRequest):
    """The prompt does not fit the model's context window on this route."""

    failover = True


class ContentFiltered(ProviderError):
    """A provider safety filter blocked the prompt or the completion."""

    failover = False


class ModelNotAvailable(ProviderError):
    """The model id is unknown, retired or not enabled on this route (a lifecycle event)."""


class ProtocolError(ProviderError):
    """The provider's answer could not be read: malformed body, or a stream cut before its end."""

    retryable = True
