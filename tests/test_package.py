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
    assert {"function_app.py", "host.json", "requirements.txt", "dlp/__init__.py", "dlp/triggers/handlers.py"} <= files
    for folder in ("tests/", "bench/", "examples/", "docs/", "dlp/emulator/", "infra/", ".ci/"):
        assert not any(path.startswith(folder) for path in files), folder
    for tooling in ("README.md", "CONTRIBUTING.md", "pyproject.toml", "requirements-dev.txt",
                    "local.settings.sample.json", "azure.yaml"):
        assert tooling not in files, tooling
    outside_dlp = {path for path in files if not path.startswith("dlp/")}
    assert outside_dlp == {"function_app.py", "host.json", "requirements.txt", ".funcignore"}


def test_nothing_function_app_imports_is_left_out():
    """The import walk starts at function_app.py and at the rule modules dlp/domain/rules imports by name (_MODULES)."""
    from dlp.domain.rules import _MODULES

    starts = [ROOT / "function_app.py", *(ROOT / "dlp" / "domain" / "rules" / f"{name}.py" for name in _MODULES)]
    needed = {path.relative_to(ROOT).as_posix() for path in runtime_imports(*starts)}
    assert {"dlp/triggers/handlers.py", "dlp/runtime.py", "dlp/azure/arm.py", "dlp/outputs/alerts/teams.py",
            "dlp/domain/rules/base.py"} <= needed
    assert not any(path.startswith("dlp/emulator/") for path in needed), "runtime code imports the emulators"
    assert needed <= packaged(), sorted(needed - packaged())


@pytest.mark.parametrize(("path", "expected"), [
    ("tests/test_x.py", True), ("dlp/emulator/arm.py", True), ("dlp/cli/__pycache__/x.cpython-311.pyc", True),
    ("dlp/emulatorx.py", False), ("dlp/cli/demo.py", False), ("docs", False), ("a/docs/b.md", True),
    ("local.settings.json", True), ("dlp/x.pyc", True), ("function_app.py", False),
])
def test_the_ignore_matcher_follows_gitignore(path, expected):
    assert ignored(path, patterns()) is expected


# --- requirements: exact pins, one pip-compile run per supported Python, merged (.ci/lock.py) ------------------

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)(?:\s*;\s*(python_version.*))?$")
REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*>=\s*([^\s;#,]+)$")
SUPPORTED = ("3.11", "3.12", "3.13")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_lines(name: str) -> list[str]:
    lines = (ROOT / name).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _applies(marker: str | None, python: str) -> bool:
    from packaging.markers import Marker

    return marker is None or Marker(marker).evaluate({"python_version": python})


def pins(name: str, python: str | None = None) -> dict[str, str]:
    """The exact pins a Python installs from a lock (default: the Python running the tests). Every line is an
    exact pin; no package is pinned twice for one Python."""
    import sys

    python = python or f"{sys.version_info[0]}.{sys.version_info[1]}"
    found: dict[str, str] = {}
    for line in requirement_lines(name):
        match = PIN.match(line)
        assert match, f"{name}: not an exact pin: {line!r}"
        if _applies(match.group(3), python):
            package = canonical(match.group(1))
            assert package not in found, f"{name}: {package} pinned twice for Python {python}"
            found[package] = match.group(2)
    return found


def direct(name: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in requirement_lines(name):
        if line.startswith("-"):
            continue
        match = REQUIREMENT.match(line)
        assert match, f"{name}: write a direct dependency as NAME>=LOWER: {line!r}"
        found[canonical(match.group(1))] = match.group(2)
    return found


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:4])


def deployed_python() -> str:
    api = (ROOT / "infra" / "app" / "api.bicep").read_text(encoding="utf-8")
    match = re.search(r"runtime: \{\s*name: 'python'\s*version: '(\d+\.\d+)'", api)
    assert match, "infra/app/api.bicep declares no Python runtime version"
    return match.group(1)


@pytest.mark.parametrize("python", SUPPORTED)
def test_requirements_are_exact_pins_compiled_from_the_direct_list(python):
    runtime, wanted = pins("requirements.txt", python), direct("requirements.in")
    assert wanted.keys() <= runtime.keys(), sorted(wanted.keys() - runtime.keys())
    for name, lower in wanted.items():
        assert version_tuple(runtime[name]) >= version_tuple(lower), (name, runtime[name], lower)
    header = (ROOT / "requirements.txt").read_text(encoding="utf-8")
    assert "autogenerated by .ci/lock.py" in header and "requirements.in" in header
    assert "azure-mgmt-resourcegraph" not in runtime and "msrest" not in runtime, "the deprecated msrest ships again"


@pytest.mark.parametrize("python", SUPPORTED)
def test_ci_installs_the_deployed_set_plus_the_dev_tools(python):
    runtime, dev = pins("requirements.txt", python), pins("requirements-dev.txt", python)
    assert {name: dev.get(name) for name in runtime} == runtime, "requirements-dev.txt must keep the runtime pins"
    assert {"pytest", "ruff", "trustme", "hypothesis", "import-linter"} <= dev.keys()
    assert requirement_lines("requirements-dev.in")[:2] == ["-c requirements.txt", "-r requirements.in"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "pip install -r requirements-dev.txt --no-deps" in ci and "pip check" in ci


def test_azure_functions_follows_microsofts_split_at_python_3_13():
    """azure-functions 1.x requires Python < 3.13 and 2.x (the same API) >= 3.13: each Python gets its line."""
    assert version_tuple(pins("requirements.txt", "3.11")["azure-functions"])[0] == 1
    assert version_tuple(pins("requirements.txt", "3.12")["azure-functions"])[0] == 1
    assert version_tuple(pins("requirements.txt", "3.13")["azure-functions"])[0] == 2


def test_the_pinned_set_is_complete_and_is_what_this_environment_runs():
    """Every pinned package's own dependencies are pinned too (so `--no-deps` installs a working set), and the
    interpreter running the tests has exactly these versions: the tests exercise what deploys."""
    from importlib import metadata

    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    dev = pins("requirements-dev.txt")
    env = {**default_environment(), "extra": ""}
    for name, version in dev.items():
        dist = metadata.distribution(name)
        assert dist.version == version, (name, dist.version, version)
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate(env):
                assert canonical(req.name) in dev, f"{name} needs {req.name}, which is not pinned"


def _lock_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("ci_lock", ROOT / ".ci" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_lock_merge_writes_shared_pins_once_and_marks_the_ones_that_differ():
    lock = _lock_module()
    assert lock.SUPPORTED == SUPPORTED
    compiled = {
        "3.11": "a==1.0\n    # via -r x.in\nb==2.0\n    # via a\n",
        "3.12": "a==1.0\n    # via -r x.in\nb==2.0\n    # via a\n",
        "3.13": "a==1.0\n    # via -r x.in\nb==3.0\n    # via\n    #   a\n    #   c\nc==1\n    # via a\n",
    }
    merged = lock.merge(compiled, "pip-compile x.in")
    body = [line for line in merged.splitlines() if not line.startswith("#")]
    assert body == ["a==1.0", "    # via -r x.in", 'b==2.0 ; python_version < "3.13"', 'b==3.0 ; python_version >= "3.13"',
                    "    # via", "    #   a", "    #   c", 'c==1 ; python_version >= "3.13"', "    # via a"]
    for python in SUPPORTED:                            # each Python gets back exactly what its run chose
        own = {line.split("==")[0]: line.split("==")[1] for line in compiled[python].splitlines() if "==" in line}
        chosen = dict(line.split("==") for line in lock.select(merged, python).split())
        assert chosen == own, python
    assert lock.marker(["3.12"]) == 'python_version >= "3.12" and python_version < "3.13"'
    assert lock.marker(["3.11", "3.13"]) == 'python_version < "3.12" or python_version >= "3.13"'
    assert lock.marker(list(SUPPORTED)) == ""


def test_supported_pythons_are_the_same_everywhere():
    """pyproject's requires-python, the lock's Pythons, CI's oldest and newest, the docs."""
    assert pyproject()["project"]["requires-python"] == f">={SUPPORTED[0]}"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert f"OLDEST={SUPPORTED[0]}\n" in ci and f"NEWEST={SUPPORTED[-1]}\n" in ci
    for name in ("requirements.txt", "requirements-dev.txt"):
        assert f"Python {', '.join(SUPPORTED[:-1])} and {SUPPORTED[-1]}," in (ROOT / name).read_text(encoding="utf-8")


def third_party_imports(files: set[Path]) -> set[str]:
    """Full module names these files import that are neither the project's nor the standard library's."""
    import sys

    names: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
    return {n for n in names if n.split(".")[0] not in sys.stdlib_module_names | {"dlp", "function_app", "__future__"}}


def owning_distributions() -> dict[Path, str]:
    """Installed file -> the distribution that installed it (namespace packages such as `azure` span many)."""
    from importlib import metadata

    owners: dict[Path, str] = {}
    for dist in metadata.distributions():
        for file in dist.files or []:
            if file.suffix == ".py":
                owners[Path(dist.locate_file(file)).resolve()] = canonical(dist.metadata["Name"])
    return owners


def test_everything_the_app_imports_comes_from_a_pinned_package():
    """A new SDK imported by the app (azure.eventgrid, say) without a line in requirements.in fails here."""
    import importlib.util

    from dlp.domain.rules import _MODULES

    starts = [ROOT / "function_app.py", *(ROOT / "dlp" / "domain" / "rules" / f"{name}.py" for name in _MODULES)]
    imported = third_party_imports(runtime_imports(*starts))
    assert {"azure.mgmt.containerregistry", "azure.identity", "requests"} <= imported
    runtime, owners = pins("requirements.txt"), owning_distributions()
    unpinned = {}
    for name in sorted(imported):
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin, name
        owner = owners.get(Path(spec.origin).resolve())
        if owner not in runtime:
            unpinned[name] = owner
    assert not unpinned, f"imported by the app, not pinned in requirements.txt: {unpinned}"


def test_deployed_python_is_tested_and_compiled_and_one_flex_consumption_runs():
    """infra/ deploys the oldest supported Python, which CI runs the whole suite on, and the lock was compiled for."""
    version = deployed_python()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert version == SUPPORTED[0] and f"OLDEST={version}\n" in ci
    assert version in {"3.11", "3.12", "3.13"}, "a version Flex Consumption runs (docs/deploy.md, Versions)"


# --- `pip install .` gives the acr-dlp command -----------------------------------------------------------------

def pyproject() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_pyproject_declares_the_runtime_dependencies_and_the_command():
    project = pyproject()["project"]
    declared = {}
    for spec in project["dependencies"]:
        match = REQUIREMENT.match(spec)
        assert match, spec
        declared[canonical(match.group(1))] = match.group(2)
    assert declared == direct("requirements.in")
    assert project["scripts"] == {"acr-dlp": "dlp.cli:main"}
    assert pyproject()["tool"]["setuptools"]["packages"]["find"]["include"] == ["dlp", "dlp.*"]


@pytest.mark.slow
def test_the_wheel_holds_dlp_only_and_acr_dlp_equals_python_m_dlp(tmp_path):
    """Build the wheel from a copy of the project, install it outside the clone, run `acr-dlp` from there."""
    import shutil
    import sys
    import zipfile

    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "docs", source / "docs")
    shutil.copytree(ROOT / "dlp", source / "dlp", ignore=shutil.ignore_patterns("__pycache__"))
    (source / "tests").mkdir()                       # must not be packaged even when present
    (source / "tests" / "__init__.py").write_text("", encoding="utf-8")
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", str(source), "-w", str(wheels)], check=True, timeout=300)
    (wheel,) = wheels.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert {name.split("/")[0] for name in names} == {"dlp", wheel.name.split("-")[0] + "-0.1.0.dist-info"}
    assert {n for n in names if n.startswith("dlp/")} == {p.relative_to(ROOT).as_posix() for p in (ROOT / "dlp").rglob("*.py")}
    assert "acr-dlp = dlp.cli:main" in entry_points

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check",
                    "--target", str(site), str(wheel)], check=True, timeout=300)
    script = site / "bin" / "acr-dlp"
    assert script.is_file()
    work = tmp_path / "work"
    shutil.copytree(ROOT / "examples", work / "examples")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "HOME": str(tmp_path)}
    installed = subprocess.run([str(script), "evaluate", "examples/", "--format", "json"], cwd=work, env=env,
                               capture_output=True, text=True, timeout=120, check=False)
    module = subprocess.run([sys.executable, "-m", "dlp", "evaluate", "examples/", "--format", "json"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=False)
    assert installed.returncode == module.returncode == 1, installed.stderr
    assert installed.stdout == module.stdout
    where = subprocess.run([sys.executable, "-c", "import dlp; print(dlp.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site)), where          # the installed copy ran, not the clone
    usage = subprocess.run([str(script), "evaluate"], cwd=work, env=env, capture_output=True, text=True, check=False)
    assert usage.returncode == 2 and usage.stderr.startswith("usage: acr-dlp evaluate")
    demo = subprocess.run([str(script), "demo"], cwd=work, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert demo.returncode == 0 and demo.stderr == "", demo.stderr          # the emulator ships in the wheel
    from dlp.cli.demo import INSTALL_EXTRA
    from tests.test_demo import BLOCK_TRUSTME

    blocked = subprocess.run([sys.executable, "-c", BLOCK_TRUSTME, "demo"], cwd=work, env=env, capture_output=True,
                             text=True, timeout=60, check=False)
    assert blocked.returncode == 2 and blocked.stderr.strip().endswith(INSTALL_EXTRA), blocked.stderr
