"""`python -m dlp rules`: the rule catalogue (ID, severity, applies to, remediable, synopsis) as a table or JSON,
so a pipeline author can pick `--rule` IDs and see what `--fail-on` will gate on without reading the source."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from dlp.cli.console import EXIT_OK
from dlp.domain.rules import Rule, rules

NAME = "rules"
FORMATS = ("table", "json")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(NAME, help="list the rule catalogue",
                                   description="List every rule: ID, severity, the SKUs it applies to, whether the "
                                               "responder remediates it, and its synopsis.")
    parser.add_argument("-o", "--output", "--format", dest="format", choices=FORMATS, default="table",
                        help="output format (default: table)")
    parser.set_defaults(run=run)


def to_json(rule: Rule) -> dict[str, Any]:
    return {"id": rule.id, "severity": rule.severity, "appliesTo": list(rule.skus), "remediable": rule.remediable,
            "synopsis": rule.synopsis, "recommendation": rule.recommendation, "links": list(rule.links)}


def render_table(catalogue: tuple[Rule, ...]) -> str:
    header = ("ID", "SEVERITY", "APPLIES TO", "REMEDIABLE", "SYNOPSIS")
    rows = [(r.id, r.severity, r.applies_to, "yes" if r.remediable else "no", r.synopsis) for r in catalogue]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1]
                     for row in [header, *rows])


def run(args: argparse.Namespace) -> int:
    catalogue = rules()
    if args.format == "json":
        text = json.dumps([to_json(rule) for rule in catalogue], indent=2)
    else:
        text = render_table(catalogue)
    sys.stdout.write(text + "\n")
    return EXIT_OK
