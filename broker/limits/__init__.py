"""Rate limits, route quotas, saturation marks and spreading.

Windows (`broker.limits.windows`): every limit is per minute, counted in a sliding window of
60 one-second slots.  A request or token amount taken at time `t` counts until the end of its
second plus 60 s: no 60-second span ever admits more than the limit, and capacity comes back
second by second as the oldest slots leave the window (not all at once, as a fixed window does).

* tenant and group limits (`rate_limit: {rpm, tpm, wait_s}` on a tenant or under `groups:`):
  checked when a call opens; tokens are the prompt estimate plus the expected output, settled
  to the actual usage when the call ends; over a limit the call waits up to `wait_s`, else it
  is refused with `RateLimited` carrying the seconds until it would be admitted;
* route quotas (`rpm`, `tpm` on a route): a route at its quota is passed over, the reason
  recorded in the decision, so a burst spills to the next route before the provider says 429;
  a provider 429 with a wait hint marks the route saturated for that long;
* spreading (`spread: {tolerance}` on a tenant, `broker.limits.spreading`).

Where the windows live comes from the policy (`limits: {store: memory | redis://...}`): in
this process by default (shared by its threads), or Redis for many processes and hosts
(`broker.limits.redis_store`, atomic Lua scripts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..policy.schema import LimitsSettings
    from .hook import RateLimits
    from .windows import SLOTS, Held, MemoryWindows, Refused, Take, Windows

__all__ = ["SLOTS", "Held", "MemoryWindows", "RateLimits", "Refused", "Take", "Windows", "open_windows"]

_WINDOW_NAMES = frozenset({"SLOTS", "Held", "MemoryWindows", "Refused", "Take", "Windows"})


def __getattr__(name: str) -> Any:
    """The hook and the windows load on first use: the router imports `spreading` on every broker."""
    value: Any
    if name == "RateLimits":
        from . import hook

        value = hook.RateLimits
    elif name in _WINDOW_NAMES:
        from . import windows

        value = getattr(windows, name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def open_windows(settings: LimitsSettings) -> Windows:
    """The windows the policy's `limits.store` names: in-process, or a Redis database."""
    if settings.store == "memory":
        from .windows import MemoryWindows

        return MemoryWindows()
    from .redis_store import RedisWindows

    return RedisWindows(settings.store)
