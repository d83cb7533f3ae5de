"""`python -m dlp evaluate PATH...`: the rules over JSON files a user already has, offline: the CI gate.

Every file is evaluated even when others are broken: a broken file is one line on stderr and
exit code 2, never a traceback, and never hides the results of the other files. A run that found
no registry at all is exit code 2 too: a gate pointed at the wrong folder must not pass. Bicep files are
compiled with the Bicep CLI on PATH, and a run that meets one without a compiler fails (exit 2) unless
--skip-bicep says so. Suppressions (`.acr-dlp.yaml`, dlp.cli.suppressions) and --min-severity decide which
findings fail the run; they never hide one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlp.cli import report, suppressions
from dlp.cli.console import EXIT_ERROR, EXIT_FAIL, EXIT_OK, error, note, warning
from dlp.domain.model import FAIL, SEVERITIES, UNKNOWN, Assessment, Registry
from dlp.domain.rules import CATALOGUE, Rule, evaluate, rules
from dlp.inputs import bicep
from dlp.inputs.arm.lines import line_of_pointer
from dlp.inputs.documents import decode_text, load_json, parse_json, read_document, read_text
from dlp.inputs.sources import InputError, NoRegistry, ci_get
from dlp.inputs.templates import LinkedOnly, TemplateReading, parameters_from_file

NAME = "evaluate"
STDIN = "-"
STDIN_NAME = "<stdin>"      # the source reported for `-` unless --stdin-name names the file it was built from
FAIL_ON = ("fail", "unknown")
# text that may hold a registry even though it cannot be parsed: then an unreadable file is an error in a walk too
_MENTIONS_REGISTRY = re.compile(r"microsoft\.containerregistry/registries|azurerm_container_registry", re.IGNORECASE)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        NAME, help="evaluate registry JSON offline (az acr show/list, ARM GET, Resource Graph, ARM templates, "
                   "terraform show -json)",
        description="Evaluate the DLP rules over registry JSON files and Bicep files, or one JSON document on stdin "
                    "('-'). Directories are searched recursively for *.json, *.bicep and *.bicepparam (hidden "
                    "directories and node_modules are skipped; so is every file that holds no container registry: "
                    "--verbose lists them). Bicep is compiled with the Bicep CLI on PATH (bicep, else az bicep). "
                    "Exit code: 0 nothing fails, 1 a finding fails (or, with --fail-on unknown, cannot be "
                    "verified), 2 usage or input errors, or no registry found at all (the other files are still "
                    "evaluated and reported).")
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="a JSON or Bicep file, a directory, or - for one JSON document on stdin")
    parser.add_argument("-o", "--output", "--format", dest="format", choices=report.FORMATS, default="table",
                        help="output format (default: table)")
    parser.add_argument("--fail-on", choices=FAIL_ON, default="fail",
                        help="exit 1 when a finding fails (default), or also when one is unknown (cannot be verified)")
    parser.add_argument("--parameters", metavar="FILE", type=Path,
                        help="ARM deployment parameters file whose values resolve [parameters('x')] in every template")
    parser.add_argument("--rule", action="append", metavar="ID", default=[],
                        help="evaluate only this rule (repeatable, or comma-separated); default: all rules")
    parser.add_argument("--stdin-name", metavar="NAME", default=STDIN_NAME,
                        help="the file name findings read from stdin are reported at (e.g. main.bicep for "
                             "`az bicep build --stdout`); default: <stdin>")
    parser.add_argument("--skip-unrelated", action="store_true",
                        help="treat files named explicitly as a directory walk does: skip those holding no container "
                             "registry, and pass when none holds one (pre-commit passes every staged *.json)")
    parser.add_argument("--source-root", metavar="DIR",
                        help="SARIF: write file locations relative to this folder with uriBaseId %%SRCROOT%% (default: "
                             "the git root of the first PATH; none found: paths as given)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="say on stderr which files a directory walk skipped, and why")
    parser.add_argument("--config", metavar="PATH", type=Path,
                        help=f"suppressions file (default: {suppressions.DEFAULT_FILE} in the working directory, "
                             "when present)")
    parser.add_argument("--min-severity", choices=("low", "medium", "high"), default="low",
                        help="findings below this severity are reported but do not fail the run (default: low)")
    parser.add_argument("--skip-bicep", action="store_true",
                        help="leave *.bicep / *.bicepparam files out on purpose (without it, a run that meets one "
                             "and has no Bicep CLI fails)")
    parser.set_defaults(run=run)


@dataclass(frozen=True)
class Outcome:
    """What one `evaluate` run produced: the assessments in input order, one line per input error,
    one note per file a directory walk skipped."""

    assessments: tuple[Assessment, ...]
    errors: tuple[str, ...]
    texts: Mapping[str, str] = field(default_factory=dict)   # source -> file text, for SARIF line numbers
    skipped: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()      # what a person must know about how a file was read (always shown)

    def exit_code(self, fail_on: str = "fail", min_severity: str = "low", nothing_is_an_error: bool = True) -> int:
        """2 on any error or (unless `nothing_is_an_error` is off) nothing found; 1 when a finding of at least
        `min_severity` fails (or, with `fail_on="unknown"`, is unknown); suppressed findings never fail the run."""
        if self.errors or (nothing_is_an_error and not self.assessments):
            return EXIT_ERROR
        gate = (FAIL, UNKNOWN) if fail_on == "unknown" else (FAIL,)
        severities = SEVERITIES[:SEVERITIES.index(min_severity) + 1] if min_severity in SEVERITIES else SEVERITIES
        failing = any(f.status in gate and f.severity in severities for a in self.assessments for f in a.findings)
        return EXIT_FAIL if failing else EXIT_OK


def selected_rules(ids: Sequence[str]) -> tuple[Rule, ...] | None:
    """`--rule` values (repeatable, comma-separated) -> rules; KeyError names the first unknown ID."""
    wanted = [part.strip() for value in ids for part in value.split(",") if part.strip()]
    return rules(wanted) if wanted else None


def is_parameters_file(document: Any) -> bool:
    """A deployment parameters file, recognised by its `$schema` (…/deploymentParameters.json#) only:
    a REST-spec example also has a `parameters` key and is no such file."""
    schema = ci_get(document, "$schema") if isinstance(document, Mapping) else None
    return isinstance(schema, str) and "deploymentparameters" in schema.lower()


def _walk(directory: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "node_modules")
        for name in sorted(files):
            if name.lower().endswith(".json") or bicep.is_bicep(name):
                yield Path(root) / name


def discover(paths: Sequence[str]) -> list[tuple[Path, bool, str | None]]:
    """(file, named explicitly, error) in argument order without duplicates: files to read, and
    missing paths or empty directories as errors in their place, so messages follow the arguments.
    `-` (stdin) is a file named explicitly, read once however often it is given."""
    found: list[tuple[Path, bool, str | None]] = []
    seen: set[Path | str] = set()

    def add(path: Path, explicit: bool) -> None:
        key: Path | str = STDIN if str(path) == STDIN else path.resolve()
        if key not in seen:
            seen.add(key)
            found.append((path, explicit, None))

    for text in paths:
        path = Path(text)
        if text == STDIN:
            add(path, True)
        elif path.is_dir():
            files = list(_walk(path))
            if not files:
                found.append((path, True, f"{text}: no *.json or *.bicep file in this directory"))
            for file in files:
                add(file, False)
        elif path.exists():
            add(path, True)
        else:
            found.append((path, True, f"{text}: no such file or directory"))
    return found


def _read(path: Path, source: str) -> str:
    if str(path) != STDIN:
        return read_text(path)
    stream = sys.stdin
    if stream is None or stream.isatty():
        raise InputError(source, "- reads one JSON document from stdin, but stdin is a terminal: pipe the JSON in")
    data = stream.buffer.read() if hasattr(stream, "buffer") else stream.read()
    if isinstance(data, bytes):
        return decode_text(data, source)
    return data.lstrip("\ufeff")


def registries_in(text: str, source: str, explicit: bool, parameters: Mapping[str, Any] | None) -> list[Registry]:
    """Snapshots in one file's text. InputError for anything unreadable; NoRegistry for a file holding no
    registry (an error when named explicitly, a skipped file in a directory walk)."""
    return reading_of(text, source, explicit, parameters).registries


def reading_of(text: str, source: str, explicit: bool, parameters: Mapping[str, Any] | None) -> TemplateReading:
    """registries_in, with the notes a template's reading produced."""
    try:
        document = parse_json(text, source)
    except InputError as exc:
        if explicit or _MENTIONS_REGISTRY.search(text):
            raise
        raise NoRegistry(source, str(exc).removeprefix(f"{source}: ")) from None
    if is_parameters_file(document):
        if explicit:
            raise InputError(source, "a deployment parameters file, not registries: pass it with --parameters")
        raise NoRegistry(source, "a deployment parameters file")
    return read_document(document, source, parameters)


def bicep_reading(path: Path, compiler: bicep.Compiler, parameters: Mapping[str, Any] | None) -> TemplateReading:
    """A .bicep file compiled and read as its template; a .bicepparam file as the template it is for, with its
    values (a value given with --parameters too: the .bicepparam's wins, as it names the deployment)."""
    source = str(path)
    compiled = bicep.compile_to_json(path, compiler)
    if path.suffix.lower() != ".bicepparam":
        return read_document(parse_json(compiled, source), source, parameters)
    template, values_file = bicep.parameters_output(compiled, source)
    values = {**(parameters or {}), **parameters_from_file(values_file, source)}
    if template is None:
        target = bicep.using_target(read_text(path), path)
        if target is None:
            raise InputError(source, "its `using` names no local .bicep file, so the template cannot be compiled here")
        template = parse_json(bicep.compile_to_json(target, compiler), str(target))
    return read_document(template, source, values)


def evaluate_paths(paths: Sequence[str], *, parameters: Mapping[str, Any] | None = None,
                   selected: tuple[Rule, ...] | None = None, keep_text: bool = False,
                   stdin_name: str = STDIN_NAME, skip_bicep: bool = False, skip_unrelated: bool = False) -> Outcome:
    """Discover, read, normalise and evaluate; every file is tried whatever happened to the others.
    `skip_unrelated`: files named explicitly (but stdin) are skipped when they hold no registry, as in a walk."""
    errors: list[str] = []
    skipped: list[str] = []
    notes: list[str] = []
    assessments: list[Assessment] = []
    texts: dict[str, str] = {}
    found = discover(paths)
    compiler = None
    bicep_files = [str(path) for path, _, problem in found if not problem and bicep.is_bicep(path)]
    if bicep_files and not skip_bicep:
        compiler = bicep.find_compiler()
        if compiler is None:
            errors.append(bicep.refusal(bicep_files))
    for path, named, problem in found:
        explicit = named and not (skip_unrelated and str(path) != STDIN)
        if problem:
            errors.append(problem)
            continue
        source = stdin_name if str(path) == STDIN else str(path)
        is_bicep = str(path) != STDIN and bicep.is_bicep(path)
        if is_bicep and (skip_bicep or compiler is None):
            if skip_bicep:
                skipped.append(f"{source}: a Bicep file (--skip-bicep)")
            continue
        try:
            if is_bicep and compiler is not None:
                text = read_text(path)
                reading = bicep_reading(path, compiler, parameters)
            else:
                text = _read(path, source)
                reading = reading_of(text, source, explicit, parameters)
            notes.extend(reading.notes)
            assessments.extend([evaluate(registry, selected) for registry in reading.registries])
        except LinkedOnly as exc:
            (errors if explicit else notes).append(str(exc))     # never a silent skip
            continue
        except NoRegistry as exc:
            (errors if explicit else skipped).append(str(exc))
            continue
        except InputError as exc:
            errors.append(str(exc))
            continue
        except Exception as exc:        # a bug of ours: still one line, and the other files still count
            errors.append(f"{source}: internal error ({type(exc).__name__}: {exc}); please report it with the file")
            continue
        if keep_text and reading.registries and not (str(path) == STDIN and stdin_name != STDIN_NAME):
            texts[source] = text        # a named stdin (main.bicep) is compiled JSON: its lines are not the file's
    return Outcome(tuple(assessments), tuple(errors), texts, tuple(skipped), tuple(notes))


def locate_in(texts: Mapping[str, str]) -> Callable[[Registry], int]:
    """`locate` for SARIF: the line that declares a registry in its file (a .bicep file's `resource` or `module`,
    a template's resource by its JSON pointer, else the line of its ID or name); 1 when the file's text is not kept.
    Each file's text is indexed once (sarif_locations.LineIndex), so N registries of a file cost one pass over it."""
    from dlp.cli.sarif_locations import LineIndex

    indexes: dict[str, LineIndex] = {}

    def locate(registry: Registry) -> int:
        text = texts.get(registry.source)
        if not text:
            return 1
        if bicep.is_bicep(registry.source):
            return bicep.line_of(text, registry.declared_at)
        if registry.declared_at:
            line = line_of_pointer(text, registry.declared_at)
            if line is not None:
                return line
        if registry.source not in indexes:
            indexes[registry.source] = LineIndex(text)
        return indexes[registry.source].line_of(registry)
    return locate


def nothing_found(paths: Sequence[str], skipped: int, verbose: bool = False) -> str:
    """The one line of a run that found no registry: a gate pointed at the wrong folder must not pass."""
    files = ""
    if skipped:
        files = (f" ({skipped} file{'s' if skipped != 1 else ''} skipped: no container registry in them"
                 f"{'' if verbose else '; --verbose lists them'})")
    return f"no container registry found in {', '.join(paths)}{files}"


def run(args: argparse.Namespace) -> int:
    try:
        selected = selected_rules(args.rule)
    except KeyError as exc:
        error(NAME, f"unknown rule ID {exc.args[0]!r}; valid IDs: {', '.join(CATALOGUE)}")
        return EXIT_ERROR

    config = args.config if args.config is not None else Path(suppressions.DEFAULT_FILE)
    try:
        accepted = suppressions.load(config, explicit=args.config is not None)
    except suppressions.ConfigError as exc:       # a gate whose exceptions cannot be read must not guess them
        error(NAME, str(exc))
        return EXIT_ERROR

    parameters = None
    if args.parameters is not None:
        try:
            parameters = parameters_from_file(load_json(args.parameters), str(args.parameters))
        except InputError as exc:       # results without the intended values would mislead: stop here
            error(NAME, str(exc))
            return EXIT_ERROR

    outcome = evaluate_paths(args.paths, parameters=parameters, selected=selected, keep_text=args.format == "sarif",
                             stdin_name=args.stdin_name, skip_bicep=args.skip_bicep,
                             skip_unrelated=args.skip_unrelated)
    today = dt.datetime.now(dt.timezone.utc).date()
    for entry in suppressions.expired(accepted, today):
        note(NAME, f"{config}: {entry.describe()} expired on {entry.expires}: it no longer applies")
    outcome = Outcome(tuple(suppressions.apply(outcome.assessments, accepted, today)), outcome.errors,
                      outcome.texts, outcome.skipped, outcome.notes)
    for message in outcome.errors:
        error(NAME, message)
    for message in outcome.notes:
        note(NAME, message)
    if args.verbose:
        for message in outcome.skipped:
            note(NAME, f"skipped {message}")
    if not outcome.assessments and not outcome.errors and not args.skip_unrelated:
        error(NAME, nothing_found(args.paths, len(outcome.skipped), args.verbose))

    sys.stdout.write(report.render(outcome.assessments, args.format, rules=selected, locate=locate_in(outcome.texts),
                                   artifacts=artifacts_for(args)) + "\n")
    sys.stdout.flush()
    if args.format == "sarif" and report.sarif_limit_warning(outcome.assessments):
        warning(NAME, report.sarif_limit_warning(outcome.assessments))
    return outcome.exit_code(args.fail_on, args.min_severity, nothing_is_an_error=not args.skip_unrelated)


def artifacts_for(args: argparse.Namespace) -> Any:
    """--source-root, else the git root of the first PATH (the working directory for -)."""
    from dlp.cli.sarif_locations import Artifacts, git_root

    if args.source_root:
        return Artifacts(args.source_root)
    first = args.paths[0] if args.paths and args.paths[0] != STDIN else "."
    return Artifacts(git_root(first))
