"""The console's connection (omni/pages/static/console/connection.js) in real headless Chromium,
on the WebChat tests' fakes (a socket and a clock driven by hand): what it does when the server
says the console is served by another node now (cluster mode, ``moved``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import Browser, Page
from tests.browser.site import JS, ForeignSite
from tests.browser.test_webchat_modules import FAKES, MODULES

pytestmark = pytest.mark.browser

STATIC = Path(__file__).resolve().parents[2] / "omni" / "pages" / "static"

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Console</title>
<script type="module">
import { OperatorConnection } from "/console/connection.js";
import * as fakes from "/fakes.js";
window.C = { OperatorConnection, ...fakes };
</script></head><body><main></main></body></html>"""

SCENARIO = """() => {
  const { OperatorConnection, FakeClock, FakeSocket } = window.C;
  const clock = new FakeClock([1]);  // each delay at its ceiling
  const sockets = [];
  class Socket extends FakeSocket {
    constructor(url) { super(url); sockets.push(this); }
  }
  const frames = [];
  const statuses = [];
  const c = new OperatorConnection({
    url: "ws://omni.test/ws/operator", token: "omni_session_x", clock, WebSocket: Socket,
    onFrame: (f) => frames.push(f), onStatus: (s) => statuses.push(s),
  });
  const welcome = { type: "welcome", operator: { id: 1, name: "Alice" },
                    conversations: [{ id: "C1" }] };
  c.open();
  sockets.at(-1).accept();
  sockets.at(-1).deliver(welcome, { type: "message", conversation_id: "C1", seq: 7,
                                    author: { kind: "visitor", name: "Vera" }, text: "hi" });
  c.message("C1", "still there?");
  sockets.at(-1).drop();                       // a drop: back-off 500, the next one 1000
  clock.advance(clock.delays.at(-1));
  sockets.at(-1).accept();
  sockets.at(-1).deliver({ type: "error", code: "moved", message: "elsewhere" });
  sockets.at(-1).drop(1012);
  const delay = clock.delays.at(-1);
  clock.advance(delay);
  sockets.at(-1).accept();
  const login = [...sockets.at(-1).sent];
  sockets.at(-1).deliver(welcome);
  return { delay, login, after: sockets.at(-1).sent.slice(1), sockets: sockets.length,
           frames: frames.map((f) => f.code || f.type), statuses };
}"""


@pytest.fixture
async def page(browser: Browser, foreign_site: ForeignSite) -> AsyncIterator[Page]:
    for name, text in MODULES.items():
        foreign_site.serve(f"/webchat/{name}", text, JS)
    foreign_site.serve(
        "/console/connection.js", (STATIC / "console/connection.js").read_text(encoding="utf-8"), JS
    )
    foreign_site.serve("/fakes.js", FAKES, JS)
    opened = await browser.new_page()
    assert await opened.goto(foreign_site.serve("/", PAGE)) == 200
    await opened.wait_for_function("window.C !== undefined")
    yield opened
    await opened.close()  # nothing is drawn: no last screenshot to take


async def test_moved_signs_in_again_at_once_and_catches_up(page: Page) -> None:
    seen: dict[str, Any] = await page.evaluate(SCENARIO)
    # The back-off starts over (the first ceiling, not the next), and nothing is shown.
    assert seen["delay"] == 500
    assert seen["frames"] == ["welcome", "message", "welcome"]
    assert seen["login"] == [{"type": "login", "token": "omni_session_x"}]
    # Caught up from what was passed on, and the unacknowledged message sent again.
    sent = seen["after"]
    assert sent[0] == {"type": "sync", "conversation_id": "C1", "last_seq": 7}
    assert sent[1]["type"] == "message" and sent[1]["text"] == "still there?"
    assert seen["sockets"] == 3
    assert "stopped" not in seen["statuses"]
