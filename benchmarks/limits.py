"""What rate limits add per call: Redis windows against the in-process default (one run).

    .venv/bin/python benchmarks/limits.py [--calls 2000]

Two measurements, each p50 / p99:

* the windows alone: one tenant admission (rpm + tpm, one atomic take) plus one route claim
  (rpm + saturation mark) and the settle of the tokens, as a call makes them;
* `Broker.chat` against the loopback OpenAI-compatible emulator, with no limits (the
  baseline), a tenant limit and a route quota in-process, and the same in Redis; the added
  figure is the limited call minus the baseline, percentile by percentile.

Redis is a `redis-server` this script starts on a free loopback port (Debian's package).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from broker import Broker
from broker.limits import MemoryWindows, Take, Windows
from broker.limits.redis_store import RedisWindows
from broker.testing import OpenAICompatEmulator


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


@contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    url = f"redis://127.0.0.1:{port}/0"
    try:
        for _ in range(300):
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def time_windows(windows: Windows, calls: int) -> list[float]:
    """Microseconds per call's worth of window steps (admit, claim, settle)."""
    out = []
    for _ in range(calls):
        now = time.time()
        start = time.perf_counter()
        held = windows.take([Take("{b}:t:rpm", 10**9, 1), Take("{b}:t:tpm", 10**12, 300)], (), now)
        windows.take([Take("{b}:r:rpm", 10**9, 1)], ("{b}:r:saturated",), now)
        if isinstance(held, tuple):
            windows.adjust(held[1], -250, now)
        out.append((time.perf_counter() - start) * 1e6)
    return out


def time_calls(make: Callable[[], Broker], calls: int) -> list[float]:
    """Microseconds per `Broker.chat`, after a warm-up."""
    messages = [{"role": "user", "content": "hello"}]
    with make() as broker:
        for _ in range(50):
            broker.chat(model="llama-3.1-8b", messages=messages, tenant="acme")
        out = []
        for _ in range(calls):
            start = time.perf_counter()
            broker.chat(model="llama-3.1-8b", messages=messages, tenant="acme")
            out.append((time.perf_counter() - start) * 1e6)
        return out


def policy(emu: OpenAICompatEmulator, tmp: Path, limits: dict[str, Any] | None) -> dict[str, Any]:
    route: dict[str, Any] = {"id": "local", "provider": "local", "model": "llama-3.1-8b",
                             "model_id": "meta-llama/Llama-3.1-8B-Instruct", "endpoint": f"{emu.url}/v1",
                             "jurisdiction": "on-prem"}
    tenant: dict[str, Any] = {"residency": ["on-prem"]}
    doc: dict[str, Any] = {"version": 1, "ledger": f"sqlite:///{tmp / 'usage.db'}", "routes": [route],
                           "tenants": {"acme": tenant}}
    if limits is not None:
        route["rpm"], route["tpm"] = 10**9, 10**12
        tenant["rate_limit"] = {"rpm": 10**9, "tpm": 10**12}
        doc["limits"] = limits
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    with redis_server() as url, OpenAICompatEmulator() as emu, tempfile.TemporaryDirectory() as tmp:
        redis_windows = RedisWindows(url)
        rows = [("windows, in-process", percentiles(time_windows(MemoryWindows(), args.calls))),
                ("windows, Redis", percentiles(time_windows(redis_windows, args.calls)))]
        redis_windows.close()
        base = percentiles(time_calls(lambda: Broker(policy(emu, Path(tmp), None)), args.calls))
        memory = percentiles(time_calls(lambda: Broker(policy(emu, Path(tmp), {"store": "memory"})), args.calls))
        shared = percentiles(time_calls(lambda: Broker(policy(emu, Path(tmp), {"store": url})), args.calls))
    print(f"rate limits, {args.calls} calls each, one run (shared machine: figures are noisy)")
    print(f"{'':34} {'p50 us':>10} {'p99 us':>10}")
    for name, (p50, p99) in rows:
        print(f"{name:34} {p50:10.1f} {p99:10.1f}")
    print(f"{'Broker.chat, no limits':34} {base[0]:10.1f} {base[1]:10.1f}")
    for name, (p50, p99) in (("in-process", memory), ("Redis", shared)):
        print(f"{'Broker.chat, limits ' + name:34} {p50:10.1f} {p99:10.1f}   added {p50 - base[0]:+8.1f} "
              f"{p99 - base[1]:+8.1f}")


if __name__ == "__main__":
    main()
