"""Assessments -> JUnit XML, the test-report format Azure Pipelines (*Publish Test Results*, format JUnit), GitLab
(`artifacts:reports:junit`) and most CI servers read: the gate's findings show up as tests in the build.

One `<testsuite>` per registry, one `<testcase>` per rule evaluated on it (classname: the registry, name: the rule
ID, `file`: the input file). A failing finding is a `<failure>` whose message is the finding and whose text adds
the rule's recommendation and help link; a finding that cannot be verified offline (`unknown`) and a rule that does
not apply to the registry's SKU are `<skipped>` with the reason. Every value comes from input files (hostile text):
characters XML 1.0 cannot carry are dropped, ElementTree escapes the rest.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from dlp.domain.model import FAIL, NOT_APPLICABLE, UNKNOWN, Assessment, Finding
from dlp.domain.rules import CATALOGUE

SUITES_NAME = "acr-dlp"
# XML 1.0 allows tab, newline, carriage return and these ranges; anything else (NUL, ESC, lone surrogates) is dropped
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(text: object) -> str:
    return _NOT_XML.sub("", str(text))


def _one_line(text: str) -> str:
    return " ".join(xml_text(text).split())


def _detail(finding: Finding, assessment: Assessment) -> str:
    rule = CATALOGUE.get(finding.rule_id)
    registry = assessment.registry
    lines = [f"Found: {_one_line(finding.message)}"]
    if rule is not None:
        lines += [f"Recommendation: {_one_line(rule.recommendation)}", *(f"Help: {link}" for link in rule.links[:1])]
    lines += [f"Registry: {xml_text(registry.id)}", f"Source: {xml_text(registry.source)}",
              f"Severity: {finding.severity}"]
    return "\n".join(lines)


def _case(suite: ET.Element, finding: Finding, assessment: Assessment) -> str:
    registry = assessment.registry
    case = ET.SubElement(suite, "testcase", {"classname": xml_text(registry.name), "name": finding.rule_id,
                                             "file": xml_text(registry.source), "time": "0"})
    if finding.status == FAIL:
        failure = ET.SubElement(case, "failure", {"message": _one_line(finding.message), "type": finding.severity})
        failure.text = _detail(finding, assessment)
    elif finding.status == UNKNOWN:
        ET.SubElement(case, "skipped", {"message": f"cannot be verified: {_one_line(finding.message)}"})
    elif finding.status == NOT_APPLICABLE:
        ET.SubElement(case, "skipped", {"message": f"not applicable: {_one_line(finding.message)}"})
    return finding.status


def to_junit(assessments: Sequence[Assessment]) -> ET.Element:
    root = ET.Element("testsuites", {"name": SUITES_NAME})
    totals = {"tests": 0, "failures": 0, "skipped": 0}
    for assessment in assessments:
        registry = assessment.registry
        suite = ET.SubElement(root, "testsuite", {"name": xml_text(f"{registry.name} ({registry.source})"),
                                                  "errors": "0", "time": "0"})
        properties = ET.SubElement(suite, "properties")
        ET.SubElement(properties, "property", {"name": "registryId", "value": xml_text(registry.id)})
        ET.SubElement(properties, "property", {"name": "sku", "value": xml_text(registry.sku)})
        statuses = [_case(suite, finding, assessment) for finding in assessment.findings]
        counts = {"tests": len(statuses), "failures": statuses.count(FAIL),
                  "skipped": statuses.count(UNKNOWN) + statuses.count(NOT_APPLICABLE)}
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("errors", "0")
    return root


def render_junit(assessments: Sequence[Assessment]) -> str:
    root = to_junit(assessments)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")
