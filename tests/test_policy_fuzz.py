"""Generated policy documents: every failure is a `PolicyError`, and every issue has a line.

Documents are built from the schema's own keys, odd keys (numbers, dates, booleans, null) and
odd values (control characters, paths that are not files), dumped as YAML, and some of them
then have a raw character spliced in.  Whatever comes out, loading either succeeds or raises
`PolicyError` whose issues all point at a line of the document (never line 0).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.errors import PolicyError
from broker.policy import load_policy_text
from broker.policy.schema import schema_keys

KEYS = sorted(schema_keys()) + ["options", "endpoit_id", "stream_usage", "project", "location", "regoin"]
ODD_KEYS = st.one_of(st.integers(-3, 3), st.booleans(), st.none(), st.just(dt.date(2026, 1, 1)), st.floats(0, 2))
TEXT = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x9F), max_size=6)
PATHS = st.sampled_from(["/dev/zero", "/dev/null", "\0", "", "/", ".", "no-such-file.yaml", "a\0b.yaml"])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), TEXT,
    st.sampled_from(["us", "eu", "on-prem", "any", "local", "bedrock", "vertex", "groq", "azure", "llama-3.3-70b",
                     "us-east-1", "http://127.0.0.1:1/v1", "${UNSET}", "${X:-y}", "$$"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), ODD_KEYS), inner, max_size=4),
    ),
    max_leaves=12,
)
ROUTE = st.fixed_dictionaries(
    {"id": st.sampled_from(["a", "b"]), "provider": st.sampled_from(["local", "bedrock", "vertex", "groq", "azure", "x"]),
     "model": st.sampled_from(["llama-3.3-70b", "llama-3.1-8b", "nope"])},
    optional={"region": st.sampled_from(["us-east-1", "eu-central-1", "us-east5"]), "endpoint": SCALARS,
              "jurisdiction": st.sampled_from(["on-prem", "us", "mars"]), "options": VALUES, "enabled": SCALARS,
              "api_key_env": SCALARS},
)
DOCUMENTS = st.fixed_dictionaries(
    {},
    optional={
        "routes": st.one_of(st.lists(ROUTE, max_size=3), VALUES),
        "tenants": st.dictionaries(st.one_of(st.sampled_from(["default", "t"]), ODD_KEYS), VALUES, max_size=2),
        "extends": st.one_of(PATHS, st.lists(PATHS, max_size=2)),
        "default_residency": VALUES,
        "catalog": VALUES,
    },
).flatmap(lambda doc: st.dictionaries(st.one_of(st.sampled_from(KEYS), ODD_KEYS), VALUES, max_size=2).map(
    lambda extra: {**extra, **doc}))
SPLICE = st.sampled_from(["\x00", "\x01", "\x07", "\x1b", "\x7f", "\x85", "\ufeff", "\t", ":", "{", "[", "&a", "*a",
                          "!!python/object:os.system", "? ", "- ", "\n  ", "'", '"', "%YAML 1.1\n---\n"])


def dump(doc: dict[Any, Any]) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, default_flow_style=False)


@st.composite
def documents(draw: st.DrawFn) -> str:
    text = dump(draw(DOCUMENTS))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(SPLICE) + text[at:]
    return text


def check(text: str) -> None:
    try:
        load_policy_text(text, name="fuzz.yaml", env={})
    except PolicyError as exc:
        lines = text.count("\n") + 1
        for issue in exc.issues:
            if issue.file == "fuzz.yaml" and text.strip():
                assert 1 <= issue.line <= lines, (issue, text)


@settings(max_examples=300, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_generated_documents_fail_only_as_policy_errors_with_lines(text: str) -> None:
    check(text)


def test_known_troublemakers() -> None:
    """Each of these once raised a raw exception, hung, or reported line 0."""
    for text in (
        'extends: "\\0"\n', "extends: /dev/zero\n", "extends: /\n", "extends: [/dev/null]\n",
        "routes:\n  - id: a\x07b\n", "a: 1\nb: \x01\n", "2026-01-01: x\n", "routes: []\n1: 2\n",
        "tenants:\n  t:\n    residency: [us]\n    tags:\n      2026-01-01: x\n", "tenants:\n  5: {residency: [us]}\n",
    ):
        check(text)
