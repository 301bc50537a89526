"""Reliability scenarios: storms with faults, residency under failure, canaries, fuzzed policies, kills.

    python benchmarks/reliability.py                     # every scenario, short sizes
    python benchmarks/reliability.py storm eu --long     # chosen scenarios, long sizes
    python benchmarks/reliability.py --json out.json     # also write the figures as JSON

Scenarios (each prints its figures; `tests/reliability/` runs the short sizes and asserts them):

  storm     N calls at concurrency C through `AsyncBroker` over the loopback emulators of all five
            providers, with a seeded fault mix (429 with every wait-hint form, 5xx, hangs past the
            route timeout, streams cut mid-way, malformed bodies) and one provider down for a stretch
  eu        the same storm for an EU-only tenant whose EU routes all fail while cheaper US, global,
            unknown and on-prem routes are healthy
  canary    a canary credential and a canary prompt through success, every error kind and retries,
            every logger at DEBUG, then searched for in logs, ledger bytes, reports and errors
  policies  generated policy documents through the loader (see tests/test_policy_fuzz.py)
  kill      `kill -9` of a process under load, in durable and in batched metering
  shared    four processes writing one SQLite ledger (and one PostgreSQL ledger when a server runs)

Calls are "lost" when they end neither with an answer nor with a `BrokerError`: a raw exception,
or no end within the driver's own deadline per call.
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import gc
import json
import math
import os
import random
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

from broker import AsyncBroker, BrokerError
from broker.testing import MALFORMED_KINDS, Emulator, Fault, OpenAICompatEmulator, Recorded
from broker.testing.azure import AzureEmulator
from broker.testing.bedrock import BedrockEmulator
from broker.testing.groq import GroqEmulator
from broker.testing.server import Answer
from broker.testing.suite import FAKE_CREDENTIALS
from broker.testing.vertex import VertexEmulator

Figures = dict[str, Any]

# --------------------------------------------------------------------------- emulators


class HttpDateEmulator(OpenAICompatEmulator):
    """A local runner whose 429s give their wait as an HTTP date when the fault's message asks."""

    def error_answer(self, fault: Fault, request: Recorded) -> Answer:
        answer = super().error_answer(fault, request)
        if fault.retry_after is not None and fault.message == "http-date":
            answer.headers["retry-after"] = email.utils.formatdate(time.time() + fault.retry_after, usegmt=True)
        return answer


class HangsUnbilled(Emulator):
    """Mixin: a request delayed past `HANG_S` (a hang) gets no answer worth billing once it wakes.

    The client gave up long before, so the usage of an answer sent then is not usage anyone saw;
    answering 504 keeps it out of the emulator's reported tokens, and the thread ends.
    """

    def handle(self, request: Recorded, fault: Fault | None) -> Answer:
        if fault is not None and fault.latency_s >= HANG_S:
            return Answer.json({"error": {"message": "woke after a hang"}}, 504)
        return super().handle(request, fault)


#: a delay this long is a hang (several route timeouts); the emulator's thread ends after it
HANG_S = 4.0


E = TypeVar("E", bound=Emulator)


def unbilled_hangs(cls: type[E]) -> type[E]:
    """`cls` with `HangsUnbilled` in front of it."""
    return cast("type[E]", type(f"Unbilled{cls.__name__}", (HangsUnbilled, cls), {}))


#: how each emulator's endpoint is written in a route
_SUFFIX = {"local": "/v1", "azure": "/models"}


@dataclass
class Fleet:
    """Emulators by route family; an emulator taken down and brought back counts as both instances."""

    emulators: dict[str, Emulator]
    retired: list[Emulator] = field(default_factory=list)
    counted: Counter[int] = field(default_factory=Counter)  # requests already counted and dropped, by id()

    @classmethod
    def start(cls) -> Fleet:
        emus: dict[str, Emulator] = {
            "local": unbilled_hangs(HttpDateEmulator)(),
            "bedrock": unbilled_hangs(BedrockEmulator)(),
            "vertex": unbilled_hangs(VertexEmulator)(),
            "azure": unbilled_hangs(AzureEmulator)(),
            "groq": unbilled_hangs(GroqEmulator)(reset_tokens="0.2s", reset_requests="0.3s"),
            "azure-eu": unbilled_hangs(AzureEmulator)(),
            "local-eu": unbilled_hangs(OpenAICompatEmulator)(),
        }
        for emu in emus.values():
            emu.start()
        return cls(emus)

    def endpoint(self, name: str) -> str:
        return self.emulators[name].url + _SUFFIX.get(name.split("-")[0], "")

    def take_down(self, name: str) -> int:
        emu = self.emulators[name]
        port = emu.port
        emu.stop()
        self.retired.append(emu)
        return port

    def bring_back(self, name: str, port: int) -> None:
        emu = type(self.emulators[name])(port=port)
        for _ in range(50):  # the port may linger a moment after the old server closed
            try:
                emu.start()
                break
            except OSError:
                time.sleep(0.05)
        self.emulators[name] = emu

    def trim(self) -> None:
        """Count the requests recorded so far and drop them (a long storm would hold them all in memory)."""
        for emu in [*self.emulators.values(), *self.retired]:
            n = len(emu.requests)
            del emu.requests[:n]  # one step under the GIL: a request recorded meanwhile stays
            self.counted[id(emu)] += n

    def seen(self, emu: Emulator) -> int:
        """Requests `emu` has recorded, including those `trim` dropped."""
        return self.counted[id(emu)] + len(emu.requests)

    def reported(self) -> tuple[int, int, int]:
        every = list({id(e): e for e in [*self.emulators.values(), *self.retired]}.values())
        return (sum(e.reported.calls for e in every), sum(e.reported.input_tokens for e in every),
                sum(e.reported.output_tokens for e in every))

    def stop(self) -> None:
        for emu in self.emulators.values():
            emu.stop()


# --------------------------------------------------------------------------- policies


def _price(p: float) -> dict[str, str]:
    return {"input_per_mtok": f"{p:.2f}", "output_per_mtok": f"{p:.2f}"}


#: The routes here are callable whatever the catalog says of the deployments' end of life: the suite
#: exercises execution, not the catalog's lifecycle dates.
LIVE = {"status": "ga", "retires_on": "2099-12-31"}


def storm_routes(fleet: Fleet, timeout_s: float) -> list[dict[str, Any]]:
    """Five logical models, each first served by a different provider.

    The cheapest 70B route is in the EU and the cheapest Scout route is Azure's global deployment:
    both outside the storm tenant's residency, so neither may ever be called.
    """
    vertex = {"project": "p", "location": "{region}", "access_token_env": "VERTEX_ACCESS_TOKEN"}

    def route(rid: str, emu: str, provider: str, model: str, price: float, **extra: Any) -> dict[str, Any]:
        spec: dict[str, Any] = {"id": rid, "provider": provider, "model": model, "endpoint": fleet.endpoint(emu),
                                "price": _price(price), "timeout_s": timeout_s, "connect_timeout_s": timeout_s,
                                "lifecycle": dict(LIVE)}
        if provider == "vertex":
            spec["options"] = {k: v.format(region=extra["region"]) for k, v in vertex.items()}
        if provider in ("azure", "groq"):
            spec["api_key_env"] = "AZURE_AI_API_KEY" if provider == "azure" else "GROQ_API_KEY"
        return {**spec, **extra}

    return [
        route("azure-eu-70b", "azure-eu", "azure", "llama-3.3-70b", 0.01, region="swedencentral"),
        route("azure-us-70b", "azure", "azure", "llama-3.3-70b", 0.10, region="eastus"),
        route("bedrock-us-70b", "bedrock", "bedrock", "llama-3.3-70b", 0.20, region="us-east-1"),
        route("local-70b", "local", "local", "llama-3.3-70b", 0.40, jurisdiction="on-prem",
              model_id="meta-llama/Llama-3.3-70B-Instruct"),
        route("groq-8b", "groq", "groq", "llama-3.1-8b", 0.05),
        route("local-8b", "local", "local", "llama-3.1-8b", 0.10, jurisdiction="on-prem",
              model_id="meta-llama/Llama-3.1-8B-Instruct"),
        route("azure-global-scout", "azure", "azure", "llama-4-scout", 0.01, region="global-standard"),
        route("bedrock-us-scout", "bedrock", "bedrock", "llama-4-scout", 0.10, region="us-east-1"),
        route("vertex-us-scout", "vertex", "vertex", "llama-4-scout", 0.20, region="us-east5"),
        route("groq-scout", "groq", "groq", "llama-4-scout", 0.30),
        route("vertex-us-vision", "vertex", "vertex", "llama-3.2-90b-vision", 0.10, region="us-central1"),
        route("local-vision", "local", "local", "llama-3.2-90b-vision", 0.30, jurisdiction="on-prem",
              model_id="meta-llama/Llama-3.2-90B-Vision-Instruct"),
        route("local-maverick", "local", "local", "llama-4-maverick", 0.05, jurisdiction="on-prem",
              model_id="meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8"),
        route("vertex-us-maverick", "vertex", "vertex", "llama-4-maverick", 0.10, region="us-east5"),
        route("groq-maverick", "groq", "groq", "llama-4-maverick", 0.20),
    ]


STORM_MODELS = ("llama-3.3-70b", "llama-3.1-8b", "llama-4-scout", "llama-3.2-90b-vision", "llama-4-maverick")
STORM_RESIDENCY = ["us", "on-prem", "unknown"]


def eu_routes(fleet: Fleet, timeout_s: float) -> list[dict[str, Any]]:
    """Two EU routes (Azure Sweden Central, an EU runner) above cheaper global, US, unknown and on-prem ones."""
    common = {"model": "llama-3.3-70b", "timeout_s": timeout_s, "connect_timeout_s": timeout_s, "lifecycle": LIVE}
    return [
        {**common, "id": "azure-global-70b", "provider": "azure", "region": "global-standard",
         "endpoint": fleet.endpoint("azure"), "api_key_env": "AZURE_AI_API_KEY", "price": _price(0.01)},
        {**common, "id": "groq-70b", "provider": "groq", "endpoint": fleet.endpoint("groq"),
         "api_key_env": "GROQ_API_KEY", "model_id": "llama-3.1-8b-instant", "price": _price(0.02)},
        {**common, "id": "bedrock-us-70b", "provider": "bedrock", "region": "us-east-1",
         "endpoint": fleet.endpoint("bedrock"), "price": _price(0.03)},
        {**common, "id": "local-70b", "provider": "local", "jurisdiction": "on-prem",
         "endpoint": fleet.endpoint("local"), "model_id": "m", "price": _price(0.04)},
        {**common, "id": "azure-eu-70b", "provider": "azure", "region": "swedencentral",
         "endpoint": fleet.endpoint("azure-eu"), "api_key_env": "AZURE_AI_API_KEY", "price": _price(0.50)},
        {**common, "id": "local-eu-70b", "provider": "local", "jurisdiction": "eu",
         "endpoint": fleet.endpoint("local-eu"), "model_id": "m", "price": _price(0.60)},
    ]


def storm_policy(routes: list[dict[str, Any]], ledger: Path, tenants: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": 1,
        "ledger": f"sqlite:///{ledger}",
        "retry": {"max_attempts_per_route": 3, "base_delay_s": 0.02, "max_delay_s": 2.0},
        "circuit": {"failure_threshold": 25, "window_s": 5.0, "cooldown_s": 1.0},
        "routes": routes,
        "tenants": tenants,
    }


# --------------------------------------------------------------------------- fault mix


@dataclass
class FaultMix:
    """Shares of requests answered with each fault; the rest are answered normally."""

    throttle: float = 0.30
    server_error: float = 0.05
    hang: float = 0.02
    cut: float = 0.02
    malformed: float = 0.01
    hang_s: float = HANG_S  # past the route timeout: the client gives up first


def queue_faults(emu: Emulator, family: str, n: int, mix: FaultMix, rng: random.Random,
                 served: Counter[str] | None = None) -> Counter[str]:
    """Queue `n` seeded answers (faults or plain ones) on `emu`; returns how many of each kind."""
    kinds: Counter[str] = Counter()
    for _ in range(n):
        x = rng.random()
        if x < mix.throttle:
            wait = rng.choice((0.05, 0.1, 0.2))
            if family == "local" and rng.random() < 0.5:
                emu.fail(429, retry_after=1.0, message="http-date")
                kinds["429 retry-after http-date"] += 1
            elif family == "groq" and rng.random() < 0.5:
                emu.fail(429)  # no retry-after: the x-ratelimit-reset-tokens header is the hint
                kinds["429 x-ratelimit-reset"] += 1
            else:
                emu.fail(429, retry_after=wait)
                kinds[f"429 {_HINT[family]}"] += 1
        elif x < mix.throttle + mix.server_error:
            status = rng.choice((500, 502, 503))
            emu.fail(status)
            kinds[f"{status}"] += 1
        elif x < mix.throttle + mix.server_error + mix.hang:
            emu.delay(mix.hang_s)
            kinds["hang"] += 1
        elif x < mix.throttle + mix.server_error + mix.hang + mix.cut:
            emu.cut_stream(after=rng.randint(1, 4))
            kinds["cut stream"] += 1
        elif x < mix.throttle + mix.server_error + mix.hang + mix.cut + mix.malformed:
            kind = rng.choice(sorted(MALFORMED_KINDS))
            emu.malformed(kind)
            kinds[f"malformed {kind}"] += 1
        else:
            emu.delay(0.0)  # a plain answer, keeping the seeded order
            kinds["ok"] += 1
    return kinds


_HINT = {"local": "retry-after s", "bedrock": "x-amz-retry-after ms", "vertex": "retryDelay",
         "azure": "retry-after-ms + Retry-After", "groq": "retry-after s"}


# --------------------------------------------------------------------------- the driver


@dataclass
class Outcome:
    index: int
    tenant: str
    stream: bool
    ok: bool = False
    error: str | None = None  # broker error type
    lost: str | None = None  # raw exception type, or "hang"
    text: str = ""
    attempts: int = 0
    estimated: bool = False
    jurisdiction: str | None = None
    prompt: str = ""
    sound: bool = False


async def _one(broker: AsyncBroker, i: int, model: str, tenant: str, stream: bool, deadline_s: float) -> Outcome:
    prompt = f"storm call number {i} for the reliability suite"
    out = Outcome(i, tenant, stream, prompt=prompt)
    messages = [{"role": "user", "content": prompt}]

    async def call() -> None:
        if stream:
            parts: list[str] = []
            final = None
            async for event in broker.stream(model=model, messages=messages, tenant=tenant):
                parts.append(event.text)
                if event.response is not None:
                    final = event.response
            if final is None:
                raise RuntimeError("stream ended without a final event")
            out.text, resp = "".join(parts), final
        else:
            resp = await broker.chat(model=model, messages=messages, tenant=tenant)
            out.text = resp.text
        out.ok, out.attempts, out.estimated = True, resp.attempts, resp.usage.estimated
        out.jurisdiction = resp.route.jurisdiction if resp.route else None

    try:
        await asyncio.wait_for(call(), deadline_s)
        out.sound = answer_is_sound(out)
        out.text = ""  # checked; a long storm keeps no answer texts
    except BrokerError as exc:
        out.error = type(exc).__name__
    except asyncio.TimeoutError:
        out.lost = "hang"
    except Exception as exc:
        out.lost = f"{type(exc).__name__}: {str(exc)[:120]}"
    return out


def rss_mib() -> float:
    """Resident set size now (Linux /proc), in MiB."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def answer_is_sound(out: Outcome) -> bool:
    """An accepted answer is the emulator's own text for this very prompt, never a malformed body."""
    return out.text.startswith("Hello from the ") and f"number {out.index} for" in out.text


@dataclass
class StormConfig:
    calls: int = 300
    concurrency: int = 50
    stream_share: float = 0.30
    seed: int = 7
    mix: FaultMix = field(default_factory=FaultMix)
    route_timeout_s: float = 1.0
    deadline_s: float = 90.0
    down: str | None = "bedrock"  # provider taken down from 30% to 60% of the calls started
    eu: bool = False


def _ledger_figures(db: Path, residency: set[str]) -> dict[str, Any]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT request_id, route_id, attempt, provider, jurisdiction, status, error_kind, usage_estimated, "
            "input_tokens, output_tokens FROM usage_events").fetchall()
        dead = con.execute("SELECT reason FROM usage_dead_letter").fetchall()
    finally:
        con.close()
    keys = Counter((r[0], r[1], r[2]) for r in rows)
    ok_exact = [r for r in rows if r[5] == "ok" and not r[7]]
    ok_est = [r for r in rows if r[5] == "ok" and r[7]]
    failed = [r for r in rows if r[5] == "error"]
    by_kind: dict[str, list[int]] = {}
    for r in failed:
        acc = by_kind.setdefault(r[6] or "?", [0, 0, 0, 0])
        acc[0] += 1
        acc[1] += r[8]
        acc[2] += r[9]
        acc[3] += bool(r[7])
    return {
        "events": len(rows),
        "duplicate_events": sum(n - 1 for n in keys.values() if n > 1),
        "events_by_provider": dict(Counter(r[3] for r in rows)),
        "timeouts_and_unavailable_by_provider": dict(Counter(r[3] for r in rows
                                                             if r[6] in ("Timeout", "Unavailable"))),
        "outside_residency": sum(1 for r in rows if r[4] not in residency),
        "bad_usage_events": sum(1 for r in rows if not (0 <= r[8] <= 10_000_000 and 0 <= r[9] <= 10_000_000)),
        "accepted_exact": {"events": len(ok_exact), "input_tokens": sum(r[8] for r in ok_exact),
                           "output_tokens": sum(r[9] for r in ok_exact)},
        "accepted_estimated": {"events": len(ok_est), "input_tokens": sum(r[8] for r in ok_est),
                               "output_tokens": sum(r[9] for r in ok_est), "flagged_estimated": len(ok_est)},
        "failed_attempts_by_kind": {k: {"events": v[0], "input_tokens": v[1], "output_tokens": v[2],
                                        "flagged_estimated": v[3]} for k, v in sorted(by_kind.items())},
        "failed_estimated_flagged": sum(1 for r in failed if r[7]),
        "dead_letters": len(dead),
    }


async def _storm(cfg: StormConfig, workdir: Path) -> Figures:
    rng = random.Random(cfg.seed)
    fleet = Fleet.start()
    env = dict(FAKE_CREDENTIALS)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        db = workdir / "storm.db"
        models: tuple[str, ...]
        if cfg.eu:
            residency, tenant, models = ["eu"], "eu-only", ("llama-3.3-70b",)
            routes = eu_routes(fleet, cfg.route_timeout_s)
            failing = {"azure-eu", "local-eu"}
            for name in sorted(failing):  # every answer a fault: the EU routes never succeed
                queue_faults(fleet.emulators[name], name.split("-")[0], cfg.calls * 8,
                             FaultMix(throttle=0.5, server_error=0.44, hang=0.02, cut=0.02, malformed=0.02), rng)
        else:
            residency, tenant, models = STORM_RESIDENCY, "storm", STORM_MODELS
            routes = storm_routes(fleet, cfg.route_timeout_s)
            faults: Counter[str] = Counter()
            for name in ("local", "bedrock", "vertex", "azure", "groq"):
                faults += queue_faults(fleet.emulators[name], name, int(cfg.calls * 0.5), cfg.mix, rng)
        tenants = {tenant: {"objective": "cost", "residency": residency}}
        policy = storm_policy(routes, db, tenants)
        plan = [(i, rng.choice(models), rng.random() < cfg.stream_share) for i in range(cfg.calls)]
        sem = asyncio.Semaphore(cfg.concurrency)
        started = 0
        down_port: int | None = None
        rss_warm = 0.0
        down_at, back_at = int(cfg.calls * 0.3), int(cfg.calls * 0.6)

        stage = "up"  # up -> down -> back: the provider goes down once it has served traffic

        async def guarded(broker: AsyncBroker, i: int, model: str, stream: bool) -> Outcome:
            nonlocal started, down_port, rss_warm, stage
            async with sem:
                started += 1
                if cfg.down and not cfg.eu:
                    if stage == "up" and started >= down_at and fleet.seen(fleet.emulators[cfg.down]) > 0:
                        stage = "down"
                        down_port = await asyncio.to_thread(fleet.take_down, cfg.down)
                    elif stage == "down" and started >= back_at and down_port is not None:
                        stage = "back"
                        await asyncio.to_thread(fleet.bring_back, cfg.down, down_port)
                if started % 500 == 0:
                    fleet.trim()
                if started == min(cfg.calls, max(cfg.concurrency * 2, cfg.calls // 10)):
                    gc.collect()
                    rss_warm = rss_mib()
                return await _one(broker, i, model, tenant, stream, cfg.deadline_s)

        t0 = time.perf_counter()
        broker = AsyncBroker.from_policy(policy)
        decisions = [broker.route(model=m, messages=[{"role": "user", "content": "hi"}], tenant=tenant, stream=st)
                     for m in models for st in (False, True)]
        removed = {c.route.id: c.removed_by for d in decisions for c in d.candidates if c.removed_by}
        eligible = sorted({r.id for d in decisions for r in d.routes})
        try:
            outcomes = await asyncio.gather(*(guarded(broker, i, m, s) for i, m, s in plan))
        finally:
            await broker.aclose()
        wall = time.perf_counter() - t0
        gc.collect()
        rss_end = rss_mib()
        calls_reported, in_reported, out_reported = fleet.reported()
        ledger = _ledger_figures(db, set(residency))
        attempts = sorted(o.attempts for o in outcomes if o.ok)
        wire = {name: fleet.seen(emu) for name, emu in fleet.emulators.items()}
        for emu in fleet.retired:
            wire[f"{cfg.down} (before down)"] = fleet.seen(emu)
        figures: Figures = {
            "calls": cfg.calls, "concurrency": cfg.concurrency, "seed": cfg.seed, "wall_s": round(wall, 1),
            "streamed": sum(1 for o in outcomes if o.stream),
            "ok": sum(1 for o in outcomes if o.ok),
            "ok_estimated_usage": sum(1 for o in outcomes if o.ok and o.estimated),
            "failed_by_error": dict(Counter(o.error for o in outcomes if o.error).most_common()),
            "lost": sum(1 for o in outcomes if o.lost),
            "lost_detail": dict(Counter(o.lost for o in outcomes if o.lost)),
            "malformed_returned_as_success": sum(1 for o in outcomes if o.ok and not o.sound),
            "answers_outside_residency": sum(1 for o in outcomes if o.ok and o.jurisdiction not in residency),
            "attempts_per_ok_call": {"mean": round(statistics.fmean(attempts), 3) if attempts else None,
                                     "p95": attempts[math.ceil(0.95 * len(attempts)) - 1] if attempts else None,
                                     "max": attempts[-1] if attempts else None},
            "wire_requests": wire,
            "emulator_reported": {"answers": calls_reported, "input_tokens": in_reported,
                                  "output_tokens": out_reported},
            "ledger": ledger,
            "removed_before_calls": removed,
            "rss_mib": {"after_warm_up": round(rss_warm, 1), "end": round(rss_end, 1)},
        }
        if not cfg.eu:
            figures["faults_queued"] = dict(sorted(faults.items()))
        else:
            healthy = ("azure", "groq", "bedrock", "local")
            figures["wire_requests_outside_eu"] = sum(wire[n] for n in healthy)
            figures["eligible_routes"] = eligible
        acc = ledger["accepted_exact"]
        figures["tokens_exact"] = (acc["events"], acc["input_tokens"], acc["output_tokens"]) == (
            calls_reported, in_reported, out_reported)
        nonstop = [n for n in ("local", "vertex", "azure", "groq") if n != cfg.down]
        by_provider = ledger["events_by_provider"]
        figures["events_per_wire_attempt"] = {
            n: round(by_provider.get(n, 0) / wire[n], 4) if wire[n] else None for n in nonstop
        } if not cfg.eu else {}
        # attempts that timed out or failed to connect before an emulator thread had read the request
        figures["events_without_wire_request"] = {
            n: by_provider.get(n, 0) - wire[n] for n in nonstop} if not cfg.eu else {}
        return figures
    finally:
        fleet.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def storm(long: bool = False, *, eu: bool = False, **overrides: Any) -> Figures:
    """The storm scenario (or, with `eu`, the EU-only one); short sizes unless `long`."""
    cfg = StormConfig(calls=10_000, concurrency=200) if long else StormConfig()
    if eu:
        cfg.calls = 2_000 if long else 200
        cfg.concurrency = 100 if long else 50
    cfg.eu = eu
    for key, value in overrides.items():
        setattr(cfg, key, value)
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(_storm(cfg, Path(tmp)))


def eu(long: bool = False, **overrides: Any) -> Figures:
    return storm(long, eu=True, **overrides)


# --------------------------------------------------------------------------- canary

CANARY_KEY = "cnrykey-5f0d9a7e31c84b62"
CANARY_PROMPT = "cnryprompt-b7e2c9d4a1f05836"

#: one route per provider, aimed at an emulator, each credential read from a variable holding the canary
_CANARY_ROUTES: dict[str, dict[str, Any]] = {
    "local": {"model": "llama-3.1-8b", "jurisdiction": "on-prem", "model_id": "m", "api_key_env": "CANARY_KEY",
              "price": _price(0.10)},
    "bedrock": {"model": "llama-3.3-70b", "region": "us-east-1"},
    "vertex": {"model": "llama-4-maverick", "region": "us-east5",
               "options": {"project": "p", "location": "us-east5", "access_token_env": "CANARY_KEY"}},
    "azure": {"model": "llama-3.3-70b", "region": "eastus", "api_key_env": "CANARY_KEY"},
    "groq": {"model": "llama-3.1-8b", "api_key_env": "CANARY_KEY"},
}

def _send_malformed(kind: str, emu: Emulator) -> object:
    return emu.malformed(kind, times=3)


#: what each provider's emulator is told to do before a call: (label, set-up)
_CANARY_FAULTS: list[tuple[str, Callable[[Emulator], object]]] = [
    ("400", lambda e: e.fail(400)),
    ("401 echoing credentials", lambda e: e.fail(401, echo_credentials=True, times=3)),
    ("403 echoing credentials", lambda e: e.fail(403, echo_credentials=True, times=3)),
    ("404", lambda e: e.fail(404, times=3)),
    ("422", lambda e: e.fail(422)),
    ("429 then ok (a retry)", lambda e: e.fail(429, retry_after=0.01)),
    ("429 every attempt", lambda e: e.fail(429, retry_after=0.01, times=3, echo_credentials=True)),
    ("500 every attempt", lambda e: e.fail(500, times=3, echo_credentials=True)),
    ("503 then ok", lambda e: e.fail(503, echo_credentials=True)),
    ("hang", lambda e: e.delay(3.0, times=3)),
    ("cut stream", lambda e: e.cut_stream(after=2, times=3)),
    *[(f"malformed {kind}", partial(_send_malformed, kind)) for kind in sorted(MALFORMED_KINDS)],
    ("ok", lambda e: None),
]


def _hits(text: str | bytes) -> tuple[int, int]:
    if isinstance(text, bytes):
        return text.count(CANARY_KEY.encode()), text.count(CANARY_PROMPT.encode())
    return text.count(CANARY_KEY), text.count(CANARY_PROMPT)


def _exception_texts(exc: BaseException) -> tuple[str, str, str]:
    """What an error shows: (its own text, repr and attributes; its chain's texts and reprs and
    traceback; the attributes of the exceptions chained under it)."""
    import traceback

    own = "\n".join([str(exc), repr(exc), repr(vars(exc)), repr(exc.args)])
    chain: list[str] = ["".join(traceback.format_exception(exc))]
    attributes: list[str] = []
    seen = {id(exc)}
    current = exc.__cause__ or exc.__context__
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain += [str(current), repr(current), repr(current.args)]
        attributes.append(repr(getattr(current, "__dict__", {})))
        current = current.__cause__ or current.__context__
    return own, "\n".join(chain), "\n".join(attributes)


def canary(long: bool = False, *, store_text: bool = False) -> Figures:
    """A canary credential and prompt through every outcome; where did they show up?"""
    import io
    import logging

    from broker import Broker
    from broker.reports import ReportFilters, report_rows
    from broker.reports.render import to_csv, to_json

    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    saved_level = root.level
    levels: dict[str, int] = {}
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    env = {**FAKE_CREDENTIALS, "CANARY_KEY": CANARY_KEY, "AWS_SECRET_ACCESS_KEY": CANARY_KEY,
           "AWS_SESSION_TOKEN": CANARY_KEY}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    fleet = Fleet.start()
    hits: dict[str, list[int]] = {}
    outcomes: Counter[str] = Counter()
    by_label: dict[str, str] = {}

    def count(place: str, text: str | bytes) -> None:
        k, p = _hits(text)
        acc = hits.setdefault(place, [0, 0])
        acc[0] += k
        acc[1] += p

    rounds = 3 if long else 1
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for provider in ("local", "bedrock", "vertex", "azure", "groq"):
                for name in list(logging.root.manager.loggerDict):  # every logger, SDK ones included, at DEBUG
                    logger = logging.getLogger(name)
                    levels.setdefault(name, logger.level)
                    logger.setLevel(logging.DEBUG)
                db = Path(tmp) / f"{provider}.db"
                route = {"id": f"{provider}-canary", "provider": provider, "endpoint": fleet.endpoint(provider),
                         "timeout_s": 0.5, "lifecycle": LIVE, **_CANARY_ROUTES[provider]}
                tenant: dict[str, Any] = {"residency": ["us", "on-prem", "unknown"]}
                if store_text:
                    tenant["store_text"] = True
                policy = {"version": 1, "ledger": f"sqlite:///{db}", "routes": [route],
                          "retry": {"max_attempts_per_route": 2, "base_delay_s": 0.0, "max_delay_s": 0.5},
                          "circuit": {"failure_threshold": 1000}, "tenants": {"default": tenant}}
                emu = fleet.emulators[provider]
                messages = [{"role": "user", "content": f"please keep {CANARY_PROMPT} secret"}]
                with Broker.from_policy(policy) as broker:
                    for _ in range(rounds):
                        for label, setup in _CANARY_FAULTS:
                            for mode in ("chat", "stream"):
                                emu.reset()
                                setup(emu)
                                try:
                                    if mode == "chat":
                                        broker.chat(model=route["model"], messages=messages)
                                    else:
                                        for _event in broker.stream(model=route["model"], messages=messages):
                                            pass
                                    outcomes["ok"] += 1
                                except Exception as exc:  # a raw (non-broker) exception is a finding of its own
                                    kind = type(exc).__name__
                                    outcomes[kind if isinstance(exc, BrokerError) else f"raw {kind}"] += 1
                                    by_label.setdefault(f"{provider} {label} {mode}", kind)
                                    own, chain, attributes = _exception_texts(exc)
                                    count("broker error: message, repr, attributes", own)
                                    count("cause chain: messages, reprs, traceback", chain)
                                    count("cause chain: attributes of SDK exceptions", attributes)
                    broker.meter.flush()
                    for suffix in ("", "-wal", "-shm"):
                        f = Path(f"{db}{suffix}")
                        if f.exists():
                            count("ledger bytes (open: db, -wal, -shm)", f.read_bytes())
                    rows = report_rows(broker.meter.ledger, ["tenant", "provider", "model", "model_id", "route_id",
                                                             "region", "jurisdiction", "status", "error_kind", "day"],
                                       ReportFilters())
                    count("reports (rows, JSON, CSV)", repr(rows) + to_json(rows) + to_csv(rows))
                for suffix in ("", "-wal", "-shm"):
                    f = Path(f"{db}{suffix}")
                    if f.exists():
                        count("ledger bytes (closed)", f.read_bytes())
        handler.flush()
        count("logs (every logger at DEBUG)", buffer.getvalue())
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_level)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        fleet.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return {
        "outcomes": dict(outcomes.most_common()),
        "outcome_by_case": by_label,
        "log_bytes": len(buffer.getvalue()),
        "key_hits": {place: v[0] for place, v in hits.items()},
        "prompt_hits": {place: v[1] for place, v in hits.items()},
        "store_text_opt_in": store_text,
    }


# --------------------------------------------------------------------------- generated policies


def _bomb(depth: int, width: int) -> str:
    """A "billion laughs" document: each anchor refers to the one before it `width` times."""
    lines = ['a0: &a0 ["lol"]']
    for i in range(1, depth):
        lines.append(f"a{i}: &a{i} [{', '.join(f'*a{i - 1}' for _ in range(width))}]")
    lines.append(f"routes: *a{depth - 1}")
    return "\n".join(lines) + "\n"


def _policy_texts(odd_dir: Path) -> Any:
    """Hypothesis strategy: the fuzz test's documents, and hand-shaped hostile ones."""
    from hypothesis import strategies as st

    tests = Path(__file__).resolve().parents[1] / "tests"
    if str(tests) not in sys.path:
        sys.path.insert(0, str(tests))
    from test_policy_fuzz import documents  # the schema-shaped generator the unit tests use

    fifo = odd_dir / "fifo.yaml"
    if not fifo.exists():
        os.mkfifo(fifo)
    link = odd_dir / "zero.yaml"
    if not link.exists():
        link.symlink_to("/dev/zero")
    loop = odd_dir / "loop.yaml"
    if not loop.exists():
        loop.symlink_to(loop)
    big = odd_dir / "big.yaml"
    if not big.exists():
        big.write_text("description: " + "x" * (2 << 20) + "\n")
    itself = odd_dir / "self.yaml"
    itself.write_text(f"extends: {itself}\n")
    targets = st.sampled_from([
        "/dev/zero", "/dev/urandom", "/dev/stdin", "/proc/self/mem", "/", str(odd_dir), str(fifo), str(link),
        str(loop), str(big), str(itself), "\0", "a\0b.yaml", "", "missing.yaml", "x" * 5000, "../" * 200 + "etc",
        "\u202e.yaml", "~/.ssh/id_rsa",
    ])
    number = st.one_of(st.integers(-(10**400), 10**400).map(str), st.sampled_from(
        ["1e999999", "-1e999999", ".inf", "-.inf", ".nan", "0x" + "f" * 400, "1" * 5000, "0o777777777777777777777",
         "1_000_000_000_000_000_000_000", "2**63"]))
    unicode_text = st.text(min_size=1, max_size=20).map(json.dumps)
    key = st.sampled_from(["routes", "tenants", "ledger", "version", "extends", "retry", "metering", "residency",
                           "max_attempts_per_route", "flush_interval_s", "price"])
    hostile = st.one_of(
        st.builds(_bomb, st.integers(2, 9), st.integers(2, 9)),
        st.integers(50, 20_000).map(lambda n: "routes: " + "[" * n + "]" * n + "\n"),
        st.integers(50, 5_000).map(lambda n: "tenants: " + "{a: " * n + "1" + "}" * n + "\n"),
        st.integers(50, 3_000).map(lambda n: "".join(f"{'  ' * i}k{i}:\n" for i in range(n)) + "  " * n + "x\n"),
        st.builds(lambda k, v: f"version: 1\n{k}: {v}\n", key, number),
        st.builds(lambda v: f"version: 1\nretry: {{max_attempts_per_route: {v}, max_delay_s: {v}}}\n", number),
        st.builds(lambda v: f"version: 1\nmetering: {{flush_interval_s: {v}, max_buffer: {v}}}\n", number),
        st.builds(lambda v: f"version: 1\nroutes:\n  - {{id: a, provider: local, model: m, price: "
                            f"{{input_per_mtok: {v}, output_per_mtok: {v}}}}}\n", number),
        st.builds(lambda k: f"{k}: 1\n{k}: 2\n", key),  # duplicate keys
        st.builds(lambda k, t: f"version: 1\ntenants:\n  {t}: {{residency: [us]}}\n  {t}: {{residency: [eu]}}\n",
                  key, st.sampled_from(["default", "t", "acme-eu"])),
        st.builds(lambda t: f"version: 1\ntenants:\n  {t}: {{residency: [{t}]}}\n", unicode_text),
        st.builds(lambda a, b: f"version: 1\ndescription: {a}\n{b}: x\n", unicode_text, unicode_text),
        st.builds(lambda t: f"extends: {json.dumps(t)}\n", targets),
        st.builds(lambda t, u: f"extends: [{json.dumps(t)}, {json.dumps(u)}]\n", targets, targets),
        st.just("!!python/object/apply:os.system ['true']\n"),
        st.just("--- !<tag:yaml.org,2002:python/name:os.system>\n"),
        st.just("\ufeff\ufeffversion: 1\n"),
        st.just("version: 1\n...\n---\nversion: 2\n"),
        st.just("&a [*a]\n"),
        st.just("? " + "[" * 500 + "\n"),
    )
    return st.one_of(documents(), hostile)


class _Stuck(Exception):
    pass


def policies(long: bool = False, *, examples: int | None = None, seed: int = 1) -> Figures:
    """Generated policy documents through the loader: every one loads or is a `PolicyError`."""
    import signal

    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed

    from broker.errors import PolicyError
    from broker.policy import load_policy_text

    n = examples or (1_000 if long else 300)
    raw: Counter[str] = Counter()
    outcome: Counter[str] = Counter()
    slowest: list[tuple[float, str]] = [(0.0, "")]

    def on_alarm(signum: int, frame: Any) -> None:
        raise _Stuck

    with tempfile.TemporaryDirectory() as tmp:
        strategy = _policy_texts(Path(tmp))

        @hseed(seed)
        @settings(max_examples=n, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(strategy)
        def load(text: str) -> None:
            previous = signal.signal(signal.SIGALRM, on_alarm)
            signal.setitimer(signal.ITIMER_REAL, 20.0)
            t0 = time.perf_counter()
            try:
                load_policy_text(text, name="generated.yaml", env={})
                outcome["loaded"] += 1
            except PolicyError:
                outcome["PolicyError"] += 1
            except _Stuck:
                raw["no answer within 20 s"] += 1
            except Exception as exc:
                raw[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
                elapsed = time.perf_counter() - t0
                if elapsed > slowest[0][0]:
                    slowest[0] = (elapsed, text[:80])

        load()
    return {
        "documents": sum(outcome.values()) + sum(raw.values()),
        "outcomes": dict(outcome),
        "raw_exceptions": sum(raw.values()),
        "raw_exception_detail": dict(raw),
        "slowest_load_s": round(slowest[0][0], 3),
        "slowest_document_start": slowest[0][1],
    }


# --------------------------------------------------------------------------- processes: kill -9 and shared ledgers


class TimedLedger:
    """A ledger that appends the duration of each write to the progress file (to state the loss bound)."""

    def __init__(self, inner: Any, progress_fd: int) -> None:
        self.inner = inner
        self.url = inner.url
        self._fd = progress_fd

    def write(self, events: Any) -> int:
        t0 = time.monotonic()
        written = int(self.inner.write(events))
        os.write(self._fd, f"W {time.monotonic() - t0:.6f} {len(events)}\n".encode())
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _child(mode: str, ledger_url: str, progress: str, calls: int) -> int:
    """A process under load: one call after another through `Broker`, every 4th request a 429.

    After each call returns it appends `T <monotonic time> <attempts> <input> <output>` to the
    progress file (kept by the kernel even when this process is killed), so the parent knows how
    many events had been recorded at any moment.
    """
    from broker import Broker
    from broker.metering import open_ledger

    fd = os.open(progress, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with OpenAICompatEmulator() as emu:
        for i in range(calls * 2):
            if i % 4 == 3:
                emu.fail(429)
            else:
                emu.delay(0.0)
        policy = {
            "version": 1,
            "metering": {"durable": mode == "durable"},
            "retry": {"max_attempts_per_route": 3, "base_delay_s": 0.001, "max_delay_s": 0.01,
                      "budget_ratio": 1.0, "budget_capacity": 1000.0},  # every 429 is retried, once
            "circuit": {"failure_threshold": 10**6},
            "routes": [{"id": "local", "provider": "local", "model": "llama-3.1-8b", "model_id": "m",
                        "jurisdiction": "on-prem", "endpoint": emu.url + "/v1", "price": _price(0.1)}],
            "tenants": {"default": {"residency": ["on-prem"]}},
        }
        ledger = TimedLedger(open_ledger(ledger_url), fd)
        with Broker.from_policy(policy, ledger=ledger) as broker:
            os.write(fd, b"READY\n")
            for i in range(calls):
                reply = broker.chat(model="llama-3.1-8b", messages=[{"role": "user", "content": f"call {i}"}])
                os.write(fd, f"T {time.monotonic():.6f} {reply.attempts} {reply.usage.input_tokens} "
                             f"{reply.usage.output_tokens}\n".encode())
        ledger.inner.close()
        os.write(fd, f"DONE {emu.reported.input_tokens} {emu.reported.output_tokens}\n".encode())
    return 0


def _spawn(mode: str, ledger_url: str, progress: Path, calls: int) -> Any:
    import subprocess

    return subprocess.Popen([sys.executable, __file__, "--child", mode, ledger_url, str(progress), str(calls)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _progress(path: Path) -> tuple[list[tuple[float, int, int, int]], list[float], tuple[int, int] | None]:
    calls: list[tuple[float, int, int, int]] = []
    writes: list[float] = []
    done = None
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == "T" and len(parts) == 5:
            calls.append((float(parts[1]), int(parts[2]), int(parts[3]), int(parts[4])))
        elif parts and parts[0] == "W" and len(parts) == 3:
            writes.append(float(parts[1]))
        elif parts and parts[0] == "DONE":
            done = (int(parts[1]), int(parts[2]))
    return calls, writes, done


def _wait_ready(path: Path, proc: Any, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and b"READY" in path.read_bytes():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"child exited early: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.02)
    raise RuntimeError("child never became ready")


def _ledger_count(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        return int(con.execute("SELECT COUNT(*) FROM usage_events").fetchone()[0])
    finally:
        con.close()


def kill(long: bool = False, *, kills: int | None = None, seed: int = 3) -> Figures:
    """`kill -9` of a process under load, in durable and batched metering, `kills` times each."""
    import signal

    from broker.policy.schema import MeteringSettings

    settings = MeteringSettings()
    rng = random.Random(seed)
    n = kills or (5 if long else 1)
    out: Figures = {"flush_interval_s": settings.flush_interval_s, "max_buffer": settings.max_buffer}
    for mode in ("durable", "batched"):
        runs = []
        for k in range(n):
            with tempfile.TemporaryDirectory() as tmp:
                db, progress = Path(tmp) / "usage.db", Path(tmp) / "progress"
                proc = _spawn(mode, f"sqlite:///{db}", progress, 50_000)  # killed long before the end
                _wait_ready(progress, proc)
                time.sleep(rng.uniform(1.5, 3.5) if long else rng.uniform(1.2, 1.8))
                alive = proc.poll() is None
                killed_at = time.monotonic()
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                proc.stderr.close()
                calls, writes, _ = _progress(progress)
                recorded = sum(c[1] for c in calls)
                committed = _ledger_count(db)
                max_write = max(writes, default=0.0)
                window = settings.flush_interval_s + 2 * max_write + 0.1
                recent = sum(c[1] for c in calls if c[0] >= killed_at - window)
                rate = recorded / max(calls[-1][0] - calls[0][0], 1e-9) if len(calls) > 1 else 0.0
                bound = 0 if mode == "durable" else min(recent + 3, 2 * settings.max_buffer + 3)
                runs.append({
                    "kill": k + 1, "alive_at_kill": alive, "calls_returned": len(calls), "events_recorded": recorded,
                    "events_committed": committed, "events_lost": max(0, recorded - committed),
                    "in_flight_committed": max(0, committed - recorded), "bound": bound,
                    "within_bound": max(0, recorded - committed) <= bound,
                    "events_per_s": round(rate), "longest_write_s": round(max_write, 4),
                    "loss_s_of_traffic": round(max(0, recorded - committed) / rate, 3) if rate else None,
                })
        out[mode] = runs
    return out


def _pg_url() -> str | None:
    return os.environ.get("LLAMA_BROKER_RELIABILITY_PG_URL")


def shared(long: bool = False, *, processes: int = 4, calls: int | None = None,
           pg_url: str | None = None, sqlite: bool = True) -> Figures:
    """`processes` processes, each with its own emulator, metering into one ledger; exact totals."""
    from broker.metering import open_ledger
    from broker.reports import ReportFilters, report_rows

    per = calls or (2_000 if long else 150)
    out: Figures = {"processes": processes, "calls_per_process": per}
    backends: dict[str, str | None] = {"sqlite": None} if sqlite else {}
    url = pg_url or _pg_url()
    if url:
        backends["postgresql"] = url
    def totals(url: str) -> tuple[int, int, int]:
        ledger = open_ledger(url)
        try:
            rows = report_rows(ledger, [], ReportFilters())
        finally:
            ledger.close()
        row = rows[0] if rows else {"attempts": 0, "input_tokens": 0, "output_tokens": 0}
        return int(row["attempts"]), int(row["input_tokens"]), int(row["output_tokens"])

    for backend, target in backends.items():
        for mode in ("batched", "durable"):
            with tempfile.TemporaryDirectory() as tmp:
                ledger_url = target or f"sqlite:///{Path(tmp) / 'shared.db'}"
                before = totals(ledger_url) if target else (0, 0, 0)  # a server's ledger may hold earlier runs
                t0 = time.perf_counter()
                procs = [(_spawn(mode, ledger_url, Path(tmp) / f"p{p}", per), Path(tmp) / f"p{p}")
                         for p in range(processes)]
                errors = []
                for proc, _ in procs:
                    if proc.wait(timeout=600):
                        errors.append(proc.stderr.read().decode()[-500:])
                    proc.stderr.close()
                wall = time.perf_counter() - t0
                expected: list[int] = [0, 0, 0]
                served: list[int] = [0, 0]
                for _, progress in procs:
                    calls_done, _, done = _progress(progress)
                    for i in range(3):
                        expected[i] += sum(int(c[i + 1]) for c in calls_done)
                    if done:
                        served = [served[0] + done[0], served[1] + done[1]]
                after = totals(ledger_url)
                got = [a - b for a, b in zip(after, before, strict=True)]
                out[f"{backend} {mode}"] = {
                    "errors": errors, "wall_s": round(wall, 1),
                    "expected": dict(zip(("events", "input_tokens", "output_tokens"), expected, strict=True)),
                    "emulators_served": dict(zip(("input_tokens", "output_tokens"), served, strict=True)),
                    "ledger": dict(zip(("events", "input_tokens", "output_tokens"), got, strict=True)),
                    "exact": got == expected and expected[1:] == served,
                }
    return out


# --------------------------------------------------------------------------- command line

SCENARIOS: dict[str, Callable[..., Figures]] = {"storm": storm, "eu": eu, "canary": canary,
                                              "policies": policies, "kill": kill, "shared": shared}


def main(argv: Iterable[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["--child"]:
        mode, url, progress, calls = args_list[1:5]
        return _child(mode, url, progress, int(calls))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=f"any of {', '.join(SCENARIOS)}; default: all")
    parser.add_argument("--long", action="store_true", help="the long sizes (minutes)")
    parser.add_argument("--json", type=Path, help="write every scenario's figures to this file")
    args = parser.parse_args(args_list)
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    results: dict[str, Figures] = {}
    for name in args.scenarios or list(SCENARIOS):
        t0 = time.perf_counter()
        results[name] = SCENARIOS[name](args.long)
        results[name]["scenario_s"] = round(time.perf_counter() - t0, 1)
        print(f"== {name}")
        print(json.dumps(results[name], indent=2, default=str))
    if args.json:
        args.json.write_text(json.dumps({"long": args.long, "nproc": os.cpu_count(), "figures": results},
                                        indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
