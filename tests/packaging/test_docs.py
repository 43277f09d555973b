"""The docs: the generated reference is current, links resolve, and tables match what the chart ships."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging_kit import OPERATOR_CHART, ROOT, by_kind, hack, render, runbook_commands

DOCS = ROOT / "docs"
PAGES = ("install.md", "upgrade.md", "reference.md", "runbook-failover.md")


def test_reference_is_generated_from_the_models() -> None:
    docgen = hack("docgen")
    assert (DOCS / "reference.md").read_text() == docgen.render(), "run `make docs`"


def test_reference_documents_every_field() -> None:
    from voicefleet_operator import crdgen

    text = (DOCS / "reference.md").read_text()
    docgen = hack("docgen")
    for kind in crdgen.KINDS:
        for model in (*docgen.reachable(kind.spec), *docgen.reachable(kind.status)):
            assert f"### {model.__name__}\n" in text
            for name, field in model.model_fields.items():
                assert f"| `{field.alias or name}` |" in text, f"{model.__name__}.{name}"


def _anchor(heading: str) -> str:
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_resolve(page: str) -> None:
    text = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", (DOCS / page).read_text(), flags=re.S))
    links = re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]+))?\)", text)
    checked = 0
    for target, anchor in links:
        if target.startswith(("http://", "https://")):
            continue
        path = (DOCS / page).parent / target if target else DOCS / page
        assert path.exists(), f"{page}: broken link {target}"
        if anchor:
            headings = {_anchor(h) for h in re.findall(r"^#+ (.+)$", path.read_text(), re.M)}
            assert anchor in headings, f"{page}: no heading #{anchor} in {target or page}"
        checked += 1
    if page != "reference.md":
        assert checked, f"{page} links nowhere"


def test_install_guide_lists_exactly_the_alerts_the_chart_ships() -> None:
    (rule,) = by_kind(render(OPERATOR_CHART, "all-features.yaml"), "PrometheusRule")
    shipped = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    documented = set(re.findall(r"^\| (VoiceFleet\w+) \|", (DOCS / "install.md").read_text(), re.M))
    assert documented == shipped


def test_runbook_names_the_alerts_that_lead_to_it() -> None:
    (rule,) = by_kind(render(OPERATOR_CHART, "all-features.yaml"), "PrometheusRule")
    urls = {
        r["alert"]: r["annotations"]["runbook_url"]
        for g in rule["spec"]["groups"]
        for r in g["rules"]
        if "runbook_url" in r.get("annotations", {})
    }
    text = (DOCS / "runbook-failover.md").read_text()
    assert urls and all(f"**{alert}**" in text for alert in urls)
    assert all(url.endswith("docs/runbook-failover.md") for url in urls.values())


def test_runbook_pins_and_hands_back_with_one_command_each() -> None:
    assert len(runbook_commands("--type=merge")) == 1
    assert len(runbook_commands('"op":"remove","path":"/spec/override"')) == 1


def test_chart_readme_level_docs_exist() -> None:
    for page in PAGES:
        assert (DOCS / page).stat().st_size > 1000, page
    assert Path(OPERATOR_CHART / "values.yaml").read_text().count("# --") > 30, "values.yaml is documented"
