"""The benchmark's own virtual environment, `.bench/venv`, for the libraries compared against.

LiteLLM is measured beside the broker but is never a dependency of the package: it is installed
here, on first use, and run in a subprocess of this venv's interpreter with
`LITELLM_LOCAL_MODEL_COST_MAP=True` so it never fetches its price map.  Other benchmarks share the
venv (and may install `litellm[proxy]` into it); a file lock keeps two installs from racing.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".bench" / "venv"
PYTHON = VENV / "bin" / "python"

__all__ = ["PYTHON", "VENV", "ensure", "offline_env"]


def offline_env() -> dict[str, str]:
    """The environment LiteLLM runs in: its bundled cost map, no telemetry, no proxies."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_TELEMETRY="False", LITELLM_LOG="ERROR",
               PYTHONDONTWRITEBYTECODE="1")
    return env


def _has(module: str) -> bool:
    if not PYTHON.exists():
        return False
    probe = subprocess.run([str(PYTHON), "-c", f"import {module}"], capture_output=True, env=offline_env())
    return probe.returncode == 0


def ensure(*packages: str, module: str = "litellm") -> Path:
    """The venv's interpreter, with `packages` installed when `module` does not import yet."""
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV.parent / "venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _has(module):
            return PYTHON
        if not PYTHON.exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        print(f"installing {' '.join(packages)} into {VENV} (first use only) ...", file=sys.stderr)
        subprocess.run([str(PYTHON), "-m", "pip", "install", "-q", *packages], check=True, env=offline_env())
    return PYTHON


if __name__ == "__main__":
    print(ensure("litellm", "aiohttp"))
