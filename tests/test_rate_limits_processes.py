"""Four broker processes share one tenant limit through Redis for a whole minute (this test runs ~70 s).

The window is a sliding minute counted in one-second slots: nothing admitted during the run can
leave the window before it ends, so the four processes together may be admitted the limit and
no more.  A read-modify-write race between them would admit more; a lost update, fewer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from helpers import local_route, policy_dict
from redis_fixtures import *  # noqa: F403  (the Redis server fixtures)

from broker.testing import OpenAICompatEmulator

LIMIT = 600
PROCESSES = 4
RUN_S = 60.0


def test_four_processes_are_admitted_the_tenant_limit_over_a_minute(redis_url: str, tmp_path: Path) -> None:
    with OpenAICompatEmulator() as emu:
        policy = policy_dict([local_route(emu)], {"acme": {"residency": ["on-prem"], "rate_limit": {"rpm": LIMIT}}},
                             limits={"store": redis_url})
        workers = []
        start_at = time.time() + 12  # every process imports and builds its broker before the minute starts
        for i in range(PROCESSES):
            path = tmp_path / f"policy-{i}.json"
            path.write_text(json.dumps({**policy, "ledger": f"sqlite:///{tmp_path / f'usage-{i}.db'}"}))
            # 6 calls a second each: 1440 offered in the minute, the limit reached after about 25 s
            args = [sys.executable, str(Path(__file__).with_name("rate_limit_worker.py")), str(path),
                    str(start_at), str(start_at + RUN_S), "6"]
            workers.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}))
        counts = []
        for w in workers:
            out, err = w.communicate(timeout=RUN_S + 60)
            assert w.returncode == 0, err[-2000:]
            counts.append(json.loads(out.strip().splitlines()[-1]))
        served = len(emu.requests)
    admitted = sum(c["admitted"] for c in counts)
    refused = sum(c["refused"] for c in counts)
    print(f"\n{PROCESSES} processes, {RUN_S:g} s, limit {LIMIT} rpm: admitted {admitted}, refused {refused}, "
          f"the emulator served {served}")
    assert abs(admitted - LIMIT) <= LIMIT * 0.02
    assert admitted <= LIMIT  # the window never lets more through
    assert served == admitted and refused > 0
