"""Bicep files -> ARM JSON through the Bicep CLI on PATH, so a `.bicep` file is never silently left out of a gate.

`bicep build FILE --stdout` when a `bicep` executable is on PATH, else `az bicep build --file FILE --stdout`;
`.bicepparam` files through `build-params` (its output names the template it was written for). No compiler: the
caller refuses the run and names every Bicep file (`refusal`). Compiling runs a program; everything else here is
pure (the compiler's choice, the line a registry is declared at in the Bicep text).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlp.inputs.sources import InputError
from dlp.sanitize import clean

BICEP_SUFFIXES = (".bicep", ".bicepparam")
TIMEOUT_S = 300
INSTALL_HINT = ("install the Bicep CLI (https://learn.microsoft.com/azure/azure-resource-manager/bicep/install: "
                "`az bicep install`, or the `bicep` binary on PATH), or pass --skip-bicep to leave them out on purpose")


@dataclass(frozen=True)
class Compiler:
    """How to run the Bicep CLI found on PATH."""

    executable: str
    via_az: bool

    def build(self, path: Path) -> list[str]:
        if path.suffix.lower() == ".bicepparam":
            return ([self.executable, "bicep", "build-params", "--file", str(path), "--stdout"] if self.via_az
                    else [self.executable, "build-params", str(path), "--stdout"])
        return ([self.executable, "bicep", "build", "--file", str(path), "--stdout"] if self.via_az
                else [self.executable, "build", str(path), "--stdout"])


def is_bicep(path: Path | str) -> bool:
    return str(path).lower().endswith(BICEP_SUFFIXES)


def find_compiler(which: Callable[[str], str | None] = shutil.which) -> Compiler | None:
    bicep = which("bicep")
    if bicep:
        return Compiler(bicep, via_az=False)
    az = which("az")
    return Compiler(az, via_az=True) if az else None


def refusal(files: Sequence[str]) -> str:
    """The one line of a run that met Bicep files and has no compiler."""
    return (f"{len(files)} Bicep file{'s' if len(files) != 1 else ''} cannot be evaluated: no Bicep CLI on PATH "
            f"({', '.join(files)}); {INSTALL_HINT}")


Runner = Callable[..., Any]


def compile_to_json(path: Path, compiler: Compiler, run: Runner = subprocess.run) -> str:
    """The compiled JSON text; InputError naming the file and the compiler's own message when it fails."""
    command = compiler.build(path)
    try:
        done = run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise InputError(str(path), f"`{' '.join(command[:3])} ...` did not finish in {TIMEOUT_S} s") from None
    except OSError as exc:
        raise InputError(str(path), f"cannot run {command[0]}: {exc.strerror or exc}") from None
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout or "").splitlines() if line.strip()]
        errors = [line for line in lines if "error" in line.lower()] or lines
        reason = clean(" | ".join(errors[:3]), 400) if errors else f"exit code {done.returncode}"
        raise InputError(str(path), f"Bicep compilation failed: {reason}")
    if not (done.stdout or "").strip():
        raise InputError(str(path), "the Bicep CLI printed nothing (expected the compiled template on stdout)")
    return str(done.stdout)


def parameters_output(text: str, source: str) -> tuple[Mapping[str, Any] | None, Mapping[str, Any]]:
    """`build-params --stdout` output -> (the template it carries, or None; the parameters file).

    Recent Bicep CLIs print `{"parametersJson": "...", "templateJson": "..."}`; older ones print the
    parameters file alone, and the template is then compiled from the file named by `using`."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(source, f"the Bicep CLI's output is not JSON ({exc.msg})") from None
    if isinstance(document, Mapping) and isinstance(document.get("parametersJson"), str):
        template = document.get("templateJson")
        try:
            return (json.loads(template) if isinstance(template, str) else None), json.loads(document["parametersJson"])
        except json.JSONDecodeError as exc:
            raise InputError(source, f"the Bicep CLI's output is not JSON ({exc.msg})") from None
    return None, document


_USING = re.compile(r"^\s*using\s+'([^']+)'", re.MULTILINE)


def using_target(text: str, path: Path) -> Path | None:
    """The `.bicep` file a `.bicepparam` is for (`using './main.bicep'`); None for a registry module reference."""
    match = _USING.search(text)
    if not match or ":" in match.group(1):
        return None
    return (path.parent / match.group(1)).resolve()


def line_of(text: str, pointer: str) -> int:
    """The line of a Bicep file that declares the resource (or the module) a compiled template's JSON pointer
    names: `resource <symbol>` / `module <symbol>` for symbolic names, else the first registry resource (or
    module) declaration; 1 when none."""
    tokens = pointer.split("/")
    first = tokens[2].replace("~1", "/").replace("~0", "~") if len(tokens) > 2 else ""
    nested = "/properties/template/" in pointer
    candidates = []
    if first and not first.isdigit():
        candidates.append(rf"^[ \t]*(?:resource|module)[ \t]+{re.escape(first)}\b")
    candidates.append(r"^[ \t]*module[ \t]+\w+[ \t]" if nested else
                      r"^[ \t]*resource[ \t]+\w+[ \t]+'Microsoft\.ContainerRegistry/registries@")
    for pattern in candidates:
        match = re.search(pattern, text, re.MULTILINE | re.IGNORECASE)
        if match:
            return text.count("\n", 0, match.start()) + 1
    return 1
