"""Start one emulator per provider and point the embedded default policy at them.

    from broker.testing import EmulatorSuite
    with EmulatorSuite() as suite, suite.applied():
        with Broker() as broker:
            broker.chat(model="llama-3.3-70b", messages=[...])

`EmulatorSuite.env` holds the environment variables the embedded default policy reads
(`LLAMA_BROKER_<PROVIDER>_URL`, fake credentials), so inside `suite.applied()` a plain
`Broker()` sends every call to loopback.  The demo and the test suite both use it.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from .server import Emulator

if sys.version_info >= (3, 11):
    from typing import Self
else:
    from typing_extensions import Self

__all__ = ["EMULATORS", "EmulatorSuite"]

#: provider name -> "module:Class" of its emulator
EMULATORS: dict[str, str] = {
    "local": "broker.testing.openai_compat:OpenAICompatEmulator",
    "bedrock": "broker.testing.bedrock:BedrockEmulator",
    "vertex": "broker.testing.vertex:VertexEmulator",
    "azure": "broker.testing.azure:AzureEmulator",
    "groq": "broker.testing.groq:GroqEmulator",
}

#: how the embedded default policy's endpoint for each provider is built from an emulator's URL
_ENDPOINT_SUFFIX = {"local": "/v1", "azure": "/models"}

FAKE_CREDENTIALS: dict[str, str] = {
    "AWS_ACCESS_KEY_ID": "AKIDLOOPBACKEMULATOR",
    "AWS_SECRET_ACCESS_KEY": "loopback-emulator-secret",
    "AZURE_AI_API_KEY": "loopback-azure-key",
    "GROQ_API_KEY": "gsk_loopback",
    "VERTEX_ACCESS_TOKEN": "ya29.loopback",
    "LLAMA_BROKER_VERTEX_PROJECT": "loopback-project",
}


class EmulatorSuite:
    """All five provider emulators on loopback, started together."""

    def __init__(self, providers: list[str] | None = None, **emulator_options: object) -> None:
        self.emulators: dict[str, Emulator] = {}
        for name in providers or list(EMULATORS):
            module, _, cls = EMULATORS[name].partition(":")
            self.emulators[name] = getattr(importlib.import_module(module), cls)(**emulator_options)

    def __getitem__(self, provider: str) -> Emulator:
        return self.emulators[provider]

    def start(self) -> Self:
        for emulator in self.emulators.values():
            emulator.start()
        return self

    def stop(self) -> None:
        for emulator in self.emulators.values():
            emulator.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def env(self) -> dict[str, str]:
        """Environment that aims the embedded default policy at these emulators."""
        env = dict(FAKE_CREDENTIALS)
        for name, emulator in self.emulators.items():
            env[f"LLAMA_BROKER_{name.upper()}_URL"] = emulator.url + _ENDPOINT_SUFFIX.get(name, "")
        return env

    @contextmanager
    def applied(self, environ: Mapping[str, str] | None = None) -> Iterator[dict[str, str]]:
        """Set `env` in `os.environ` for the duration of the block, then restore it."""
        env = {**self.env, **(environ or {})}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield env
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def reported_tokens(self) -> tuple[int, int]:
        """Input and output tokens all emulators reported, summed."""
        return (
            sum(e.reported.input_tokens for e in self.emulators.values()),
            sum(e.reported.output_tokens for e in self.emulators.values()),
        )
