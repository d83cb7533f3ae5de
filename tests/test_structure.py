"""The structure the core promises (issue 21), checked rather than hoped for: no module of dlp/ over 500 lines, the
pipeline's stage sequence readable in one module of at most 250 lines, no function with more than 7 parameters
(an Invocation carries what a stage needs). The layers and the absence of import circles are import-linter's
contracts in pyproject.toml, run by .ci/run."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULES = sorted(p for p in (ROOT / "dlp").rglob("*.py") if "emulator" not in p.parts)


def _parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    args = node.args
    return [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs if a.arg not in ("self", "cls")]


def test_the_modules_are_found():
    assert len(MODULES) > 100 and ROOT / "dlp" / "responder" / "pipeline.py" in MODULES


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_over_500_lines_nor_any_function_over_7_parameters(path):
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 500
    wide = [f"{node.name} ({len(_parameters(node))})" for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and len(_parameters(node)) > 7]
    assert wide == []


def test_the_pipeline_reads_top_down_in_at_most_250_lines():
    assert len((ROOT / "dlp" / "responder" / "pipeline.py").read_text(encoding="utf-8").splitlines()) <= 250


def test_the_check_sees_a_wide_function():
    """The parameter count is what the rule means: eight named parameters are too many, self does not count."""
    tree = ast.parse("class C:\n def f(self, a, b, c, d, *, e, f, g, h): pass\n")
    (method,) = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    assert len(_parameters(method)) == 8
