"""README.md is the front door: its settings table, rule table, quick start and pasted output stay true."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dlp.rules import CATALOGUE, Rule
from dlp.settings import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
CI_RUN = (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def section(heading: str) -> str:
    """The text of one `## heading` section."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", README, re.MULTILINE | re.DOTALL)
    assert match, f"README has no '## {heading}' section"
    return match.group(1)


def table_rows(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows[2:]]


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```[a-z]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("heading", ["Quick start", "Rules", "CLI", "Settings", "How it works", "Adding a rule",
                                     "Development"])
def test_sections_exist(heading):
    assert section(heading).strip()


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
    assert "python3 -m venv --clear .venv" in CI_RUN
    assert "ruff check ." in CI_RUN


def test_quick_start_output_is_what_the_command_prints():
    """The pasted table is the real output of `python -m dlp evaluate examples/` (refresh it when rules change)."""
    pasted = code_blocks(section("Quick start"))[1].rstrip("\n")
    done = subprocess.run([sys.executable, "-m", "dlp", "evaluate", "examples/"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert pasted == done.stdout.rstrip("\n")


# --- rules ------------------------------------------------------------------------------------------

def test_rule_table_lists_every_rule_with_its_metadata():
    rows = table_rows(section("Rules"))
    assert [row[0] for row in rows] == [f"[`{rule_id}`](docs/rules/{rule_id}.md)" for rule_id in CATALOGUE]
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
    assert "local.settings.json" in ignored and ".ci/node/" in ignored
