"""The Groq, Azure, Vertex and local catalog rows the shipped policies use: checked, dated and cited."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from broker.policy.catalog import Catalog, load_catalog

POLICIES = [Path("policies/default.yaml"), *sorted(Path("policies/examples").glob("*.yaml"))]
CHECKED = "checked 2026-12-01"


@pytest.fixture(scope="module")
def cat() -> Catalog:
    return load_catalog()


def _used_rows() -> set[tuple[str, str, str | None]]:
    used = set()
    for path in POLICIES:
        for route in (yaml.safe_load(path.read_text()) or {}).get("routes") or ():
            if route.get("provider") in ("groq", "azure", "vertex"):
                used.add((route["provider"], route["model"], route.get("region")))
    return used


def test_every_groq_azure_and_vertex_row_a_policy_uses_is_dated(cat: Catalog) -> None:
    used = _used_rows()
    assert used  # the shipped policies do use these providers
    for provider, model, region in sorted(used, key=str):
        entry = cat.find(provider, model, region)
        assert entry is not None, (provider, model, region)
        assert CHECKED in (entry.lifecycle.note or ""), (provider, model, region)


def test_groq_llama_rows_carry_the_reported_decommissioning(cat: Catalog) -> None:
    today = dt.date(2026, 12, 1)
    rows = {e.model_id: e.lifecycle for e in cat.entries_for(provider="groq")}
    assert rows["llama-3.3-70b-versatile"].is_retired(today)
    for model_id, date in [("llama-3.1-8b-instant", "2026-08-16"),
                           ("meta-llama/llama-4-scout-17b-16e-instruct", "2026-07-17"),
                           ("meta-llama/llama-4-maverick-17b-128e-instruct", "2026-03-09")]:
        assert rows[model_id].status == "deprecated"
        assert f"reported decommissioned {date}" in (rows[model_id].note or "")
        assert "[S]" in (rows[model_id].note or "")  # the sources are cited, tagged secondary


def test_azure_maverick_limits_and_tools_follow_azures_model_table(cat: Catalog) -> None:
    caps = cat.find("azure", "llama-4-maverick", "global-standard").capabilities  # type: ignore[union-attr]
    assert (caps.context_window, caps.max_output_tokens, caps.tools) == (1_000_000, 1_000_000, False)
