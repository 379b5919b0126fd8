"""The browser tests' harness: Playwright's async API on an asyncio loop in a thread of its own,
driven from trio through :class:`omni.store.bridge.ThreadBridge`.

Rules:

* One Chromium per test session — Debian's, ``/usr/bin/chromium`` (``OMNI_CHROMIUM`` names
  another). :class:`Chromium` is started and closed by a *sync* session fixture, outside every
  trio run: its loop thread, its one I/O thread and its processes exist before the first test
  and after the last, so the suite's leak check (``tests/conftest.py``) neither sees them nor
  needs an exemption.
* Each test owns what it opens: :func:`open_browser` gives a :class:`Browser` whose pages each
  live in a browser context of their own (cookies, storage, viewport, locale); leaving the block
  closes them all, whatever happened.
* Playwright's objects live on the browser's thread and are touched only there: every call goes
  through the bridge. What Playwright reports (console, errors, websocket frames, requests) is
  recorded there; the trio side reads copies, and waits are done there too.
* Every wait has a deadline: :data:`TIMEOUT` unless told, given to Playwright and enforced
  again on the trio side (``fail_after``) in case the browser side hangs.
* A page's *problems* — an uncaught error, a Content Security Policy violation, a request
  blocked by the CORS or private-network rules — fail the test when the browser closes, unless
  the test expected them (:meth:`Page.expect_problem`). Other console errors (a 404) are only
  recorded: a test asserts on them if they matter.
* Nothing downloads: no ``playwright install``. Missing Playwright or Chromium is a failure that
  says what to install, never a skip.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar
from urllib.parse import urlsplit

import trio

from omni.store.bridge import ThreadBridge
from tests.support import TIMEOUT

if TYPE_CHECKING:
    from playwright.async_api import Browser as PlaywrightBrowser
    from playwright.async_api import BrowserContext, Playwright, WebError, WebSocket
    from playwright.async_api import ConsoleMessage as PlaywrightConsoleMessage
    from playwright.async_api import Page as PlaywrightPage
    from playwright.async_api import Request as PlaywrightRequest

T = TypeVar("T")

#: Debian's Chromium (``apt-get install chromium``).
CHROMIUM = Path("/usr/bin/chromium")
#: How long Chromium may take to start or to close.
START_SECONDS = 30.0
#: How long closing a test's pages may take.
CLOSE_SECONDS = 10.0
#: How long the screenshot of a page's last state may take (a hung page has none).
LAST_SCREENSHOT_SECONDS = 3.0
#: The trio side's margin over a deadline Playwright enforces itself: Playwright's error (which
#: says what it was waiting for) comes first.
SLACK = 2.0
# What Playwright takes for a function rather than an expression to evaluate.
_FUNCTION = re.compile(r"\s*(async\s+)?(function\b|\([^)]*\)\s*=>|[A-Za-z_$][\w$]*\s*=>)")
#: Where screenshots go unless ``OMNI_ARTIFACTS`` names the artifacts folder.
REPO = Path(__file__).resolve().parents[2]

Viewport = tuple[int, int]
#: A phone (the smallest width the pages are made for) and a desktop.
PHONE: Viewport = (360, 740)
DESKTOP: Viewport = (1280, 800)


class BrowserUnavailable(Exception):
    """Playwright or Chromium is not installed, or Chromium did not start (the message says
    what to install)."""


def screenshots_folder() -> Path:
    """``$OMNI_ARTIFACTS/screenshots``, or ``<repo>/artifacts/screenshots`` (gitignored)."""
    artifacts = os.environ.get("OMNI_ARTIFACTS")
    return (Path(artifacts) if artifacts else REPO / "artifacts") / "screenshots"


@dataclass
class Screenshots:
    """Where a session's screenshots go, and those it saved."""

    folder: Path
    saved: list[Path] = field(default_factory=list)


# -- what a page reports ---------------------------------------------------------------------


@dataclass(frozen=True)
class ConsoleMessage:
    type: str  # "log", "error", "warning", ...
    text: str
    url: str  # the script or page that logged it


@dataclass(frozen=True, eq=False)  # each one is itself: the same error twice is two problems
class Problem:
    """What fails a test unless it expected it."""

    kind: Literal["uncaught", "csp", "cors"]
    text: str
    url: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.text} ({self.url})"


@dataclass(frozen=True)
class Frame:
    """One websocket message, as the page sent or received it."""

    socket: int  # the page's websockets are numbered from 0 in the order they opened
    url: str
    direction: Literal["sent", "received"]
    data: str | bytes

    def json(self) -> Any:
        return json.loads(self.data)

    @property
    def type(self) -> str | None:
        """The ``type`` of a JSON object frame (all of Omni's frames), else None."""
        try:
            decoded = self.json()
        except ValueError:
            return None
        kind = decoded.get("type") if isinstance(decoded, dict) else None
        return kind if isinstance(kind, str) else None


@dataclass(frozen=True)
class Socket:
    index: int
    url: str
    closed: bool


@dataclass(frozen=True)
class Request:
    """One finished (or failed) request of a page, for budget checks."""

    url: str
    host: str  # host:port as in the URL
    method: str
    resource_type: str  # "document", "script", "stylesheet", "image", "fetch", ...
    status: int | None
    transfer_size: int  # bytes on the wire: response headers and (encoded) body
    failure: str | None = None


@dataclass(frozen=True)
class Violation:
    """One axe rule a page breaks."""

    id: str
    impact: str | None  # "minor", "moderate", "serious", "critical"
    help: str
    targets: tuple[str, ...]  # CSS selectors of the offending elements

    @property
    def serious(self) -> bool:
        return self.impact in ("serious", "critical")

    def __str__(self) -> str:
        return f"{self.id} ({self.impact}): {self.help} — {', '.join(self.targets)}"


class _Log(Generic[T]):
    """Entries appended on the browser's loop and waited for there."""

    def __init__(self) -> None:
        self.entries: list[T] = []
        self._waiters: set[asyncio.Future[None]] = set()

    def append(self, entry: T) -> None:
        self.entries.append(entry)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_for(self, match: Callable[[T], bool], timeout: float) -> T:
        """The first entry, past or future, that ``match``es; TimeoutError after ``timeout``."""
        seen = 0
        async with asyncio.timeout(timeout):
            while True:
                for entry in self.entries[seen:]:
                    if match(entry):
                        return entry
                seen = len(self.entries)
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.add(waiter)
                try:
                    await waiter
                finally:
                    self._waiters.discard(waiter)


class _Records:
    """Everything one browser context reports. Lives on the browser's loop."""

    def __init__(self) -> None:
        self.console: list[ConsoleMessage] = []
        self.problems: _Log[Problem] = _Log()
        self.expected: list[Problem] = []
        self.frames: _Log[Frame] = _Log()
        self.sockets: list[tuple[str, bool]] = []
        self.requests: list[Request] = []
        self._sizing: set[asyncio.Task[None]] = set()

    def watch(self, context: BrowserContext) -> None:
        context.on("console", self._on_console)
        context.on("weberror", self._on_error)
        context.on("requestfinished", self._on_request_finished)
        context.on("requestfailed", self._on_request_failed)
        context.on("page", lambda page: page.on("websocket", self._on_websocket))

    def _on_console(self, message: PlaywrightConsoleMessage) -> None:
        url = message.location.get("url", "")
        self.console.append(ConsoleMessage(message.type, message.text, url))
        if "Content Security Policy" in message.text:
            self.problems.append(Problem("csp", message.text, url))
        elif "blocked by CORS policy" in message.text:
            self.problems.append(Problem("cors", message.text, url))

    def _on_error(self, error: WebError) -> None:
        url = error.page.url if error.page is not None else ""
        self.problems.append(Problem("uncaught", error.error.stack or error.error.message, url))

    def _on_websocket(self, ws: WebSocket) -> None:
        index = len(self.sockets)
        self.sockets.append((ws.url, False))

        def frame(direction: Literal["sent", "received"]) -> Callable[[str | bytes], None]:
            return lambda data: self.frames.append(Frame(index, ws.url, direction, data))

        def closed(_: object) -> None:
            self.sockets[index] = (ws.url, True)

        ws.on("framesent", frame("sent"))
        ws.on("framereceived", frame("received"))
        ws.on("close", closed)

    def _on_request_finished(self, request: PlaywrightRequest) -> None:
        self._record(request, None)

    def _on_request_failed(self, request: PlaywrightRequest) -> None:
        self._record(request, request.failure or "failed")

    def _record(self, request: PlaywrightRequest, failure: str | None) -> None:
        # The response and its sizes are asked of the browser: recorded once they come
        # (:meth:`settle`).
        task = asyncio.get_running_loop().create_task(self._record_request(request, failure))
        self._sizing.add(task)
        task.add_done_callback(self._sizing.discard)

    async def _record_request(self, request: PlaywrightRequest, failure: str | None) -> None:
        response = await request.response()
        size = 0
        if response is not None and failure is None:
            try:
                sizes = await request.sizes()
            except Exception as exc:  # the page went away first: say so rather than count 0
                failure = f"not measured: {exc}"
            else:
                size = sizes["responseHeadersSize"] + sizes["responseBodySize"]
        self.requests.append(
            Request(
                request.url,
                urlsplit(request.url).netloc,
                request.method,
                request.resource_type,
                response.status if response is not None else None,
                size,
                failure,
            )
        )

    async def settle(self) -> None:
        """Wait for the sizes of the requests finished so far."""
        await asyncio.gather(*self._sizing, return_exceptions=True)


# -- the session's Chromium ------------------------------------------------------------------


class Chromium:
    """Chromium and Playwright on an asyncio loop in their own thread. Sync: :meth:`start` and
    :meth:`close` are called by a session fixture, outside trio; trio code reaches the browser
    through :func:`open_browser`."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        thread: threading.Thread,
        io: ThreadPoolExecutor,
        playwright: Playwright,
        browser: PlaywrightBrowser,
        executable: Path,
    ) -> None:
        self.bridge = ThreadBridge(loop)
        self.version = browser.version
        self.executable = executable
        self._loop = loop
        self._thread = thread
        self._io = io
        self._playwright = playwright
        self._browser = browser

    @classmethod
    def start(cls, executable: Path | None = None) -> Chromium:
        if executable is None:
            executable = Path(os.environ.get("OMNI_CHROMIUM", CHROMIUM))
        try:
            import axe_playwright_python  # noqa: F401
            from playwright.async_api import async_playwright
        except ImportError as exc:
            raise BrowserUnavailable(
                f"the browser tests need {exc.name}: pip install -e '.[test]'"
            ) from None
        if not os.access(executable, os.X_OK):
            raise BrowserUnavailable(
                f"the browser tests need Debian's Chromium at {executable}: "
                "apt-get install chromium (see README.md; the tests never download a browser)"
            )
        # Not asyncio.new_event_loop(): trio-asyncio, once imported, refuses to make loops.
        loop = asyncio.DefaultEventLoopPolicy().new_event_loop()
        # Playwright writes files through the loop's default executor; a pool of one thread,
        # started now, so that no test is the one that starts a thread.
        io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="omni-browser-io")
        io.submit(lambda: None).result()
        loop.set_default_executor(io)
        thread = threading.Thread(target=loop.run_forever, name="omni-browser", daemon=True)
        thread.start()

        async def launch() -> tuple[Playwright, PlaywrightBrowser]:
            playwright = await async_playwright().start()
            try:
                # Playwright's default, said out loud: no sandbox (root cannot have one).
                browser = await playwright.chromium.launch(
                    executable_path=str(executable), chromium_sandbox=False
                )
            except BaseException:
                await playwright.stop()
                raise
            return playwright, browser

        try:
            playwright, browser = asyncio.run_coroutine_threadsafe(launch(), loop).result(
                START_SECONDS
            )
        except Exception as exc:
            _stop_loop(loop, thread, io)
            raise BrowserUnavailable(f"Chromium at {executable} did not start: {exc}") from exc
        return cls(loop, thread, io, playwright, browser, executable)

    def close(self) -> None:
        async def close() -> None:
            try:
                await self._browser.close()
            finally:
                await self._playwright.stop()

        try:
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(START_SECONDS)
        finally:
            _stop_loop(self._loop, self._thread, self._io)


def _stop_loop(
    loop: asyncio.AbstractEventLoop, thread: threading.Thread, io: ThreadPoolExecutor
) -> None:
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()
    io.shutdown(wait=True)


# -- a test's pages --------------------------------------------------------------------------


class Page:
    """One page in a browser context of its own, driven from trio. Selectors are Playwright's
    (CSS, ``text=…``, ``role=button[name="Send"]``, …) and strict: one element, or an error."""

    def __init__(
        self,
        browser: Browser,
        context: BrowserContext,
        page: PlaywrightPage,
        records: _Records,
    ) -> None:
        self._browser = browser
        self._bridge = browser.chromium.bridge
        self._context = context
        self._page = page
        self._records = records
        self.closed = False

    async def _call(self, fn: Callable[..., Awaitable[T]], *args: Any, timeout: float) -> T:
        with trio.fail_after(timeout + SLACK):
            return await self._bridge.run(fn, *args)

    async def run(
        self, fn: Callable[[PlaywrightPage], Awaitable[T]], timeout: float = TIMEOUT
    ) -> T:
        """``await fn(playwright_page)`` on the browser's thread: for what this class does not
        wrap. ``fn`` must finish within ``timeout``."""
        return await self._call(fn, self._page, timeout=timeout)

    # -- acting -----------------------------------------------------------------------------

    async def goto(self, url: str, timeout: float = TIMEOUT) -> int | None:
        """Load ``url`` and wait for its ``load`` event; the response's status."""

        async def goto() -> int | None:
            response = await self._page.goto(url, timeout=timeout * 1000)
            return response.status if response is not None else None

        return await self._call(goto, timeout=timeout)

    async def click(self, selector: str, timeout: float = TIMEOUT) -> None:
        await self._call(
            lambda: self._page.click(selector, timeout=timeout * 1000), timeout=timeout
        )

    async def fill(self, selector: str, value: str, timeout: float = TIMEOUT) -> None:
        await self._call(
            lambda: self._page.fill(selector, value, timeout=timeout * 1000), timeout=timeout
        )

    async def press(self, selector: str, key: str, timeout: float = TIMEOUT) -> None:
        """Focus ``selector`` and press ``key`` (``"Enter"``, ``"Shift+Tab"``, …)."""
        await self._call(
            lambda: self._page.press(selector, key, timeout=timeout * 1000), timeout=timeout
        )

    async def keyboard(self, *keys: str) -> None:
        """Press ``keys`` one after the other on whatever has the focus (``"Tab"``, …)."""

        async def press() -> None:
            for key in keys:
                await self._page.keyboard.press(key)

        await self._call(press, timeout=TIMEOUT)

    async def type(self, text: str) -> None:
        """Type ``text`` into whatever has the focus, key by key."""
        await self._call(lambda: self._page.keyboard.type(text), timeout=TIMEOUT)

    async def evaluate(self, js: str, arg: Any = None, timeout: float = TIMEOUT) -> Any:
        """The value of a JavaScript expression or function (``"x => x + 1"``, with ``arg``)."""
        return await self._call(lambda: self._page.evaluate(js, arg), timeout=timeout)

    async def close(self) -> None:
        """Close the page and its context (a visitor who leaves). Its records stay readable."""
        await self._call(self._close, timeout=CLOSE_SECONDS)

    async def _close(self) -> None:
        if not self.closed:
            self.closed = True
            await self._records.settle()
            await self._context.close()

    # -- reading and waiting ----------------------------------------------------------------

    async def text(self, selector: str, timeout: float = TIMEOUT) -> str:
        """The text of ``selector`` as rendered (``innerText``)."""
        return await self._call(
            lambda: self._page.inner_text(selector, timeout=timeout * 1000), timeout=timeout
        )

    async def wait_for(
        self,
        selector: str,
        state: Literal["attached", "detached", "visible", "hidden"] = "visible",
        timeout: float = TIMEOUT,
    ) -> None:
        await self._call(
            lambda: self._page.locator(selector).wait_for(state=state, timeout=timeout * 1000),
            timeout=timeout,
        )

    async def wait_for_function(self, js: str, arg: Any = None, timeout: float = TIMEOUT) -> Any:
        """Wait until a JavaScript expression or function is truthy; that value.

        An expression is wrapped in a function: Playwright polls a bare expression with
        ``eval``, which a page's CSP without ``'unsafe-eval'`` (Omni's own) refuses."""
        if not _FUNCTION.match(js):
            js = f"() => ({js})"

        async def wait() -> Any:
            handle = await self._page.wait_for_function(js, arg=arg, timeout=timeout * 1000)
            try:
                return await handle.json_value()
            finally:
                await handle.dispose()

        return await self._call(wait, timeout=timeout)

    async def wait_for_frame(
        self,
        match: str | Callable[[Frame], bool],
        direction: Literal["sent", "received"] = "received",
        timeout: float = TIMEOUT,
    ) -> Frame:
        """The first websocket frame (already seen or still to come) that ``match``es: a frame
        type, or a predicate (which runs on the browser's thread)."""

        def matches(frame: Frame) -> bool:
            if frame.direction != direction:
                return False
            return frame.type == match if isinstance(match, str) else match(frame)

        try:
            return await self._call(
                self._records.frames.wait_for, matches, timeout, timeout=timeout
            )
        except TimeoutError:
            seen = "\n  ".join(f"{f.direction} {f.data!r}" for f in self.frames) or "none"
            raise AssertionError(
                f"no {direction} frame matching {match!r} within {timeout} s; frames:\n  {seen}"
            ) from None

    async def expect_problem(
        self, match: str | Callable[[Problem], bool], timeout: float = TIMEOUT
    ) -> Problem:
        """Wait for a problem the test expects — a regular expression searched in its text, or
        a predicate — and take it off the list of those that fail the test."""

        def matches(problem: Problem) -> bool:
            if problem in self._records.expected:
                return False
            return (
                bool(re.search(match, problem.text)) if isinstance(match, str) else match(problem)
            )

        async def expect() -> Problem:
            problem = await self._records.problems.wait_for(matches, timeout)
            self._records.expected.append(problem)
            return problem

        try:
            return await self._call(expect, timeout=timeout)
        except TimeoutError:
            raise AssertionError(
                f"no problem matching {match!r} within {timeout} s; problems: {self.problems}"
            ) from None

    async def requests(self) -> list[Request]:
        """The page's finished and failed requests so far, in the order they ended."""

        async def settled() -> list[Request]:
            await self._records.settle()
            return list(self._records.requests)

        return await self._call(settled, timeout=TIMEOUT)

    @property
    def console(self) -> list[ConsoleMessage]:
        return list(self._records.console)

    @property
    def problems(self) -> list[Problem]:
        """The problems not expected (yet): those that will fail the test."""
        expected = list(self._records.expected)
        return [p for p in list(self._records.problems.entries) if p not in expected]

    @property
    def frames(self) -> list[Frame]:
        return list(self._records.frames.entries)

    @property
    def sockets(self) -> list[Socket]:
        return [Socket(i, url, closed) for i, (url, closed) in enumerate(self._records.sockets)]

    # -- evidence ---------------------------------------------------------------------------

    async def screenshot(
        self, state: str, full_page: bool = False, timeout: float = TIMEOUT
    ) -> Path:
        """Save ``<test>-<state>.png`` in the screenshots folder; its path (printed too)."""
        data = await self._call(
            lambda: self._page.screenshot(full_page=full_page, timeout=timeout * 1000),
            timeout=timeout,
        )
        return await self._browser.save(state, data)

    async def axe(
        self, within: str | None = None, options: dict[str, Any] | None = None
    ) -> list[Violation]:
        """Run axe on the page (or on the elements ``within`` selects); the rules it breaks."""
        from axe_playwright_python.async_playwright import Axe

        async def run() -> dict[str, Any]:
            if options is None:
                results = await Axe().run(self._page, within)
            else:
                results = await Axe().run(self._page, within, options)
            response: dict[str, Any] = results.response
            return response

        response = await self._call(run, timeout=TIMEOUT)
        return [
            Violation(
                v["id"],
                v.get("impact"),
                v["help"],
                tuple(" ".join(map(str, n["target"])) for n in v["nodes"]),
            )
            for v in response["violations"]
        ]


@dataclass
class Browser:
    """A test's pages: each :meth:`new_page` is a fresh browser context. Made by
    :func:`open_browser`, which closes them all."""

    chromium: Chromium
    #: The test's name, which starts every screenshot's name.
    test: str
    screenshots: Path
    #: Every screenshot saved (shared by the session's browsers, for the summary).
    saved: list[Path] = field(default_factory=list)
    pages: list[Page] = field(default_factory=list)

    async def new_page(
        self,
        viewport: Viewport = DESKTOP,
        locale: str = "en-US",
        timezone: str = "UTC",
        **options: Any,
    ) -> Page:
        """A blank page in a new context; ``options`` are more of Playwright's context options
        (``color_scheme="dark"``, ``reduced_motion="reduce"``, …)."""
        width, height = viewport
        browser = self.chromium._browser

        async def open_page() -> tuple[BrowserContext, PlaywrightPage, _Records]:
            context = await browser.new_context(
                viewport={"width": width, "height": height},
                locale=locale,
                timezone_id=timezone,
                **options,
            )
            context.set_default_timeout(TIMEOUT * 1000)
            records = _Records()
            records.watch(context)
            try:
                page = await context.new_page()
            except BaseException:
                await context.close()
                raise
            return context, page, records

        with trio.fail_after(TIMEOUT):
            context, page, records = await self.chromium.bridge.run(open_page)
        opened = Page(self, context, page, records)
        self.pages.append(opened)
        return opened

    async def save(self, state: str, png: bytes) -> Path:
        await trio.Path(self.screenshots).mkdir(parents=True, exist_ok=True)
        path = self.screenshots / f"{_file_name(self.test)}-{_file_name(state)}.png"
        await trio.Path(path).write_bytes(png)
        self.saved.append(path)
        print(f"screenshot: {path}")
        return path

    def problems(self) -> list[Problem]:
        return [problem for page in self.pages for problem in page.problems]

    async def close(self) -> None:
        """Save the last screenshot of each page still open, and close them all."""
        for n, page in enumerate(self.pages):
            if not page.closed:
                try:
                    await page.screenshot(f"last-{n}", timeout=LAST_SCREENSHOT_SECONDS)
                except (Exception, trio.TooSlowError) as exc:  # a crashed or hung page
                    print(f"no last screenshot of page {n}: {exc!r}")
        with trio.fail_after(CLOSE_SECONDS):
            for page in self.pages:
                await self.chromium.bridge.run(page._close)


def _file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


@asynccontextmanager
async def open_browser(
    chromium: Chromium, test: str, screenshots: Path | None = None, saved: list[Path] | None = None
) -> AsyncIterator[Browser]:
    """A :class:`Browser` for one test. Leaving the block saves ``<test>-last-<n>.png`` of each
    page still open (the state a failed test left, evidence for CI), closes them all, then fails
    if a page had a problem the test did not expect — or, if the block raised, adds them to its
    exception as notes."""
    browser = Browser(
        chromium,
        test,
        screenshots if screenshots is not None else screenshots_folder(),
        saved if saved is not None else [],
    )
    try:
        yield browser
    except BaseException as exc:
        for problem in browser.problems():
            exc.add_note(f"a page had a problem: {problem}")
        raise
    finally:
        with trio.CancelScope(shield=True):
            await browser.close()
    problems = browser.problems()
    assert not problems, "the pages had problems:\n" + "\n".join(map(str, problems))
