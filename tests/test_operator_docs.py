"""docs/deploy.md's operator sections (issue 24) stay true: costs with their sources, the roll-back steps, the
versions (the Function App's Python is infra's), one Entra recipe for /api/recheck that security.md follows too,
and the Premium test registry note."""

from __future__ import annotations

import re
from pathlib import Path

from tests.test_package import deployed_python

ROOT = Path(__file__).resolve().parent.parent
TOKEN = 'az account get-access-token --scope "api://'


def section(heading: str, page: str) -> str:
    """A `## heading` section up to the next `## ` line (code blocks here hold `# comments`)."""
    text = (ROOT / page).read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"{page} has no '## {heading}' section"
    return match.group(1)


def test_the_operator_sections_exist_and_costs_name_their_sources():
    costs = section("Costs", "docs/deploy.md")
    for service in ("functions", "storage", "monitor", "communication-services", "event-grid"):
        assert f"https://azure.microsoft.com/pricing/details/{service}/" in costs, service
    assert "per registry per day" in costs and "Application Insights" in costs
    for heading in ("Stop enforcing, roll back", "Versions", "Entra app registration for /api/recheck",
                    "Testing the event path needs a Premium registry"):
        assert section(heading, "docs/deploy.md").strip(), heading


def test_roll_back_says_what_survives_each_step():
    rows = [line for line in section("Stop enforcing, roll back", "docs/deploy.md").splitlines()
            if re.match(r"\| \d\. ", line)]
    assert [row.split("|")[1].strip() for row in rows] == ["1. Audit only", "2. Stop the function app",
                                                           "3. Remove the event subscriptions", "4. Remove everything"]
    assert all(len([c for c in row.split("|") if c.strip()]) == 4 for row in rows)


def test_the_documented_function_app_python_is_the_deployed_one():
    versions = section("Versions", "docs/deploy.md")
    assert f"| Python for the Function App | {deployed_python()} (`infra/app/api.bicep`)" in versions


def test_one_entra_recipe_for_recheck_in_both_pages():
    deploy = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    security = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    assert "--resource api://" not in deploy + security                   # the disagreement issue 24 found
    assert TOKEN in deploy and TOKEN in security
    assert "deploy.md#entra-app-registration-for-apirecheck" in security
    recipe = section("Entra app registration for /api/recheck", "docs/deploy.md")
    for step in ("--identifier-uris", "user_impersonation", "04b07795-8ddb-461a-bbee-02f9e1bf7b46",
                 "preAuthorizedApplications", "appRoleAssignmentRequired=true", "Application Developer"):
        assert step in recipe, step
