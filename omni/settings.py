"""The server's own settings: the ``[server]`` table of the configuration file.

Rules: these are values, not behaviour — msgspec structs with one default and one check per
field, decoded with the rest of the file by ``omni.config``. Each part of the server takes the
section it needs (the gateway its limits, the outbox the SMTP section, the CAPTCHA check its
provider), so none of them depends on the file's format. Unlike the configuration resources
(``omni.domain.model``), they are not edited live: they need a restart.
"""

from __future__ import annotations

from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from omni.domain.values import secret_weakness
from omni.limits import networks

Port = Annotated[int, msgspec.Meta(ge=0, le=65_535)]
PositiveSeconds = Annotated[float, msgspec.Meta(gt=0, le=7 * 86_400)]


class _Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class SmtpSettings(_Settings, frozen=True):
    """Where e-mail goes (F14: transcripts): an SMTP server, and how hard to try."""

    host: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    #: The From address of every e-mail.
    sender: Annotated[str, msgspec.Meta(pattern=r"^[^@\s]+@[^@\s]+$", max_length=320)]
    port: Port = 25
    username: Annotated[str, msgspec.Meta(max_length=320)] | None = None
    password: Annotated[str, msgspec.Meta(max_length=1000)] | None = None
    #: Upgrade the connection with STARTTLS before anything is sent (required with a login).
    starttls: bool = False
    timeout: PositiveSeconds = 30.0
    #: First wait after a failed attempt; it doubles with each attempt, up to an hour.
    retry_seconds: PositiveSeconds = 30.0
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 8

    def __post_init__(self) -> None:
        if self.username is not None and not self.starttls:
            raise ValueError("a username needs starttls = true (credentials never go in clear)")

    def __repr__(self) -> str:
        return f"SmtpSettings(host={self.host!r}, port={self.port})"


#: The CAPTCHA providers whose widget the pages know how to show (and allow in their
#: Content-Security-Policy).
CaptchaProvider = Literal["turnstile", "hcaptcha", "recaptcha"]
#: A CAPTCHA site key: public (every page that shows the widget carries it).
SiteKey = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]+$", max_length=200)]
#: An https URL that may go into a page's attributes and its Content-Security-Policy.
#: A script the pages load: https, or plain http on the loopback interface (which browsers
#: count as secure: a provider's stand-in on a developer's machine or in the tests).
ScriptUrl = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^(https://[^\s\"'<>;,]+|http://(127\.0\.0\.1|localhost)(:[0-9]{1,5})?/[^\s\"'<>;,]*)$",
        max_length=500,
    ),
]


class CaptchaSettings(_Settings, frozen=True):
    """The CAPTCHA provider (F19): its verification endpoint — reCAPTCHA, hCaptcha and
    Turnstile all speak the same "siteverify" protocol — and, for the pages to show its widget,
    the ``provider``, the public ``site_key`` and the widget's ``script_url``: all three, or
    none (a server with only ``verify_url`` and ``secret`` checks tokens, but its pages cannot
    show a CAPTCHA, and the public configuration says so)."""

    #: e.g. https://challenges.cloudflare.com/turnstile/v0/siteverify
    verify_url: Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s]+$", max_length=500)]
    secret: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    timeout: PositiveSeconds = 5.0
    provider: CaptchaProvider | None = None
    #: The provider's public key for the widget (not a secret: every page shows it).
    site_key: SiteKey | None = None
    #: The provider's widget script, e.g. https://challenges.cloudflare.com/turnstile/v0/api.js
    script_url: ScriptUrl | None = None

    def __post_init__(self) -> None:
        shown = (self.provider, self.site_key, self.script_url)
        if any(v is not None for v in shown) and any(v is None for v in shown):
            raise ValueError(
                "provider, site_key and script_url go together: the pages need all three to "
                "show a CAPTCHA"
            )

    @property
    def for_pages(self) -> bool:
        """Whether the pages can show this provider's widget."""
        return self.provider is not None

    def __repr__(self) -> str:
        return f"CaptchaSettings(verify_url={self.verify_url!r}, provider={self.provider!r})"


Count = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
Rate = Annotated[float, msgspec.Meta(gt=0, le=1_000_000)]


class LimitsSettings(_Settings, frozen=True):
    """``[server.limits]``: what one client may make the server hold or do (docs/security.md
    explains each, with its default). A client is an IP address (see ``trusted_proxies``)."""

    #: Open websocket connections from one IP.
    connections_per_ip: Count = 64
    #: Websocket handshakes one IP may start: a sustained rate per second, and a burst.
    handshakes_per_second: Rate = 10.0
    handshake_burst: Count = 30
    #: Bytes of one websocket message a connection may buffer while it arrives in parts; a
    #: larger one closes the connection (1009). At least ``max_frame_bytes``.
    partial_frame_bytes: Annotated[int, msgspec.Meta(ge=1024, le=64 * 1024 * 1024)] = 256 * 1024
    #: Seconds a connection may stay without sending ``start``, ``resume`` or ``login``.
    hello_timeout: PositiveSeconds = 30.0
    #: Seconds between the server's pings, and how long a pong may take: a peer that does not
    #: answer is disconnected (its operator's conversations then follow the grace period).
    #: No pings when ``ping_interval`` is not set.
    ping_interval: PositiveSeconds | None = 10.0
    pong_timeout: PositiveSeconds = 5.0
    #: New conversations one IP may start a minute, and of one service.
    conversations_per_minute: Count = 10
    conversations_per_service_per_minute: Count = 5
    #: Messages and typing frames one connection may send: a rate per second, and a burst.
    messages_per_second: Rate = 2.0
    message_burst: Count = 20
    typing_per_second: Rate = 2.0
    typing_burst: Count = 10
    #: Frames refused as too fast, in a row, before the connection is closed (1008).
    refusals_before_close: Count = 30
    #: Failed sign-ins (console logins, API tokens) one IP may make before each further one
    #: makes it wait: first ``failure_wait`` seconds, doubling, up to ``failure_wait_max``.
    failures_before_wait: Count = 5
    failure_wait: PositiveSeconds = 1.0
    failure_wait_max: PositiveSeconds = 900.0
    #: CAPTCHA checks one IP may cause a minute.
    captchas_per_minute: Count = 10
    #: A queued visitor whose connection is gone is abandoned after this many seconds (even
    #: when the service has no ``queue_timeout``): nothing waits forever for nobody.
    absent_visitor_timeout: PositiveSeconds = 300.0
    #: Messages a visitor may leave in an out-of-hours conversation.
    out_of_hours_messages: Count = 20


#: ``[server.limits]`` for a crowd of programs on one address — a simulation, a benchmark, a
#: test — where the per-address limits meant for strangers would refuse the crowd itself. Add
#: the per-connection rates to flood one connection on purpose.
ONE_ADDRESS_CROWD: dict[str, int] = {
    "connections_per_ip": 1_000_000,
    "handshakes_per_second": 1_000_000,
    "handshake_burst": 1_000_000,
    "conversations_per_minute": 1_000_000,
    "conversations_per_service_per_minute": 1_000_000,
}


class AttachmentsSettings(_Settings, frozen=True):
    """``[server.attachments]``: where uploaded files are kept and for how long (F11). What a
    service accepts (size, types, enabled) is configuration (``Attachments``), applied live;
    these need a restart."""

    #: The attachments root: each service's ``folder`` is a folder under it. None: the
    #: ``attachments`` folder of ``--data-dir`` (a temporary folder when the server has none).
    root: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)] | None = None
    #: Files of conversations created more than this many days ago are deleted (their
    #: metadata too); None: kept for ever.
    retention_days: Annotated[int, msgspec.Meta(ge=1, le=36_500)] | None = None
    #: Uploads no message carries are deleted after this many seconds.
    pending_seconds: Annotated[float, msgspec.Meta(ge=60, le=30 * 86_400)] = 86_400.0
    #: Seconds between two passes of the clean-up job (retention, pending, half-written files).
    sweep_seconds: Annotated[float, msgspec.Meta(ge=1, le=86_400)] = 3600.0
    #: How long a download link lasts (a signed URL for ``<img>`` and ``<a>``, which cannot
    #: send a bearer token).
    link_seconds: Annotated[float, msgspec.Meta(ge=10, le=7 * 86_400)] = 3600.0
    #: The key download links are signed with; None: a random one per start (links then end
    #: with a restart). Set it (the same on every node) when several nodes serve one database.
    link_secret: Annotated[str, msgspec.Meta(min_length=22, max_length=200)] | None = None
    #: The largest image decoded, in pixels (all frames together): a bigger one is refused.
    max_pixels: Annotated[int, msgspec.Meta(ge=1, le=500_000_000)] = 40_000_000

    def __post_init__(self) -> None:
        if self.link_secret is not None and (weakness := secret_weakness(self.link_secret)):
            raise ValueError(f"link_secret is too weak: {weakness}")

    def __repr__(self) -> str:
        return f"AttachmentsSettings(root={self.root!r}, retention_days={self.retention_days})"


class WebhooksSettings(_Settings, frozen=True):
    """``[server.webhooks]``: how outgoing webhooks are sent (docs/admin-api.md, "Webhooks";
    docs/security.md, "Outgoing calls"). Subscriptions themselves are configuration."""

    #: Networks (CIDR) outgoing calls may reach although they are not global — for development
    #: and tests only (``["127.0.0.1/32", "::1/128"]``); the server says so in its log.
    allow_private: tuple[Annotated[str, msgspec.Meta(max_length=64)], ...] = ()
    #: Seconds to connect (the name's resolution included), and to wait for each read.
    connect_timeout: PositiveSeconds = 5.0
    read_timeout: PositiveSeconds = 10.0
    #: Bytes of a receiver's answer read at most (the rest is not read).
    max_response_bytes: Annotated[int, msgspec.Meta(ge=1, le=16 * 1024 * 1024)] = 64 * 1024
    #: First wait after a failed delivery; it doubles with each attempt up to
    #: ``max_retry_seconds``, less up to ``jitter`` of it (a random share).
    retry_seconds: PositiveSeconds = 5.0
    max_retry_seconds: PositiveSeconds = 3600.0
    jitter: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.2
    #: Failed attempts after which a delivery is parked (re-delivered only from the API).
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10
    #: Deliveries (and e-mails) the outbox has under way at once.
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=256)] = 8

    def __post_init__(self) -> None:
        try:
            networks(self.allow_private)
        except ValueError as exc:
            raise ValueError(f"allow_private: {exc}") from None
        if self.max_retry_seconds < self.retry_seconds:
            raise ValueError("max_retry_seconds must not be below retry_seconds")


class OutboxSettings(_Settings, frozen=True):
    """``[server.outbox]``: how long the outbox (e-mails, webhook and channel deliveries) keeps
    what it is done with (docs/admin-api.md, "Webhooks")."""

    #: Items sent, or failed (parked), more than this many days ago are deleted with their
    #: attempts; pending ones never are. None: kept for ever.
    retention_days: Annotated[int, msgspec.Meta(ge=1, le=36_500)] | None = 30
    #: Seconds between two passes of the clean-up job.
    sweep_seconds: Annotated[float, msgspec.Meta(ge=1, le=86_400)] = 3600.0


class ClusterSettings(_Settings, frozen=True):
    """``[server.cluster]``: running more than one node on one PostgreSQL (docs/scale-out.md).
    A single node uses them too: it registers and beats like any other."""

    #: This node's name (``omni serve --node`` and ``OMNI_NODE`` come first); none: generated
    #: from the host name and a random suffix at each start.
    node: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._-]{1,63}$")] | None = None
    #: Seconds between two heartbeats of this node (trio's clock).
    heartbeat_seconds: PositiveSeconds = 2.0
    #: A node whose last heartbeat is older than this is dead (the database's clock).
    node_expiry_seconds: PositiveSeconds = 10.0
    #: How long an outbox worker's claim on an item lasts: longer than any one attempt takes.
    outbox_claim_seconds: PositiveSeconds = 300.0
    #: How often the outbox looks for items another node made due or left claimed when it
    #: died (none: only when something is queued here, or due; in cluster mode, 5 s).
    outbox_poll_seconds: PositiveSeconds | None = None
    #: Cluster mode: groups are owned by lease and run on their owner only, conversations'
    #: writes are fenced (docs/scale-out.md). Off: one node runs every group, no lease, no fence.
    enabled: bool = False
    #: A group lease's lifetime (the database's clock), renewed at every heartbeat; a dead
    #: node's groups are taken over this long after its last renewal.
    lease_seconds: PositiveSeconds = 10.0

    def __post_init__(self) -> None:
        if self.node_expiry_seconds < 2 * self.heartbeat_seconds:
            raise ValueError("node_expiry_seconds must be at least twice heartbeat_seconds")
        if self.lease_seconds < 2 * self.heartbeat_seconds:
            raise ValueError("lease_seconds must be at least twice heartbeat_seconds")


#: An origin as browsers write it: scheme, host, optional port; no path.
PublicOrigin = Annotated[
    str, msgspec.Meta(pattern=r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$", max_length=300)
]
#: A websocket base URL: scheme, host, optional port, optional path prefix (no trailing slash).
PublicWsBase = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^wss?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~-]+)*$", max_length=300
    ),
]


class ServerSettings(_Settings, frozen=True):
    host: str = "127.0.0.1"
    ws_port: Port = 8765
    http_port: Port = 8080
    #: The origin the pages are served from, as browsers see it (behind a reverse proxy, the
    #: proxy's: ``https://chat.example.com``). Default: ``http://<host>:<http_port>``.
    public_url: PublicOrigin | None = None
    #: The websocket base URL the pages connect to (``/ws/visitor`` is appended), as browsers
    #: see it (``wss://chat.example.com``). Default: ``ws://<host>:<ws_port>``.
    public_ws_url: PublicWsBase | None = None
    #: Largest accepted websocket frame, in UTF-8 bytes; larger ones get ``frame_too_large``.
    max_frame_bytes: Annotated[int, msgspec.Meta(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    #: How long a disconnected operator keeps their conversations before they are requeued.
    operator_grace_seconds: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 120.0
    #: How long a sign-in session (user name and password) lasts, from the sign-in: a fixed
    #: lifetime, not renewed by use (a stolen session expires; people sign in once a shift).
    session_ttl: Annotated[float, msgspec.Meta(ge=60, le=7 * 86_400)] = 8 * 3600.0
    #: Frames buffered for one client before it is considered too slow and disconnected.
    outbound_buffer: Annotated[int, msgspec.Meta(ge=16, le=1_000_000)] = 1024
    #: Origins allowed to call the admin API from a browser (CORS); none by default.
    cors_origins: tuple[str, ...] = ()
    #: E-mail (transcripts); none by default: transcripts are then not offered.
    smtp: SmtpSettings | None = None
    #: CAPTCHA verification for services that ask for one (F19).
    captcha: CaptchaSettings | None = None
    #: What one client may make the server hold or do.
    limits: LimitsSettings = msgspec.field(default_factory=LimitsSettings)
    #: Where attachments are kept, and for how long.
    attachments: AttachmentsSettings = msgspec.field(default_factory=AttachmentsSettings)
    #: Outgoing webhooks: timeouts, retries, and the development allowance.
    webhooks: WebhooksSettings = msgspec.field(default_factory=WebhooksSettings)
    #: How long the outbox keeps items sent or parked.
    outbox: OutboxSettings = msgspec.field(default_factory=OutboxSettings)
    #: More than one node: this node's name, its heartbeat, outbox claims.
    cluster: ClusterSettings = msgspec.field(default_factory=ClusterSettings)
    #: Origins of the pages allowed on /ws/operator (the console), besides the server's own
    #: HTTP origin.
    console_origins: tuple[Annotated[str, msgspec.Meta(max_length=300)], ...] = ()
    #: Whether clients that send no ``Origin`` — native apps, command-line tools, not browsers —
    #: may connect to /ws/visitor and /ws/operator.
    native_visitors: bool = False
    native_operators: bool = False
    #: Reverse proxies (addresses or CIDR blocks) whose ``X-Forwarded-For`` is believed.
    trusted_proxies: tuple[Annotated[str, msgspec.Meta(max_length=64)], ...] = ()
    #: Where /metrics, /docs and /openapi.json answer: on the HTTP port (default), or only on
    #: another address (``"127.0.0.1:9100"``).
    ops_bind: Annotated[str, msgspec.Meta(pattern=r"^[^\s:]+:\d+$")] | None = None
    #: A bearer token /metrics, /docs and /openapi.json require (none: open).
    ops_token: Annotated[str, msgspec.Meta(min_length=22, max_length=200)] | None = None
    #: The installation's time zone (IANA name): the day the supervisor's live view counts
    #: "today" in (``/ws/supervisor``, docs/protocol.md §7).
    timezone: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "UTC"

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ValueError, ZoneInfoNotFoundError):
            raise ValueError(f"timezone: {self.timezone!r} is not a known time zone") from None
        if self.limits.partial_frame_bytes < self.max_frame_bytes:
            raise ValueError("limits.partial_frame_bytes must be at least max_frame_bytes")
        try:
            networks(self.trusted_proxies)
        except ValueError as exc:
            raise ValueError(f"trusted_proxies: {exc}") from None
        if self.ops_token is not None and (weakness := secret_weakness(self.ops_token)):
            raise ValueError(f"ops_token is too weak: {weakness}")
