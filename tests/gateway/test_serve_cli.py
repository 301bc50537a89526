"""`llama-broker serve` as a real subprocess: several workers sharing one ledger and their metrics,
calls in flight drained on SIGTERM, and the batched ledger flushed at shutdown."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import yaml
from gateway_fixtures import KEYS, ledger_rows, metered_tokens, sha256

from broker.testing import OpenAICompatEmulator


def _policy(tmp: Path, emu: OpenAICompatEmulator) -> Path:
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump({
        "version": 1,
        "ledger": f"sqlite:///{tmp / 'usage.db'}",
        "metering": {"durable": False, "flush_interval_s": 3600},  # only the shutdown flush writes
        "routes": [{"id": "local-8b", "provider": "local", "model": "llama-3.1-8b", "model_id": "m",
                    "endpoint": f"{emu.url}/v1", "jurisdiction": "on-prem",
                    "price": {"input_per_mtok": 0.5, "output_per_mtok": 1.5}}],
        "tenants": {"acme": {"residency": ["on-prem"], "api_keys": [{"env": "GATEWAY_KEY_ACME"}]},
                    "globex": {"residency": ["on-prem"], "api_keys": [{"sha256": sha256(KEYS["globex"])}]}},
    }))
    return path


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(policy: Path, port: int, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "broker.cli.main", "serve", "--policy", str(policy), "--port", str(port),
         "--log-level", "warning", *extra],
        env={**os.environ, "GATEWAY_KEY_ACME": KEYS["acme"], **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_ready(base: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("the gateway did not become ready")


def _chat(base: str, key_of: str, text: str, **extra: object) -> httpx.Response:
    return httpx.post(f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {KEYS[key_of]}"},
                      json={"model": "llama-3.1-8b", "messages": [{"role": "user", "content": text}], **extra},
                      timeout=30)


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=40)
    # uvicorn re-raises the signal once it has shut down gracefully: the status says SIGTERM
    assert proc.returncode in (0, -signal.SIGTERM), err
    assert "Traceback" not in err, err
    return err


def test_two_workers_share_the_ledger_and_metrics_and_drain_on_sigterm(tmp_path: Path) -> None:
    with OpenAICompatEmulator() as emu:
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        proc = _serve(_policy(tmp_path, emu), port, "--workers", "2")
        try:
            _wait_ready(base, proc)
            answers = [_chat(base, "acme" if i % 2 else "globex", f"call {i}") for i in range(10)]
            answers.append(_chat(base, "acme", "streamed", stream=True, stream_options={"include_usage": True}))
            assert [a.status_code for a in answers] == [200] * 11
            assert answers[-1].text.rstrip().endswith("data: [DONE]")
            metrics = httpx.get(f"{base}/metrics").text
            counted = sum(float(v) for v in re.findall(
                r'^llama_broker_gateway_requests_total\{[^}]*status="200"[^}]*\} (\S+)$', metrics, re.M))
            assert counted == 11  # summed over both workers
            emu.delay(1.5)  # the next call is in flight when SIGTERM arrives
            slow: list[httpx.Response] = []
            caller = threading.Thread(target=lambda: slow.append(_chat(base, "acme", "in flight")))
            caller.start()
            time.sleep(0.6)
        finally:
            err = _stop(proc) if proc.poll() is None else ""
        caller.join(10)
        assert slow and slow[0].status_code == 200, err
    metered = metered_tokens(tmp_path / "usage.db")
    served = (emu.reported.input_tokens, emu.reported.output_tokens)
    assert emu.reported.calls == 12
    assert (metered["acme"][0] + metered["globex"][0], metered["acme"][1] + metered["globex"][1]) == served
    rows = ledger_rows(tmp_path / "usage.db")
    assert sorted(r["tenant"] for r in rows) == ["acme"] * 7 + ["globex"] * 5


def test_one_worker_serves_and_flushes_on_sigterm(tmp_path: Path) -> None:
    with OpenAICompatEmulator() as emu:
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        proc = _serve(_policy(tmp_path, emu), port)
        try:
            _wait_ready(base, proc)
            reply = _chat(base, "acme", "one worker")
            assert reply.status_code == 200 and reply.headers["x-llama-broker-route"] == "local-8b"
            assert _chat(base, "globex", "x", tenant="acme").status_code == 400  # a body cannot pick one
        finally:
            _stop(proc)
    rows = ledger_rows(tmp_path / "usage.db")
    assert [(r["tenant"], r["input_tokens"]) for r in rows] == [("acme", emu.reported.input_tokens)]
    assert json.loads(rows[0]["tags"]) == {}


def test_an_unset_key_variable_stops_serve_with_one_line(tmp_path: Path) -> None:
    with OpenAICompatEmulator() as emu:
        policy = _policy(tmp_path, emu)
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_KEY_ACME"}
    done = subprocess.run([sys.executable, "-m", "broker.cli.main", "serve", "--policy", str(policy),
                           "--workers", "2"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: CredentialsError:")
    assert "GATEWAY_KEY_ACME" in done.stderr and "Traceback" not in done.stderr
