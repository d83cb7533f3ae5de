"""The offline gate's suppressions: `.acr-dlp.yaml` (or `--config PATH`), findings accepted on purpose.

    suppressions:
      - rule: DLP.ACR.TrustedServices
        resource: acrbuild01          # registry name, ID, Terraform address or file path; globs allowed
        justification: ACR Tasks build through the trusted-services path (SEC-118)   # required
        expires: 2027-06-30           # optional: the last day it holds

A suppressed finding keeps its rule, severity and message, gets status `suppressed` with its justification and
expiry, and does not fail the run. Every entry is checked before anything is evaluated: a missing justification
or resource, an unknown rule ID, an unknown key (a misspelt `expires` must not make a suppression permanent), a
bad date or a malformed file stop the run (exit 2, one line). An expired entry no longer applies, and the run
says so. The live responder never reads this file: in production, exemptions are DLP_EXEMPTIONS and the tag.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePath
from typing import Any

from dlp.domain.model import FAIL, SUPPRESSED, UNKNOWN, Assessment, Registry
from dlp.domain.rules import CATALOGUE
from dlp.ids import fold
from dlp.inputs.documents import read_text
from dlp.inputs.sources import InputError

DEFAULT_FILE = ".acr-dlp.yaml"
_KEYS = frozenset({"rule", "resource", "justification", "expires"})
_TOP = frozenset({"suppressions"})


class ConfigError(ValueError):
    """The suppressions file cannot be used; the message is the one line the CLI prints."""


@dataclass(frozen=True)
class Suppression:
    rule: str                       # the rule's catalogue ID
    resource: str                   # a glob over registry name, ID, address or source path
    justification: str
    expires: dt.date | None
    entry: int                      # 1-based position in the file, for messages

    def describe(self) -> str:
        return f"suppression {self.entry} ({self.rule} on {self.resource!r})"

    def active(self, today: dt.date) -> bool:
        return self.expires is None or today <= self.expires

    def matches(self, registry: Registry) -> bool:
        """Its name, its ID (ARM ID, Terraform address, template label) or its file: a relative path pattern
        matches the file wherever the run was started (`infra/main.json` matches `/ci/work/infra/main.json`)."""
        pattern = fold(self.resource)
        if any(fnmatch.fnmatchcase(fold(candidate), pattern) for candidate in (registry.name, registry.id)):
            return True
        if not registry.source:
            return False
        path = fold(PurePath(registry.source).as_posix().removeprefix("./"))
        return fnmatch.fnmatchcase(path, pattern) or (
            not pattern.startswith(("/", "*")) and fnmatch.fnmatchcase(path, "*/" + pattern))


def load(path: Path, explicit: bool) -> list[Suppression]:
    """The file's suppressions; [] when the default file is absent; ConfigError otherwise."""
    if not path.exists():
        if explicit:
            raise ConfigError(f"{path}: no such file")
        return []
    try:
        text = read_text(path)
    except InputError as exc:
        raise ConfigError(str(exc)) from None
    return parse(text, str(path))


def parse(text: str, source: str) -> list[Suppression]:
    import yaml  # PyYAML: the CLI's config only; the Function App never imports it

    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not YAML"
        raise ConfigError(f"{source}: not valid YAML: {problem}{where}") from None
    if document is None:
        return []
    if not isinstance(document, Mapping):
        raise ConfigError(f"{source}: expected a mapping with a `suppressions` list")
    unknown = sorted(str(k) for k in document if k not in _TOP)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; expected: suppressions")
    entries = document.get("suppressions") or []
    if not isinstance(entries, list):
        raise ConfigError(f"{source}: `suppressions` must be a list")
    return [_entry(item, index, source) for index, item in enumerate(entries, start=1)]


def _entry(item: Any, index: int, source: str) -> Suppression:
    where = f"{source}: suppression {index}"
    if not isinstance(item, Mapping):
        raise ConfigError(f"{where}: expected a mapping with rule, resource, justification (and expires)")
    unknown = sorted(str(k) for k in item if k not in _KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; expected: {', '.join(sorted(_KEYS))}")
    rule = item.get("rule")
    by_lower = {key.lower(): key for key in CATALOGUE}
    if not isinstance(rule, str) or rule.strip().lower() not in by_lower:
        raise ConfigError(f"{where}: unknown rule ID {rule!r}; valid IDs: {', '.join(CATALOGUE)}")
    resource = item.get("resource")
    if not isinstance(resource, str) or not resource.strip():
        raise ConfigError(f"{where}: `resource` is required (a registry name, ID, Terraform address or file path; "
                          "globs allowed, '*' for every resource)")
    justification = item.get("justification")
    if not isinstance(justification, str) or not justification.strip():
        raise ConfigError(f"{where}: `justification` is required: say why this finding is accepted")
    return Suppression(by_lower[rule.strip().lower()], resource.strip(), " ".join(justification.split()),
                       _date(item.get("expires"), where), index)


def _date(value: Any, where: str) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ConfigError(f"{where}: `expires` must be a date (YYYY-MM-DD), not {value!r}")


def expired(suppressions: Sequence[Suppression], today: dt.date) -> list[Suppression]:
    return [s for s in suppressions if not s.active(today)]


def apply(assessments: Sequence[Assessment], suppressions: Sequence[Suppression], today: dt.date) -> list[Assessment]:
    """Each fail or unknown finding an active suppression covers -> status `suppressed`. Pure: `today` is passed."""
    active = [s for s in suppressions if s.active(today)]
    if not active:
        return list(assessments)
    result = []
    for assessment in assessments:
        mine = [s for s in active if s.matches(assessment.registry)]
        findings = []
        for finding in assessment.findings:
            match = next((s for s in mine if s.rule == finding.rule_id), None)
            if match is not None and finding.status in (FAIL, UNKNOWN):
                findings.append(replace(finding, status=SUPPRESSED, suppressed=finding.status,
                                        justification=match.justification,
                                        expires=match.expires.isoformat() if match.expires else ""))
            else:
                findings.append(finding)
        result.append(Assessment(assessment.registry, tuple(findings)))
    return result
