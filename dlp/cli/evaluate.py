"""`python -m dlp evaluate PATH...`: the rules over JSON files a user already has, offline.

Every file is evaluated even when others are broken: a broken file is one line on stderr and
exit code 2, never a traceback, and never hides the results of the other files.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlp import report
from dlp.cli import EXIT_ERROR, EXIT_FAIL, EXIT_OK, error
from dlp.model import Assessment, Registry
from dlp.rules import CATALOGUE, Rule, evaluate, rules
from dlp.sources import InputError, ci_get, is_registry, load_json, registries_from_document
from dlp.templates import is_template, parameters_from_file

NAME = "evaluate"
_REGISTRY_TYPE_VALUE = re.compile(r"'type': 'microsoft\.containerregistry/registries'")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        NAME, help="evaluate registry JSON files offline (az acr show/list, ARM GET, Resource Graph, ARM templates)",
        description="Evaluate the DLP rules over registry JSON files. Directories are searched recursively for "
                    "*.json (hidden directories and node_modules are skipped; so are deployment parameters files "
                    "and ARM templates that declare no container registry). Exit code: 0 nothing fails, "
                    "1 a finding fails, 2 usage or input errors (the other files are still evaluated and reported).")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="a JSON file or a directory")
    parser.add_argument("--format", choices=report.FORMATS, default="table", help="output format (default: table)")
    parser.add_argument("--parameters", metavar="FILE", type=Path,
                        help="ARM deployment parameters file whose values resolve [parameters('x')] in every template")
    parser.add_argument("--rule", action="append", metavar="ID", default=[],
                        help="evaluate only this rule (repeatable, or comma-separated); default: all rules")
    parser.set_defaults(run=run)


@dataclass(frozen=True)
class Outcome:
    """What one `evaluate` run produced: the assessments in input order and one line per input error."""

    assessments: tuple[Assessment, ...]
    errors: tuple[str, ...]
    texts: Mapping[str, str] = field(default_factory=dict)   # source -> file text, for SARIF line numbers

    @property
    def exit_code(self) -> int:
        if self.errors:
            return EXIT_ERROR
        return EXIT_OK if all(a.compliant for a in self.assessments) else EXIT_FAIL


def selected_rules(ids: Sequence[str]) -> tuple[Rule, ...] | None:
    """`--rule` values (repeatable, comma-separated) -> rules; KeyError names the first unknown ID."""
    wanted = [part.strip() for value in ids for part in value.split(",") if part.strip()]
    return rules(wanted) if wanted else None


def is_parameters_file(document: Any) -> bool:
    """A deployment parameters file (`{"parameters": {"x": {"value": ...}}}`): input to --parameters, not registries."""
    if not isinstance(document, Mapping):
        return False
    schema = ci_get(document, "$schema")
    if isinstance(schema, str) and "deploymentparameters" in schema.lower():
        return True
    return (isinstance(ci_get(document, "parameters"), Mapping) and ci_get(document, "resources") is None
            and not is_registry(document))


def _walk(directory: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "node_modules")
        for name in sorted(files):
            if name.lower().endswith(".json"):
                yield Path(root) / name


def discover(paths: Sequence[str]) -> list[tuple[Path, bool, str | None]]:
    """(file, named explicitly, error) in argument order without duplicates: files to read, and
    missing paths or empty directories as errors in their place, so messages follow the arguments."""
    found: list[tuple[Path, bool, str | None]] = []
    seen: set[Path] = set()

    def add(path: Path, explicit: bool) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            found.append((path, explicit, None))

    for text in paths:
        path = Path(text)
        if path.is_dir():
            files = list(_walk(path))
            if not files:
                found.append((path, True, f"{text}: no *.json file in this directory"))
            for file in files:
                add(file, False)
        elif path.exists():
            add(path, True)
        else:
            found.append((path, True, f"{text}: no such file or directory"))
    return found


def _mentions_registry(document: Any) -> bool:
    """Whether any resource anywhere has the registry type (e.g. inside a nested deployment we do not
    read); a template that only refers to a registry's ID does not count."""
    try:
        return _REGISTRY_TYPE_VALUE.search(repr(document).lower()) is not None
    except RecursionError:
        return True


def registries_in(path: Path, explicit: bool, parameters: Mapping[str, Any] | None) -> list[Registry]:
    """Snapshots in one file; [] for a file a directory walk should skip; InputError for anything unreadable."""
    document = load_json(path)
    if is_parameters_file(document):
        if explicit:
            raise InputError(str(path), "a deployment parameters file, not registries: pass it with --parameters")
        return []
    if not explicit and isinstance(document, Mapping) and is_template(document) and not _mentions_registry(document):
        return []                       # a template for other resources, found by a directory walk
    return registries_from_document(document, str(path), parameters)


def evaluate_paths(paths: Sequence[str], *, parameters: Mapping[str, Any] | None = None,
                   selected: tuple[Rule, ...] | None = None, keep_text: bool = False) -> Outcome:
    """Discover, read, normalise and evaluate; every file is tried whatever happened to the others."""
    errors: list[str] = []
    assessments: list[Assessment] = []
    texts: dict[str, str] = {}
    for path, explicit, problem in discover(paths):
        if problem:
            errors.append(problem)
            continue
        try:
            registries = registries_in(path, explicit, parameters)
            assessments.extend([evaluate(registry, selected) for registry in registries])
        except InputError as exc:
            errors.append(str(exc))
            continue
        except Exception as exc:        # a bug of ours: still one line, and the other files still count
            errors.append(f"{path}: internal error ({type(exc).__name__}: {exc}); please report it with the file")
            continue
        if keep_text and registries:
            try:
                texts[str(path)] = path.read_text(encoding="utf-8-sig")
            except (OSError, UnicodeDecodeError):
                pass                    # only costs the SARIF line number
    return Outcome(tuple(assessments), tuple(errors), texts)


def run(args: argparse.Namespace) -> int:
    try:
        selected = selected_rules(args.rule)
    except KeyError as exc:
        error(NAME, f"unknown rule ID {exc.args[0]!r}; valid IDs: {', '.join(CATALOGUE)}")
        return EXIT_ERROR

    parameters = None
    if args.parameters is not None:
        try:
            parameters = parameters_from_file(load_json(args.parameters), str(args.parameters))
        except InputError as exc:       # results without the intended values would mislead: stop here
            error(NAME, str(exc))
            return EXIT_ERROR

    outcome = evaluate_paths(args.paths, parameters=parameters, selected=selected, keep_text=args.format == "sarif")
    for message in outcome.errors:
        error(NAME, message)

    def locate(registry: Registry) -> int:
        text = outcome.texts.get(registry.source)
        return report.line_of(text, registry) if text else 1

    sys.stdout.write(report.render(outcome.assessments, args.format, rules=selected, locate=locate) + "\n")
    sys.stdout.flush()
    return outcome.exit_code
