"""`python -m dlp demo` is a new user's first run: it tells the story and nothing that looks like a failure, and
without the development requirements it says in one line what to install, never with a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from dlp.cli.demo import INSTALL_DEV

ROOT = Path(__file__).resolve().parent.parent

# Blocks `import trustme` the way a venv with only requirements.txt would, without uninstalling anything.
BLOCK_TRUSTME = textwrap.dedent("""
    import sys

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name == "trustme" or name.startswith("trustme."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Blocker())
    sys.modules.pop("trustme", None)
    from dlp.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def clean_env() -> dict[str, str]:
    """The user's shell, minus any app settings a developer may have exported."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("DLP_", "AzureWebJobs", "AZURE_"))}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=clean_env(), capture_output=True, text=True,
                          timeout=120, check=False)


def test_demo_tells_the_story_and_prints_nothing_on_stderr():
    done = run("-m", "dlp", "demo")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    out = done.stdout
    for step in ("== 1. Local Azure", "== 5. Detection", "== 6. Remediation", "== 7. Verification", "== 8. Recorded",
                 "== 9. The responder's own write raises an event too"):
        assert step in out
    assert "action=remediated" in out
    assert "it costs 0 ARM requests, no row and no alert" in out           # the own write is free (issue 16)
    assert "== 10. Flip and restore, and what left meanwhile" in out       # the pulls of a window (issue 25)
    assert ("Pulls while open: 3 pulls from 198.51.100.7 (mallory@contoso.com): payments/api:1.4, payments/api:1.5, "
            "payments/worker:2.0") in out and "payments/api:1.6" not in out
    lowered = out.lower()
    for alarming in ("traceback", "warning", "error", "not configured", "exception"):
        assert alarming not in lowered, alarming


def test_audit_mode_demo_reports_would_remediate_quietly():
    done = run("-m", "dlp", "demo", "--mode", "audit")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "action=would-remediate" in done.stdout
    assert "== 9." not in done.stdout            # nothing was written, so there is no own write to show


def test_without_trustme_the_demo_names_the_install_command_in_one_line():
    done = run("-c", BLOCK_TRUSTME, "demo")
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("python -m dlp demo: error:")
    assert "trustme" in lines[0] and lines[0].endswith(INSTALL_DEV)


def test_the_blocker_really_blocks_trustme():
    """Guards the test above: without the blocker the same interpreter imports trustme."""
    blocked = run("-c", BLOCK_TRUSTME.replace("from dlp.cli import main\nsys.exit(main(sys.argv[1:]))",
                                              "import trustme"))
    assert blocked.returncode != 0 and "ModuleNotFoundError" in blocked.stderr
    assert run("-c", "import trustme").returncode == 0


def test_a_cp1252_terminal_gets_ascii_arrows_not_a_crash():
    """A Windows console (cp1252) has no arrow: the demo shows "->" instead of dying with UnicodeEncodeError."""
    done = subprocess.run([sys.executable, "-m", "dlp", "demo"], cwd=ROOT, env={**clean_env(), "PYTHONIOENCODING": "cp1252"},
                          capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode("cp1252", "replace")
    out = done.stdout.decode("cp1252")
    assert "Teams card: Drift remediated: acrpayments01 (compliant -> drift remediated)" in out
    assert "\u2192" not in out


def test_printable_keeps_what_the_encoding_has_and_trims_lines():
    from dlp.cli.demo import printable

    assert printable("a \u2192 b  \nc ", "utf-8") == "a \u2192 b\nc"
    assert printable("caf\u00e9 \u2192 \u2603", "cp1252") == "caf\u00e9 -> ?"
    assert printable("\u2192", "ascii") == "->"


def test_no_demo_line_ends_in_a_space_and_audit_mode_claims_no_verified_write():
    for mode, claim in (("enforce", "ms from event to verified state"),
                        ("audit", "ms from event to decision (would-remediate: nothing written)")):
        done = run("-m", "dlp", "demo", "--mode", mode)
        assert done.returncode == 0, done.stderr
        assert [line for line in done.stdout.splitlines() if line != line.rstrip()] == []
        assert claim in done.stdout
        if mode == "audit":
            assert "verified state" not in done.stdout and "== 7. Verification" not in done.stdout


def test_the_install_hint_outside_a_clone_names_packages_that_exist():
    from dlp.cli.demo import INSTALL_EXTRA

    assert INSTALL_EXTRA.startswith("pip install trustme") and "acr-dlp-responder[demo]" not in INSTALL_EXTRA
