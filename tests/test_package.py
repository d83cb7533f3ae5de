"""The deployed package holds what runs, and only that: `.funcignore` (gitignore syntax, read by azd and Core Tools)
keeps tests, benchmarks, examples, docs and the emulators out, and nothing function_app.py imports is left out."""

from __future__ import annotations

import ast
import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def patterns() -> list[str]:
    lines = (ROOT / ".funcignore").read_text(encoding="utf-8").splitlines()
    found = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    assert not any(p.startswith("!") for p in found), "re-includes are not modelled here; keep the list plain"
    return found


def _regex(glob: str) -> re.Pattern[str]:
    """gitignore's glob: `*` and `?` stop at '/', `**` does not."""
    out = ""
    for part in re.split(r"(\*\*|\*|\?)", glob):
        out += {"**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
    return re.compile(out + r"\Z")


def ignored(path: str, rules: list[str]) -> bool:
    """Whether gitignore rules exclude `path` (a file, relative, with '/'): a rule matching a parent directory
    excludes everything below it; a rule with an inner '/' is anchored at the root, else it matches any name."""
    parts = path.split("/")
    for rule in rules:
        dir_only = rule.endswith("/")
        body = rule.strip("/")
        anchored = "/" in rule.rstrip("/")
        pattern = _regex(body)
        for depth in range(1, len(parts) + 1):
            is_dir = depth < len(parts)
            if dir_only and not is_dir:
                continue
            candidate = "/".join(parts[:depth]) if anchored else parts[depth - 1]
            if pattern.match(candidate):
                return True
    return False


@cache
def tracked() -> tuple[str, ...]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return tuple(line for line in out.splitlines() if (ROOT / line).is_file())


def packaged() -> set[str]:
    rules = patterns()
    return {path for path in tracked() if not ignored(path, rules)}


def module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def runtime_imports(*starts: Path) -> set[Path]:
    """Every dlp module these files can import, lazily inside functions included, and their packages."""
    seen: set[Path] = set()
    todo = list(starts)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        names: list[str] = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.append(node.module)
                names += [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name.split(".")[0] != "dlp":
                continue
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):     # a module's parent packages run too
                found = module_file(".".join(parts[:depth]))
                if found is not None:
                    todo.append(found)
    return seen


def test_the_package_is_the_app_and_nothing_else():
    files = packaged()
    assert {"function_app.py", "host.json", "requirements.txt", "dlp/__init__.py", "dlp/handlers.py"} <= files
    for folder in ("tests/", "bench/", "examples/", "docs/", "dlp/emulator/", "infra/", ".ci/"):
        assert not any(path.startswith(folder) for path in files), folder
    for tooling in ("README.md", "CONTRIBUTING.md", "pyproject.toml", "requirements-dev.txt",
                    "local.settings.sample.json", "azure.yaml"):
        assert tooling not in files, tooling
    outside_dlp = {path for path in files if not path.startswith("dlp/")}
    assert outside_dlp == {"function_app.py", "host.json", "requirements.txt", ".funcignore"}


def test_nothing_function_app_imports_is_left_out():
    """The import walk starts at function_app.py and at the rule modules dlp/rules imports by name (_MODULES)."""
    from dlp.rules import _MODULES

    starts = [ROOT / "function_app.py", *(ROOT / "dlp" / "rules" / f"{name}.py" for name in _MODULES)]
    needed = {path.relative_to(ROOT).as_posix() for path in runtime_imports(*starts)}
    assert {"dlp/handlers.py", "dlp/runtime.py", "dlp/azure/arm.py", "dlp/alerts/teams.py", "dlp/rules/base.py"} <= needed
    assert not any(path.startswith("dlp/emulator/") for path in needed), "runtime code imports the emulators"
    assert needed <= packaged(), sorted(needed - packaged())


@pytest.mark.parametrize(("path", "expected"), [
    ("tests/test_x.py", True), ("dlp/emulator/arm.py", True), ("dlp/cli/__pycache__/x.cpython-311.pyc", True),
    ("dlp/emulatorx.py", False), ("dlp/cli/demo.py", False), ("docs", False), ("a/docs/b.md", True),
    ("local.settings.json", True), ("dlp/x.pyc", True), ("function_app.py", False),
])
def test_the_ignore_matcher_follows_gitignore(path, expected):
    assert ignored(path, patterns()) is expected
