"""A JSON document of any supported shape -> `Registry` snapshots: the one place that tells the shapes apart.

Which shape a document is decides which reader runs: ARM templates (dlp.inputs.templates), Terraform plans and
state (dlp.inputs.terraform), Resource Graph results, ARM list responses and single resources (dlp.inputs.sources).
The readers never import this module, so the shapes have no import circle between them.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dlp.domain.model import Registry
from dlp.inputs import templates, terraform
from dlp.inputs.sources import InputError, NoRegistry, ci_get, is_registry, registry_from_resource


def _registries_in(rows: Iterable[Any], source: str, what: str) -> list[Registry]:
    found = [registry_from_resource(row, source) for row in rows if is_registry(row)]
    if not found:
        raise NoRegistry(source, f"{what} holds no Microsoft.ContainerRegistry/registries resource")
    return found


def registries_from_document(document: Any, source: str, parameters: Mapping[str, Any] | None = None) -> list[Registry]:
    """Any supported JSON document -> snapshots, or InputError saying what was expected."""
    return read_document(document, source, parameters).registries


def read_document(document: Any, source: str, parameters: Mapping[str, Any] | None = None) -> templates.TemplateReading:
    """Snapshots and the notes a person must see about how they were read (a template's unknown conditions,
    linked templates not fetched); InputError saying what was expected."""
    try:
        if isinstance(document, Mapping) and templates.is_template(document):
            return templates.read_template(document, source, parameters or {})
        return templates.TemplateReading(_registries_from_document(document, source, parameters))
    except RecursionError:             # json.loads accepts nesting that walking the values cannot
        raise InputError(source, "JSON nested too deeply") from None


def _registries_from_document(document: Any, source: str, parameters: Mapping[str, Any] | None) -> list[Registry]:
    if isinstance(document, list):
        return _registries_in(document, source, "the array")
    if not isinstance(document, Mapping):
        raise NoRegistry(source, "expected a JSON object or array (a registry, an az acr list array, "
                                 "a Resource Graph result, an ARM template or `terraform show -json` output)")
    if templates.is_template(document):
        return templates.registries_from_template(document, source, parameters or {})
    if terraform.is_terraform(document):
        return terraform.registries_from_terraform(document, source)
    data = ci_get(document, "data")
    if isinstance(data, list):                                     # Resource Graph: REST or az graph query
        return _registries_in(data, source, "the Resource Graph result")
    if isinstance(data, Mapping) and isinstance(ci_get(data, "rows"), list):
        declared = ci_get(data, "columns")
        names = [ci_get(c, "name") for c in declared] if isinstance(declared, list) else []
        columns = [name if isinstance(name, str) else None for name in names]     # a list name is unhashable
        rows = [dict(zip(columns, row, strict=False)) for row in ci_get(data, "rows") if isinstance(row, list)]
        return _registries_in(rows, source, "the Resource Graph table result")
    value = ci_get(document, "value")
    if isinstance(value, list) and not is_registry(document):      # ARM list response
        return _registries_in(value, source, "the ARM list response")
    if is_registry(document):
        return [registry_from_resource(document, source)]
    raise NoRegistry(source, "not a container registry: expected a resource with type "
                             "Microsoft.ContainerRegistry/registries, an array of them, a Resource Graph "
                             "result ({\"data\": [...]}), an ARM template (resources) or `terraform show -json` output")


def load_json(path: Path) -> Any:
    return parse_json(read_text(path), str(path))


def read_text(path: Path) -> str:
    """A file's text (UTF-8, with or without a BOM), or InputError naming it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(str(path), exc.strerror or str(exc)) from None
    return decode_text(data, str(path))


# Byte-order marks, longest first (UTF-32 LE starts with the UTF-16 LE mark)
_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"), (codecs.BOM_UTF16_LE, "UTF-16"),
         (codecs.BOM_UTF16_BE, "UTF-16"))


def decode_text(data: bytes, source: str) -> str:
    """UTF-8 text (a BOM is dropped), or InputError naming the encoding it looks like and how to convert it:
    Windows PowerShell 5 writes UTF-16 with `>` (`az acr list > registries.json`). JSON text in UTF-8 holds no NUL
    byte, so NULs among the first bytes mean UTF-16 or UTF-32 even without a BOM (where NUL decodes as UTF-8)."""
    encoding = next((name for bom, name in _BOMS if data.startswith(bom)), "")
    if not encoding and b"\0" in data[:4]:
        encoding = "UTF-32" if data[:4].count(b"\0") == 3 else "UTF-16"
    reason = "it is " + encoding if encoding else ""
    if not reason:
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            reason = exc.reason
    raise InputError(source, f"not UTF-8 text ({reason}); re-encode it as UTF-8: iconv -f {encoding or '<encoding>'} "
                             "-t UTF-8 FILE > FILE.utf8.json, or in PowerShell: Get-Content FILE | Set-Content "
                             "-Encoding utf8 FILE.utf8.json")


_YAML_START = re.compile(r"\A(?:\s*#[^\n]*\n)*\s*(?:---|[A-Za-z_][\w.-]*\s*:(?:\s|$)|-\s+[A-Za-z_][\w.-]*\s*:)")


def parse_json(text: str, source: str) -> Any:
    """One JSON document, or InputError saying where it breaks (and that it looks like YAML, when it does)."""
    if not text.strip():
        raise InputError(source, "empty file; expected JSON")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        reason = exc.msg.removesuffix(" at")        # json says "Unterminated string starting at" (+ a position)
        if _YAML_START.match(text):
            raise InputError(source, f"not JSON, and it looks like YAML ({reason} at line {exc.lineno} column "
                                     f"{exc.colno}): convert it first, e.g. yq -o json FILE > FILE.json") from None
        raise InputError(source, f"not JSON: {reason} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise InputError(source, "JSON nested too deeply") from None


def registries_from_file(path: Path, parameters: Mapping[str, Any] | None = None) -> list[Registry]:
    return registries_from_document(load_json(path), str(path), parameters)
