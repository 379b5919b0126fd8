"""The console's channel label (issue 17, item 5), rendered by the console's own module under
Node with a minimal stand-in for ``document``: a conversation from a messaging channel shows
the platform's name beside the visitor's, in English and pt-BR, as text; the WebChat's shows
none, and the visitor panel names it "WebChat"."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

CONSOLE = Path(__file__).parent.parent / "omni" / "pages" / "static" / "console"

SCRIPT = """
const made = [];
globalThis.document = {
  createElement(tag) {
    const el = { tag, attrs: {}, children: [], setAttribute(k, v) { this.attrs[k] = v; },
      append(...c) { this.children.push(...c); }, appendChild(c) { this.children.push(c); } };
    made.push(el);
    return el;
  },
  createTextNode: (s) => s,
};
const dir = process.argv[2];
const { channelName, channelLabel } = await import(dir + "/view.js");
const { strings } = await import(dir + "/i18n.js");
const text = (n) =>
  n === null ? null : typeof n === "string" ? n : (n.textContent ?? n.children.map(text).join(""));
const out = {};
for (const lang of ["en", "pt-BR"]) {
  const t = strings(lang);
  const wa = { channel: { kind: "whatsapp", id: "wa" } };
  const label = channelLabel(wa, t);
  out[lang] = {
    label: text(label),
    className: label.attrs.class ?? label.className,
    title: label.attrs.title ?? label.title,
    webchat: channelLabel({ channel: null }, t),
    panel: channelName({ channel: null }, t),
    generic: channelName({ channel: { kind: "generic", id: "app" } }, t),
  };
}
console.log(JSON.stringify(out));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node")
def test_the_console_labels_a_channels_conversation(tmp_path: Path) -> None:
    script = tmp_path / "label.mjs"
    script.write_text(SCRIPT)
    done = subprocess.run(
        ["node", str(script), CONSOLE.as_uri()],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    shown = json.loads(done.stdout.strip().splitlines()[-1])
    assert shown["en"]["label"] == "WhatsApp"
    assert "c-channel-whatsapp" in shown["en"]["className"]
    assert shown["en"]["title"] == "Channel"
    assert shown["pt-BR"]["title"] == "Canal"
    assert shown["en"]["webchat"] is None
    assert shown["en"]["panel"] == "WebChat"
    assert shown["en"]["generic"] == "App"
    assert shown["pt-BR"]["generic"] == "Aplicativo"
