"""Generated policy documents: schema-shaped ones and hostile ones, every one a load or a `PolicyError`.

Hostile documents: YAML bombs (aliases of aliases), nesting thousands deep, huge and odd numbers,
unicode keys and values, duplicate keys and tenants, `extends:` aimed at /dev/zero, /dev/stdin,
/proc/self/mem, directories, a FIFO, a symlink loop, itself, a file over the size cap, NUL bytes
and missing files, and YAML tags that would construct Python objects.
"""

from __future__ import annotations

from typing import Any

import pytest
import reliability

from broker.errors import PolicyError
from broker.policy import load_policy_text


@pytest.fixture(scope="module")
def figures() -> dict[str, Any]:
    return reliability.policies()


def test_no_generated_document_raises_anything_but_policy_error(figures: dict[str, Any]) -> None:
    assert figures["documents"] == 300
    assert figures["raw_exception_detail"] == {}


def test_no_generated_document_is_slow_to_load(figures: dict[str, Any]) -> None:
    assert figures["slowest_load_s"] < 5.0, figures["slowest_document_start"]


def test_an_integer_of_5000_digits_is_a_policy_error_at_its_line() -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy_text("version: 1\nretry: {max_attempts_per_route: " + "1" * 5000 + "}\n", name="g.yaml", env={})
    assert str(caught.value).startswith("g.yaml:2: ")
