"""Reading policy files: only regular files, at most 1 MiB, every problem a `PolicyError` at its line."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from broker.errors import PolicyError
from broker.policy import load_policy, load_policy_text
from broker.policy.loader import MAX_FILE_BYTES

GOOD = ('routes:\n  - {id: gpu, provider: local, model: llama-3.1-8b, jurisdiction: on-prem, '
        'endpoint: "http://127.0.0.1:1/v1"}\ntenants: {default: {residency: any}}\n')


def problems(path: Path) -> list[tuple[int, str]]:
    started = time.monotonic()
    with pytest.raises(PolicyError) as info:
        load_policy(path, env={})
    assert time.monotonic() - started < 5, "a policy load must never hang"
    return [(i.line, i.message) for i in info.value.issues]


def extending(tmp_path: Path, target: str) -> Path:
    path = tmp_path / "team.yaml"
    path.write_text(f"description: team\nextends: {target}\n" + GOOD)
    return path


@pytest.mark.parametrize(("target", "reason"), [
    ("/dev/zero", "not a regular file"),
    ("/dev/null", "not a regular file"),
    ("/", "it is a directory"),
    ('"\\0"', "embedded null byte"),
    ('"a\\0b.yaml"', "embedded null byte"),
    ("missing.yaml", "No such file or directory"),
])
def test_extends_of_anything_but_a_readable_file_is_an_error_at_the_extends_line(
    tmp_path: Path, target: str, reason: str
) -> None:
    [(line, message)] = problems(extending(tmp_path, target))
    assert line == 2 and "cannot read policy file" in message and reason in message


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.yaml")
    [(line, message)] = problems(extending(tmp_path, "pipe.yaml"))
    assert line == 2 and "not a regular file" in message
    with pytest.raises(PolicyError, match="not a regular file"):
        load_policy(tmp_path / "pipe.yaml")


def test_a_top_level_path_that_is_not_a_file(tmp_path: Path) -> None:
    for source, reason in (("/dev/zero", "not a regular file"), (str(tmp_path), "it is a directory"),
                           ("\0", "embedded null byte")):
        with pytest.raises(PolicyError, match=reason):
            load_policy(source, env={})


def test_files_over_the_size_cap_are_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text(GOOD + "#" * MAX_FILE_BYTES + "\n")
    [(_, message)] = problems(extending(tmp_path, "big.yaml"))
    assert f"larger than {MAX_FILE_BYTES} bytes" in message
    just = tmp_path / "just.yaml"
    just.write_text(GOOD + "#" * (MAX_FILE_BYTES - len(GOOD) - 1) + "\n")
    assert len(just.read_bytes()) == MAX_FILE_BYTES
    assert load_policy(just, env={}).routes


def test_invalid_utf8_is_reported_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(GOOD.encode() + b"description: caf\xe9\n")
    [(line, message)] = problems(path)
    assert line == 4 and "not valid UTF-8" in message


def test_control_characters_and_non_string_keys_are_reported_at_their_lines() -> None:
    cases = {
        GOOD + "description: a\x07b\n": (4, "YAML does not allow the character U+0007"),
        GOOD + "2026-01-01: x\n": (4, "Keys should be strings"),
        GOOD + "7: x\n": (4, "Keys should be strings"),
        GOOD.replace("tenants: {default: {residency: any}}", "tenants:\n  default:\n    residency: any\n"
                     "    tags: {2026-01-01: x}"): (6, "tenants.default.tags"),
    }
    for text, (line, fragment) in cases.items():
        with pytest.raises(PolicyError) as info:
            load_policy_text(text, env={})
        assert [(i.line, fragment in i.message) for i in info.value.issues] == [(line, True)], info.value.issues
