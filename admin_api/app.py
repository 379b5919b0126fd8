"""The admin API (DESIGN §6): a Quart-Trio application served by hypercorn's trio worker.

Rules:

* Every route under ``/api/v1`` needs a bearer token of the right role (``admin_api.http``);
  an address that sends too many wrong ones must wait (429) before its next is looked at;
  ``/healthz`` and ``/protocol.schema.json`` (the websocket protocol as JSON Schema) are open.
* The operations endpoints ``/metrics``, ``/openapi.json`` and ``/docs`` are served with the
  API, or — when ``[server] ops_bind`` is set — only by the app of :func:`create_ops_app`, on
  that other listener; with ``[server] ops_token`` they need it as a bearer token.
* Routes are declared through :class:`Api`, which records what the OpenAPI document says about
  them (``admin_api.openapi``): the document is generated from the same declarations and the
  same msgspec structs that validate the bodies, so it cannot drift from the code.
* Configuration changes go through :class:`~omni.actors.configuration.Configuration`: validated
  whole, stored with their audit entry, applied live. The app decides nothing else.
* CORS is closed unless ``[server] cors_origins`` lists the origin.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import GenericAlias
from typing import Any

import msgspec
import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from quart import Response, g, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from admin_api import schemas
from admin_api.attachments import UPLOAD_PATH, AttachmentOut, AttachmentRoutes, LinkOut
from admin_api.channels import channel_routes
from admin_api.http import (
    CONVERSATIONS,
    OPERATIONS,
    READ_CONFIG,
    WRITE_CONFIG,
    Attempts,
    Handler,
    Principal,
    Problem,
    bearer_token,
    json_response,
    read_body,
    requires,
)
from omni.accounts import (
    SESSION_PREFIX,
    Accounts,
    check_password,
    hash_password_off_loop,
)
from omni.actors.configuration import Configuration
from omni.actors.group import QueueSnapshot
from omni.actors.hub import Hub
from omni.actors.runtime import ActorCrashed, AskTimeout
from omni.attachments import Uploads
from omni.channels import reply_id
from omni.config import (
    RESOURCES,
    ApiTokenInput,
    ChannelInput,
    OperatorInput,
    Resource,
    UserInput,
    WebhookInput,
    issue_webhook_secret,
    public,
    seal,
)
from omni.domain import conversation as domain
from omni.domain import protocol
from omni.domain.configuration import (
    SINGLETON,
    ConfigConflict,
    ConfigRejected,
    body_of,
    key_of,
)
from omni.domain.conversation import Conversation, Status
from omni.domain.model import Role, User, UserProfile, password_weakness
from omni.domain.protocol import ConversationSummary
from omni.domain.reports import DEFAULT_THRESHOLD, paused_time, report
from omni.domain.routing import Presence
from omni.limits import Backoff, Keyed, networks
from omni.netguard import Guard, Refused, Unresolvable
from omni.settings import ServerSettings
from omni.store import ConversationQuery, OutboxItem, page_cursor, parse_cursor

log = logging.getLogger(__name__)


@dataclass
class RouteDoc:
    method: str
    path: str
    summary: str
    tag: str
    roles: frozenset[Role] | None
    body: Any = None
    response: Any = None
    status: int = 200
    query: list[tuple[str, dict[str, Any], str]] = field(default_factory=list)
    #: Error statuses beyond the ones every route of its kind may answer (for the document).
    errors: tuple[int, ...] = ()


class Api:
    """Declares routes on the app and remembers them for the OpenAPI document."""

    def __init__(self, app: QuartTrio, hub: Hub, attempts: Attempts, accounts: Accounts) -> None:
        self.app = app
        self.hub = hub
        self.attempts = attempts
        self.accounts = accounts
        self.routes: list[RouteDoc] = []

    async def authenticate(self, token: str) -> Principal | None:
        """Who ``token`` speaks for: a sign-in session (``omni_session_…``) or an API token."""
        if token.startswith(SESSION_PREFIX):
            signed_in = await self.accounts.session(token)
            if signed_in is None:
                return None
            user = signed_in.user
            return Principal(f"user:{user.id}", user.role, user.operator_id, user.id)
        found = self.hub.directory.api_token(token)
        if found is None:
            return None
        return Principal(f"token:{found.id}", found.role, found.operator_id)

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        tag: str,
        roles: frozenset[Role] | None,
        body: Any = None,
        response: Any = None,
        status: int = 200,
        query: list[tuple[str, dict[str, Any], str]] | None = None,
        errors: tuple[int, ...] = (),
    ) -> Callable[[Handler], Handler]:
        def decorate(handler: Handler) -> Handler:
            guarded = (
                requires(roles, self.authenticate, self.attempts)(handler) if roles else handler
            )
            endpoint = f"{method.lower()} {path}"
            self.app.add_url_rule(
                _quart_path(path), endpoint=endpoint, view_func=guarded, methods=[method]
            )
            self.routes.append(
                RouteDoc(
                    method, path, summary, tag, roles, body, response, status, query or [], errors
                )
            )
            return guarded

        return decorate


def _quart_path(path: str) -> str:
    return path.replace("{id}", "<id>").replace("{key}", "<key>")


_AsgiApp = Callable[[Any, Any, Any], Awaitable[None]]


def _closes_when_answered(asgi_app: _AsgiApp) -> _AsgiApp:
    """``asgi_app`` whose last message of a response — the one after which hypercorn closes a
    ``Connection: close`` connection — is sent shielded from cancellation.

    Quart-Trio cancels a request's tasks as soon as hypercorn reports the request's end (the
    ``http.disconnect`` hypercorn queues just before it closes the connection), and that
    cancellation reached hypercorn's close, from the same task, at its first checkpoint: the
    connection stayed open and its unread body kept being read and thrown away. A refused
    upload (413 while the body streams in) then went on reading a sender who ignored the
    answer. What runs shielded is short: the response's last bytes (hypercorn shields its
    socket writes anyway), then the end of the stream and the close."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await asgi_app(scope, receive, send)
            return

        async def send_last_shielded(message: Any) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                with trio.CancelScope(shield=True):
                    await send(message)
            else:
                await send(message)

        await asgi_app(scope, receive, send_last_shielded)

    return app


def create_app(
    hub: Hub,
    registry: CollectorRegistry,
    configuration: Configuration | None = None,
    *,
    settings: ServerSettings | None = None,
    sign_in_failures: Keyed[str, Backoff] | None = None,
    uploads: Uploads | None = None,
) -> QuartTrio:
    """The admin API for ``hub``, with the ``[server]`` settings it follows (CORS origins,
    limits on failed tokens, trusted proxies); with ``uploads``, the attachment routes."""
    settings = settings or ServerSettings()
    cors_origins = settings.cors_origins
    # No static folder: the pages (omni.pages) serve /static/ with hashed names.
    app = QuartTrio("omni", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    base_request = app.request_class

    class OmniRequest(base_request):  # type: ignore[valid-type,misc]
        """An upload's body may be as large as the largest file a service accepts (counted
        again, per service, while it streams in); every other body at most 1 MiB."""

        def __init__(self, method: str, scheme: str, path: str, *args: Any, **kwargs: Any):
            if method == "POST" and UPLOAD_PATH.fullmatch(path):
                kwargs["max_content_length"] = max(hub.directory.largest_attachment(), 1)
            super().__init__(method, scheme, path, *args, **kwargs)

    app.request_class = OmniRequest
    app.asgi_app = _closes_when_answered(app.asgi_app)  # type: ignore[method-assign,assignment]
    attempts = Attempts(settings.limits, settings.trusted_proxies, sign_in_failures)
    api = Api(app, hub, attempts, Accounts(hub, settings.session_ttl))
    app.extensions["omni_api"] = api

    # -- errors, CORS -------------------------------------------------------------------------

    _problem_details(app)

    @app.after_request
    async def cors(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin and origin in cors_origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, DELETE, OPTIONS"
        return response

    @app.before_request
    async def whole_body_first() -> None:
        """Read a request's body before anything answers it, whatever the answer: a response
        sent while the body is still arriving leaves the connection unusable for the next
        request on it (keep-alive). Bodies are bounded by MAX_CONTENT_LENGTH. An upload
        streams instead, and a refused one closes its connection (admin_api.attachments)."""
        if request.method == "POST" and UPLOAD_PATH.fullmatch(request.path):
            return
        if request.method in ("POST", "PUT", "PATCH", "DELETE"):
            await request.get_data(cache=True)

    @app.after_request
    async def close_after_refused_upload(response: Response) -> Response:
        if (
            request.method == "POST"
            and UPLOAD_PATH.fullmatch(request.path)
            and response.status_code >= 400
        ):
            response.headers["Connection"] = "close"
        return response

    @app.before_request
    async def preflight() -> Response | None:
        if request.method != "OPTIONS" or not request.path.startswith("/api/"):
            return None
        origin = request.headers.get("Origin")
        if not origin or origin not in cors_origins:
            raise Problem(403, "this origin may not call the API (CORS)")
        return Response("", status=204)

    # -- open endpoints -----------------------------------------------------------------------

    @api.route(
        "GET",
        "/healthz",
        summary="Liveness and a few live counts",
        tag="operations",
        roles=None,
        response=schemas.Health,
    )
    async def healthz() -> Response:
        return json_response(
            schemas.Health(
                status="ok",
                conversations=len(hub.conversations),
                operators_online=len(hub.sessions),
            )
        )

    if settings.ops_bind is None:
        _ops_routes(app, registry, api, settings.ops_token)

    @app.get("/protocol.schema.json")
    async def protocol_schema() -> Response:
        """The websocket protocol, both directions, as JSON Schema: the pages are written
        against it."""
        return Response(PROTOCOL_SCHEMA, content_type="application/schema+json")

    channel_routes(app, hub)

    if configuration is None:
        return app
    config = configuration

    # -- configuration resources --------------------------------------------------------------

    guard = Guard(networks(settings.webhooks.allow_private))
    for resource in RESOURCES.values():
        _resource_routes(api, config, resource, guard)
    _session_routes(api, config)
    _delivery_routes(api, config, "webhooks")
    _delivery_routes(api, config, "channels")
    if uploads is not None:
        _attachment_routes(api, AttachmentRoutes(hub, attempts, api.accounts, uploads))

    @api.route(
        "GET",
        "/api/v1/audit",
        summary="The audit log of configuration changes, newest first",
        tag="audit",
        roles=OPERATIONS,
        response=schemas.AuditPage,
        query=[
            ("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "page size (50)"),
            (
                "before",
                {"type": "integer", "minimum": 1, "maximum": 2**62},
                "entries with a smaller id",
            ),
        ],
    )
    async def audit() -> Response:
        limit = _int_arg("limit", 50, 1, 500) or 50
        before = _int_arg("before", None, 1, 2**62)
        entries = await config.store.audit_entries(limit, before)
        items = [
            schemas.AuditOut(
                e.id,
                e.at,
                e.actor,
                e.action,
                e.kind,
                e.key,
                public(e.before),
                public(e.after),
            )
            for e in entries
        ]
        next_before = entries[-1].id if len(entries) == limit else None
        return json_response(schemas.AuditPage(items, next_before))

    # -- conversations ------------------------------------------------------------------------

    @api.route(
        "GET",
        "/api/v1/conversations",
        summary="List conversations, newest first",
        tag="conversations",
        roles=CONVERSATIONS,
        response=schemas.ConversationPage,
        query=[
            ("status", {"type": "string", "enum": [s.value for s in Status]}, "status"),
            ("service_id", {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}, "service"),
            ("group_id", {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}, "group"),
            ("operator_id", {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}, "operator"),
            ("from", {"type": "string", "format": "date-time"}, "created at or after"),
            ("to", {"type": "string", "format": "date-time"}, "created before"),
            ("q", {"type": "string", "maxLength": 200}, "search visitor name, e-mail, ticket"),
            ("limit", {"type": "integer", "minimum": 1, "maximum": 200}, "page size (50)"),
            ("cursor", {"type": "string", "maxLength": 200}, "next_cursor of the previous page"),
        ],
    )
    async def conversations() -> Response:
        status = request.args.get("status")
        if status is not None and status not in {s.value for s in Status}:
            raise Problem(400, f"unknown status {status!r}")
        query = ConversationQuery(
            status=status,
            service_id=_int_arg("service_id", None, 1, 2**31 - 1),
            group_id=_int_arg("group_id", None, 1, 2**31 - 1),
            operator_id=_int_arg("operator_id", None, 1, 2**31 - 1),
            created_from=_time_arg("from"),
            created_to=_time_arg("to"),
            search=_text_arg("q"),
            cursor=_cursor_arg(),
            limit=_int_arg("limit", 50, 1, 200) or 50,
        )
        scope = _operator_scope()
        if scope is not None:
            query = replace(query, scope_operator_id=scope[0], scope_service_ids=scope[1])
        if query.search is not None and len(query.search) > 200:
            raise Problem(400, "q is limited to 200 characters")
        found = await config.store.list_conversations(query)
        items = [c.summary() for c in found]
        next_cursor = None
        if len(found) == query.limit:
            last = found[-1]
            next_cursor = page_cursor(last)
        return json_response(schemas.ConversationPage(items, next_cursor))

    @api.route(
        "GET",
        "/api/v1/conversations/{id}",
        summary="One conversation, with its survey (and the link to its page while it waits for "
        "an answer) and its transcript e-mails",
        tag="conversations",
        roles=CONVERSATIONS,
        response=schemas.ConversationDetail,
    )
    async def conversation(id: str) -> Response:
        conv = await _load(id)
        survey = await config.store.survey(id)
        emails = [
            schemas.EmailOut(
                to=item.payload.get("to", ""),
                status="sent" if item.sent_at else "failed" if item.failed_at else "pending",
                attempts=item.attempts,
                created_at=item.created_at,
                sent_at=item.sent_at,
                last_error=item.last_error,
            )
            for item in await config.store.outbox_items(id)
            if item.kind == "email"
        ]
        survey_status: Any = conv.survey
        link = None
        if conv.survey == "pending" and await hub.recall_service(conv.service_id):
            service = hub.service(conv.service_id)
            survey_status = domain.survey_status(conv, service, hub.clock.now())
            found = hub.survey_link_of(conv)
            if found is not None:
                link = schemas.SurveyLinkOut(found.url, found.expires_at)
        return json_response(
            schemas.ConversationDetail(conv.summary(), survey, emails, survey_status, link)
        )

    @api.route(
        "GET",
        "/api/v1/conversations/{id}/transcript",
        summary="The conversation's stored events in seq order, a page at a time",
        tag="conversations",
        roles=CONVERSATIONS,
        response=schemas.Transcript,
        query=[
            (
                "after",
                {"type": "integer", "minimum": 0, "maximum": MAX_SEQ},
                "events with a larger seq: next_after of the previous page (0)",
            ),
            (
                "limit",
                {"type": "integer", "minimum": 1, "maximum": TRANSCRIPT_PAGE_MAX},
                f"page size ({TRANSCRIPT_PAGE})",
            ),
        ],
    )
    async def transcript(id: str) -> Response:
        conv = await _load(id)
        after = _int_arg("after", 0, 0, MAX_SEQ) or 0
        limit = _int_arg("limit", TRANSCRIPT_PAGE, 1, TRANSCRIPT_PAGE_MAX) or TRANSCRIPT_PAGE
        # One more than the page: whether there is a next one, without counting the history.
        events = await config.store.events_after(id, after, limit + 1)
        page = events[:limit]
        return json_response(
            schemas.Transcript(
                conv.summary(),
                [msgspec.Raw(e.frame.encode()) for e in page],
                page[-1].seq if len(events) > limit else None,
            )
        )

    @api.route(
        "POST",
        "/api/v1/conversations/{id}/resume",
        summary="An operator's active contact on an out-of-hours conversation (F4)",
        tag="conversations",
        roles=CONVERSATIONS,
        body=schemas.ResumeRequest,
        response=ConversationSummary,
        errors=(503,),
    )
    async def resume(id: str) -> Response:
        body = await read_body(schemas.ResumeRequest)
        conv = await _load(id)
        scope = _operator_scope()
        if scope is not None and body.operator_id != scope[0]:
            raise Problem(403, f"this operator token resumes as operator {scope[0]} only")
        if conv.status is not Status.OUT_OF_HOURS:
            raise Problem(409, f"conversation {id} is {conv.status.value}, not out_of_hours")
        session = hub.sessions.get(body.operator_id)
        if session is None and hub.forward_resume is not None:
            # Cluster mode: their console is served by another node, which resumes it.
            try:
                await hub.forward_resume(id, body.operator_id)
            except domain.Rejected as exc:
                status = 503 if exc.code == "overloaded" else 409
                raise Problem(status, exc.message) from None
            return json_response((await _load(id)).summary())
        if session is None:
            raise Problem(409, f"operator {body.operator_id} is not signed in to the console")
        if hub.roster.get(body.operator_id).free <= 0:
            raise Problem(409, f"operator {body.operator_id} has no free capacity")
        try:
            # An operator token was scoped by _load; an administrator may direct anyone.
            await session.resume(id, scoped=False)
        except domain.Rejected as exc:
            raise Problem(409, exc.message) from None
        except (AskTimeout, ActorCrashed) as exc:
            raise Problem(503, f"the conversation did not answer; try again ({exc})") from None
        return json_response((await _load(id)).summary())

    async def _load(conversation_id: str) -> Conversation:
        """The conversation, if the token may see it (404 alike when it may not: an operator
        token does not learn which other conversations exist)."""
        conv = None
        if len(conversation_id) <= 64 and "\x00" not in conversation_id:
            conv = await config.store.load_conversation(conversation_id)
        scope = _operator_scope()
        if conv is not None and scope is not None:
            operator_id, services = scope
            if conv.operator_id != operator_id and conv.service_id not in services:
                conv = None
        if conv is None:
            raise Problem(404, f"no conversation {conversation_id}")
        return conv

    def _operator_scope() -> tuple[int, frozenset[int]] | None:
        """What an operator token may see: its operator's id and the services that operator's
        groups serve; None for the other roles (everything)."""
        if g.role is not Role.OPERATOR:
            return None
        operator_id = g.operator_id
        if operator_id is None or operator_id not in hub.directory.operators:
            raise Problem(
                403,
                "this operator token is not tied to an operator; an admin sets its operator_id",
            )
        return operator_id, hub.directory.services_of(operator_id)

    # -- operations ---------------------------------------------------------------------------

    @api.route(
        "GET",
        "/api/v1/queues",
        summary="Live queue snapshot per group",
        tag="operations",
        roles=OPERATIONS,
        response=list[schemas.QueueOut],
    )
    async def queues() -> Response:
        now = hub.clock.now()
        if hub.board.gather is not None:
            # Cluster mode: every node's groups and operators, as the live view shows them.
            return json_response(_queues_of(await hub.board.gather(hub.make_board()), now))
        out = []
        for group_id, group in sorted(hub.directory.groups.items()):
            ref = hub.running_group(group_id)
            waiting: list[str] = [] if ref is None else await ref.ask(QueueSnapshot(), timeout=5)
            since = [
                e.link.key[0] for cid in waiting if (e := hub.conversations.get(cid)) is not None
            ]
            counts = {"available": 0, "busy": 0, "paused": 0}
            for state in hub.roster:
                if group_id not in state.groups or state.presence is Presence.OFFLINE:
                    continue
                if state.presence is Presence.PAUSED:
                    counts["paused"] += 1
                elif state.free > 0:
                    counts["available"] += 1
                else:
                    counts["busy"] += 1
            out.append(
                schemas.QueueOut(
                    group_id=group_id,
                    name=group.name,
                    waiting=len(waiting),
                    longest_wait_seconds=(
                        round(max((now - min(since)).total_seconds(), 0.0), 3) if since else 0.0
                    ),
                    operators=schemas.OperatorCounts(**counts),
                )
            )
        return json_response(out)

    @api.route(
        "GET",
        "/api/v1/reports",
        summary="Service, group and operator figures over a period",
        tag="operations",
        roles=OPERATIONS,
        response=schemas.ReportOut,
        query=[
            ("from", {"type": "string", "format": "date-time"}, "period start (default: 24 h ago)"),
            ("to", {"type": "string", "format": "date-time"}, "period end (default: now)"),
            (
                "threshold",
                {"type": "integer", "minimum": 1, "maximum": 86400},
                f"service level: answered within this many seconds ({DEFAULT_THRESHOLD})",
            ),
        ],
    )
    async def reports() -> Response:
        end = _time_arg("to") or hub.clock.now()
        start = _time_arg("from") or end - timedelta(days=1)
        if start >= end:
            raise Problem(400, "from must be before to")
        threshold = _int_arg("threshold", DEFAULT_THRESHOLD, 1, 86400) or DEFAULT_THRESHOLD
        found = await config.store.conversations_created_between(start, end)
        files = await config.store.attachment_figures(start, end)
        result = report(found, float(threshold), files)
        # The pauses are written behind the sessions: the ones just changed first (a moment).
        with trio.move_on_after(hub.ask_timeout):
            await hub.pauses.flush()
        pauses = await config.store.pauses_between(start, end)
        return json_response(
            schemas.ReportOut(
                start=start,
                end=end,
                threshold_seconds=threshold,
                total=msgspec.convert(result.total, schemas.TotalFigures),
                services=[
                    msgspec.convert({**v, "service_id": k}, schemas.ServiceFigures)
                    for k, v in result.services.items()
                ],
                groups=[
                    msgspec.convert({**v, "group_id": k}, schemas.GroupFigures)
                    for k, v in result.groups.items()
                ],
                operators=[
                    schemas.OperatorFigures(
                        operator_id=operator_id,
                        paused_seconds=round(sum(reasons.values()), 3),
                        paused=[
                            schemas.PausedFor(reason, seconds)
                            # By reason id, the unspecified ones (null) last.
                            for reason, seconds in sorted(
                                reasons.items(), key=lambda r: (r[0] is None, r[0] or "")
                            )
                        ],
                    )
                    for operator_id, reasons in paused_time(
                        pauses, start, end, hub.clock.now()
                    ).items()
                ],
            )
        )

    return app


def create_ops_app(
    app: QuartTrio, registry: CollectorRegistry, settings: ServerSettings
) -> QuartTrio:
    """The operations endpoints of ``app`` (the API of :func:`create_app`, whose OpenAPI
    document it serves), for the ``[server] ops_bind`` listener: nothing else answers there."""
    ops = QuartTrio("omni-ops", static_folder=None)
    _problem_details(ops)
    _ops_routes(ops, registry, app.extensions["omni_api"], settings.ops_token)
    return ops


def _problem_details(app: QuartTrio) -> None:
    """Every error of ``app`` as problem details."""

    @app.errorhandler(Problem)
    async def problem(error: Problem) -> Response:
        return error.response()

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        return Problem(status, error.description or TITLE_FALLBACK).response()

    @app.errorhandler(Exception)
    async def crash(error: Exception) -> Response:
        log.exception("admin API request failed")
        return Problem(500, "the server could not handle this request", kind="internal").response()


def _ops_routes(app: QuartTrio, registry: CollectorRegistry, api: Api, token: str | None) -> None:
    """``/metrics``, ``/openapi.json`` and ``/docs`` on ``app``; with ``token``, each needs it
    as a bearer token (wrong ones counted against the client like the API's)."""
    if token is not None:
        expected = token.encode()

        @app.before_request
        async def ops_token() -> None:
            if request.path not in ("/metrics", "/openapi.json", "/docs"):
                return
            sent = bearer_token()
            if sent is None:
                raise Problem(401, "send the operations token: Authorization: Bearer <token>")
            if not api.attempts.admit(lambda: hmac.compare_digest(sent.encode(), expected) or None):
                raise Problem(401, "wrong operations token")

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

    @app.get("/openapi.json")
    async def openapi() -> Response:
        from admin_api.openapi import document

        return json_response(document(api.routes))

    @app.get("/docs")
    async def docs() -> Response:
        from admin_api.openapi import DOCS_PAGE

        return Response(DOCS_PAGE, content_type="text/html; charset=utf-8")


TITLE_FALLBACK = "the request could not be handled"

#: Events of a transcript page: by default, and at most. A page is read whole into memory.
TRANSCRIPT_PAGE = 200
TRANSCRIPT_PAGE_MAX = 1000
#: The largest seq the store holds (a PostgreSQL integer).
MAX_SEQ = 2**31 - 1

#: The protocol's JSON Schema, encoded once: it changes only with the code.
PROTOCOL_SCHEMA = msgspec.json.encode(protocol.json_schema())


async def _check_destination(guard: Guard, sent: Any) -> None:
    """A webhook's URL, a channel's API and reply URLs must reach only public addresses now
    (the SSRF guard; checked again at each call): 422 naming the address otherwise."""
    urls: dict[str, str | None]
    if isinstance(sent, WebhookInput):
        urls = {"url": sent.url}
    elif isinstance(sent, ChannelInput):
        urls = {"base_url": sent.base_url, "reply_url": sent.reply_url}
    else:
        return
    for name, url in urls.items():
        if url is None:
            continue
        try:
            await guard.check_url(url)
        except Refused as exc:
            raise Problem(
                422,
                f"{name}: {exc.message}; outgoing calls go to public addresses only",
                kind="refused-destination",
            ) from None
        except Unresolvable as exc:
            raise Problem(422, f"{name}: {exc}", kind="refused-destination") from None


def _resource_routes(api: Api, config: Configuration, resource: Resource, guard: Guard) -> None:
    kind = resource.kind
    base = f"/api/v1/{kind.replace('_', '-')}"
    read = WRITE_CONFIG if kind in ("api_tokens", "users") else READ_CONFIG
    noun = kind.rstrip("s").replace("_", " ")
    # A token (an operator's, an API token) or a webhook's secret is shown once, in the answer
    # to its creation.
    created = resource.input if kind in ("operators", "api_tokens", "webhooks") else resource.public

    if resource.key_field is None:  # a singleton: GET and PUT only

        @api.route(
            "GET", base, summary=f"The {kind}", tag=kind, roles=read, response=resource.public
        )
        async def get_singleton() -> Response:
            body = config.get(kind, SINGLETON)
            if body is None:
                body = body_of(resource.public())
            return json_response(public(body))

        @api.route(
            "PUT",
            base,
            summary=f"Replace the {kind}",
            tag=kind,
            roles=WRITE_CONFIG,
            body=resource.input,
            response=resource.public,
        )
        async def put_singleton() -> Response:
            sent = await read_body(resource.input)
            body = await _store(config, kind, SINGLETON, sent, exists=None)
            return json_response(public(body))

        return

    @api.route(
        "GET",
        base,
        summary=f"List {kind}",
        tag=kind,
        roles=read,
        response=GenericAlias(list, (resource.public,)),
    )
    async def list_items() -> Response:
        return json_response([public(b) for b in config.list(kind)])

    @api.route(
        "POST",
        base,
        summary=f"Create a {noun}",
        tag=kind,
        roles=WRITE_CONFIG,
        body=resource.input,
        response=created,
        status=201,
    )
    async def create() -> Response:
        sent = await read_body(resource.input)
        key = key_of(kind, sent)
        if config.get(kind, key) is not None:
            raise Problem(409, f"{noun} {key} exists; PUT {base}/{key} to change it")
        issued = None
        if isinstance(sent, OperatorInput | ApiTokenInput) and sent.token is None:
            issued = secrets.token_urlsafe(32)
            sent = msgspec.structs.replace(sent, token=issued)
        secret = None
        if isinstance(sent, ChannelInput):
            await _check_destination(guard, sent)
            if sent.kind == "generic" and sent.secret is None:
                secret = issue_webhook_secret()
                sent = msgspec.structs.replace(sent, secret=secret)
        if isinstance(sent, WebhookInput):
            await _check_destination(guard, sent)
            if sent.secret is None:
                secret = issue_webhook_secret()
                sent = msgspec.structs.replace(sent, secret=secret)
        password_hash = None
        if isinstance(sent, UserInput) and sent.password is not None:
            password_hash = await hash_password_off_loop(sent.password)
        body = await _store(config, kind, key, sent, exists=False, password_hash=password_hash)
        out = public(body)
        assert out is not None
        if issued is not None:
            out["token"] = issued  # shown once, never again
        if secret is not None:
            out["secret"] = secret  # shown once, never again
        return json_response(out, status=201, headers={"Location": f"{base}/{key}"})

    @api.route(
        "GET",
        base + "/{key}",
        summary=f"One {noun}",
        tag=kind,
        roles=read,
        response=resource.public,
    )
    async def get_item(key: str) -> Response:
        body = config.get(kind, key)
        if body is None:
            raise Problem(404, f"no {noun} {key}")
        return json_response(public(body))

    @api.route(
        "PUT",
        base + "/{key}",
        summary=f"Replace a {noun}",
        tag=kind,
        roles=WRITE_CONFIG,
        body=resource.input,
        response=resource.public,
    )
    async def put_item(key: str) -> Response:
        if config.get(kind, key) is None:
            raise Problem(404, f"no {noun} {key}; POST {base} to create it")
        sent = await read_body(resource.input)
        if key_of(kind, sent) != key:
            raise Problem(422, f"the body's id must be {key}", kind="invalid-body")
        if isinstance(sent, UserInput) and sent.password is not None:
            raise Problem(
                422, f"set a password with PUT {base}/{key}/password", kind="invalid-body"
            )
        await _check_destination(guard, sent)
        body = await _store(config, kind, key, sent, exists=True)
        return json_response(public(body))

    @api.route(
        "DELETE",
        base + "/{key}",
        summary=f"Delete a {noun}",
        tag=kind,
        roles=WRITE_CONFIG,
        status=204,
    )
    async def delete_item(key: str) -> Response:
        try:
            await config.delete(kind, key, g.actor)
        except LookupError:
            raise Problem(404, f"no {noun} {key}") from None
        except ConfigRejected as exc:
            raise Problem(_status(exc), exc.message, kind="conflict") from None
        if kind == "users":
            # A user made again with this id starts at generation 0: no old session with it.
            await config.store.end_sessions(key)
        return Response("", status=204)


#: The API's names of the outbox's states, and back.
_DELIVERY_STATES = {"pending": "pending", "sent": "delivered", "failed": "parked"}
_STORE_STATES = {shown: state for state, shown in _DELIVERY_STATES.items()}


def _delivery_routes(api: Api, config: Configuration, kind: str) -> None:
    """The outbox items of a webhook (``kind`` ``webhooks``: its events' deliveries) or of a
    messaging channel (``channels``: its replies), each attempt of each; putting parked ones
    back. One mechanism for both: the outbox's subscription is the webhook's id, or
    ``channel:<id>``."""
    hub = api.hub
    noun = kind.removesuffix("s")

    def _subscription(key: str) -> str:
        if config.get(kind, key) is None:
            raise Problem(404, f"no {noun} {key}")
        return key if kind == "webhooks" else f"channel:{key}"

    def _named(item: OutboxItem) -> tuple[str, str]:
        """The delivery's message id (the receiver's ``webhook-id``) and type."""
        if kind == "webhooks":
            return str(item.payload.get("id", "")), str(item.payload.get("type", ""))
        return reply_id(item), str(item.payload.get("type", "reply"))

    async def _out(items: list[OutboxItem]) -> list[schemas.DeliveryOut]:
        history = await config.store.outbox_attempts([i.id for i in items])
        return [
            schemas.DeliveryOut(
                id=i.id,
                message_id=_named(i)[0],
                type=_named(i)[1],
                conversation_id=i.conversation_id,
                status=_DELIVERY_STATES[i.status],
                attempts=i.attempts,
                created_at=i.created_at,
                next_attempt_at=i.next_attempt_at if i.status == "pending" else None,
                delivered_at=i.sent_at,
                parked_at=i.failed_at,
                last_error=i.last_error,
                history=[
                    schemas.AttemptOut(a.at, round(a.duration * 1000, 3), a.status_code, a.error)
                    for a in history.get(i.id, [])
                ],
            )
            for i in items
        ]

    what = "deliveries" if kind == "webhooks" else "replies"

    @api.route(
        "GET",
        f"/api/v1/{kind}/{{key}}/deliveries",
        summary=f"A {noun}'s {what}, newest first, with every attempt of each",
        tag=kind,
        roles=READ_CONFIG,
        response=schemas.DeliveryPage,
        query=[
            (
                "status",
                {"type": "string", "enum": sorted(_STORE_STATES)},
                "pending, delivered or parked",
            ),
            ("limit", {"type": "integer", "minimum": 1, "maximum": 200}, "page size (50)"),
            (
                "before",
                {"type": "integer", "minimum": 1, "maximum": 2**62},
                "deliveries with a smaller id: next_before of the previous page",
            ),
        ],
    )
    async def deliveries(key: str) -> Response:
        subscription = _subscription(key)
        status = request.args.get("status")
        if status is not None and status not in _STORE_STATES:
            raise Problem(400, "status must be pending, delivered or parked")
        limit = _int_arg("limit", 50, 1, 200) or 50
        before = _int_arg("before", None, 1, 2**62)
        state = _STORE_STATES[status] if status is not None else None
        items = await config.store.outbox_deliveries(subscription, state, limit, before)
        next_before = items[-1].id if len(items) == limit else None
        return json_response(schemas.DeliveryPage(await _out(items), next_before))

    async def _put_back(key: str, ids: list[int]) -> list[int]:
        again = await config.store.outbox_redeliver(ids, hub.clock.now())
        if again:
            await config.store.record_action(
                hub.clock.now(), g.actor, "redeliver", kind, key, {"deliveries": again}
            )
            hub.wake_outbox()
        return again

    @api.route(
        "POST",
        f"/api/v1/{kind}/{{key}}/deliveries/{{id}}/redeliver",
        summary="Deliver a parked delivery again (a new round of attempts), audited",
        tag=kind,
        roles=WRITE_CONFIG,
        response=schemas.DeliveryOut,
        status=202,
    )
    async def redeliver(key: str, id: str) -> Response:
        subscription = _subscription(key)
        item = await config.store.outbox_item(int(id)) if id.isdigit() and len(id) < 19 else None
        if item is None or item.subscription != subscription:
            raise Problem(404, f"{noun} {key} has no delivery {id}")
        if item.status != "failed":
            raise Problem(409, f"delivery {id} is {_DELIVERY_STATES[item.status]}, not parked")
        await _put_back(key, [item.id])
        again = await config.store.outbox_item(item.id)
        assert again is not None
        [out] = await _out([again])
        return json_response(out, status=202)

    @api.route(
        "POST",
        f"/api/v1/{kind}/{{key}}/redeliver",
        summary=f"Deliver every parked delivery of a {noun} again, audited",
        tag=kind,
        roles=WRITE_CONFIG,
        response=schemas.Redelivered,
        status=202,
    )
    async def redeliver_all(key: str) -> Response:
        subscription = _subscription(key)
        parked: list[int] = []
        before = None
        while True:
            page = await config.store.outbox_deliveries(subscription, "failed", 500, before)
            parked += [i.id for i in page]
            if len(page) < 500:
                break
            before = page[-1].id
        again = await _put_back(key, parked)
        return json_response(schemas.Redelivered(again), status=202)


def _session_routes(api: Api, config: Configuration) -> None:
    """People's sign-in (user name and password) and sessions, their own password, and an
    administrator's password reset (docs/admin-api.md, "Signing in")."""
    accounts, attempts = api.accounts, api.attempts

    def _profile(user: User) -> UserProfile:
        return msgspec.convert(public(body_of(user)), UserProfile)

    def _signed_in() -> Principal:
        principal: Principal = g.principal
        if principal.user_id is None:
            raise Problem(403, "an API token has no session: sign in with a user name")
        return principal

    async def _new_session(user: User) -> schemas.SessionOut:
        token, session = await accounts.open_session(user)
        return schemas.SessionOut(token, session.expires_at, _profile(user))

    @api.route(
        "POST",
        "/api/v1/session",
        summary="Sign in with a user name and a password: a session token, shown once",
        tag="session",
        roles=None,
        body=schemas.SignInRequest,
        response=schemas.SessionOut,
        status=201,
        errors=(401, 429),
    )
    async def sign_in() -> Response:
        sent = await read_body(schemas.SignInRequest)
        user = await attempts.admit_async(
            lambda: accounts.check(sent.username, sent.password), name=sent.username
        )
        if user is None:
            raise Problem(401, "wrong user name or password", kind="wrong-credentials")
        return json_response(await _new_session(user), status=201)

    @api.route(
        "GET",
        "/api/v1/session",
        summary="The session of the request: whom it acts for, until when",
        tag="session",
        roles=CONVERSATIONS,
        response=schemas.SessionInfo,
    )
    async def session_info() -> Response:
        _signed_in()
        signed_in = await accounts.session(bearer_token() or "")
        if signed_in is None:
            raise Problem(401, "this session has ended")
        return json_response(
            schemas.SessionInfo(signed_in.session.expires_at, _profile(signed_in.user))
        )

    @api.route(
        "DELETE",
        "/api/v1/session",
        summary="Sign out: ends every session of the person, consoles included",
        tag="session",
        roles=CONVERSATIONS,
        status=204,
    )
    async def sign_out() -> Response:
        principal = _signed_in()
        assert principal.user_id is not None
        await _end(principal.user_id, principal.actor)
        return Response("", status=204)

    @api.route(
        "POST",
        "/api/v1/session/password",
        summary="Change one's own password (the old one required): ends every session of the "
        "person and answers with a new one",
        tag="session",
        roles=CONVERSATIONS,
        body=schemas.PasswordChange,
        response=schemas.SessionOut,
        errors=(401,),
    )
    async def change_password() -> Response:
        principal = _signed_in()
        assert principal.user_id is not None
        sent = await read_body(schemas.PasswordChange)
        user = hub_user(principal.user_id)
        _check_rules(sent.new_password, user.username)
        ok = await attempts.admit_async(
            lambda: _true_or_none(check_password(user.password_hash, sent.old_password)),
            name=user.username,
        )
        if ok is None:
            raise Problem(401, "the old password is wrong", kind="wrong-credentials")
        new_hash = await hash_password_off_loop(sent.new_password)
        await _end(user.id, principal.actor, password_hash=new_hash)
        return json_response(await _new_session(hub_user(user.id)))

    @api.route(
        "PUT",
        "/api/v1/users/{key}/password",
        summary="Set or reset a user's password: ends every session of the user",
        tag="users",
        roles=WRITE_CONFIG,
        body=schemas.PasswordSet,
        status=204,
    )
    async def set_password(key: str) -> Response:
        body = config.get("users", key)
        if body is None:
            raise Problem(404, f"no user {key}")
        sent = await read_body(schemas.PasswordSet)
        _check_rules(sent.password, body["username"])
        new_hash = await hash_password_off_loop(sent.password)
        await _end(key, g.actor, password_hash=new_hash)
        return Response("", status=204)

    def hub_user(user_id: str) -> User:
        user = api.hub.directory.users.get(user_id)
        if user is None:
            raise Problem(404, f"no user {user_id}")
        return user

    async def _end(user_id: str, actor: str, *, password_hash: str | None = None) -> None:
        try:
            await accounts.end_sessions(config, user_id, actor, password_hash=password_hash)
        except LookupError:
            raise Problem(404, f"no user {user_id}") from None
        except ConfigRejected as exc:
            raise Problem(_status(exc), exc.message, kind="conflict") from None


def _attachment_routes(api: Api, routes: AttachmentRoutes) -> None:
    """Upload, download and download links (admin_api.attachments says who may do what)."""

    async def upload(id: str) -> Response:
        return await routes.upload(id)

    async def download(id: str) -> Response:
        return await routes.download(id)

    async def link(id: str) -> Response:
        return await routes.link(id)

    api.route(
        "POST",
        "/api/v1/conversations/{id}/attachments",
        summary="Upload a file into a conversation (the raw bytes as the body; ?name= its "
        "name): bearer = the visitor's resume token, or the holding operator's token or "
        "session. A pending upload, until a message carries it",
        tag="attachments",
        roles=None,
        response=AttachmentOut,
        status=201,
        query=[("name", {"type": "string", "maxLength": 1000}, "the file's name")],
        errors=(401, 403, 404, 408, 409, 413, 415, 422, 429),
    )(upload)
    api.route(
        "GET",
        "/api/v1/attachments/{id}",
        summary="Download a file: with a bearer token (a participant, a supervisor, an "
        "administrator) or a download link's expires and signature",
        tag="attachments",
        roles=None,
        query=[
            ("expires", {"type": "string", "maxLength": 20}, "a download link's expiry"),
            ("signature", {"type": "string", "maxLength": 64}, "a download link's signature"),
        ],
        errors=(401, 429),
    )(download)
    api.route(
        "POST",
        "/api/v1/attachments/{id}/link",
        summary="A download link for <img> and <a> (which send no bearer token), short-lived",
        tag="attachments",
        roles=None,
        response=LinkOut,
        errors=(401, 429),
    )(link)


def _check_rules(password: str, username: str) -> None:
    if (weakness := password_weakness(password, username)) is not None:
        raise Problem(422, weakness, kind="weak-password")


async def _true_or_none(check: Awaitable[bool]) -> bool | None:
    return True if await check else None


def _status(refusal: ConfigRejected) -> int:
    """422: the body does not fit; 409: it clashes with other resources or the state."""
    return 409 if isinstance(refusal, ConfigConflict) else 422


async def _store(
    config: Configuration,
    kind: str,
    key: str,
    sent: Any,
    *,
    exists: bool | None,
    password_hash: str | None = None,
) -> dict[str, Any]:
    """Seal what was sent (secrets hashed, a secret left out kept) and store it; the stored
    body. A user's password comes hashed already (``password_hash``: hashing blocks)."""

    def sealed(before: dict[str, Any] | None) -> dict[str, Any]:
        # Over the stored body (sealed again if another node changed it meanwhile).
        try:
            return body_of(seal(kind, sent, before, password_hash=password_hash))
        except ValueError as exc:
            raise Problem(422, str(exc), kind="invalid-body") from None

    try:
        entry = await config.update(kind, key, sealed, g.actor, exists=exists)
    except LookupError:
        raise Problem(404, f"no {kind} {key}") from None
    except ConfigRejected as exc:
        raise Problem(_status(exc), exc.message, kind="invalid-configuration") from None
    body = entry.after
    assert body is not None
    if kind == "users" and body.get("generation", 0) != (entry.before or {}).get("generation", 0):
        # The change ended the user's sessions (deactivated, another role): forget them.
        await config.store.end_sessions(key)
    return body


def _int_arg(name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Problem(400, f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise Problem(400, f"{name} must be between {low} and {high}")
    return value


def _time_arg(name: str) -> datetime | None:
    raw = request.args.get(name)
    if not raw:
        return None
    try:
        # RFC 3339 allows a lower-case z.
        value = datetime.fromisoformat(raw[:-1] + "Z" if raw.endswith("z") else raw)
    except ValueError:
        raise Problem(400, f"{name} must be an ISO 8601 date-time") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    # Instants are UTC inside Omni (and when shown); checked first, so none overflows.
    return _in_range(name, value).astimezone(UTC)


#: Instants the API accepts (the database's and the arithmetic's comfortable range).
EARLIEST, LATEST = datetime(1970, 1, 1, tzinfo=UTC), datetime(9000, 1, 1, tzinfo=UTC)


def _in_range(name: str, value: datetime) -> datetime:
    if not EARLIEST <= value <= LATEST:
        raise Problem(400, f"{name} must be between 1970 and 9000")
    return value


def _text_arg(name: str) -> str | None:
    raw = request.args.get(name) or None
    if raw is not None and "\x00" in raw:
        raise Problem(400, f"{name} must not contain NUL characters")
    return raw


def _cursor_arg() -> tuple[datetime, str] | None:
    raw = request.args.get("cursor")
    if not raw:
        return None
    cursor = parse_cursor(raw)
    if cursor is None:
        raise Problem(400, "cursor is not one this API gave")
    return _in_range("cursor", cursor[0]), cursor[1]


def _queues_of(board: protocol.Board, now: datetime) -> list[schemas.QueueOut]:
    """The queues as a (cluster's) board shows them: its waiting, and its signed-in
    operators of each group by what they can take."""
    out = []
    for row in board.groups:
        counts = {"available": 0, "busy": 0, "paused": 0}
        for person in board.operators:
            if row.id not in person.groups or person.presence == "offline":
                continue
            if person.presence == "paused":
                counts["paused"] += 1
            elif person.held < person.capacity:
                counts["available"] += 1
            else:
                counts["busy"] += 1
        since = row.oldest_waiting_since
        out.append(
            schemas.QueueOut(
                group_id=row.id,
                name=row.name,
                waiting=row.waiting,
                longest_wait_seconds=(
                    round(max((now - since).total_seconds(), 0.0), 3) if since else 0.0
                ),
                operators=schemas.OperatorCounts(**counts),
            )
        )
    return out
