"""Every rule in the catalogue has a page docs/rules/<ID>.md that agrees with the rule's metadata.

The page is what alerts link to (DLP_RULE_DOCS_URL), so its severity, synopsis, recommendation and
links must not drift from the rule module; and its "Configure with Azure template" example must pass the rule.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dlp.domain.model import PASS
from dlp.domain.rules import rules
from dlp.domain.rules.base import Rule
from dlp.inputs.documents import registries_from_document

DOCS = Path(__file__).resolve().parent.parent / "docs" / "rules"
NOT_RULE_PAGES = {"readme.md", "index.md"}
SECTIONS = ("SYNOPSIS", "DESCRIPTION", "RECOMMENDATION", "EXAMPLES", "RESPONDER BEHAVIOUR", "NOTES", "LINKS")
TEMPLATE_SCHEMA = "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"

RULES = rules()


def _page(rule: Rule) -> str:
    path = DOCS / f"{rule.id}.md"
    assert path.is_file(), f"{rule.id}: no page {path.relative_to(DOCS.parent.parent)}"
    return path.read_text(encoding="utf-8")


def _front_matter(text: str) -> dict[str, str]:
    lines = text.splitlines()
    assert lines and lines[0].strip() == "---", "the page must start with YAML front matter (---)"
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if line.strip() == "---":
            return fields
        key, sep, value = line.partition(":")
        assert sep, f"front matter line is not 'key: value': {line!r}"
        fields[key.strip()] = value.strip().strip("'\"")
    raise AssertionError("front matter is not closed with ---")


def _blocks(text: str, level: str) -> dict[str, str]:
    """Body of each heading of the given level ('##' or '###'), ignoring lines inside fenced code."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"^#{1,6} ", line):
            hashes, _, title = line.partition(" ")
            if hashes == level:
                current = found.setdefault(title.strip(), [])
                continue
            if len(hashes) < len(level):
                current = None
                continue
        if current is not None:
            current.append(line)
    return {title: "\n".join(body) for title, body in found.items()}


def _plain(text: str) -> str:
    """Text as a reader sees it: code spans unwrapped, line breaks and runs of spaces collapsed."""
    return " ".join(text.replace("`", "").split())


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_front_matter_agrees_with_the_rule(rule: Rule) -> None:
    fields = _front_matter(_page(rule))
    assert fields.get("severity") == rule.severity
    assert fields.get("remediable") == ("yes" if rule.remediable else "no")
    assert fields.get("pillar") == "Security"
    assert fields.get("resource") == "Container Registry"
    assert fields.get("resourceType") == "Microsoft.ContainerRegistry/registries"
    assert fields.get("category"), "category is empty"


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_page_has_a_title_and_every_section(rule: Rule) -> None:
    text = _page(rule)
    assert re.search(r"^# \S", text, re.MULTILINE), "no '# Title' line"
    sections = _blocks(text, "##")
    missing = [name for name in SECTIONS if not sections.get(name, "").strip()]
    assert not missing, f"missing or empty sections: {missing}"
    examples = _blocks(sections["EXAMPLES"], "###")
    for name in ("Configure with Bicep", "Configure with Azure template", "Configure with Azure CLI"):
        assert "```" in examples.get(name, ""), f"EXAMPLES has no '{name}' snippet"


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_synopsis_holds_the_rules_synopsis(rule: Rule) -> None:
    assert _plain(rule.synopsis) in _plain(_blocks(_page(rule), "##").get("SYNOPSIS", ""))


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_recommendation_holds_the_rules_recommendation(rule: Rule) -> None:
    assert _plain(rule.recommendation) in _plain(_blocks(_page(rule), "##").get("RECOMMENDATION", ""))


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_every_link_of_the_rule_is_on_the_page(rule: Rule) -> None:
    text = _page(rule)
    missing = [link for link in rule.links if link not in text]
    assert not missing, f"links of the rule not on its page: {missing}"


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_azure_template_example_passes_the_rule(rule: Rule) -> None:
    examples = _blocks(_blocks(_page(rule), "##")["EXAMPLES"], "###")
    snippet = re.search(r"```json\n(.*?)\n```", examples.get("Configure with Azure template", ""), re.DOTALL)
    assert snippet, "no ```json block under 'Configure with Azure template'"
    resources = json.loads(snippet.group(1))
    template = {"$schema": TEMPLATE_SCHEMA, "contentVersion": "1.0.0.0",
                "resources": resources if isinstance(resources, list) else [resources]}
    registries = registries_from_document(template, f"docs/rules/{rule.id}.md")
    assert len(registries) == 1
    finding = rule.evaluate(registries[0])
    assert finding.status == PASS, finding.message


def test_no_page_for_a_rule_outside_the_catalogue() -> None:
    known = {rule.id for rule in RULES}
    pages = {path.stem for path in DOCS.glob("*.md") if path.name.lower() not in NOT_RULE_PAGES}
    assert not pages - known, f"pages for rule IDs not in the catalogue: {sorted(pages - known)}"
