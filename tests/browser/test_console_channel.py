"""The console's channel label (issue 17, item 5), unit by unit in real headless Chromium: the
console's own ``view.js`` (and what it imports), served as it is on disk by a foreign site. A
conversation from a messaging channel shows the platform's name beside the visitor's, in
English and pt-BR, as text; the WebChat's shows none, and the visitor panel names it "WebChat".
(tests/browser/test_console.py shows the same label in the whole console.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import Browser, Page
from tests.browser.site import JS, ForeignSite

pytestmark = pytest.mark.browser

STATIC = Path(__file__).resolve().parents[2] / "omni" / "pages" / "static"
#: view.js and every module it imports, by the path the page asks for.
MODULES = (
    "console/view.js",
    "console/signin.js",
    "console/i18n.js",
    "webchat/dom.js",
    "webchat/files.js",
)

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Console</title>
<script type="module">
import { channelName, channelLabel } from "/console/view.js";
import { strings } from "/console/i18n.js";
window.C = { channelName, channelLabel, strings };
</script></head><body><main></main></body></html>"""

SCENARIO = """() => {
  const { channelName, channelLabel, strings } = window.C;
  const out = {};
  for (const lang of ["en", "pt-BR"]) {
    const t = strings(lang);
    const label = channelLabel({ channel: { kind: "whatsapp", id: "wa" } }, t);
    out[lang] = {
      label: label.textContent,
      tag: label.tagName,
      className: label.className,
      title: label.title,
      webchat: channelLabel({ channel: null }, t),
      panel: channelName({ channel: null }, t),
      generic: channelName({ channel: { kind: "generic", id: "app" } }, t),
    };
  }
  return out;
}"""


@pytest.fixture
async def page(browser: Browser, foreign_site: ForeignSite) -> AsyncIterator[Page]:
    for name in MODULES:
        foreign_site.serve(f"/{name}", (STATIC / name).read_text(encoding="utf-8"), JS)
    opened = await browser.new_page()
    assert await opened.goto(foreign_site.serve("/", PAGE)) == 200
    await opened.wait_for_function("window.C !== undefined")
    yield opened
    await opened.close()  # nothing is drawn: no last screenshot to take


async def test_the_console_labels_a_channels_conversation(page: Page) -> None:
    shown: dict[str, Any] = await page.evaluate(SCENARIO)
    assert shown["en"]["label"] == "WhatsApp"
    assert shown["en"]["tag"] == "SPAN"
    assert "c-channel-whatsapp" in shown["en"]["className"]
    assert shown["en"]["title"] == "Channel"
    assert shown["pt-BR"]["title"] == "Canal"
    assert shown["en"]["webchat"] is None
    assert shown["en"]["panel"] == "WebChat"
    assert shown["en"]["generic"] == "App"
    assert shown["pt-BR"]["generic"] == "Aplicativo"
