"""One Omni server: the hub's actors, the websocket gateway and the HTTP app (and the
operations endpoints' own listener, ``[server] ops_bind``) in one nursery.

Rules: :func:`open_server` owns everything it starts; leaving the block shuts down gracefully —
websocket clients get a ``server_shutdown`` error and a 1001 close (they resume against the
next server), hypercorn drains HTTP requests — and anything still running after the drain
deadline is cancelled. This module is an edge: it is the one place that reads the system's wall
clock, to give the hub's :class:`~omni.clock.Clock` its epoch, unless a clock is passed in.
"""

from __future__ import annotations

import gc
import logging
import random
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, aclosing, asynccontextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from quart_trio import QuartTrio

from admin_api.app import create_app, create_ops_app
from omni.actors.configuration import Configuration
from omni.actors.hub import Counters, Hub, Settings, open_hub
from omni.actors.survey_links import SurveyLinks
from omni.attachments import FolderStore, Uploads
from omni.captcha import SiteVerify
from omni.channels import ChannelSender, MediaFetcher
from omni.clock import Clock
from omni.cluster import GroupOwnership, Node, generated_name, open_node
from omni.config import Config
from omni.domain.configuration import ConfigInvalid, ConfigItem, build_directory
from omni.entropy import Entropy
from omni.gateway.relay import Relay
from omni.gateway.server import Gateway
from omni.limits import networks
from omni.metrics import make_registry
from omni.netguard import Guard, OutboundHttp
from omni.outbox import EmailSender, Outbox, Retention, Sender, SmtpMailer
from omni.pages import Pages, PublicUrls, install_pages
from omni.pages.policy import origin_of
from omni.settings import ServerSettings
from omni.store import ConfigChange, Store, StoreError
from omni.store.memory import MemoryStore
from omni.webhooks import WebhookSender

log = logging.getLogger(__name__)

#: Cluster mode's outbox poll (seconds) unless ``[server.cluster] outbox_poll_seconds`` says.
CLUSTER_OUTBOX_POLL = 5.0

#: Seconds connections get to close after a shutdown was asked for.
DRAIN_SECONDS = 5.0

#: The cyclic collector's thresholds in a server process (CPython's defaults: 700, 10, 10).
#: Every relayed message allocates short-lived containers (frames, coroutines, events); with
#: the default a young collection runs every few messages and a full one every few seconds,
#: which stops every connection for tens of milliseconds on a busy server. Reference counting
#: still frees almost everything at once; the collector only looks for cycles, so it can run
#: far less often (docs/performance.md has the figures).
GC_THRESHOLDS = (20_000, 20, 20)


def tune_gc() -> None:
    """Collector settings for a long-running server process; call once at start-up, before
    serving. Objects alive now (modules, configuration) are moved out of the collector's reach
    (:func:`gc.freeze`), so full collections scan only what the server made since."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


@asynccontextmanager
async def open_store(database_url: str | None, data_dir: str | Path) -> AsyncIterator[Store]:
    """The store ``omni serve`` uses: PostgreSQL at ``database_url`` if given, else the embedded
    PostgreSQL in ``data_dir``."""
    from omni.store.embedded import open_embedded_postgres
    from omni.store.postgres import open_postgres_store

    if database_url:
        async with open_postgres_store(database_url) as store:
            yield store
    else:
        async with open_embedded_postgres(data_dir) as dsn, open_postgres_store(dsn) as store:
            yield store


async def bootstrap_configuration(
    store: Store, items: list[ConfigItem], now: datetime, *, actor: str = "bootstrap"
) -> list[ConfigItem]:
    """The store's configuration; when it has none yet, ``items`` (from a file) are imported
    first. Once the store has a configuration, the admin API is its source of truth and files
    are ignored (``omni import-config`` imports one on purpose)."""
    stored = await store.config_items()
    if stored or not items:
        return stored
    await import_items(store, items, now, actor=actor)
    return await store.config_items()


async def import_items(
    store: Store, items: list[ConfigItem], now: datetime, *, actor: str = "import-config"
) -> int:
    """Create or replace each item, each change audited; returns how many changed."""
    existing = {(i.kind, i.key): i.body for i in await store.config_items()}
    changed = 0
    for item in items:
        before = existing.get((item.kind, item.key))
        body = item.body
        if item.kind == "users" and before is not None:
            body = _imported_user(body, before)
        if before == body:
            continue
        await store.change_config(ConfigChange(item.kind, item.key, body, before, actor, now))
        if item.kind == "users" and before is not None:
            await store.end_sessions(item.key)
        changed += 1
    return changed


def _imported_user(body: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """A file's user over a stored one: a password in the file sets only a first password (a
    file is read again and again; each read hashes it anew), and any other change ends the
    user's sessions (a higher generation)."""
    kept = {**body, "generation": before.get("generation", 0)}
    if before.get("password_hash") is not None:
        kept["password_hash"] = before["password_hash"]
    if kept != before:
        kept["generation"] += 1
    return kept


def _attachments_root(
    configured: str | None, data_dir: str | Path | None, cleanup: AsyncExitStack
) -> Path:
    if configured is not None:
        return Path(configured)
    if data_dir is not None:
        return Path(data_dir) / "attachments"
    # No data directory (tests, the in-memory store): files last as long as the server.
    return Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="omni-attachments-")))


def own_origins(host: str, port: int) -> set[str]:
    """The origins of the server's own HTTP pages (on all interfaces — 0.0.0.0 — there is no
    knowing them: ``console_origins`` names them)."""
    if host in ("0.0.0.0", "::"):
        return set()
    names = {"127.0.0.1", "localhost"} if host in ("127.0.0.1", "localhost") else {host}
    return {f"http://{name}:{port}" for name in names}


def hub_settings(server: ServerSettings) -> Settings:
    """The actors' settings for a ``[server]`` table."""
    return Settings(
        operator_grace=server.operator_grace_seconds,
        absent_visitor_timeout=server.limits.absent_visitor_timeout,
        out_of_hours_messages=server.limits.out_of_hours_messages,
        timezone=server.timezone,
    )


@dataclass(frozen=True)
class RunningServer:
    hub: Hub
    gateway: Gateway
    configuration: Configuration
    host: str
    ws_port: int
    http_port: int | None
    #: The outbox worker: webhooks, and e-mails with ``[server.smtp]``.
    outbox: Outbox | None = None
    #: Where /metrics, /docs and /openapi.json answer when ``[server] ops_bind`` is set
    #: (``http://host:port``); None: on the HTTP port.
    ops_url: str | None = None
    #: The pages on the HTTP port (None without HTTP).
    pages: Pages | None = None
    #: Attachments: their files, uploads and clean-up job (None without HTTP).
    uploads: Uploads | None = None
    #: This node among others: its name, incarnation and heartbeat.
    node: Node | None = None
    #: Cluster mode's group leases (None: cluster mode is off).
    ownership: GroupOwnership | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.ws_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"


@asynccontextmanager
async def open_server(
    config: Config,
    *,
    store: Store | None = None,
    clock: Clock | None = None,
    entropy: Entropy | None = None,
    host: str | None = None,
    ws_port: int | None = None,
    http_port: int | None = None,
    http: bool = True,
    data_dir: str | Path | None = None,
    node: str | None = None,
) -> AsyncIterator[RunningServer]:
    """The server of ``config``; attachments are kept under ``[server.attachments] root``,
    else ``data_dir/attachments``, else in a temporary folder removed at the end. It registers
    as node ``node``, else ``[server.cluster] node``, else a generated name."""
    host = host or config.server.host
    cluster = config.server.cluster
    node_name = node or cluster.node or generated_name()
    clock = clock or Clock(datetime.now(UTC))
    store = store if store is not None else MemoryStore()
    # Cluster mode: other nodes change the configuration too; a change made here is stored only
    # against the version its items were read at (read first: never newer than the items).
    version = await store.config_version() if cluster.enabled else None
    items = await bootstrap_configuration(store, config.items, clock.now())
    try:
        directory = build_directory(items)
    except ConfigInvalid as exc:
        raise StoreError(f"the stored configuration is invalid: {exc}") from None
    counters = Counters()
    smtp = config.server.smtp
    hooks = config.server.webhooks
    allowed = networks(hooks.allow_private)
    if allowed:
        log.warning(
            "webhooks: [server.webhooks] allow_private lets outgoing calls reach %s, which are "
            "not public addresses: for development and tests only",
            ", ".join(map(str, allowed)),
        )
    outgoing = OutboundHttp(
        Guard(allowed),
        connect_timeout=hooks.connect_timeout,
        read_timeout=hooks.read_timeout,
        max_response_bytes=hooks.max_response_bytes,
        max_connections=max(hooks.concurrency, 1),
        user_agent="Omni-Webhooks/1",
    )
    # The hub (and its live directory) is made below, with the outbox it signals.
    running: list[Hub] = []
    senders: list[Sender] = [
        WebhookSender(
            outgoing,
            lambda: running[0].directory,
            clock.now,
            hooks,
            counters.webhook_attempts,
        )
    ]
    channel_sender = ChannelSender(outgoing, lambda: running[0].directory, clock.now, hooks)
    senders.append(channel_sender)
    if smtp is not None:
        senders.append(EmailSender(SmtpMailer(smtp), smtp, clock.now))
    outbox = Outbox(
        store,
        clock.now,
        senders,
        # Seeded from the system, not the random module's global state (STYLE §4).
        random=random.Random().random,
        counters={
            "email": counters.emails,
            "webhook": counters.webhooks,
            "channel": counters.channels,
        },
        backlog=counters.outbox_backlog,
        idle=() if smtp is not None else ("email",),
        concurrency=hooks.concurrency,
        claimant=node_name,
        claim_seconds=cluster.outbox_claim_seconds,
        # Cluster mode: another node's claim that runs out (it died) wakes nobody here.
        poll=cluster.outbox_poll_seconds or (CLUSTER_OUTBOX_POLL if cluster.enabled else None),
    )
    captcha = config.server.captcha
    async with (
        open_node(store, node_name, cluster) as this_node,
        aclosing(outgoing),
        # The CAPTCHA checks' own HTTP client, closed last.
        SiteVerify(captcha, config.server.limits.captchas_per_minute)
        if captcha is not None
        else nullcontext() as site_verify,
        open_hub(
            directory,
            store,
            clock,
            entropy=entropy,
            settings=hub_settings(config.server),
            captcha=site_verify,
            outbox=outbox,
            counters=counters,
            cluster=cluster.enabled,
        ) as hub,
        AsyncExitStack() as cleanup,
        trio.open_nursery() as nursery,
    ):
        running.append(hub)
        configuration = Configuration(hub, store, items, clock.now, version)
        if cluster.enabled:
            # Configuration changes made on the other nodes, applied here as they commit.
            await nursery.start(configuration.follow)
        nursery.start_soon(outbox.run)
        # Items sent or parked past [server.outbox] retention_days are deleted.
        await nursery.start(Retention(store, clock.now, config.server.outbox).run)
        ownership: GroupOwnership | None = None
        if cluster.enabled:
            ownership = GroupOwnership(this_node, hub)
            nursery.start_soon(ownership.run)
        gateway = Gateway(hub, config.server)
        if cluster.enabled:
            # Any node accepts any client: sockets served elsewhere are relayed there.
            relay = Relay(hub, this_node, gateway.serve_relayed)
            relay.session_operator = _session_operator(gateway)
            hub.forward_channel = relay.forward_channel
            hub.forward_supervise = relay.forward_supervise
            hub.forward_resume = relay.forward_resume
            # The live view shows the whole cluster: the other nodes' parts gathered.
            hub.board.gather = relay.gather_board
            hub.board.every = cluster.heartbeat_seconds
            gateway.relay = relay
            await nursery.start(relay.run)
        ws_server = await nursery.start(
            gateway.serve, host, config.server.ws_port if ws_port is None else ws_port
        )
        bound_http: int | None = None
        ops_url: str | None = None
        pages: Pages | None = None
        stop_http = trio.Event()
        http_running: list[trio.Event] = []

        async def run_http(
            app: QuartTrio, bind: str, task_status: trio.TaskStatus[list[str]]
        ) -> None:
            """Serve ``app`` on ``bind`` until ``stop_http``; started: the bound URLs."""
            hc = HypercornConfig()
            hc.bind = [bind]
            hc.accesslog = None
            hc.graceful_timeout = DRAIN_SECONDS
            done = trio.Event()
            http_running.append(done)
            try:
                await hypercorn_serve(
                    app, hc, shutdown_trigger=stop_http.wait, task_status=task_status
                )
            finally:
                done.set()

        uploads: Uploads | None = None
        if http:
            root = _attachments_root(config.server.attachments.root, data_dir, cleanup)
            uploads = Uploads(store, FolderStore(root), config.server.attachments, clock.now)
            await nursery.start(uploads.run)
            registry = make_registry(hub, uploads.counters, gateway.relay)
            # One budget of failed credentials per address, whichever door they knock at.
            app = create_app(
                hub,
                registry,
                configuration,
                settings=config.server,
                uploads=uploads,
                sign_in_failures=gateway.logins,
            )
            port = config.server.http_port if http_port is None else http_port
            if host in ("0.0.0.0", "::") and config.server.public_url is None:
                log.warning(
                    "serving on all interfaces without [server] public_url: the pages assume "
                    "browsers reach them at 127.0.0.1 (docs/pages.md)"
                )
            pages = install_pages(
                app, hub, config.server, PublicUrls.of(config.server, host, port, ws_server.port)
            )
            binds: list[str] = await nursery.start(run_http, app, f"{host}:{port}")
            bound_http = int(binds[0].rsplit(":", 1)[1])
            # Known now when the system chose the port (nobody could reach it before).
            urls = PublicUrls.of(config.server, host, bound_http, ws_server.port)
            pages.serve_at(urls)
            # An e-mailed transcript links its files for as long as they are kept (the
            # retention), a week when they are kept for ever: the e-mail goes to the visitor.
            keep = config.server.attachments.retention_days
            link_ttl = (keep or 7) * 86_400.0

            def transcript_link(attachment_id: str, page: str = urls.page) -> str:
                return page + uploads.links.mint(attachment_id, clock.now(), link_ttl)[0]

            hub.transcript_link = transcript_link
            # Channels: a platform fetches an operator's file from the public address only
            # (it cannot reach the host the pages fall back to), with a link as long-lived.
            if config.server.public_url is not None:
                channel_sender.media_link = transcript_link
            fetcher = MediaFetcher(outgoing, uploads, lambda: hub.directory)
            hub.channel_media = fetcher.keep
            # Survey links are signed like download links, with the same key: set
            # [server.attachments] link_secret for them to outlive a restart.
            hub.survey_links = SurveyLinks(uploads.links, urls.page)
            # The pages are served from here: the console may open /ws/operator, and the
            # WebChat /ws/visitor whatever page embeds it (its frame-ancestors decide that).
            ours = {*own_origins(host, bound_http), origin_of(urls.page)}
            gateway.console_origins.update(ours)
            gateway.page_origins.update(ours)
            if config.server.ops_bind is not None:
                ops = create_ops_app(app, registry, config.server)
                ops_url = (await nursery.start(run_http, ops, config.server.ops_bind))[0]
        try:
            yield RunningServer(
                hub,
                gateway,
                configuration,
                host,
                ws_server.port,
                bound_http,
                outbox,
                ops_url,
                pages,
                uploads,
                this_node,
                ownership,
            )
        finally:
            with trio.move_on_after(DRAIN_SECONDS) as drain:
                drain.shield = True
                stop_http.set()
                await gateway.shutdown()
                for done in http_running:
                    await done.wait()
            nursery.cancel_scope.cancel()


def _session_operator(gateway: Gateway) -> Callable[[str], Awaitable[int | None]]:
    """The operator a sign-in session's token signs in (None: none, or not a good session)."""

    async def operator(token: str) -> int | None:
        signed_in = await gateway.accounts.session(token)
        return None if signed_in is None else signed_in.user.operator_id

    return operator
