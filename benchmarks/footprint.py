"""Cold import time and peak memory.

- import: whole-process wall time of `python -c "import broker"` and `-c "from broker import
  Broker"`, minus a bare `python -c pass`, each the median of several fresh interpreters (so the
  OS file cache is warm, the interpreter's module cache is not).
- memory: a fresh process sends 10,000 calls through the local adapter (`AsyncBroker`, 16
  workers each sending one call at a time, metered to SQLite) to the mock and reports its peak
  RSS after 2,000 and after 10,000 calls, and which cloud SDKs it loaded (none should be).  The
  workers take calls from a counter rather than 10,000 tasks queued up front, so the figure is
  the broker's memory, not the harness's (10,000 pending tasks alone hold about 14 MB).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from ._common import Figure, Settings
from ._server import BenchServer

SECTION = "footprint"
ROOT = Path(__file__).resolve().parent.parent

_RSS_PROBE = r"""
import asyncio, json, resource, sys, tempfile
sys.path.insert(0, {root!r})
from benchmarks._clients import MESSAGES, MODEL, five_route_policy
from broker import AsyncBroker

async def main(url, total, checkpoints):
    out = {{}}
    with tempfile.TemporaryDirectory() as tmp:
        broker = AsyncBroker.from_policy(five_route_policy(url, f"sqlite:///{{tmp}}/u.db"))
        started = done = 0
        async def worker():
            nonlocal started, done
            while started < total:
                started += 1
                await broker.chat(model=MODEL, messages=MESSAGES)
                done += 1
                if done in checkpoints:
                    out[done] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        await asyncio.gather(*(worker() for _ in range(16)))
        await broker.aclose()
    sdks = [m for m in ("boto3", "botocore", "groq", "azure.core", "google.auth", "google.cloud.aiplatform")
            if m in sys.modules]  # (a bare `google` namespace comes from a .pth file at start-up)
    print(json.dumps({{"rss_mb": out, "sdks": sdks}}))

asyncio.run(main(sys.argv[1], 10_000, {{2_000, 10_000}}))
"""


def _wall_ms(code: str, n: int) -> float:
    runs = []
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
        runs.append((time.perf_counter() - start) * 1000)
    return float(statistics.median(runs))


def run(settings: Settings) -> list[Figure]:
    n = settings.size(15, 7)
    bare, imp, client = [], [], []
    for _ in range(settings.reps):  # interleaved: the same noise on all three
        bare.append(_wall_ms("pass", n))
        imp.append(_wall_ms("import broker", n))
        client.append(_wall_ms("from broker import Broker", n))
    base = statistics.median(bare)
    over_import = statistics.median([i - b for i, b in zip(imp, bare, strict=True)])
    over_client = statistics.median([c - b for c, b in zip(client, bare, strict=True)])
    figures = [
        Figure(SECTION, "import broker (over bare interpreter)", over_import, "ms", baseline="python -c pass",
               baseline_value=base, ratio=(base + over_import) / base, target="<= 100 ms", met=over_import <= 100),
        Figure(SECTION, "from broker import Broker (over bare)", over_client, "ms", baseline="python -c pass",
               baseline_value=base, ratio=(base + over_client) / base, target="<= 200 ms", met=over_client <= 200),
    ]
    with BenchServer() as server:
        done = subprocess.run([sys.executable, "-c", _RSS_PROBE.format(root=str(ROOT)), server.url],
                              capture_output=True, text=True, check=True, cwd=ROOT, timeout=600)
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    rss = {int(k): v for k, v in probe["rss_mb"].items()}
    growth = rss[10_000] - rss[2_000]
    sdks = ", ".join(probe["sdks"]) or "none"
    figures.append(Figure(SECTION, "peak RSS after 10,000 local calls", rss[10_000], "MB",
                          baseline="after 2,000 calls", baseline_value=rss[2_000], ratio=rss[10_000] / rss[2_000],
                          target="<= 60 MB, not growing", met=rss[10_000] <= 60 and growth <= 2,
                          note=f"+{growth:.1f} MB from 2,000 to 10,000 calls; cloud SDKs loaded: {sdks}"))
    return figures
