"""The visitor WebChat's weight and speed against issue 13's budgets (DESIGN §9), measured in
real headless Chromium against a real ``omni serve``.

Usage::

    .venv/bin/python benchmarks/page_weight.py [--runs 20] [--json]

Budgets (DESIGN §9), with Rocket.Chat livechat's figures beside them, all gzipped; 1 KB is
counted as 1,000 bytes (the stricter reading):

* ``/widget.js``, the embed script: ≤ 3 KB (Rocket.Chat's ~3.1 KB);
* the WebChat's first load, ``/webchat?service=ID`` — the HTML, every module, the stylesheet,
  the public configuration: every request the page makes until the network is idle, before the
  emoji picker is opened: ≤ 40 KB in all (Rocket.Chat's ~72 KB);
* no request to a host other than Omni's own (its HTTP and websocket ports on 127.0.0.1).

Sizes are the bodies as they went over the wire — gzipped when the response was gzipped: the
response's ``Content-Length``, else Chromium's encoded body size (Playwright's
``request.sizes()["responseBodySize"]``, kept in the JSON as ``chromium_body``; it counts one
byte more than ``Content-Length`` on the uncompressed responses). The budgets are checked on
the bodies; the response headers (as Chromium counts them) are reported beside them. Each
measurement is a fresh browser context (an empty cache: a first visit). Also reported: what the
emoji picker adds when it is first opened (it is loaded lazily), the embed script's own
requests when a customer's page loads it (``page.set_content`` on a blank page), and each text
response sent without gzip that gzip would have made smaller (said, never failed).

Timing: ``--runs`` times (after ``--warmup`` unmeasured ones), a fresh context opens
``/webchat?service=25``, fills the identification form as soon as it is there, presses start,
and waits for the websocket's ``started`` (the answer to ``start``, sent once the conversation
is stored: docs/protocol.md §4.3) and then ``assigned`` (an operator, signed in by this script
over the websocket, accepts every offer at once; the script ends each conversation after its
page has closed). Times come from Chromium's own clock (the DevTools protocol's network events
on a session of the page's own: the document request, the ``start`` frame sent, the ``started``
and ``assigned`` frames received); navigation start is the document request less the
navigation entry's ``fetchStart``. One more mark is taken on the page's own clock: when the
form's first field enters the DOM (a ``MutationObserver`` added with ``page.add_init_script``,
which the page's CSP does not apply to; it only observes). Between the form and ``start`` is
Playwright's typing and clicking, as fast as it goes. Medians and p90s are printed; timings
never fail the run.

The server is ``python -m omni.cli serve`` in a subprocess, on 127.0.0.1 and free ports, on its
embedded PostgreSQL in a temporary directory (removed afterwards), with a configuration this
script writes: one always-open service (25, no survey), one group, one operator, and
``[server.limits]`` raised so that one address (this script) may start every conversation.
Chromium is Debian's (``/usr/bin/chromium``, ``--chromium`` for another), driven by Playwright's
async API on an asyncio loop in a thread of its own (``omni.store.bridge.ThreadBridge``);
nothing is downloaded. Every wait has a deadline and the server is stopped on every exit path.

Exit status: 1 if a size budget is exceeded, a request went to another host, or a request of
the page failed (a broken page's figures mean nothing); 0 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import trio
from lifecycle import exit_status, stop_embedded, stop_server, until_signalled
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from omni.store.bridge import ThreadBridge

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page, Playwright
    from playwright.async_api import Request as PlaywrightRequest

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SERVICE = 25

KB = 1000
#: Budgets (DESIGN §9), gzipped bytes.
WIDGET_BUDGET = 3 * KB
FIRST_LOAD_BUDGET = 40 * KB
#: Rocket.Chat livechat, gzipped (DESIGN §9): what the budgets were set against.
ROCKET_WIDGET = 3_100
ROCKET_FIRST_LOAD = 72_000

#: The operator's console token (strong enough for the server; public: benchmarks only).
OPERATOR_TOKEN = "bench-pages-op-Lq8Zr3Vx6Kp1Nw4T"

CONFIG = """\
[server]
host = "127.0.0.1"
ws_port = 0
http_port = 0
native_operators = true

# One address (this script) starts every conversation, and its operator accepts and ends them
# all (each `accept` and `end` is a message of the operator's connection).
[server.limits]
connections_per_ip = 100000
handshakes_per_second = 100000
handshake_burst = 100000
conversations_per_minute = 100000
conversations_per_service_per_minute = 100000
messages_per_second = 100000
message_burst = 100000

[[schedules]]
id = "always"
timezone = "UTC"
[schedules.weekly]
mon = [["00:00", "24:00"]]
tue = [["00:00", "24:00"]]
wed = [["00:00", "24:00"]]
thu = [["00:00", "24:00"]]
fri = [["00:00", "24:00"]]
sat = [["00:00", "24:00"]]
sun = [["00:00", "24:00"]]

[[groups]]
id = 1
name = "Support"

[[services]]
id = {service}
name = "Support"
schedule = "always"
survey = "none"
greeting = "Hi {{visitor}}, {{operator}} here."
links = [{{ group = 1 }}]

[[operators]]
id = 1
name = "Alice"
groups = [1]
capacity = 10
token = "{operator}"
"""

#: Deadlines: every wait is bounded, so a broken server or page fails the run instead of
#: hanging it.
START_TIMEOUT = 120.0  # the server's banner (initdb of the embedded PostgreSQL included)
STOP_TIMEOUT = 30.0  # the server exiting after SIGTERM (it stops its PostgreSQL), then SIGKILL
BROWSER_TIMEOUT = 30.0  # Chromium starting or closing
PAGE_TIMEOUT = 20.0  # one load, one click, one frame
VISIT_TIMEOUT = 60.0  # one whole visit, on the trio side
RUN_TIMEOUT = 600.0  # the whole benchmark
RECV_TIMEOUT = 10.0  # the operator's sign-in answers
MAX_OPERATOR_FRAMES = 100_000
SETTLE = 0.5  # quiet seconds after the emoji picker shows, for late requests
TEXT_TYPES = ("text/", "application/json", "application/javascript", "image/svg+xml")

#: Run in the page before its own scripts (injected through the DevTools protocol, so the
#: page's CSP does not apply): when the identification form's first field enters the DOM, on
#: the page's clock (milliseconds since navigation start). It only observes.
FORM_SHOWN = """
new MutationObserver((_, observer) => {
  if (document.getElementById("omni-name")) {
    window.__omniFormShown = performance.now();
    observer.disconnect();
  }
}).observe(document, { childList: true, subtree: true });
"""

BANNER = re.compile(
    rb"omni: serving websockets on (ws://127\.0\.0\.1:\d+)/ws/visitor.*"
    rb"HTTP on (http://127\.0\.0\.1:\d+)"
)


# == the server ==================================================================================


@dataclass
class Server:
    process: trio.Process
    ws_url: str
    http_url: str
    output: bytearray

    def log(self) -> str:
        return self.output.decode(errors="replace")


@asynccontextmanager
async def serving(scratch: Path) -> AsyncIterator[Server]:
    """``omni serve`` on its embedded PostgreSQL in ``scratch`` until the block ends; then
    SIGTERM, SIGKILL after ``STOP_TIMEOUT``."""
    config = scratch / "omni.toml"
    config.write_text(CONFIG.format(service=SERVICE, operator=OPERATOR_TOKEN))
    data_dir = scratch / "data"
    command = [sys.executable, "-m", "omni.cli", "serve", "--config", str(config)]
    command += ["--host", HOST, "--ws-port", "0", "--http-port", "0", "--log-level", "WARNING"]
    command += ["--data-dir", str(data_dir)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNI_")}
    env["PYTHONUNBUFFERED"] = "1"
    process = await trio.lowlevel.open_process(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env=env,
        start_new_session=True,  # our Ctrl-C is handled here; the server gets SIGTERM from us
    )
    output = bytearray()
    banner, drained = trio.Event(), trio.Event()
    try:
        async with trio.open_nursery() as nursery:

            async def pump() -> None:
                assert process.stdout is not None
                while chunk := await process.stdout.receive_some():
                    output.extend(chunk)
                    if not banner.is_set() and BANNER.search(output):
                        banner.set()
                banner.set()  # it exited: no banner will come
                drained.set()

            nursery.start_soon(pump)
            with trio.move_on_after(START_TIMEOUT):
                await banner.wait()
            if (found := BANNER.search(output)) is None:
                if drained.is_set():
                    with trio.move_on_after(5):
                        await process.wait()
                tail = output.decode(errors="replace")[-3000:]
                raise RuntimeError(f"omni serve did not start (status {process.poll()}):\n{tail}")
            try:
                yield Server(process, found[1].decode(), found[2].decode(), output)
            finally:
                with trio.CancelScope(shield=True):
                    await stop_server(process, STOP_TIMEOUT)
                    with trio.move_on_after(2):
                        await drained.wait()
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await stop_server(process, STOP_TIMEOUT)
        stop_embedded(data_dir, STOP_TIMEOUT)


# == the operator ================================================================================


@dataclass
class Operator:
    """Signed in and available; accepts every offer at once. Ends what it holds when told."""

    ws: WebSocketConnection
    held: list[str] = field(default_factory=list)
    accepted: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    async def send(self, type: str, **fields: Any) -> None:
        await self.ws.send_message(json.dumps({"type": type, **fields}))

    async def expect(self, type: str) -> dict[str, Any]:
        with trio.fail_after(RECV_TIMEOUT):
            frame: dict[str, Any] = json.loads(await self.ws.get_message())
        if frame.get("type") != type:
            raise RuntimeError(f"the operator expected {type!r}, got {frame}")
        return frame

    async def sign_in(self) -> None:
        await self.send("login", token=OPERATOR_TOKEN)
        await self.expect("welcome")
        await self.send("status", status="available")
        await self.expect("status")

    async def serve(self) -> None:
        """Accept offers until cancelled (or the connection closes)."""
        with contextlib.suppress(ConnectionClosed):
            for _ in range(MAX_OPERATOR_FRAMES):
                frame = json.loads(await self.ws.get_message())
                kind = frame.get("type")
                if kind == "offer":
                    await self.send("accept", conversation_id=frame["conversation_id"])
                elif kind == "assigned":
                    self.accepted += 1
                    self.held.append(frame["conversation_id"])
                elif kind == "error":
                    self.errors.append(frame)

    async def end_all(self) -> None:
        """End the conversations held (their visitors' pages are closed): capacity again."""
        while self.held:
            await self.send("end", conversation_id=self.held.pop())


# == the browser (runs on the asyncio thread) ====================================================


@dataclass
class Fetched:
    """One request of a page, as Chromium counted it."""

    phase: str  # "first load", "conversation", "emoji picker", "widget"
    url: str
    origin: str  # scheme://host:port
    resource_type: str  # "document", "script", "stylesheet", "fetch", ...
    status: int | None
    encoding: str  # the response's Content-Encoding ("" for none)
    body: int  # body bytes on the wire: Content-Length, else Chromium's encoded body size
    chromium_body: int  # Chromium's ``responseBodySize`` (the encoded body)
    headers: int  # response header bytes, as Chromium counts them
    decoded: int | None  # the body's bytes once decoded
    #: For a text response sent without compression: its size gzipped (what gzip would save).
    gzipped: int | None = None
    failure: str | None = None

    @property
    def path(self) -> str:
        parts = urlsplit(self.url)
        return parts.path + (f"?{parts.query}" if parts.query else "")


class Recorder:
    """The requests of one browser context, each labelled with the phase it finished in."""

    def __init__(self, context: BrowserContext) -> None:
        self.phase = "first load"
        self.requests: list[Fetched] = []
        self.sockets: list[str] = []
        self._sizing: set[asyncio.Task[None]] = set()
        context.on("requestfinished", lambda r: self._record(r, None))
        context.on("requestfailed", lambda r: self._record(r, r.failure or "failed"))
        context.on(
            "page", lambda page: page.on("websocket", lambda ws: self.sockets.append(ws.url))
        )

    def _record(self, request: PlaywrightRequest, failure: str | None) -> None:
        task = asyncio.get_running_loop().create_task(self._size(request, self.phase, failure))
        self._sizing.add(task)
        task.add_done_callback(self._sizing.discard)

    async def _size(self, request: PlaywrightRequest, phase: str, failure: str | None) -> None:
        response = await request.response()
        body = chromium_body = headers = 0
        decoded = gzipped = None
        encoding = ""
        if response is not None and failure is None:
            sizes = await request.sizes()
            chromium_body, headers = sizes["responseBodySize"], sizes["responseHeadersSize"]
            encoding = (await response.header_value("content-encoding")) or ""
            length = await response.header_value("content-length")
            # The server's Content-Length is exact; Chromium's body size is one byte more on
            # the uncompressed responses (both are kept: see chromium_body).
            body = int(length) if length and length.isdigit() else chromium_body
            with contextlib.suppress(Exception):  # a body Chromium did not keep
                content = await response.body()
                decoded = len(content)
                kind = (await response.header_value("content-type")) or ""
                if not encoding and kind.startswith(TEXT_TYPES):
                    gzipped = len(gzip.compress(content, mtime=0))
        parts = urlsplit(request.url)
        self.requests.append(
            Fetched(
                phase,
                request.url,
                f"{parts.scheme}://{parts.netloc}",
                request.resource_type,
                response.status if response is not None else None,
                encoding,
                body,
                chromium_body,
                headers,
                decoded,
                gzipped,
                failure,
            )
        )

    async def settle(self) -> None:
        """Wait for the sizes of the requests finished so far."""
        await asyncio.gather(*self._sizing, return_exceptions=True)


async def launch(executable: Path) -> tuple[Playwright, Browser]:
    from playwright.async_api import async_playwright

    playwright = await async_playwright().start()
    try:
        browser = await playwright.chromium.launch(
            executable_path=str(executable), args=["--no-sandbox"], chromium_sandbox=False
        )
    except BaseException:
        await playwright.stop()
        raise
    return playwright, browser


async def shut(playwright: Playwright, browser: Browser) -> None:
    try:
        await browser.close()
    finally:
        await playwright.stop()


async def new_context(browser: Browser) -> BrowserContext:
    """A fresh context (an empty cache): a visitor's first visit, on a phone-sized window."""
    context = await browser.new_context(
        viewport={"width": 360, "height": 740}, locale="en-US", timezone_id="UTC"
    )
    context.set_default_timeout(PAGE_TIMEOUT * 1000)
    return context


async def measure_widget(browser: Browser, http_url: str) -> dict[str, Any]:
    """A customer's page (a blank page given one ``<script>`` tag) loads the embed script."""
    context = await new_context(browser)
    try:
        recorder = Recorder(context)
        recorder.phase = "widget"
        page = await context.new_page()
        html = (
            "<!doctype html><html lang=en><title>A shop</title><body><p>A shop.</p>"
            f'<script async src="{http_url}/widget.js" data-service="{SERVICE}"></script>'
        )
        await page.set_content(html, wait_until="networkidle")
        button = await page.evaluate("() => Boolean(window.Omni && window.Omni.service)")
        await recorder.settle()
        return {"requests": recorder.requests, "sockets": recorder.sockets, "loaded": button}
    finally:
        await context.close()


async def measure_weight(browser: Browser, url: str) -> dict[str, Any]:
    """The first load until the network is idle; a conversation started; then the emoji
    picker opened for the first time."""
    context = await new_context(browser)
    try:
        recorder = Recorder(context)
        page = await context.new_page()
        await page.goto(url, wait_until="networkidle")
        await page.wait_for_selector("#omni-name", state="visible")
        await recorder.settle()
        recorder.phase = "conversation"
        await start_from_form(page, "Wanda")
        await page.wait_for_selector("button.omni-emoji-button", state="visible")
        await recorder.settle()
        recorder.phase = "emoji picker"
        await page.click("button.omni-emoji-button")
        await page.wait_for_selector(".omni-emoji-panel .omni-emoji", state="visible")
        await page.wait_for_timeout(SETTLE * 1000)
        await recorder.settle()
        return {"requests": recorder.requests, "sockets": recorder.sockets}
    finally:
        await context.close()


async def start_from_form(page: Page, name: str) -> None:
    await page.fill("#omni-name", name)
    await page.click("form.omni-form button[type=submit]")


def _frame_type(payload: str) -> str | None:
    try:
        frame = json.loads(payload)
    except ValueError:
        return None
    return frame.get("type") if isinstance(frame, dict) else None


async def timed_visit(browser: Browser, url: str, name: str) -> dict[str, float]:
    """One visit, timed on Chromium's clock: milliseconds from navigation start."""
    context = await new_context(browser)
    try:
        page = await context.new_page()
        cdp = await context.new_cdp_session(page)
        await cdp.send("Network.enable")
        marks: dict[str, float] = {}
        frames: list[str] = []
        arrived = {"started": asyncio.Event(), "assigned": asyncio.Event()}

        def requested(event: dict[str, Any]) -> None:
            if event.get("type") == "Document":
                marks.setdefault("document", event["timestamp"])

        def sent(event: dict[str, Any]) -> None:
            if _frame_type(event["response"]["payloadData"]) == "start":
                marks.setdefault("start", event["timestamp"])

        def received(event: dict[str, Any]) -> None:
            kind = _frame_type(event["response"]["payloadData"])
            frames.append(event["response"]["payloadData"][:200])
            if kind in arrived and kind not in marks:
                marks[kind] = event["timestamp"]
                arrived[kind].set()

        cdp.on("Network.requestWillBeSent", requested)
        cdp.on("Network.webSocketFrameSent", sent)
        cdp.on("Network.webSocketFrameReceived", received)
        await page.add_init_script(FORM_SHOWN)
        await page.goto(url, wait_until="commit")
        await start_from_form(page, name)
        try:
            async with asyncio.timeout(PAGE_TIMEOUT):
                await arrived["started"].wait()
                await arrived["assigned"].wait()
        except TimeoutError:
            raise RuntimeError(
                f"{name}: no `started` and `assigned` within {PAGE_TIMEOUT:.0f} s; the page "
                f"received: {frames or 'nothing'}"
            ) from None
        navigation = await page.evaluate(
            "() => performance.getEntriesByType('navigation')[0].toJSON()"
        )
        form_shown = await page.evaluate("() => window.__omniFormShown")
        await cdp.detach()
    finally:
        await context.close()
    origin = marks["document"] - navigation["fetchStart"] / 1000  # navigation start
    since = {k: (v - origin) * 1000 for k, v in marks.items()}
    return {
        "dom_content_loaded": navigation["domContentLoadedEventEnd"],
        "load": navigation["loadEventEnd"],
        "form_shown": form_shown,
        "start_sent": since["start"],
        "started": since["started"],
        "start_to_started": since["started"] - since["start"],
        "assigned": since["assigned"],
        "started_to_assigned": since["assigned"] - since["started"],
    }


# == the run =====================================================================================


class Chromium:
    """Playwright and Chromium on the bridge's asyncio thread."""

    def __init__(self, bridge: ThreadBridge, playwright: Playwright, browser: Browser) -> None:
        self.bridge = bridge
        self.playwright = playwright
        self.browser = browser
        self.version = browser.version


@asynccontextmanager
async def open_chromium(executable: Path) -> AsyncIterator[Chromium]:
    async with ThreadBridge.open() as bridge:
        with trio.fail_after(BROWSER_TIMEOUT):
            playwright, browser = await bridge.run(launch, executable)
        try:
            yield Chromium(bridge, playwright, browser)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(BROWSER_TIMEOUT):
                await bridge.run(shut, playwright, browser)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    scratch = Path(tempfile.mkdtemp(prefix="omni-page-weight-"))
    try:
        with trio.fail_after(RUN_TIMEOUT):
            async with (
                serving(scratch) as server,
                open_chromium(args.chromium) as chromium,
                open_websocket_url(f"{server.ws_url}/ws/operator") as ws,
                trio.open_nursery() as nursery,
            ):
                operator = Operator(ws)
                await operator.sign_in()
                nursery.start_soon(operator.serve)
                result = await measure(args, server, chromium, operator)
                nursery.cancel_scope.cancel()
        result["server_log_problems"] = [
            line
            for line in server.log().splitlines()
            if re.search(r"\b(ERROR|CRITICAL|Traceback)\b", line)
        ]
        return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


async def measure(
    args: argparse.Namespace, server: Server, chromium: Chromium, operator: Operator
) -> dict[str, Any]:
    bridge, browser = chromium.bridge, chromium.browser
    url = f"{server.http_url}/webchat?service={SERVICE}"
    with trio.fail_after(VISIT_TIMEOUT):
        widget = await bridge.run(measure_widget, browser, server.http_url)
    with trio.fail_after(VISIT_TIMEOUT):
        weight = await bridge.run(measure_weight, browser, url)
    await operator.end_all()
    timings: list[dict[str, float]] = []
    for n in range(args.warmup + args.runs):
        try:
            with trio.fail_after(VISIT_TIMEOUT):
                timing = await bridge.run(timed_visit, browser, url, f"Visitor {n}")
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; the operator's errors: {operator.errors}") from None
        await operator.end_all()
        if n >= args.warmup:
            timings.append(timing)
    return report(args, server, chromium, operator, widget, weight, timings)


# == the report ==================================================================================


def _quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile, linear between the closest ranks (p90 of 20: between 18th and 19th)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def report(
    args: argparse.Namespace,
    server: Server,
    chromium: Chromium,
    operator: Operator,
    widget: dict[str, Any],
    weight: dict[str, Any],
    timings: list[dict[str, float]],
) -> dict[str, Any]:
    own = {
        f"{urlsplit(server.http_url).scheme}://{urlsplit(server.http_url).netloc}",
        f"{urlsplit(server.ws_url).scheme}://{urlsplit(server.ws_url).netloc}",
    }
    requests: list[Fetched] = widget["requests"] + weight["requests"]
    sockets: list[str] = widget["sockets"] + weight["sockets"]
    foreign = sorted(
        {r.origin for r in requests if r.origin not in own}
        | {f"{urlsplit(u).scheme}://{urlsplit(u).netloc}" for u in sockets}.difference(own)
    )
    failed = [
        f"{r.path if r.origin in own else r.url}: {r.failure or r.status}"
        for r in requests
        if r.failure or r.status is None or r.status >= 400
    ]
    script = [r for r in widget["requests"] if urlsplit(r.url).path == "/widget.js"]
    if len(script) != 1:
        raise RuntimeError(f"the customer's page fetched /widget.js {len(script)} times")
    first = [r for r in weight["requests"] if r.phase == "first load"]
    emoji = [r for r in weight["requests"] if r.phase == "emoji picker"]
    between = [r for r in weight["requests"] if r.phase == "conversation"]
    first_body = sum(r.body for r in first)
    widget_body = script[0].body
    figures = {
        "widget_gz": widget_body,
        "first_load_gz": first_body,
        "first_load_headers": sum(r.headers for r in first),
        "first_load_requests": len(first),
        "emoji_gz": sum(r.body for r in emoji),
        "emoji_requests": len(emoji),
    }
    checks = {
        "widget": widget_body <= WIDGET_BUDGET,
        "first_load": first_body <= FIRST_LOAD_BUDGET,
        "hosts": not foreign,
        "requests_ok": not failed,
    }
    # Text that went without gzip and would have been smaller with it: said, not failed.
    plain = {
        r.path: (r.body, r.gzipped)
        for r in requests
        if r.gzipped is not None and r.gzipped < r.body
    }
    times = {
        key: {
            "median_ms": statistics.median(t[key] for t in timings),
            "p90_ms": _quantile([t[key] for t in timings], 0.9),
            "min_ms": min(t[key] for t in timings),
            "max_ms": max(t[key] for t in timings),
        }
        for key in timings[0]
    }
    return {
        "date": time.strftime("%Y-%m-%d"),
        "chromium": chromium.version,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_before": args.loadavg,
        "runs": len(timings),
        "warmup": args.warmup,
        "budgets": {"widget_gz": WIDGET_BUDGET, "first_load_gz": FIRST_LOAD_BUDGET},
        "rocket_chat": {"widget_gz": ROCKET_WIDGET, "first_load_gz": ROCKET_FIRST_LOAD},
        "figures": figures,
        "checks": checks,
        "passed": all(checks.values()),
        "foreign_origins": foreign,
        "failed_requests": failed,
        "not_gzipped": [
            {"path": path, "body": body, "gzipped": gzipped}
            for path, (body, gzipped) in plain.items()
        ],
        "widget_requests": len(widget["requests"]),
        "widget_total_gz": sum(r.body for r in widget["requests"]),
        "requests_between": [r.path for r in between],
        "widget_loaded": widget["loaded"],
        "sockets": sockets,
        "requests": [asdict(r) | {"path": r.path} for r in requests],
        "timings": times,
        "per_run": timings,
        "operator_accepted": operator.accepted,
        "operator_errors": operator.errors,
    }


def _bytes(n: float | None) -> str:
    return "-" if n is None else f"{n:,.0f} B"


def _ratio(omni: float, rocket: float) -> str:
    return f"{omni / rocket:.2f}"


TIMING_NAMES = {
    "dom_content_loaded": "navigation start -> DOMContentLoaded",
    "load": "navigation start -> load",
    "form_shown": "navigation start -> the form in the page",
    "start_sent": "navigation start -> `start` sent (form filled)",
    "start_to_started": "`start` sent -> `started` received",
    "started": "navigation start -> `started` received",
    "started_to_assigned": "`started` -> `assigned` (operator accepts)",
    "assigned": "navigation start -> `assigned` received",
}


def table(result: dict[str, Any]) -> str:
    f, b, rc, ok = result["figures"], result["budgets"], result["rocket_chat"], result["checks"]
    t = result["timings"]
    verdict = {True: "ok", False: "OVER"}
    lines = [
        f"WebChat weight (issue 13): Chromium {result['chromium']}, omni serve (embedded "
        f"PostgreSQL) on 127.0.0.1, {result['cpus']} CPUs, load {result['loadavg_before']}",
        "",
        f"{'figure':<44}{'Omni':>12}{'budget':>12}{'Rocket.Chat':>13}{'Omni/RC':>9}  verdict",
        f"{'/widget.js, gzipped':<44}{_bytes(f['widget_gz']):>12}"
        f"{_bytes(b['widget_gz']):>12}{'~' + _bytes(rc['widget_gz']):>13}"
        f"{_ratio(f['widget_gz'], rc['widget_gz']):>9}  {verdict[ok['widget']]}",
        f"{'first load, ' + str(f['first_load_requests']) + ' requests, bodies gzipped':<44}"
        f"{_bytes(f['first_load_gz']):>12}{_bytes(b['first_load_gz']):>12}"
        f"{'~' + _bytes(rc['first_load_gz']):>13}"
        f"{_ratio(f['first_load_gz'], rc['first_load_gz']):>9}  {verdict[ok['first_load']]}",
        f"{'  + response headers (not budgeted)':<44}{_bytes(f['first_load_headers']):>12}",
        f"{'embed script on a page: ' + str(result['widget_requests']) + ' requests':<44}"
        f"{_bytes(result['widget_total_gz']):>12}{'-':>12}{'-':>13}{'-':>9}",
        f"{'emoji picker, first opened: ' + str(f['emoji_requests']) + ' requests':<44}"
        f"{_bytes(f['emoji_gz']):>12}{'-':>12}{'-':>13}{'-':>9}",
        f"{'hosts other than Omni (127.0.0.1, 2 ports)':<44}"
        f"{', '.join(result['foreign_origins']) or 'none':>12}{'none':>12}{'-':>13}{'-':>9}"
        f"  {'ok' if ok['hosts'] else 'FAIL'}",
        f"{'failed requests':<44}{len(result['failed_requests']):>12}{'0':>12}{'-':>13}{'-':>9}"
        f"  {'ok' if ok['requests_ok'] else 'FAIL'}",
    ]
    for name in ("median_ms", "p90_ms"):
        label = f"time to `started`, {name[:-3]} of {result['runs']}"
        lines.append(
            f"{label:<44}{t['started'][name]:>9.0f} ms{'-':>12}{'n/a':>13}{'-':>9}  (reported)"
        )
    lines += ["", "requests (body = bytes on the wire; raw = decoded):"]
    lines.append(
        f"  {'phase':<13}{'path':<42}{'type':<11}{'st':>4}{'enc':>6}{'body':>9}{'raw':>9}"
        f"{'hdrs':>7}"
    )
    for r in result["requests"]:
        path = r["path"] if len(r["path"]) <= 41 else r["path"][:38] + "..."
        lines.append(
            f"  {r['phase']:<13}{path:<42}{r['resource_type']:<11}{r['status'] or '-':>4}"
            f"{r['encoding'] or '-':>6}{r['body']:>9,}{r['decoded'] or 0:>9,}{r['headers']:>7,}"
        )
    lines += ["", f"timings, ms, {result['runs']} runs (after {result['warmup']} warm-up):"]
    lines.append(f"  {'':<50}{'median':>8}{'p90':>8}{'min':>8}{'max':>8}")
    for key, name in TIMING_NAMES.items():
        s = t[key]
        lines.append(
            f"  {name:<50}{s['median_ms']:>8.1f}{s['p90_ms']:>8.1f}{s['min_ms']:>8.1f}"
            f"{s['max_ms']:>8.1f}"
        )
    lines.append("")
    for plain in result["not_gzipped"]:
        lines.append(
            f"not gzipped: {plain['path']} ({plain['body']:,} B; {plain['gzipped']:,} B gzipped)"
        )
    if result["requests_between"]:
        lines.append(f"requests while starting: {', '.join(result['requests_between'])}")
    if not result["widget_loaded"]:
        lines.append("note: the embed script did not define window.Omni on the customer's page")
    for problem in result["failed_requests"]:
        lines.append(f"FAILED: {problem}")
    for error in result["operator_errors"]:
        lines.append(f"note: the operator got {error}")
    for line in result["server_log_problems"][:5]:
        lines.append(f"note: the server logged: {line}")
    lines.append("budgets: " + ("all met" if result["passed"] else "NOT MET (exit status 1)"))
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=20, help="timed visits (20)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured visits first (2)")
    parser.add_argument(
        "--chromium",
        type=Path,
        default=Path(os.environ.get("OMNI_CHROMIUM", CHROMIUM)),
        help=f"the Chromium to drive ({CHROMIUM}, or $OMNI_CHROMIUM)",
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 200 or not 0 <= args.warmup <= 20:
        parser.error("--runs must be 1..200 and --warmup 0..20")
    if not os.access(args.chromium, os.X_OK):
        parser.error(f"no Chromium at {args.chromium} (apt-get install chromium)")
    args.loadavg = round(os.getloadavg()[0], 2)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import playwright  # noqa: F401
    except ImportError:
        print("page_weight needs Playwright: pip install -e '.[test]'", file=sys.stderr)
        return 2
    try:
        result = trio.run(until_signalled(run), args)
    except BaseException as exc:
        if (status := exit_status(exc)) is None:
            raise
        print("interrupted", file=sys.stderr)
        return status
    if not args.json:
        print(table(result))
        print()
    print(json.dumps(result, indent=2))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
