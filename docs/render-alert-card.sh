#!/usr/bin/env bash
# Render docs/alert-card.png from docs/alert-card.json: the Adaptive Cards JavaScript renderer (npm adaptivecards,
# the renderer Microsoft publishes) with a Teams-like light host config, in headless Chromium. Not run by CI (it
# installs a browser); run it after `python -m dlp.cli.alert_example card > docs/alert-card.json` and commit both.
# It also writes docs/alert-card.png.sha256, the digest of the JSON it rendered (tests/test_alert_example.py checks
# it, so a card that changed without a new picture fails the tests).
#
# Needs: Debian's chromium (apt-get install chromium fonts-dejavu-core) and npm (apt-get install nodejs npm).
set -euo pipefail
cd "$(dirname "$0")/.."

chromium=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$chromium" ]; then
    echo "render-alert-card.sh: chromium not found (apt-get install chromium fonts-dejavu-core)" >&2
    exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
npm install --prefix "$work" --no-audit --no-fund --loglevel=error adaptivecards@3 >/dev/null

python3 - "$work" <<'PY'
import json, sys
from pathlib import Path

work = Path(sys.argv[1])
message = json.loads(Path("docs/alert-card.json").read_text(encoding="utf-8"))
card = message["attachments"][0]["content"]
script = (work / "node_modules/adaptivecards/dist/adaptivecards.min.js").read_text(encoding="utf-8")
host = {   # close to Teams' light theme: Segoe UI, 14 px text, its accent and attention colours
    "fontFamily": "'Segoe UI', 'DejaVu Sans', sans-serif",
    "spacing": {"small": 4, "default": 8, "medium": 16, "large": 20, "extraLarge": 24, "padding": 16},
    "fontSizes": {"small": 12, "default": 14, "medium": 16, "large": 20, "extraLarge": 24},
    "containerStyles": {"default": {"backgroundColor": "#FFFFFF", "foregroundColors": {
        "default": {"default": "#242424", "subtle": "#616161"}, "accent": {"default": "#5B5FC7"},
        "attention": {"default": "#C4314B"}, "good": {"default": "#237B4B"}, "warning": {"default": "#835B00"}}}},
    "actions": {"maxActions": 6, "buttonSpacing": 8, "actionsOrientation": "horizontal", "actionAlignment": "left"},
    "factSet": {"title": {"weight": "bolder", "wrap": True, "maxWidth": 150}, "value": {"wrap": True}, "spacing": 8},
}
style = """
body { margin: 0; background: #F5F5F5; font-family: 'Segoe UI', 'DejaVu Sans', sans-serif; }
#frame { width: 640px; margin: 16px; background: #fff; border-radius: 6px; box-shadow: 0 1px 3px rgba(0,0,0,.2); }
.ac-pushButton { border: 1px solid #D1D1D1; border-radius: 4px; background: #fff; padding: 5px 12px;
  font: 600 14px 'Segoe UI', 'DejaVu Sans', sans-serif; color: #242424; }
a { color: #5B5FC7; text-decoration: none; }
"""
# Teams' markdown subset, as far as the cards use it: [text](https://...) links, **bold**, backslash escapes
render = r"""
const escape = (t) => t.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
const plain = (t) => escape(t.replace(/\\([\\`*_{}\[\]()#+.!<>|~-])/g, "$1"))
  .replace(/\*\*([^*]+)\*\*/g, "<strong>$1</strong>");
AdaptiveCards.AdaptiveCard.onProcessMarkdown = (text, result) => {
  const link = /\[((?:[^\]\\]|\\.)+)\]\((https:[^)\s]+)\)/g;
  const out = [];
  let last = 0, m;
  while ((m = link.exec(text))) {
    out.push(plain(text.slice(last, m.index)), '<a href="' + m[2] + '">' + plain(m[1]) + "</a>");
    last = link.lastIndex;
  }
  out.push(plain(text.slice(last)));
  result.outputHtml = out.join("");
  result.didProcess = true;
};
const card = new AdaptiveCards.AdaptiveCard();
card.hostConfig = new AdaptiveCards.HostConfig(HOST);
card.parse(CARD);
const frame = document.getElementById("frame");
frame.appendChild(card.render());
document.title = "height=" + Math.ceil(frame.getBoundingClientRect().height + 32);
""".replace("HOST", json.dumps(host)).replace("CARD", json.dumps(card))
page = ('<!doctype html><html><head><meta charset="utf-8"><style>' + style + '</style></head><body>'
        '<div id="frame"></div><script>' + script + '</script><script>' + render + '</script></body></html>')
(work / "card.html").write_text(page, encoding="utf-8")
PY

flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking
       --disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$work/profile")
# first pass: the rendered card's height (the page puts it in its title), then a screenshot of exactly that size
height=$("$chromium" "${flags[@]}" --window-size=672,2000 --virtual-time-budget=3000 --dump-dom "file://$work/card.html" \
    2>/dev/null | sed -n 's/.*<title>height=\([0-9]*\)<\/title>.*/\1/p' | head -1)
if [ -z "$height" ]; then
    echo "render-alert-card.sh: the card did not render (no height in the page title)" >&2
    exit 1
fi
"$chromium" "${flags[@]}" --window-size="672,$height" --virtual-time-budget=3000 \
    --screenshot="$PWD/docs/alert-card.png" "file://$work/card.html" 2>/dev/null
sha256sum docs/alert-card.json | cut -d' ' -f1 > docs/alert-card.png.sha256
echo "render-alert-card.sh: wrote docs/alert-card.png (672x$height) and docs/alert-card.png.sha256"
