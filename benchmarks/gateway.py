"""The OpenAI-compatible gateway under load: `llama-broker serve` against the emulator and LiteLLM's proxy.

    .venv/bin/python -m benchmarks.gateway [--requests 4000] [--concurrency 64] [--runs 1] [--uvicorn]
                                           [--json PATH]

One aiohttp load generator (this process, closed loop, `--concurrency` requests in flight) calls,
in the same run and in turn:

- the emulator directly (`_server.BenchServer`, in its own process, 1 ms per answer);
- `llama-broker serve` (granian) with 1 and 2 workers, one local route to that emulator, one tenant
  by key, every call metered (batched, SQLite);
- LiteLLM's proxy (`litellm[proxy]`, installed on first use into `.bench/venv`, run offline with
  `LITELLM_LOCAL_MODEL_COST_MAP=True`) with 1 and 2 workers, one model on the same emulator;
- with `--uvicorn`, the same gateway application on uvicorn (uvloop, httptools): the comparison
  that chose granian.

It prints requests/s, p50 and p99 latency, the CPU time the server's processes spent per request
(steadier than req/s on a busy machine), and what each adds over the emulator's own p50/p99, with
the gateway's req/s as a multiple of LiteLLM's at the same worker count.  The emulator is
pinned to the last CPU and the load generator kept off it; the servers under test may use every
CPU, so on a small machine they share a core with the load generator: figures are noisy there.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml
from typing_extensions import Self

from ._common import pct
from ._server import BenchServer, free_port, pin_client
from ._venv import ensure, offline_env

KEY = "sk-bench-gateway-key"
MODEL = "llama-3.1-8b"
BODY = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hello, how fast is this?"}],
                   "max_tokens": 16}).encode()


@dataclass
class Result:
    target: str
    workers: int | None
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us_per_request: float | None = None


async def _load(url: str, total: int, concurrency: int, warmup: int) -> tuple[float, list[float], int]:
    import aiohttp

    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(record: bool) -> None:
            nonlocal errors
            t = time.perf_counter()
            try:
                async with session.post(url, data=BODY, headers=headers) as r:
                    await r.read()
                    ok = r.status == 200
            except aiohttp.ClientError:
                ok = False
            if record and ok:
                latencies.append(time.perf_counter() - t)
            elif record:
                errors += 1

        async def worker(n: int, record: bool) -> None:
            for _ in range(n):
                await one(record)

        await asyncio.gather(*(worker(warmup // concurrency + 1, False) for _ in range(concurrency)))
        per, extra = divmod(total, concurrency)
        start = time.perf_counter()
        await asyncio.gather(*(worker(per + (i < extra), True) for i in range(concurrency)))
        elapsed = time.perf_counter() - start
    return len(latencies) / elapsed, sorted(latencies), errors


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process and all its descendants (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, IndexError, ValueError):
            continue
    return total


def measure(name: str, workers: int | None, url: str, args: argparse.Namespace, pid: int | None = None) -> Result:
    runs = []
    for _ in range(args.runs):
        cpu = cpu_seconds(pid) if pid is not None else 0.0
        rps, lat, errors = asyncio.run(_load(url, args.requests, args.concurrency, args.warmup))
        per = (cpu_seconds(pid) - cpu) / (args.requests + args.warmup) * 1e6 if pid is not None else None
        runs.append(Result(name, workers, rps, pct(lat, 50) * 1000, pct(lat, 99) * 1000, errors, per))
    runs.sort(key=lambda r: r.rps)
    result = runs[len(runs) // 2]
    cpu_text = f"{result.cpu_us_per_request:>9,.0f}" if result.cpu_us_per_request is not None else f"{'-':>9}"
    print(f"  {name:<28} {workers or '-':>7} {result.rps:>9,.0f} {result.p50_ms:>8.2f} {result.p99_ms:>8.2f}"
          f" {cpu_text} {result.errors:>7}", flush=True)
    return result


class Served:
    """A server under test in a subprocess that may use every CPU; ready when `ready_path` answers 200."""

    def __init__(self, argv: list[str], port: int, ready_path: str, env: dict[str, str], log: Path) -> None:
        self.argv, self.port, self.ready_path, self.env, self.log = argv, port, ready_path, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> Self:
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(self.proc.pid, range(os.cpu_count() or 1))
        deadline = time.monotonic() + 240
        import urllib.request

        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.argv[0]} exited {self.proc.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{self.ready_path}", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{self.argv[0]} did not start; see {self.log}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def gateway_policy(tmp: Path, upstream: str) -> Path:
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump({
        "version": 1,
        "ledger": f"sqlite:///{tmp / 'usage.db'}",
        "routes": [{"id": "local-8b", "provider": "local", "model": MODEL, "model_id": "bench", "endpoint": upstream,
                    "jurisdiction": "on-prem", "price": {"input_per_mtok": 0.1, "output_per_mtok": 0.2}}],
        "tenants": {"bench": {"residency": ["on-prem"],
                              "api_keys": [{"sha256": hashlib.sha256(KEY.encode()).hexdigest()}]}},
    }))
    return path


def litellm_config(tmp: Path, upstream: str) -> Path:
    path = tmp / "litellm.yaml"
    path.write_text(yaml.safe_dump({
        "model_list": [{"model_name": MODEL, "litellm_params": {"model": "openai/bench", "api_base": upstream,
                                                                 "api_key": "bench"}}],
        "litellm_settings": {"telemetry": False, "drop_params": True},
        "general_settings": {"master_key": KEY},  # it authenticates the same key, as the gateway does
    }))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--runs", type=int, default=1, help="runs per target; the median run is shown")
    parser.add_argument("--delay-ms", type=float, default=1.0, help="the emulator's time per answer")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--uvicorn", action="store_true", help="also the gateway app on uvicorn")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    worker_counts = [int(w) for w in args.workers.split(",")]
    litellm_python = None if args.no_litellm else ensure("litellm[proxy]", "aiohttp",
                                                         module="litellm.proxy.proxy_server")
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmpdir, BenchServer(args.delay_ms / 1000) as emu:
        tmp = Path(tmpdir)
        pin_client()
        print(f"concurrency {args.concurrency}, {args.requests} requests per run, emulator {args.delay_ms} ms")
        print(f"  {'target':<28} {'workers':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>9}"
              f" {'errors':>7}")
        results.append(measure("emulator (direct)", None, f"{emu.url}/chat/completions", args))
        policy = gateway_policy(tmp, emu.url)
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        bin_dir = Path(sys.executable).parent
        for n in worker_counts:
            port = free_port()
            argv = [str(bin_dir / "llama-broker"), "serve", "--policy", str(policy), "--port", str(port),
                    "--workers", str(n), "--log-level", "warning"]
            with Served(argv, port, "/healthz", env, tmp / f"gateway-{n}.log") as served:
                results.append(measure("llama-broker serve", n, f"http://127.0.0.1:{port}/v1/chat/completions",
                                       args, served.pid))
        if args.uvicorn:
            if not (bin_dir / "uvicorn").exists():
                print("  uvicorn is not installed in this environment: skipped")
            else:
                for n in worker_counts:
                    port = free_port()
                    argv = [str(bin_dir / "uvicorn"), "--factory", "broker.gateway.server:worker_app", "--host",
                            "127.0.0.1", "--port", str(port), "--workers", str(n), "--loop", "uvloop", "--http",
                            "httptools", "--no-access-log", "--log-level", "warning"]
                    uenv = {**env, "LLAMA_BROKER_GATEWAY_POLICY": str(policy)}
                    with Served(argv, port, "/healthz", uenv, tmp / f"uvicorn-{n}.log") as served:
                        results.append(measure("gateway app on uvicorn", n,
                                               f"http://127.0.0.1:{port}/v1/chat/completions", args, served.pid))
        if litellm_python is not None:
            config = litellm_config(tmp, emu.url)
            for n in worker_counts:
                port = free_port()
                argv = [str(litellm_python.parent / "litellm"), "--config", str(config), "--host", "127.0.0.1",
                        "--port", str(port), "--num_workers", str(n)]
                log = tmp / f"litellm-{n}.log"
                try:
                    with Served(argv, port, "/health/liveliness", offline_env(), log) as served:
                        results.append(measure("LiteLLM proxy", n, f"http://127.0.0.1:{port}/chat/completions",
                                               args, served.pid))
                except RuntimeError as exc:  # say so and go on: the other figures of the run still count
                    tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
                    print(f"  LiteLLM proxy, {n} worker(s): {exc}; last lines: {' | '.join(tail)}")
    report(results, args)


def report(results: list[Result], args: argparse.Namespace) -> None:
    base = results[0]
    print(f"\nadded over the emulator's own p50 {base.p50_ms:.2f} ms / p99 {base.p99_ms:.2f} ms:")
    rows = []
    for r in results[1:]:
        other = next((o for o in results if o.target == "LiteLLM proxy" and o.workers == r.workers), None)
        ratio = r.rps / other.rps if other and r.target != "LiteLLM proxy" and other.rps else None
        rows.append({**asdict(r), "added_p50_ms": r.p50_ms - base.p50_ms, "added_p99_ms": r.p99_ms - base.p99_ms,
                     "rps_vs_litellm": ratio})
        times = f" = {ratio:.1f}x LiteLLM proxy's req/s" if ratio else ""
        print(f"  {r.target:<28} {r.workers} worker(s): +{r.p50_ms - base.p50_ms:.2f} ms p50, "
              f"+{r.p99_ms - base.p99_ms:.2f} ms p99{times}")
    one = next((r for r in rows if r["target"] == "llama-broker serve" and r["workers"] == 1), None)
    if one is not None:
        ratio = one["rps_vs_litellm"]
        print(f"\ntarget, one worker at concurrency {args.concurrency}: p99 < 25 ms -> "
              f"{'met' if one['p99_ms'] < 25 else 'NOT met'} ({one['p99_ms']:.1f} ms); >= 5x LiteLLM proxy -> "
              + ("not measured" if ratio is None else f"{'met' if ratio >= 5 else 'NOT met'} ({ratio:.1f}x)"))
    if args.json:
        args.json.write_text(json.dumps({"settings": {**vars(args), "json": str(args.json)}, "base": asdict(base),
                                         "results": rows, "cpus": os.cpu_count()}, indent=2))


if __name__ == "__main__":
    main()
