"""The documentation stays true: README.md (the front door) and the pages under docs/ and CONTRIBUTING.md keep
their settings table, rule table, quick start and pasted output in step with the code, and every relative link
between them resolves."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dlp.domain.rules import CATALOGUE, Rule
from dlp.settings import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
CI_RUN = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
# Where each table lives since the README split (issue 14).
PAGES = {
    "Quick start": "README.md",
    "Documentation": "README.md",
    "Rules": "docs/rules/README.md",
    "`python -m dlp evaluate`": "docs/cli.md",
    "`python -m dlp scan`": "docs/cli.md",
    "Settings": "docs/operations.md",
    "HTTP re-check and sweep": "docs/operations.md",
    "Log Analytics": "docs/operations.md",
    "Alerts": "docs/operations.md",
    "Delivery guarantees": "docs/operations.md",
    "How it works": "docs/architecture.md",
    "Event responder": "docs/architecture.md",
    "Where each stage lives": "docs/architecture.md",
    "Threat model": "docs/security.md",
    "Securing the HTTP endpoints": "docs/security.md",
    "Adding a rule": "CONTRIBUTING.md",
    "Prerequisites": "docs/deploy.md",
    "Parameters": "docs/deploy.md",
    "Switch to enforce": "docs/deploy.md",
    "Tear down": "docs/deploy.md",
}


def page_text(page: str) -> str:
    return (ROOT / page).read_text(encoding="utf-8")


def section(heading: str, page: str | None = None) -> str:
    """The text of one `## heading` section of the page it lives on (`# title` pages: the title's body)."""
    page = page or PAGES[heading]
    text = page_text(page)
    match = re.search(rf"^#{{1,2}} {re.escape(heading)}\n(.*?)(?=^#{{1,2}} |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"{page} has no '## {heading}' section"
    return match.group(1)


def table_rows(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows[2:]]


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```[a-z]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("heading", sorted(PAGES))
def test_sections_exist(heading):
    assert section(heading).strip()


def test_readme_is_a_front_door():
    """At most about 10 KB, and one link per audience to each page of the split."""
    assert len(README.encode("utf-8")) <= 10_500
    links = re.findall(r"\]\(([^)#]+)\)", section("Documentation"))
    for page in ("docs/deploy.md", "docs/operations.md", "docs/cli.md", "docs/rules/README.md", "docs/security.md",
                 "docs/architecture.md", "CONTRIBUTING.md"):
        assert page in links, page


# --- quick start ----------------------------------------------------------------------------------

def quick_start_commands() -> list[str]:
    commands = [line.strip() for line in code_blocks(section("Quick start"))[0].splitlines() if line.strip()]
    assert len(commands) == 2, "the quick start is exactly two commands"
    return commands


def test_quick_start_is_the_documented_two_commands():
    assert quick_start_commands() == [
        "python3 -m venv .venv && .venv/bin/pip install -r requirements-dev.txt && .venv/bin/python -m dlp evaluate examples/",
        "npm install --prefix .ci/node azurite@3 && .venv/bin/python -m pytest -q",
    ]


def test_ci_runs_the_quick_start_install_and_test_commands():
    install, tests = quick_start_commands()
    for part in [*tests.split(" && "), install.split(" && ")[1]]:
        assert part in CI_RUN, f".ci/run does not run {part!r}"
    assert "set -euo pipefail" in CI_RUN
    assert '"$python" -m venv --clear .venv' in CI_RUN and "OLDEST=" in CI_RUN and "NEWEST=" in CI_RUN
    assert "ruff check ." in CI_RUN


def test_quick_start_output_is_what_the_command_prints():
    """The whole table on docs/cli.md and its summary line in the README are the real output of
    `python -m dlp evaluate examples/` (refresh them when rules or examples change)."""
    done = subprocess.run([sys.executable, "-m", "dlp", "evaluate", "examples/"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 1
    printed = done.stdout.rstrip("\n")
    assert code_blocks(section("What `evaluate examples/` prints", "docs/cli.md"))[0].rstrip("\n") == printed
    assert code_blocks(section("Quick start"))[1].rstrip("\n") == printed.splitlines()[-1]


# --- rules ------------------------------------------------------------------------------------------

def test_rule_table_lists_every_rule_with_its_metadata():
    rows = table_rows(section("Rules"))
    assert [row[0] for row in rows] == [f"[`{rule_id}`]({rule_id}.md)" for rule_id in CATALOGUE]
    for row, rule in zip(rows, CATALOGUE.values(), strict=True):
        assert row[1] == rule.severity
        applies = "every SKU" if rule.skus == Rule.skus else " and ".join(rule.skus) if len(rule.skus) > 1 else (
            f"{rule.skus[0]} only")
        assert row[2].startswith(applies), (rule.id, row[2])
        assert row[4].startswith("yes" if rule.remediable else "no"), rule.id
        assert (ROOT / "docs" / "rules" / f"{rule.id}.md").is_file()


# --- settings ---------------------------------------------------------------------------------------

def test_settings_table_lists_every_setting_with_its_default():
    rows = {row[0].strip("`"): row for row in table_rows(section("Settings"))}
    assert list(rows) == [s.name for s in SETTINGS]
    for setting in SETTINGS:
        default = rows[setting.name][1]
        assert default == (f"`{setting.default}`" if setting.default else ""), setting.name
        assert rows[setting.name][2], setting.name


def test_local_settings_sample_lists_exactly_the_settings():
    sample = json.loads((ROOT / "local.settings.sample.json").read_text(encoding="utf-8"))
    assert sample["IsEncrypted"] is False
    values = sample["Values"]
    assert list(values) == ["FUNCTIONS_WORKER_RUNTIME", *(s.name for s in SETTINGS)]
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    for setting in SETTINGS:
        assert values[setting.name] == setting.example, setting.name
    assert values["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"


def test_gitignore_keeps_local_secrets_and_node_modules_out():
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    # no trailing slash: a .venv or .ci/node that is a symlink (to a shared install) is ignored too
    assert "local.settings.json" in ignored and ".ci/node" in ignored and ".venv" in ignored


def test_no_virtual_environment_or_node_modules_is_committed():
    """A committed `.venv` symlink would make the quick start's `python3 -m venv .venv` (and `.ci/run`'s
    `--clear`) write into whatever it points at."""
    tracked = subprocess.run(["git", "ls-files", "--", ".venv", ".ci/node", "local.settings.json"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    assert tracked == []


# --- links --------------------------------------------------------------------------------------------

DOC_FILES = sorted({ROOT / "README.md", ROOT / "CONTRIBUTING.md", *(ROOT / "docs").rglob("*.md")})
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def without_code_blocks(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def without_code(text: str) -> str:
    """Markdown outside fenced blocks and inline code, where a `[x](y)` is text, not a link."""
    return re.sub(r"`[^`\n]*`", "", without_code_blocks(text))


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} (.+)$", without_code_blocks(path.read_text(encoding="utf-8")), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        if count:
            seen[f"{slug}-{count}"] = 1
    return set(seen)


def relative_links(path: Path) -> list[str]:
    return [target for target in LINK.findall(without_code(path.read_text(encoding="utf-8")))
            if not re.match(r"[a-z][a-z0-9+.-]*:", target)]


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    broken = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists() or ROOT not in linked.parents:
            broken.append(f"{target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target} (no heading #{anchor} in {linked.relative_to(ROOT)})")
    assert not broken, f"{path.relative_to(ROOT)}: {broken}"


def test_link_check_sees_the_cross_page_links():
    """The checker itself finds the links between pages and GitHub's anchors, so a moved heading would fail it."""
    assert "operations.md#settings" in relative_links(ROOT / "docs" / "deploy.md")
    assert "python--m-dlp-scan" in anchors(ROOT / "docs" / "cli.md")
    assert "post-apirecheck" in anchors(ROOT / "docs" / "operations.md")
    assert "settings" not in anchors(ROOT / "README.md")


def test_contributing_writes_no_test_counts_by_hand():
    """Counts go stale the day a test is added: pytest prints them."""
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    assert not re.search(r"\d[\d,]*\s+tests\b|all\s+\d[\d,]*\b", text)
    assert "--disableTelemetry" in text                 # Azurite offline
