"""The official `openai` npm package under Node (`node --test tests/gateway/node`) against the gateway.

`.ci/run` installs Node and npm from Debian when they are missing, and the package into
tests/gateway/node from its package-lock.json.  Outside CI a machine without them skips this
test with the reason; with CI=true their absence fails it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from gateway_fixtures import KEYS, ledger_rows, metered_tokens

NODE_DIR = Path(__file__).parent / "node"


def _node_or_skip() -> str:
    node = shutil.which("node")
    installed = (NODE_DIR / "node_modules" / "openai" / "package.json").exists()
    if node and installed:
        return node
    why = "node is not installed" if not node else "the openai npm package is not installed (npm ci in tests/gateway/node)"
    if os.environ.get("CI", "").lower() in ("1", "true"):
        pytest.fail(f"CI: {why}")
    pytest.skip(why)


def test_openai_npm_package_runs_the_scenarios(served) -> None:
    node = _node_or_skip()
    env = {**os.environ, "GATEWAY_URL": served.url, "GATEWAY_KEYS": json.dumps(KEYS), "NO_COLOR": "1"}
    done = subprocess.run([node, "--test", "--test-reporter=spec", "gateway.test.mjs"], cwd=NODE_DIR, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout or "fail 0" in done.stdout

    # the ledger holds exactly what the emulators served, under the tenant each key maps to
    assert metered_tokens(served.ledger) == served.backends.served()
    rows = ledger_rows(served.ledger)
    tagged = [json.loads(r["tags"]) for r in rows if r["tenant"] == "acme" and r["status"] == "ok"]
    assert {"app": "node-test", "user": "node-user", "team": "acme"} in tagged
    assert {r["tenant"] for r in rows if r["route_id"] == "groq-8b"} == {"globex"}
