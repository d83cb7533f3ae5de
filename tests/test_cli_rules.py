"""`python -m dlp rules`: the catalogue as a table and as JSON, from the rule metadata itself; -o on every command."""

from __future__ import annotations

import json

from dlp import cli
from dlp.domain.rules import CATALOGUE


def test_rules_table_lists_every_rule_with_its_metadata(capsys):
    assert cli.main(["rules"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "SEVERITY", "APPLIES", "TO", "REMEDIABLE", "SYNOPSIS"]
    assert [line.split()[0] for line in lines[1:]] == list(CATALOGUE)
    for line, rule in zip(lines[1:], CATALOGUE.values(), strict=True):
        assert line.split()[1] == rule.severity
        assert f"  {rule.applies_to}  " in line and line.endswith(rule.synopsis)
        assert f"  {'yes' if rule.remediable else 'no'}  " in line


def test_rules_json(capsys):
    assert cli.main(["rules", "-o", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [item["id"] for item in document] == list(CATALOGUE)
    export = document[0]
    assert export == {"id": "DLP.ACR.ExportPolicy", "severity": "high", "appliesTo": ["Basic", "Standard", "Premium"],
                      "remediable": True, "synopsis": CATALOGUE["DLP.ACR.ExportPolicy"].synopsis,
                      "recommendation": CATALOGUE["DLP.ACR.ExportPolicy"].recommendation,
                      "links": list(CATALOGUE["DLP.ACR.ExportPolicy"].links)}
    assert next(item for item in document if item["id"] == "DLP.ACR.Firewall")["appliesTo"] == ["Premium"]


def test_rules_rejects_other_formats(capsys):
    assert cli.main(["rules", "--format", "sarif"]) == 2


def test_every_command_with_a_format_takes_o_and_output():
    """The `az` convention: -o / --output, with --format kept for scripts already written."""
    parser = cli.build_parser()
    for argv in (["evaluate", "x.json"], ["scan"], ["rules"]):
        for flag in ("-o", "--output", "--format"):
            assert parser.parse_args([*argv, flag, "json"]).format == "json", (argv, flag)
