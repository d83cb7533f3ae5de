"""Stand-in `az`, `azd`, `curl` and `sleep` commands for running the azd hooks (infra/hooks/*.sh) for real.

The stand-in `az` answers from a list of rules (a regular expression over its arguments, the output, the exit
code) and records every call, so a test says what Azure answers and checks what the hook asked and concluded.
Used by tests/test_infra_hooks.py (provisioning, deployment) and tests/test_infra_teardown.py (azd down).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOOKS = ROOT / "infra" / "hooks"
SUB_A = "0000000a-0000-0000-0000-000000000001"
SUB_B = "0000000b-0000-0000-0000-000000000002"
TENANT = "72f988bf-0000-0000-0000-000000000000"
OTHER_TENANT = "11111111-0000-0000-0000-000000000000"
GUIDS = ["aaaaaaaa-0000-0000-0000-000000000001", "bbbbbbbb-0000-0000-0000-000000000002",
         "cccccccc-0000-0000-0000-000000000003"]
# This environment's event subscription and topics: its own topic in each subscription, and a reused one.
OURS = "acr-dlp-tok123"
OWN_TOPIC = f"/subscriptions/{SUB_A}/resourceGroups/rg-acr-dlp/providers/Microsoft.EventGrid/systemTopics/evgst-dlp-tok123"
B_TOPIC = (f"/subscriptions/{SUB_B}/resourceGroups/rg-acr-dlp-dlp-events/providers/Microsoft.EventGrid/systemTopics/"
           "evgst-dlp-tok123")
REUSED = f"/subscriptions/{SUB_B}/resourceGroups/defender/providers/Microsoft.EventGrid/systemTopics/defender-topic"

FAKE_AZ = f"""#!{sys.executable}
import json, os, re, sys
fake = os.environ["FAKE_DIR"]
args = sys.argv[1:]
line = " ".join(args)
with open(os.path.join(fake, "calls"), "a") as calls:
    calls.write(json.dumps(args) + "\\n")
counts_path = os.path.join(fake, "counts.json")
counts = json.load(open(counts_path)) if os.path.exists(counts_path) else {{}}
for index, rule in enumerate(json.load(open(os.path.join(fake, "rules.json")))):
    if not re.search(rule["match"], line):
        continue
    used = counts.get(str(index), 0)
    if rule.get("times") is not None and used >= rule["times"]:
        continue
    counts[str(index)] = used + 1
    json.dump(counts, open(counts_path, "w"))
    sys.stdout.write(rule.get("out", ""))
    sys.stderr.write(rule.get("err", ""))
    sys.exit(rule.get("code", 0))
sys.stderr.write("stand-in az: no rule for: " + line + "\\n")
sys.exit(1)
"""
FAKE_AZD = f"""#!{sys.executable}
import json, os, sys
with open(os.path.join(os.environ["FAKE_DIR"], "azd"), "a") as calls:
    calls.write(json.dumps(sys.argv[1:]) + "\\n")
"""
FAKE_SLEEP = """#!/bin/sh
echo "$@" >> "$FAKE_DIR/sleeps"
"""
# curl: the config (headers) arrives on stdin; the answer depends on whether it carries a bearer token
FAKE_CURL = """#!/bin/sh
config=$(cat)
printf '%s\\n' "$config" >> "$FAKE_DIR/curl-configs"
printf '%s\\n' "$*" >> "$FAKE_DIR/curl-args"
case "$config" in
  *"Authorization: Bearer"*) cat "$FAKE_DIR/status-token" ;;
  *) cat "$FAKE_DIR/status-anonymous" ;;
esac
"""


def rule(match: str, out: str = "", code: int = 0, err: str = "", times: int | None = None) -> dict:
    return {"match": match, "out": out, "code": code, "err": err, "times": times}


@dataclass
class Run:
    """One hook run: its result and what it asked of the stand-ins."""
    done: subprocess.CompletedProcess
    fake_dir: Path
    calls: list[list[str]] = field(default_factory=list)
    azd: list[list[str]] = field(default_factory=list)

    @property
    def code(self) -> int:
        return self.done.returncode

    @property
    def stdout(self) -> str:
        return self.done.stdout

    @property
    def stderr(self) -> str:
        return self.done.stderr

    def called(self, pattern: str) -> list[list[str]]:
        return [c for c in self.calls if re.search(pattern, " ".join(c))]

    def index(self, pattern: str) -> int:
        return next(i for i, c in enumerate(self.calls) if re.search(pattern, " ".join(c)))

    def option(self, call: list[str], name: str) -> str:
        return call[call.index(name) + 1]

    def azd_set(self) -> dict[str, str]:
        return {c[2]: c[3] for c in self.azd if c[:2] == ["env", "set"]}


def run_hook(tmp_path: Path, hook: str, rules: list[dict], env: dict[str, str], files: dict[str, str] | None = None) -> Run:
    fake = tmp_path / "fake"
    bin_dir = fake / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (("az", FAKE_AZ), ("azd", FAKE_AZD), ("sleep", FAKE_SLEEP), ("curl", FAKE_CURL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (fake / "rules.json").write_text(json.dumps(rules))
    for name, text in (files or {}).items():
        (fake / name).write_text(text)
    environ = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_DIR": str(fake), **env}
    done = subprocess.run(["sh", str(HOOKS / hook)], check=False, env=environ, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)

    def lines(name: str) -> list[list[str]]:
        path = fake / name
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    return Run(done, fake, lines("calls"), lines("azd"))

