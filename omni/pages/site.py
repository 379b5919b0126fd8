"""The pages on the HTTP port: the visitor's WebChat, the embed script, the survey page of a
link, their static assets and the public configuration they read (DESIGN §9; docs/pages.md).

Rules of this module:

* It is an edge, like the admin API and beside it on the same Quart app: it reads the live
  configuration (``directory``) and the clock of the hub it is given, and decides nothing —
  the public view is :mod:`omni.pages.public`, the headers :mod:`omni.pages.policy`.
* Everything that depends only on the code and the server's settings — the assets, their
  hashes and gzipped bodies, the compiled shells, the embed script — is built once, at
  start-up; what depends on the configuration (the CSP, the public configuration) is built at
  each request, so an administrator's change shows on the next load without a restart.
* Pages get the security headers; the public API gets open CORS (``*``, no credentials) and
  ``ETag`` revalidation; assets are immutable; the embed script has a stable URL and a short
  cache life.
* The survey page's URL carries its capability (a signed token): it is never cached, never
  sent on as a referrer, never indexed. Its answers are the hub's to accept or refuse
  (:meth:`Live.answer_survey`); this module only maps the refusals to statuses.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import msgspec
from quart import Blueprint, Quart, Response, request

from omni.actors.runtime import ActorCrashed, AskTimeout
from omni.clock import Clock
from omni.domain.conversation import LinkedSurvey, LinkSurvey, Rejected, SurveyRefused
from omni.domain.model import Directory, Language, Service
from omni.domain.protocol import ShortText
from omni.pages import policy
from omni.pages.assets import CACHE_FOREVER, AssetRegistry, accepts_gzip
from omni.pages.assets import FOLDER as STATIC
from omni.pages.public import service_config, service_list, survey_page
from omni.pages.shells import FOLDER as TEMPLATES
from omni.pages.shells import Raw, Template
from omni.settings import ServerSettings

#: How long a browser (or a proxy) keeps the embed script before asking again: its URL is
#: stable, so a new version reaches customers' sites within this many seconds.
WIDGET_MAX_AGE = 300
#: The pages' languages by the primary subtag a browser asks for (any Portuguese is pt-BR),
#: and the one for a browser that asks for neither.
LANGUAGES: dict[str, Language] = {"pt": "pt-BR", "en": "en"}
DEFAULT_LANGUAGE: Language = "en"
#: The largest service id (``omni.domain.values.Id``).
_MAX_ID = 2_147_483_647

_encoder = msgspec.json.Encoder()

#: The survey page's status for each state of its survey, and the ``code`` of a refused answer.
SURVEY_STATUS: dict[LinkSurvey, int] = {
    "open": 200,
    "answered": 409,
    "expired": 410,
    "none": 410,
    "invalid": 404,
}
SURVEY_CODES: dict[LinkSurvey, str] = {
    "answered": "survey_answered",
    "expired": "survey_expired",
    "none": "no_survey",
    "invalid": "invalid_link",
}
#: The survey page's headers beyond every page's: its URL is a capability (docs/pages.md).
SURVEY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
}


class SurveyAnswer(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /survey/{token}``: ``{"answers": {...}}``, or ``{"skip": true}``. Values as in
    the websocket's ``survey`` frame: whole numbers, text or null."""

    answers: dict[ShortText, int | str | None] | None = None
    skip: bool = False


_survey_answer = msgspec.json.Decoder(SurveyAnswer)


class Live(Protocol):
    """What the pages read of the running server (the hub): the live configuration and the
    clock, and the surveys its links lead to."""

    @property
    def directory(self) -> Directory: ...

    @property
    def clock(self) -> Clock: ...

    async def find_survey(self, token: str) -> LinkedSurvey:
        """What the survey link ``token`` leads to."""
        ...

    async def answer_survey(self, token: str, answers: dict[str, object] | None) -> None:
        """Answer (None: decline) the survey of the link ``token``; :class:`SurveyRefused` or
        :class:`Rejected` (``invalid_survey``) when it may not be."""
        ...


@dataclass(frozen=True)
class PublicUrls:
    """Where browsers reach the server: the pages' origin and the websocket base URL."""

    page: str
    ws: str

    @classmethod
    def of(cls, settings: ServerSettings, host: str, http_port: int, ws_port: int) -> PublicUrls:
        """The configured ``public_url`` and ``public_ws_url``, else the addresses the server
        is bound to (on all interfaces, 127.0.0.1: a browser cannot open 0.0.0.0)."""
        shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
        shown = f"[{shown}]" if ":" in shown else shown
        return cls(
            settings.public_url or f"http://{shown}:{http_port}",
            settings.public_ws_url or f"ws://{shown}:{ws_port}",
        )


class Openings:
    """``Directory.next_opening`` answers, kept while they hold: a closed service's next
    opening stays the answer until that instant (the configuration unchanged), so the public
    configuration — asked at each page load, by anyone — does not search the schedules again
    each time. "Never within the look-ahead" is asked again after :data:`RECHECK`."""

    #: How long "it does not open within the look-ahead" is believed.
    RECHECK = timedelta(minutes=10)

    def __init__(self) -> None:
        self._directory: Directory | None = None
        self._known: dict[int, tuple[datetime, datetime | None]] = {}

    def next_opening(self, directory: Directory, service: Service, at: datetime) -> datetime | None:
        if directory is not self._directory:  # a new configuration: nothing known holds
            self._directory, self._known = directory, {}
        known = self._known.get(service.id)
        if known is not None:
            asked, opening = known
            until = opening if opening is not None else asked + self.RECHECK
            if asked <= at < until and directory.route(service, at) is None:
                return opening
        opening = directory.next_opening(service, at)
        self._known[service.id] = (at, opening)
        return opening


@dataclass(frozen=True)
class _Script:
    """The embed script, rendered for one public origin."""

    body: bytes
    gzipped: bytes
    etag: str


class Pages:
    """The pages of one server, installed on its Quart app by :func:`install_pages`."""

    def __init__(
        self,
        live: Live,
        settings: ServerSettings,
        urls: PublicUrls,
        *,
        static: Path = STATIC,
        templates: Path = TEMPLATES,
    ) -> None:
        self.live = live
        self.settings = settings
        self.openings = Openings()
        self.assets = AssetRegistry.load(static)
        self._templates = templates
        self.webchat = Template.load(
            "webchat.html", self.assets, frozenset({"lang", "data_service"}), folder=templates
        )
        self.survey = Template.load(
            "survey.html", self.assets, frozenset({"lang", "survey"}), folder=templates
        )
        self.staff = {
            name: Template.load(
                f"{name}.html", self.assets, frozenset({"lang", "ws_url"}), folder=templates
            )
            for name in ("console", "supervisor")
        }
        self.serve_at(urls)

    def serve_at(self, urls: PublicUrls) -> None:
        """Tell the pages where browsers reach the server (once the HTTP port is bound, when
        it was chosen by the system)."""
        self.urls = urls
        script = Template.load(
            "widget.js",
            self.assets,
            frozenset({"public_url"}),
            origin=urls.page,
            folder=self._templates,
        )
        body = script.render(public_url=urls.page).encode("utf-8")
        self._widget = _Script(body, gzip.compress(body, mtime=0), _etag(body))

    # -- the routes ----------------------------------------------------------------------------

    def blueprint(self) -> Blueprint:
        pages = Blueprint("pages", __name__)
        pages.add_url_rule("/webchat", "webchat", self.webchat_page, methods=["GET"])
        pages.add_url_rule("/console", "console", partial(self.staff_page, "console"))
        pages.add_url_rule("/supervisor", "supervisor", partial(self.staff_page, "supervisor"))
        pages.add_url_rule("/widget.js", "widget", self.widget, methods=["GET"])
        pages.add_url_rule("/survey/<token>", "survey", self.survey_page, methods=["GET"])
        pages.add_url_rule("/survey/<token>", "survey_answer", self.survey_answer, methods=["POST"])
        pages.add_url_rule("/static/<path:path>", "static", self.static, methods=["GET"])
        pages.add_url_rule("/api/public/services", "services", self.services, methods=["GET"])
        pages.add_url_rule("/api/public/services/<id>", "service", self.service, methods=["GET"])
        return pages

    async def webchat_page(self) -> Response:
        """``/webchat[?service=ID]``: the WebChat's shell. A malformed or unknown id still
        gets the page (its script tells the visitor), without ``data-service`` when the id is
        not a whole number."""
        directory = self.live.directory
        service_id = _service_id(request.args.get("service"))
        service = directory.services.get(service_id) if service_id is not None else None
        setting = service.language if service is not None else "auto"
        html = self.webchat.render(
            lang=negotiate(setting, request.headers.get("Accept-Language")),
            data_service=Raw("" if service_id is None else f' data-service="{service_id}"'),
        )
        shown = [service] if service is not None else _public(directory)
        csp = policy.content_security_policy(
            ws_url=self.urls.ws,
            services=shown,
            logo=directory.parameters.logo,
            captcha=self.settings.captcha,
            ancestors=policy.frame_ancestors(service),
        )
        headers = {
            **policy.page_headers(csp),
            "Cache-Control": "no-cache",
        }
        return _html(html, headers)

    async def staff_page(self, name: str) -> Response:
        """``/console`` (operators) and ``/supervisor`` (the live view). Nobody may frame them
        (a signed-in page in someone else's frame could be clicked on unseen); they talk to
        the websocket and the admin API, nothing else."""
        directory = self.live.directory
        html = self.staff[name].render(
            lang=negotiate("auto", request.headers.get("Accept-Language")),
            ws_url=self.urls.ws,
        )
        csp = policy.content_security_policy(
            ws_url=self.urls.ws,
            services=[],
            logo=directory.parameters.logo,
            captcha=None,
            ancestors="'none'",
        )
        headers = {
            **policy.page_headers(csp),
            "Cache-Control": "no-cache",
        }
        return _html(html, headers)

    async def survey_page(self, token: str) -> Response:
        """``/survey/{token}``: the survey of a conversation, by its signed link (issue 17) —
        the questions (200), or why not: answered already (409), past its time or no survey
        (410), a link this server did not sign (404). Nobody may frame it; it talks to its
        own URL only."""
        found = await self.live.find_survey(token)
        directory = self.live.directory
        service = found.service
        html = self.survey.render(
            lang=negotiate(
                service.language if service is not None else "auto",
                request.headers.get("Accept-Language"),
            ),
            survey=_encoder.encode(survey_page(found, directory)).decode(),
        )
        csp = policy.content_security_policy(
            ws_url=None,
            services=[] if service is None else [service],
            logo=directory.parameters.logo,
            captcha=None,
            ancestors="'none'",
        )
        headers = {**policy.page_headers(csp), **SURVEY_HEADERS}
        return _html(html, headers, status=SURVEY_STATUS[found.state])

    async def survey_answer(self, token: str) -> Response:
        """``POST /survey/{token}``: the survey page's answers (JSON), or its "skip". 200
        ``{"status": "answered" | "skipped"}``; problem details otherwise, with a ``code``."""
        kind = request.headers.get("Content-Type", "").partition(";")[0].strip().lower()
        if kind != "application/json":
            return _problem(415, "send the answers as application/json", code="invalid_body")
        try:
            body = _survey_answer.decode(await request.get_data())
        except msgspec.DecodeError as exc:  # ValidationError is one
            return _problem(400, f"not a survey answer: {exc}", code="invalid_body")
        if body.skip == (body.answers is not None):
            return _problem(
                400, 'send either {"answers": {...}} or {"skip": true}', code="invalid_body"
            )
        answers: dict[str, object] | None = None if body.skip else dict(body.answers or {})
        try:
            await self.live.answer_survey(token, answers)
        except SurveyRefused as exc:
            status = SURVEY_STATUS[exc.reason]
            return _problem(status, exc.message, code=SURVEY_CODES[exc.reason])
        except Rejected as exc:
            return _problem(422, exc.message, code=exc.code)
        except (AskTimeout, ActorCrashed):
            return _problem(503, "the conversation did not answer; try again", code="unavailable")
        state = "skipped" if body.skip else "answered"
        return Response(
            _encoder.encode({"status": state}),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    async def widget(self) -> Response:
        """``/widget.js``: the embed script, at a stable URL."""
        script = self._widget
        packed = accepts_gzip(request.headers.get("Accept-Encoding"))
        etag = script.etag[:-1] + '.gz"' if packed else script.etag
        headers = {
            "Cache-Control": f"public, max-age={WIDGET_MAX_AGE}",
            "ETag": etag,
            "Vary": "Accept-Encoding",
            "Access-Control-Allow-Origin": "*",
            # Loaded by other sites' pages, also by those that require it (COEP).
            "Cross-Origin-Resource-Policy": "cross-origin",
            "X-Content-Type-Options": "nosniff",
        }
        if _matches(request.headers.get("If-None-Match"), etag):
            return _not_modified(headers)
        if packed:
            headers["Content-Encoding"] = "gzip"
        body = script.gzipped if packed else script.body
        return Response(body, content_type="text/javascript; charset=utf-8", headers=headers)

    async def static(self, path: str) -> Response:
        """``/static/<name>.<hash>.<ext>``: an asset, for ever; anything else is 404."""
        asset = self.assets.at(request.path)
        if asset is None:
            return _problem(404, f"no asset at {request.path}")
        headers = {"Cache-Control": CACHE_FOREVER, "X-Content-Type-Options": "nosniff"}
        body = asset.body
        if asset.gzipped is not None:
            headers["Vary"] = "Accept-Encoding"
            if accepts_gzip(request.headers.get("Accept-Encoding")):
                headers["Content-Encoding"] = "gzip"
                body = asset.gzipped
        return Response(body, content_type=asset.content_type, headers=headers)

    async def services(self) -> Response:
        """``/api/public/services``: the public services."""
        return _public_json(service_list(self.live.directory, self.live.clock.now()))

    async def service(self, id: str) -> Response:
        """``/api/public/services/{id}``: one service's widget configuration (public or not)."""
        directory = self.live.directory
        service_id = _service_id(id)
        service = directory.services.get(service_id) if service_id is not None else None
        if service is None:
            return _problem(404, f"there is no chat service {id}", cors=True)
        config = service_config(
            directory,
            service,
            self.live.clock.now(),
            captcha=self.settings.captcha,
            mail=self.settings.smtp is not None,
            ws_base=self.urls.ws,
            next_opening=partial(self.openings.next_opening, directory),
        )
        return _public_json(config)


def install_pages(
    app: Quart,
    live: Live,
    settings: ServerSettings,
    urls: PublicUrls,
    *,
    static: Path = STATIC,
    templates: Path = TEMPLATES,
) -> Pages:
    """Serve the pages on ``app`` (the admin API's), reading ``live``; :class:`AssetError` or
    :class:`TemplateError` when the static folder or a template cannot be served."""
    if any(rule.rule.startswith("/static/") for rule in app.url_map.iter_rules()):
        raise RuntimeError("the app already serves /static/: create it with static_folder=None")
    pages = Pages(live, settings, urls, static=static, templates=templates)
    app.register_blueprint(pages.blueprint())
    return pages


def negotiate(setting: Language, accept_language: str | None) -> Language:
    """The language of a page: the service's setting, or — ``auto`` — the first of
    :data:`LANGUAGES` the browser's ``Accept-Language`` prefers, else
    :data:`DEFAULT_LANGUAGE`."""
    if setting != "auto":
        return setting
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate((accept_language or "").split(",")):
        tag, _, parameters = part.strip().partition(";")
        quality = 1.0
        key, _, value = parameters.strip().partition("=")
        if key.strip().lower() == "q":
            try:
                quality = float(value)
            except ValueError:
                quality = 0.0
        if quality > 0:
            ranked.append((-quality, index, tag.strip().lower()))
    for _, _, tag in sorted(ranked):
        language = LANGUAGES.get(tag.split("-", 1)[0])
        if language is not None:
            return language
    return DEFAULT_LANGUAGE


def _service_id(raw: str | None) -> int | None:
    """A service id in its canonical spelling (digits, no sign or leading zero), else None."""
    if raw is None or not raw.isascii() or not raw.isdigit() or raw.startswith("0"):
        return None
    value = int(raw) if len(raw) <= 10 else _MAX_ID + 1
    return value if value <= _MAX_ID else None


def _public(directory: Directory) -> list[Service]:
    return [s for _, s in sorted(directory.services.items()) if s.public]


def _etag(body: bytes) -> str:
    """A strong validator of ``body``: its hash."""
    return f'"{hashlib.sha256(body).hexdigest()[:32]}"'


def _matches(if_none_match: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (weak comparison, as RFC 9110 asks)."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


def _public_json(data: Any) -> Response:
    """A public API answer: open to every origin (no credentials), revalidated at each use
    by its ``ETag`` (one per encoding); 304 when the client's copy is current."""
    body = _encoder.encode(data)
    etag = _etag(body)
    packed = accepts_gzip(request.headers.get("Accept-Encoding"))
    headers = {
        "Cache-Control": "no-cache",
        "ETag": etag[:-1] + '.gz"' if packed else etag,
        "Access-Control-Allow-Origin": "*",
        "Vary": "Accept-Encoding",
    }
    if _matches(request.headers.get("If-None-Match"), headers["ETag"]):
        return _not_modified(headers)
    return _maybe_gzipped(body, "application/json", headers, packed)


def _maybe_gzipped(
    body: bytes, content_type: str, headers: dict[str, str], packed: bool
) -> Response:
    """``body`` as is, or gzipped when the client takes it (``packed``): the pages' shells and
    the public configuration are made per request, so they are compressed per request (a
    kilobyte or two, microseconds)."""
    if packed:
        body = gzip.compress(body, compresslevel=6, mtime=0)
        headers = {**headers, "Content-Encoding": "gzip"}
    return Response(body, content_type=content_type, headers=headers)


def _html(html: str, headers: dict[str, str], status: int = 200) -> Response:
    """A page's shell, gzipped when the client takes it."""
    packed = accepts_gzip(request.headers.get("Accept-Encoding"))
    vary = "Accept-Language, Accept-Encoding"
    response = _maybe_gzipped(
        html.encode("utf-8"), "text/html; charset=utf-8", {**headers, "Vary": vary}, packed
    )
    response.status_code = status
    return response


def _not_modified(headers: dict[str, str]) -> Response:
    """304: the client's copy is current (the headers it would have got, without a body)."""
    response = Response(b"", status=304, headers=headers)
    del response.headers["Content-Type"]
    return response


_TITLES = {
    400: "Bad Request",
    404: "Not Found",
    409: "Conflict",
    410: "Gone",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    503: "Service Unavailable",
}


def _problem(status: int, detail: str, *, cors: bool = False, code: str | None = None) -> Response:
    """An RFC 9457 problem, like the admin API's; ``code``: a stable name of the refusal."""
    title = _TITLES.get(status, "Error")
    body: dict[str, Any] = {
        "type": f"https://omni.dev/problems/{title.lower().replace(' ', '-')}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if code is not None:
        body["code"] = code
    headers = {"Access-Control-Allow-Origin": "*"} if cors else {}
    return Response(
        _encoder.encode(body),
        status=status,
        content_type="application/problem+json",
        headers=headers,
    )
