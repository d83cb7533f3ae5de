"""Assessments -> text: a table for people, JSON for tools, SARIF for code scanning, JUnit XML for CI test reports.

Independent of argparse and of files so that `dlp evaluate`, `dlp scan` and the HTTP
re-check print the same thing: every function here takes Assessments and returns values.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from dlp import __version__
from dlp.cli import sarif_locations
from dlp.domain.model import FAIL, SEVERITIES, SUPPRESSED, UNKNOWN, Assessment, Finding, Registry
from dlp.domain.rules import CATALOGUE, Rule
from dlp.ids import fold
from dlp.inputs.terraform import is_address
from dlp.sanitize import clean

FORMATS = ("table", "json", "sarif", "junit")

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
TOOL_NAME = "acr-dlp"

# A failing finding's SARIF level follows its severity; `unknown` is a `note` (see sarif_level).
SARIF_LEVELS = {"high": "error", "medium": "warning", "low": "note"}
# GitHub code scanning ranks security alerts by this score: >= 7 high, >= 4 medium, else low.
SECURITY_SEVERITY = {"high": "8.0", "medium": "5.5", "low": "3.0"}
SARIF_TAGS = ("security", "azure", "container-registry", "data-loss-prevention")
# GitHub code scanning: a run of more than this many results is rejected, and only the most severe are shown
SARIF_RESULT_LIMIT, SARIF_SHOWN = 25_000, 5_000

# statuses the table and SARIF show; pass / not-applicable stay quiet; a suppressed finding stays visible, marked
_ATTENTION = (FAIL, UNKNOWN, SUPPRESSED)


# --- JSON -------------------------------------------------------------------------------------

def to_json(assessments: Iterable[Assessment]) -> list[dict[str, Any]]:
    """The `--format json` contract: one `Assessment.to_json()` per registry, in input order."""
    return [assessment.to_json() for assessment in assessments]


def render_json(assessments: Iterable[Assessment]) -> str:
    return json.dumps(to_json(assessments), indent=2)


# --- table ------------------------------------------------------------------------------------

def _severity_rank(finding: Finding) -> int:
    return SEVERITIES.index(finding.severity) if finding.severity in SEVERITIES else len(SEVERITIES)


def attention(assessment: Assessment) -> list[Finding]:
    """Findings a person must look at: failures first, then unknowns, most severe first."""
    picked = [f for f in assessment.findings if f.status in _ATTENTION]
    return sorted(picked, key=lambda f: (_ATTENTION.index(f.status), _severity_rank(f)))


def summary(assessments: Sequence[Assessment]) -> str:
    """One line: how many registries, how many compliant, failing and unknown findings by severity
    (both counted: `--fail-on unknown` gates on the second)."""
    if not assessments:
        return "No registries evaluated."
    compliant = sum(1 for a in assessments if a.compliant)

    def count(status: str) -> str:
        found = [f for a in assessments for f in a.findings if f.status == status]
        return f"{len(found)} ({', '.join(f'{sum(1 for f in found if f.severity == s)} {s}' for s in SEVERITIES)})"

    noun = "registry" if len(assessments) == 1 else "registries"
    suppressed = sum(1 for a in assessments for f in a.findings if f.status == SUPPRESSED)
    accepted = f"; suppressed findings: {suppressed}" if suppressed else ""
    return (f"{len(assessments)} {noun}: {compliant} compliant, {len(assessments) - compliant} not compliant; "
            f"failing findings: {count(FAIL)}; unknown findings: {count(UNKNOWN)}{accepted}.")


def render_table(assessments: Sequence[Assessment]) -> str:
    """A registry per row (name, SKU, compliant, counts, source), its failing and unknown findings under it."""
    header = ("REGISTRY", "SKU", "COMPLIANT", "FAIL", "UNKNOWN", "SOURCE")
    rows = []
    for a in assessments:
        fails = sum(1 for f in a.findings if f.status == FAIL)
        unknown = sum(1 for f in a.findings if f.status == UNKNOWN)
        rows.append((a.registry.name, a.registry.sku, "yes" if a.compliant else "NO", str(fails), str(unknown),
                     a.registry.source))
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header[:-1])]
    rule_width = max([len(f.rule_id) for a in assessments for f in attention(a)] + [0])

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=False))) + "  " + cells[-1]

    out = [line(header)]
    for a, row in zip(assessments, rows, strict=True):
        out.append(line(row))
        for f in attention(a):
            out.append(f"    {f.status:<7}  {f.severity:<6}  {f.rule_id:<{rule_width}}  {_one_line(f.message)}"
                       f"{_accepted(f)}")
    out.append("")
    out.append(summary(assessments))
    return "\n".join(out)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _accepted(finding: Finding) -> str:
    """The table's marker of a suppressed finding: what it was, why it is accepted, until when."""
    if finding.status != SUPPRESSED:
        return ""
    until = f", until {finding.expires}" if finding.expires else ""
    return f"  [was {finding.suppressed}; suppressed{until}: {clean(finding.justification, 200)}]"


# --- SARIF ------------------------------------------------------------------------------------

def sarif_level(finding: Finding) -> str:
    """`fail` -> error / warning / note by severity. `unknown` -> note: a template value we could not
    verify must stay visible in code scanning (a `kind: review` result with level `none` would be hidden)."""
    status = finding.suppressed if finding.status == SUPPRESSED else finding.status
    if status == FAIL:
        return SARIF_LEVELS.get(finding.severity, "warning")
    return "note"


def artifact_uri(source: str) -> str:
    """A file path as a SARIF artifact URI: relative paths stay relative (forward slashes, percent-encoded),
    so code scanning can place them in the repository; absolute paths become file:// URIs. (With a source root
    known, `sarif_locations.Artifacts` makes every path under it repository-relative instead.)"""
    return sarif_locations.plain_uri(source)


def line_of(text: str, registry: Registry) -> int:
    """Best-effort 1-based line where a registry is declared in its file's text (pure: the caller reads
    the file): its ARM ID or Terraform address, else `"name": "<name>"`, else the first registries `type`; 1 when
    none. Locating many registries of one file: build one `sarif_locations.LineIndex` and ask it each time."""
    return sarif_locations.LineIndex(text).line_of(registry)


def sarif_result_count(assessments: Sequence[Assessment]) -> int:
    """How many results `to_sarif` writes: one per failing or unknown finding."""
    return sum(len(attention(assessment)) for assessment in assessments)


def sarif_limit_warning(assessments: Sequence[Assessment]) -> str:
    """"" when GitHub code scanning takes the log; else what to do (it rejects a run of more than 25,000 results
    and shows only the 5,000 most severe)."""
    count = sarif_result_count(assessments)
    if count <= SARIF_RESULT_LIMIT:
        return ""
    return (f"the SARIF run has {count:,} results; GitHub code scanning rejects a run of more than "
            f"{SARIF_RESULT_LIMIT:,} (and shows the {SARIF_SHOWN:,} most severe): split the input (one evaluate per "
            "folder or subscription, each uploaded with its own category) or narrow it with --rule")


def _sarif_rule(rule: Rule) -> dict[str, Any]:
    full = (f"{rule.synopsis} Applies to {rule.applies_to}. Severity {rule.severity}; "
            f"{'the responder can remediate it' if rule.remediable else 'not remediated automatically'}.")
    links = "\n".join(f"- <{link}>" for link in rule.links)
    return {
        "id": rule.id,
        "name": rule.id.rsplit(".", 1)[-1],
        "shortDescription": {"text": rule.synopsis},
        "fullDescription": {"text": full},
        "help": {"text": rule.recommendation, "markdown": f"{rule.recommendation}\n\n{links}".strip()},
        **({"helpUri": rule.links[0]} if rule.links else {}),
        "defaultConfiguration": {"level": SARIF_LEVELS.get(rule.severity, "warning")},
        "properties": {"security-severity": SECURITY_SEVERITY.get(rule.severity, "5.5"),
                       "tags": list(SARIF_TAGS), "precision": "high", "remediable": rule.remediable},
    }


def _label(registry: Registry) -> str:
    """How a SARIF message names a registry: a Terraform one by its address too, which locates it in the plan."""
    address = f" at {registry.id}" if is_address(registry.id) else ""
    return f"{registry.name} ({registry.sku}){address}"


def to_sarif(assessments: Sequence[Assessment], rules: Sequence[Rule] | None = None, *,
             locate: Callable[[Registry], int] | None = None, artifacts: Any = None) -> dict[str, Any]:
    """A SARIF 2.1.0 log: `tool.driver.rules` holds the rules that ran, one result per failing or
    unknown finding, located at the registry's source file (`locate` gives the line; default 1).
    Passing and not-applicable findings are left out, so code scanning closes fixed alerts. `artifacts`
    (sarif_locations.Artifacts) makes file URIs repository-relative with `uriBaseId` when a source root is known."""
    where = artifacts if artifacts is not None else sarif_locations.Artifacts()
    driver_rules = list(rules) if rules else list(CATALOGUE.values())
    index = {rule.id: i for i, rule in enumerate(driver_rules)}
    results = []
    for assessment in assessments:
        registry = assessment.registry
        line = max(1, locate(registry)) if locate else 1
        for finding in attention(assessment):
            if finding.rule_id not in index:               # a finding from a rule nobody listed: list it
                index[finding.rule_id] = len(driver_rules)
                driver_rules.append(CATALOGUE[finding.rule_id])
            status = finding.suppressed if finding.status == SUPPRESSED else finding.status
            prefix = "" if status == FAIL else "Cannot be verified: "
            fingerprint = hashlib.sha256(f"{finding.rule_id}|{fold(registry.id)}".encode()).hexdigest()[:32]
            result: dict[str, Any] = {
                "ruleId": finding.rule_id,
                "ruleIndex": index[finding.rule_id],
                "level": sarif_level(finding),
                "message": {"text": f"{prefix}Registry {_label(registry)}: {_one_line(finding.message)}"},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": where.location(registry.source or registry.name),
                        "region": {"startLine": line},
                    },
                    "logicalLocations": [{"fullyQualifiedName": registry.id, "name": registry.name,
                                          "kind": "resource"}],
                }],
                "partialFingerprints": {"registryRule/v1": fingerprint},
                "properties": {"status": finding.status, "severity": finding.severity,
                               "remediable": finding.remediable, "registryId": registry.id},
            }
            if finding.status == SUPPRESSED:          # code scanning shows it as dismissed, with the reason
                result["suppressions"] = [{"kind": "external", "status": "accepted",
                                           "justification": finding.justification}]
            results.append(result)
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [{
            "tool": {"driver": {"name": TOOL_NAME, "version": __version__, "semanticVersion": __version__,
                                "rules": [_sarif_rule(rule) for rule in driver_rules]}},
            **({"originalUriBaseIds": where.base_ids()} if where.base_ids() else {}),
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    }


def render_sarif(assessments: Sequence[Assessment], rules: Sequence[Rule] | None = None, *,
                 locate: Callable[[Registry], int] | None = None, artifacts: Any = None) -> str:
    # Compact: json's C encoder serves only indent=None, and a pure-Python indented dump of 10,000 results took
    # twice as long as everything else together (bench/bench_sarif.py). Code scanning reads it as it is; `jq .`
    # shows it indented.
    return json.dumps(to_sarif(assessments, rules, locate=locate, artifacts=artifacts), separators=(",", ":"))


def render(assessments: Sequence[Assessment], fmt: str, *, rules: Sequence[Rule] | None = None,
           locate: Callable[[Registry], int] | None = None, artifacts: Any = None) -> str:
    """Dispatch on a `--format` value; ValueError for anything not in FORMATS."""
    if fmt == "table":
        return render_table(assessments)
    if fmt == "json":
        return render_json(assessments)
    if fmt == "sarif":
        return render_sarif(assessments, rules, locate=locate, artifacts=artifacts)
    if fmt == "junit":
        from dlp.cli.junit import render_junit

        return render_junit(assessments)
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
