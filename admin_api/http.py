"""HTTP plumbing shared by the admin API: problem details (RFC 9457), bearer tokens and roles,
JSON bodies validated by msgspec.

Rules: every error leaves as ``application/problem+json`` with ``type``, ``title``, ``status``
and ``detail`` (and ``errors`` where a body field is at fault); handlers raise :class:`Problem`
rather than building responses. Nothing is written before a body has been fully validated.

Guessing tokens does not pay (DESIGN §10): :class:`Attempts` counts the wrong bearer tokens and
passwords of each client IP, and the wrong passwords of each user name; past
``failures_before_wait`` of them the IP (or the name) must wait, longer after each further
failure, and while it waits its attempts are answered 429 without being looked at. The client IP
is the peer's address, or what ``X-Forwarded-For`` says only when the peer is a trusted proxy.
Time is trio's clock.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar

import msgspec
import trio
from quart import Response, g, request

from omni.domain.model import Role
from omni.limits import Backoff, Keyed, client_ip, networks
from omni.settings import LimitsSettings

T = TypeVar("T")

log = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()

TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

#: Largest request body accepted, in bytes.
MAX_BODY = 1024 * 1024


class Problem(Exception):
    def __init__(
        self,
        status: int,
        detail: str,
        *,
        kind: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.kind = kind or TITLES.get(status, "error").lower().replace(" ", "-")
        self.headers = headers or {}
        self.extra = extra

    def response(self) -> Response:
        body = {
            "type": f"https://omni.dev/problems/{self.kind}",
            "title": TITLES.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
            **self.extra,
        }
        response = Response(
            _encoder.encode(body), status=self.status, content_type="application/problem+json"
        )
        if self.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="omni"'
        response.headers.update(self.headers)
        return response


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        _encoder.encode(data), status=status, content_type="application/json", headers=headers
    )


async def read_body(kind: type[T]) -> T:
    """The request's JSON body as ``kind``, or a 4xx :class:`Problem` naming the field."""
    content_type = request.mimetype
    if content_type not in ("application/json", "application/merge-patch+json"):
        raise Problem(415, "send the body as application/json")
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise Problem(413, f"bodies are limited to {MAX_BODY} bytes")
    data = await request.get_data(cache=False)
    if len(data) > MAX_BODY:
        raise Problem(413, f"bodies are limited to {MAX_BODY} bytes")
    if b"\\u0000" in data or b"\x00" in data:
        # PostgreSQL cannot store NUL in text: refuse it here, with a reason, not at the write.
        raise Problem(422, "text must not contain NUL characters (\\u0000)", kind="invalid-body")
    try:
        value: T = msgspec.json.decode(data, type=kind)
    except msgspec.ValidationError as exc:
        raise Problem(422, str(exc), kind="invalid-body", errors=[str(exc)]) from None
    except msgspec.DecodeError as exc:
        raise Problem(400, f"the body is not valid JSON: {exc}", kind="invalid-json") from None
    return value


#: Which roles may do what. Admin may do everything.
READ_CONFIG = frozenset({Role.ADMIN, Role.SUPERVISOR})
WRITE_CONFIG = frozenset({Role.ADMIN})
CONVERSATIONS = frozenset({Role.ADMIN, Role.SUPERVISOR, Role.OPERATOR})
OPERATIONS = frozenset({Role.ADMIN, Role.SUPERVISOR})

Handler = Callable[..., Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request's bearer token speaks for: an API token, or a person's sign-in session
    (``user_id`` set)."""

    #: As the audit log names them: ``token:<id>`` or ``user:<id>``.
    actor: str
    role: Role
    operator_id: int | None = None
    user_id: str | None = None


class Attempts:
    """The failed credentials (bearer tokens, passwords) of each client IP, and the failed
    passwords of each user name, in bounded tables (``omni.limits``)."""

    def __init__(
        self,
        limits: LimitsSettings | None = None,
        trusted_proxies: tuple[str, ...] = (),
        per_address: Keyed[str, Backoff] | None = None,
    ) -> None:
        """``per_address``: the failures of each client IP, when they are shared with the
        websocket's sign-ins (the server passes the gateway's: one budget per address for
        every credential, not one per door)."""
        limits = limits or LimitsSettings()
        self._trusted = networks(trusted_proxies)

        def backoff() -> Backoff:
            return Backoff(
                limits.failures_before_wait, limits.failure_wait, limits.failure_wait_max
            )

        self._failures: Keyed[str, Backoff] = (
            per_address if per_address is not None else Keyed(backoff)
        )
        self._names: Keyed[str, Backoff] = Keyed(backoff)

    def client(self) -> str:
        """The current request's client IP."""
        forwarded = ", ".join(request.headers.getlist("X-Forwarded-For")) or None
        return client_ip(request.remote_addr or "", forwarded, self._trusted)

    def _keys(self, name: str | None) -> list[tuple[Keyed[str, Backoff], str, str]]:
        keys = [(self._failures, self.client(), "this address")]
        if name is not None:
            keys.append((self._names, name.casefold(), "this user name"))
        return keys

    def _refuse_while_waiting(self, keys: list[tuple[Keyed[str, Backoff], str, str]]) -> None:
        now = trio.current_time()
        for table, key, what in keys:
            wait = table[key].wait(now)
            if wait is not None:
                seconds = max(1, math.ceil(wait))
                raise Problem(
                    429,
                    f"too many failed attempts from {what}; try again in {seconds} s",
                    kind="too-many-attempts",
                    headers={"Retry-After": str(seconds)},
                )

    def _count(self, keys: list[tuple[Keyed[str, Backoff], str, str]], ok: bool) -> None:
        now = trio.current_time()
        for table, key, what in keys:
            if ok:
                table.forget(key)
                continue
            backoff = table[key]
            backoff.failed(now)
            # Logged when a wait begins: once per window, however many attempts it refuses.
            if (wait := backoff.wait(now)) is not None:
                where = key if table is self._failures else "a user name"
                log.warning("failed credentials from %s: %s waits %.0f s", what, where, wait)

    def admit(self, look_up: Callable[[], T | None]) -> T | None:
        """What ``look_up`` finds for the request's token (None: a wrong one), counted against
        the client: a :class:`Problem` 429 with ``Retry-After`` instead while the client must
        wait (the token is then not looked up). A right token forgets the client's failures."""
        keys = self._keys(None)
        self._refuse_while_waiting(keys)
        found = look_up()
        self._count(keys, found is not None)
        return found

    async def admit_async(
        self, look_up: Callable[[], Awaitable[T | None]], *, name: str | None = None
    ) -> T | None:
        """:meth:`admit` for a look-up that waits (a session in the store, a password hash);
        with ``name`` (a user name) the failures count against it too, so that one account is
        not guessed at from many addresses."""
        keys = self._keys(name)
        self._refuse_while_waiting(keys)
        found = await look_up()
        self._count(keys, found is not None)
        return found


def bearer_token() -> str | None:
    """The request's ``Authorization: Bearer`` token, if it sends one."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


Authenticate = Callable[[str], Awaitable[Principal | None]]


def requires(
    roles: frozenset[Role], authenticate: Authenticate, attempts: Attempts
) -> Callable[[Handler], Handler]:
    """Let the request through only with ``Authorization: Bearer <token>`` — an API token or a
    sign-in session — of one of ``roles`` (wrong ones counted by ``attempts``); who it speaks
    for is then ``g.principal``, and ``g.actor`` names them for the audit log."""

    def decorate(handler: Handler) -> Handler:
        @wraps(handler)
        async def guarded(*args: Any, **kwargs: Any) -> Response:
            token = bearer_token()
            if token is None:
                raise Problem(401, "send an API token: Authorization: Bearer <token>")
            found = await attempts.admit_async(lambda: authenticate(token))
            if found is None:
                raise Problem(401, "unknown or revoked API token, or an ended session")
            if found.role not in roles:
                article = "an" if found.role.value[0] in "aeiou" else "a"
                raise Problem(403, f"{article} {found.role.value} token may not do this")
            g.principal = found
            g.actor = found.actor
            g.role = found.role
            g.operator_id = found.operator_id
            return await handler(*args, **kwargs)

        return guarded

    return decorate
