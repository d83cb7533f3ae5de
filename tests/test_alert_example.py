"""The pictures show what the product does today: docs/alert-card.json is regenerated here from a real pipeline run
on the emulators (dlp/cli/alert_example.py, the demo's scenario with an export pipeline) and must be equal, and the
card the Teams emulator received must be the builder's card of the run's own Alert (so pinning two random IDs is
all that stands between the run and the docs). docs/alert-card.png is rendered from the JSON by
docs/render-alert-card.sh (headless Chromium, not run here: CI installs no browser); its size and age are checked."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from dlp.cli import alert_example
from dlp.outputs.alerts import bodies, card
from tests.test_alerts_teams import adaptive_card_problems

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def example() -> alert_example.Example:
    return alert_example.run_scenario()


def test_the_run_closes_public_access_and_leaves_the_export_policy_to_the_pipeline_guard(example):
    assert example.action == "blocked"
    assert [json.loads(body)["properties"] for body in example.patches] == [
        {"publicNetworkAccess": "Disabled", "policies": {"exportPolicy": {"status": "disabled"}}},   # refused by ARM
        {"publicNetworkAccess": "Disabled"}]                                                          # then this alone
    assert example.alert.applied == (("publicNetworkAccess", "Enabled", "Disabled"),)


def test_what_teams_and_email_received_is_the_builders_rendering_of_the_runs_alert(example):
    assert example.teams == [card.message([example.alert])]
    [mail] = example.mail
    rendered = bodies.render([example.alert])
    assert mail["content"]["html"] == rendered.html and mail["content"]["plainText"] == rendered.plain


def test_docs_alert_card_json_is_the_generated_card(example):
    documented = json.loads((DOCS / "alert-card.json").read_text(encoding="utf-8"))
    assert documented == json.loads(alert_example.render(example, "card"))
    assert adaptive_card_problems(documented) == []
    text = json.dumps(documented, ensure_ascii=False)
    assert "nightly-to-partner" in text and "publicNetworkAccess" in text
    assert "Withheld: publicNetworkAccess" not in text and "Nothing written" not in text    # the old behaviour


def test_only_the_random_ids_are_pinned(example):
    changed = {name for name in example.alert.__dataclass_fields__
               if getattr(example.alert, name) != getattr(example.pinned, name)}
    assert changed <= {"alert_id", "evaluation_id"}
    assert example.pinned.alert_id == alert_example.ALERT_ID


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR"
    return struct.unpack(">II", header[16:24])


def test_the_picture_is_a_rendered_card_no_older_than_its_json():
    """The PNG cannot be re-rendered in CI (no browser); its recorded source is the current JSON."""
    width, height = png_size(DOCS / "alert-card.png")
    assert 400 <= width <= 1600 and 300 <= height <= 3000
    import hashlib

    digest = hashlib.sha256((DOCS / "alert-card.json").read_bytes()).hexdigest()
    assert (DOCS / "alert-card.png.sha256").read_text(encoding="utf-8").split()[0] == digest, \
        "docs/alert-card.json changed: run docs/render-alert-card.sh"


def test_the_email_bodies_print(capsys):
    assert alert_example.main(["text"]) == 0
    out = capsys.readouterr().out
    assert "acrpayments01" in out and "nightly-to-partner" in out
    assert alert_example.main(["nope"]) == 2
