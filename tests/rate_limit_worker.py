"""One broker process of the shared-limit test: calls at a steady pace until a stop time, prints its counts.

    python tests/rate_limit_worker.py POLICY.json START_AT STOP_AT CALLS_PER_S
"""

from __future__ import annotations

import json
import sys
import time

from broker import Broker
from broker.errors import RateLimited


def main(policy_path: str, start_at: float, stop_at: float, per_s: float) -> None:
    with open(policy_path) as f:
        policy = json.load(f)
    admitted = refused = 0
    with Broker(policy) as broker:
        time.sleep(max(0.0, start_at - time.time()))
        due = start_at
        while time.time() < stop_at:
            try:
                broker.chat(model="llama-3.1-8b", messages=[{"role": "user", "content": "hi"}], tenant="acme")
                admitted += 1
            except RateLimited:
                refused += 1
            due += 1 / per_s
            time.sleep(max(0.0, due - time.time()))
    print(json.dumps({"admitted": admitted, "refused": refused}))


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))
