"""The hub: the actors of one Omni server and the registry through which edges reach them.

Rules:

* :func:`open_hub` owns every actor: group and queue actors under one supervisor, conversation
  actors under another, both in the hub's own nursery. Leaving the block cancels them all.
* Edges (the websocket gateway, the admin API) talk to actors only through the hub's methods,
  which validate ids and translate them into actor messages. A refusal is a
  :class:`~omni.domain.protocol.Rejected` with a stable code. The rules themselves are the
  domain's (admission, transcripts, the conversation machine); the hub does the I/O around them.
* Actors see the hub through narrow Protocols — :class:`~omni.actors.conversation.ConversationHost`,
  :class:`~omni.actors.group.GroupHost`, :class:`~omni.actors.operator.OperatorHost` — never as a
  whole; what the hub needs from outside (CAPTCHA checks, the outbox) comes in at
  construction through :mod:`omni.actors.ports`.
* The registry (``conversations``, ``sessions``) holds addresses, not state: each conversation's
  state lives in its actor and in the store.
* The live configuration is one immutable :class:`~omni.domain.model.Directory`;
  :meth:`Hub.apply_directory` swaps it and brings the roster and the groups in line.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

import trio

from omni.actors.board import BoardPublisher
from omni.actors.conversation import (
    Apply,
    AttachVisitor,
    ConversationActor,
    ConversationEntry,
    Effects,
    OperatorLink,
    check_last_seq,
    replay_to_visitor,
)
from omni.actors.group import Delivery, Dispatch, Enqueue, GroupMessage, Withdraw, spawn_group
from omni.actors.operator import OperatorSession
from omni.actors.pauses import PauseRecorder
from omni.actors.peer import History, Peer
from omni.actors.ports import CaptchaCheck, CaptchaLimited, CaptchaUnavailable, OutboxSignal
from omni.actors.queue import QueueEntry, VisitorLink
from omni.actors.runtime import ActorRef, ActorStopped, MailboxFull, Supervisor, Timers
from omni.actors.survey_links import SurveyLink, SurveyLinks
from omni.clock import Clock
from omni.domain import admission, configuration, transcript
from omni.domain import board as board_rules
from omni.domain import conversation as domain
from omni.domain import protocol as p
from omni.domain.board import Today
from omni.domain.channels import Inbound, Media, refusal_text
from omni.domain.configuration import ConfigInvalid
from omni.domain.conversation import Context, LinkedSurvey, Rejected, Status, SurveyRefused
from omni.domain.estimate import WaitEstimator
from omni.domain.model import (
    Channel,
    Directory,
    Operator,
    Role,
    Service,
    User,
    Webhook,
    hash_token,
)
from omni.domain.reports import DEFAULT_THRESHOLD
from omni.domain.routing import Presence, Roster
from omni.entropy import Entropy, SystemEntropy
from omni.identity import IdentityError, verify_identity
from omni.store import Fence, OutboxEntry, Store, Write

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    """The actors' delays and sizes (seconds, messages)."""

    #: How long a disconnected operator keeps their conversations before they are requeued.
    operator_grace: float = 120.0
    #: How long an edge waits for an actor's answer.
    ask_timeout: float = 10.0
    #: Mailbox size of each conversation actor.
    conversation_mailbox: int = 256
    #: A waiting conversation whose visitor is gone this long is abandoned.
    absent_visitor_timeout: float = 300.0
    #: Visitor messages an out-of-hours conversation takes at most.
    out_of_hours_messages: int = 20
    #: The installation's time zone: the day the supervisor's board counts (IANA name).
    timezone: str = "UTC"
    #: The board's service level: answered within this many seconds (the reports' default).
    service_level_threshold: float = DEFAULT_THRESHOLD

    def __post_init__(self) -> None:
        if self.operator_grace < 0:
            raise ValueError("operator_grace must not be negative")


@dataclass
class Counters:
    """Plain counters the metrics exporter reads at scrape time (nothing to do per message)."""

    messages_relayed: int = 0
    connections: dict[str, int] = field(
        default_factory=lambda: {"visitor": 0, "operator": 0, "supervisor": 0}
    )
    #: What the gateway refused or closed, by reason (docs/security.md).
    refused: dict[str, int] = field(default_factory=dict)
    #: E-mails through the outbox (F14), by outcome: queued, sent, retried, failed.
    emails: dict[str, int] = field(
        default_factory=lambda: {"queued": 0, "sent": 0, "retried": 0, "failed": 0}
    )
    #: Webhook deliveries (issue 17), by outcome: queued, sent, retried, failed (parked).
    webhooks: dict[str, int] = field(
        default_factory=lambda: {"queued": 0, "sent": 0, "retried": 0, "failed": 0}
    )
    #: Replies to messaging channels (issue 17), by outcome: queued, sent, retried, failed.
    channels: dict[str, int] = field(
        default_factory=lambda: {"queued": 0, "sent": 0, "retried": 0, "failed": 0}
    )
    #: Webhook delivery attempts, by outcome (``omni.webhooks``: delivered, http_error, …).
    webhook_attempts: dict[str, int] = field(default_factory=dict)
    #: Pending outbox items by kind, as the outbox worker last counted them.
    outbox_backlog: dict[str, int] = field(default_factory=dict)


class Hub:
    """Build it with :func:`open_hub`, which owns its actors."""

    def __init__(
        self,
        directory: Directory,
        store: Store,
        clock: Clock,
        nursery: trio.Nursery,
        *,
        entropy: Entropy,
        settings: Settings,
        captcha: CaptchaCheck | None = None,
        outbox: OutboxSignal | None = None,
        counters: Counters | None = None,
        cluster: bool = False,
    ) -> None:
        self.store = store
        #: Cluster mode (docs/scale-out.md): groups run here only while this node owns them
        #: (:meth:`own_group`), and conversations of a group write under its lease's fence.
        self.cluster = cluster
        #: Cluster mode: the fence of each group owned here; of each group owned here before.
        self.fences: dict[int, Fence] = {}
        self._lost_fences: dict[int, Fence] = {}
        self._group_queues: dict[int, ActorRef[object]] = {}
        #: Conversations given up after crashes: not adopted again (cluster mode).
        self._given_up: set[str] = set()
        self.clock = clock
        self.entropy = entropy
        self.settings = settings
        #: Checks CAPTCHAs (``[server.captcha]``); None: services that ask for one refuse.
        self._captcha = captcha
        #: The outbox worker (webhooks; e-mails with ``[server.smtp]``, else transcripts are
        #: not offered); None: nothing is delivered outside (tests of the actors).
        self._outbox = outbox
        # One timer queue for all the hub's actors: timers due together fire in the order set.
        timers = Timers()
        nursery.start_soon(timers.run)
        self.groups_supervisor = Supervisor("groups", nursery, timers=timers)
        self.conversations_supervisor = Supervisor(
            "conversations", nursery, on_give_up=self.on_conversation_given_up, timers=timers
        )
        self.roster = Roster()
        self.sessions: dict[int, OperatorSession] = {}
        self.conversations: dict[str, ConversationEntry] = {}
        self.queue_lengths: dict[int, int] = {}
        self.metrics = counters if counters is not None else Counters()
        #: Presence (and pause reason) an operator had when their connection dropped.
        self.remembered_presence: dict[int, tuple[Presence, str | None]] = {}
        #: The operators' pauses, written to the store behind their sessions (the reports).
        #: Download links for the files an e-mail transcript lists (set by the composition
        #: root when the server takes files and knows its public address; None: names only).
        self.transcript_link: Callable[[str], str | None] | None = None
        #: Fetches a channel visitor's file into their conversation as a pending upload: its
        #: id, or None (the message then names the file). Set by the server that keeps files.
        self.channel_media: Callable[[Channel, Media, str], Awaitable[str | None]] | None = None
        #: Cluster mode: hands a channel's message to the node serving its conversation (set
        #: by the composition root: omni.gateway.relay); None: refused with ``moved``.
        self.forward_channel: Callable[[Channel, Inbound], Awaitable[str | None]] | None = None
        #: Cluster mode: the API's resume for an operator whose console another node serves.
        self.forward_resume: Callable[[str, int], Awaitable[None]] | None = None
        #: Cluster mode: a supervisor's action on a conversation another node serves.
        self.forward_supervise: (
            Callable[
                [
                    p.SupervisorInfo,
                    str,
                    domain.SupervisorAssign | domain.SupervisorTransferToGroup,
                    Peer,
                ],
                Awaitable[None],
            ]
            | None
        ) = None
        #: Links to conversations' survey pages (set by the composition root when the server
        #: serves pages: it has the link signer and the public address; None: no survey by
        #: link), and the one door through which a closed conversation's survey is answered.
        self.survey_links: SurveyLinks | None = None
        self._closed_surveys = trio.Lock()
        #: One lock per channel user (channel id, user) while their messages are taken.
        self._channel_locks: dict[tuple[str, str], trio.Lock] = {}
        self.pauses = PauseRecorder(store, clock)
        nursery.start_soon(self.pauses.run)
        self._groups: dict[int, ActorRef[GroupMessage]] = {}
        #: Each group's wait estimate, fed here with its answers and read by its queue actor
        #: when it reports positions: like the roster, a plain object touched only
        #: synchronously, which outlives restarts of the actors.
        self.estimators: dict[int, WaitEstimator] = {}
        self._contexts: dict[int, Context] = {}
        self._retired_services: dict[int, Service] = {}
        self._spawned = 0
        #: Today's figures for the supervisors' board, fed every change of a conversation
        #: (seeded from the store by :func:`open_hub`).
        self.today = Today(
            ZoneInfo(settings.timezone), settings.service_level_threshold, clock.now()
        )
        #: The supervisors' live view, and the API token each watcher signed in with.
        self.board = BoardPublisher(self.make_board, clock)
        #: Who watches the live view, by connection: ("token", API token id, 0) or ("user", user
        #: id, session generation), checked again at each configuration change.
        self.supervisors: dict[Peer, tuple[str, str, int]] = {}
        nursery.start_soon(self.board.run)
        self.directory = directory
        self.apply_directory(directory)

    @property
    def operator_grace(self) -> float:
        return self.settings.operator_grace

    @property
    def ask_timeout(self) -> float:
        return self.settings.ask_timeout

    # -- configuration --------------------------------------------------------------------------

    def apply_directory(self, directory: Directory) -> None:
        """Make ``directory`` the live configuration (F20), in one step, without a restart:

        * new routing decisions use it at once (schedules, links, capacities, groups);
        * nothing already queued or open is dropped: a group unlinked from a service keeps its
          conversations until they end; a deleted service's open conversations finish under
          its last definition;
        * an operator made inactive or removed is signed out (their conversations go through
          the grace period and back to the queue), and so is one whose console token was
          changed (a rotated token ends the sessions it opened); new groups get their actors.
        """
        previous = self.directory
        for service_id, service in previous.services.items():
            if service_id not in directory.services:
                self._retired_services[service_id] = service
        self.directory = directory
        self._contexts.clear()
        for group_id in directory.groups:
            if group_id not in self._groups and (not self.cluster or group_id in self.fences):
                self._spawn_group(group_id)
        for operator in directory.operators.values():
            self.roster.configure(operator.id, operator.name, operator.groups, operator.capacity)
            if not operator.active:
                self._sign_out(operator.id)
            else:
                was = previous.operators.get(operator.id)
                if was is not None and was.token_hash != operator.token_hash:
                    self._sign_out(
                        operator.id,
                        "credentials_changed",
                        "the console token you signed in with was changed; sign in again",
                    )
            self.poke_groups(operator.id)
        for operator_id, session in list(self.sessions.items()):
            if operator_id not in directory.operators:
                self._sign_out(operator_id)
            elif session.account is not None:
                user = directory.session_user(*session.account)
                if user is None or user.operator_id != operator_id:
                    self._sign_out(
                        operator_id,
                        "session_ended",
                        "your session ended (signed out, password changed, or deactivated); "
                        "sign in again",
                    )
        for peer, (kind, key, generation) in list(self.supervisors.items()):
            if kind == "user":
                user = directory.session_user(key, generation)
                if user is None or user.role not in SUPERVISING:
                    peer.close(
                        "session_ended",
                        "your session ended (signed out, password changed, or deactivated); "
                        "sign in again",
                    )
                continue
            token = directory.api_tokens.get(key)
            if (
                token is None
                or token.role not in SUPERVISING
                or token != previous.api_tokens.get(key)
            ):
                peer.close(
                    "credentials_changed",
                    "the token you signed in with was changed or revoked; sign in again",
                )
        self.board.changed()

    def _spawn_group(self, group_id: int) -> None:
        estimator = self.estimators.setdefault(group_id, WaitEstimator())
        self._groups[group_id], self._group_queues[group_id] = spawn_group(
            self.groups_supervisor, self, group_id, estimator
        )
        self.queue_lengths[group_id] = 0

    # -- cluster mode: groups owned by lease (omni.cluster.GroupOwnership drives these) ---------

    def group_ids(self) -> list[int]:
        return sorted(self.directory.groups)

    def placement(self, group_id: int) -> str:
        """What ``group_id`` hashes by among the nodes: its routing domain (the groups sharing
        an operator or a service are owned by one node together)."""
        return f"domain:{self.directory.routing_domains.get(group_id, group_id)}"

    def home(self, group_id: int | None, service_id: int) -> int | None:
        """The group whose lease a conversation runs under: its own; in none (a bot's, out of
        hours), its service's first group — in the same routing domain as the others, so on
        the node that routes it (None: a service no longer configured)."""
        if group_id is not None:
            return group_id
        service = self.directory.services.get(service_id) or self._retired_services.get(service_id)
        return None if service is None else service.links[0].group

    def start_home(self, service_id: int) -> int | None:
        """The group a conversation of ``service_id`` started now runs under (:meth:`home`):
        the group it is routed to, else (a bot answers first, or out of hours) the service's
        first."""
        service = self.directory.services.get(service_id)
        if service is None:
            return None
        now = self.clock.now()
        routed = (
            None if self.directory.bot_for(service, now) else self.directory.route(service, now)
        )
        return self.home(routed, service_id)

    def operator_home(self, operator_id: int) -> int | None:
        """The group whose owner serves ``operator_id``'s console: their lowest group (their
        groups are one routing domain, owned by one node); None: no group, any node."""
        operator = self.directory.operators.get(operator_id)
        return None if operator is None or not operator.groups else min(operator.groups)

    def owns_group(self, group_id: int | None) -> bool:
        """Whether conversations of ``group_id`` (see :meth:`home`) may run here."""
        return not self.cluster or group_id is None or group_id in self.fences

    def fence_of(self, group_id: int | None) -> Fence | None:
        """The fence a write of a conversation of ``group_id`` carries: None outside cluster
        mode and for a conversation in no group; for a group not owned here, the last epoch
        held (or 0, which no lease has), so that the write is refused, never stored."""
        if not self.cluster or group_id is None:
            return None
        fence = self.fences.get(group_id) or self._lost_fences.get(group_id)
        return fence or Fence(f"group:{group_id}", 0)

    async def own_group(self, group_id: int, fence: Fence) -> None:
        """This node owns ``group_id`` under ``fence``: its actors start, and its open
        conversations are put back into routing from the store exactly as at start-up."""
        self.fences[group_id] = fence
        self._lost_fences.pop(group_id, None)
        if group_id not in self._groups and group_id in self.directory.groups:
            self._spawn_group(group_id)
        await self.adopt_conversations({group_id})

    async def adopt_conversations(self, groups: set[int] | None = None) -> None:
        """Restore the open conversations of the owned ``groups`` (all owned ones) that have no
        actor here, in queue order."""
        owned = set(self.fences) if groups is None else groups & set(self.fences)
        if not owned:
            return
        for conversation_id, group_id, service_id in await self.store.open_conversation_places():
            home = self.home(group_id, service_id)
            if (
                home in owned
                and conversation_id not in self.conversations
                and conversation_id not in self._given_up
            ):
                conv = await self.store.load_conversation(conversation_id)
                if (
                    conv is not None
                    and conv.status in domain.OPEN_STATUSES
                    and self.home(conv.group_id, conv.service_id) in self.fences
                    and conv.id not in self.conversations
                    and await self.recall_service(conv.service_id)
                ):
                    self.restore(conv)

    def disown_group(self, group_id: int) -> None:
        """Stop running ``group_id`` here, at once: its actors and its conversations' actors
        stop, and their visitors and operators are disconnected with ``moved`` (they resume
        on the group's next owner). Writes still in flight carry the old fence: refused."""
        fence = self.fences.pop(group_id, None)
        if fence is not None:
            self._lost_fences[group_id] = fence
        group, queue = self._groups.pop(group_id, None), self._group_queues.pop(group_id, None)
        for ref in (group, queue):
            if ref is not None:
                ref.close()
        self.queue_lengths[group_id] = 0
        # The operators of the group's domain reconnect to its next owner (their sessions
        # run where their groups are routed).
        operators = {o.id for o in self.directory.operators.values() if group_id in o.groups}
        for conversation_id, entry in list(self.conversations.items()):
            if self.home(entry.group_id, entry.service_id) != group_id:
                continue
            del self.conversations[conversation_id]
            entry.ref.close()
            if entry.link.peer is not None:
                entry.link.peer.close("moved", MOVED)
            for state in list(self.roster):
                if conversation_id in state.load:
                    operators.add(state.id)
                    self.roster.release(state.id, conversation_id)
        for operator_id in sorted(operators):
            session = self.sessions.get(operator_id)
            if session is not None:
                session.peer.close("moved", MOVED)
        self.board.changed()

    def open_in_group(self, group_id: int) -> int:
        """Conversations still in ``group_id``: waiting in its queue, or held there."""
        held = sum(1 for e in self.conversations.values() if e.group_id == group_id)
        return max(held, self.queue_lengths.get(group_id, 0))

    def _sign_out(
        self,
        operator_id: int,
        code: str = "operator_deactivated",
        message: str = "an administrator deactivated this operator",
    ) -> None:
        session = self.sessions.get(operator_id)
        if session is not None:
            # Closing the connection runs the session's normal close: presence offline,
            # offers back to the queue, grace period for active conversations.
            session.peer.close(code, message)

    def service(self, service_id: int) -> Service:
        """A service by id: configured, or deleted while conversations of it are open."""
        return self.directory.services.get(service_id) or self._retired_services[service_id]

    def context(self, service_id: int) -> Context:
        ctx = self._contexts.get(service_id)
        if ctx is None:
            service = self.service(service_id)
            ctx = Context(
                service=service,
                operator_grace=self.settings.operator_grace,
                group_names={g.id: g.name for g in self.directory.groups.values()},
                absent_visitor_timeout=self.settings.absent_visitor_timeout,
                out_of_hours_messages=self.settings.out_of_hours_messages,
                directory=self.directory,
            )
            self._contexts[service_id] = ctx
        return ctx

    def group(self, group_id: int) -> ActorRef[GroupMessage]:
        return self._groups[group_id]

    def running_group(self, group_id: int) -> ActorRef[GroupMessage] | None:
        """The group's actor if it runs here (in cluster mode, only on the group's owner)."""
        return self._groups.get(group_id)

    def poke_groups(self, operator_id: int) -> None:
        """Tell the operator's groups to dispatch (a slot freed, or the operator is available)."""
        if operator_id not in self.roster:
            return
        for group_id in sorted(self.roster.get(operator_id).groups):
            group = self._groups.get(group_id)
            if group is None:
                continue
            try:
                group.send_nowait(Dispatch())
            except MailboxFull:
                pass  # a group dispatches after every message it handles: a full mailbox will

    # -- what the actors ask of the hub (their Protocols) ---------------------------------------

    def operator_link(self, operator_id: int) -> OperatorLink | None:
        return self.sessions.get(operator_id)

    async def enqueue(self, group_id: int, link: VisitorLink) -> None:
        group = self._groups.get(group_id)
        if group is not None:  # else (cluster mode) the group moved away: it is not queued here
            await group.send(Enqueue(link))

    async def withdraw(self, group_id: int, conversation_id: str) -> None:
        group = self._groups.get(group_id)
        if group is not None:
            await group.send(Withdraw(conversation_id))

    def release(self, operator_id: int, conversation_id: str) -> None:
        if self.roster.release(operator_id, conversation_id):
            self.poke_groups(operator_id)
            self.board.changed()

    def conversation_changed(self, conv: domain.Conversation) -> None:
        self.today.roll(self.clock.now())
        self.today.count(conv)
        self.board.changed()

    def presence_changed(self, operator_id: int) -> None:
        self.board.changed()

    def forget(self, conversation_id: str) -> None:
        self.conversations.pop(conversation_id, None)

    def count_relayed(self) -> None:
        self.metrics.messages_relayed += 1

    def answered(self, group_id: int, entry: QueueEntry) -> None:
        estimator = self.estimators.get(group_id)
        if estimator is not None:
            now = self.clock.monotonic()
            estimator.answered(now, entry.ahead, now - entry.at)

    def estimated_wait(self, group_id: int, ahead: int) -> int | None:
        estimator = self.estimators.get(group_id)
        return estimator.estimate(ahead, self.clock.monotonic()) if estimator else None

    def is_open(self, conversation_id: str) -> bool:
        return conversation_id in self.conversations

    def offer(self, conversation_id: str, operator_id: int) -> Delivery:
        entry = self.conversations.get(conversation_id)
        if entry is None:
            return Delivery.GONE
        try:
            entry.ref.send_nowait(Apply(domain.Offer(operator_id)))
        except MailboxFull:
            return Delivery.BUSY
        except ActorStopped:
            return Delivery.GONE
        return Delivery.SENT

    def folder_changed(self, summary: p.ConversationSummary, entered: bool) -> None:
        """An out-of-hours conversation entered the folder, or left it (resumed, closed):
        every signed-in operator whose scope holds it is told, so consoles need not poll."""
        change = (
            p.FolderChanged("out_of_hours", added=summary)
            if entered
            else p.FolderChanged("out_of_hours", removed=summary.id)
        )
        frame = p.encode(change)
        for operator_id, session in sorted(self.sessions.items()):
            if self.directory.operator_may_see(
                operator_id, summary.service_id, summary.operator_id
            ):
                session.deliver(frame)

    def subscriptions(self, service_id: int) -> Mapping[str, tuple[Webhook, ...]]:
        return self.directory.subscriptions(service_id)

    def webhook_message_id(self) -> str:
        return "msg_" + self.entropy.identifier().replace("-", "")

    def webhooks_queued(self, count: int) -> None:
        self.metrics.webhooks["queued"] += count
        self.wake_outbox()

    def wake_outbox(self) -> None:
        """Something was queued (or put back) in the outbox: deliver it now."""
        if self._outbox is not None:
            self._outbox.wake()

    def queue_changed(self, group_id: int, waiting: int) -> None:
        self.queue_lengths[group_id] = waiting
        self.board.changed()

    def running(self, conversation_id: str) -> ConversationEntry | None:
        return self.conversations.get(conversation_id)

    # -- conversations --------------------------------------------------------------------------

    async def start_conversation(
        self,
        service_id: int,
        typed: p.VisitorInfo | None,
        peer: Peer,
        origin: str | None = None,
        identity: str | None = None,
        captcha: str | None = None,
        *,
        client: str | None = None,
    ) -> str:
        """A new conversation (F1, F7-F10, F18, F19): ``origin`` is the page's Origin header,
        ``identity`` a signed visitor identity (F8, :mod:`omni.identity`), ``captcha`` the
        CAPTCHA widget's token, ``client`` the visitor's address. Nothing is created unless
        every check passes."""
        service = self.directory.services.get(service_id)
        if service is None:
            raise Rejected("unknown_service", f"there is no chat service {service_id}")
        admission.check_origin(service, origin)
        if service.captcha:
            await self._check_captcha(service_id, captcha, client)
        signed = None
        if identity is not None:
            if service.identity_secret is None:
                raise Rejected(
                    "invalid_identity", f"service {service_id} accepts no signed identities"
                )
            try:
                signed = verify_identity(
                    identity, service.identity_secret, service_id, self.clock.now()
                )
            except IdentityError as exc:
                raise Rejected("invalid_identity", str(exc)) from None
        visitor = admission.identify(service, self.directory.parameters, typed, signed)
        return await self._open(service, visitor, peer)

    async def _open(
        self,
        service: Service,
        visitor: p.Visitor,
        peer: Peer | None,
        channel: p.ChannelRef | None = None,
        channel_user: str | None = None,
    ) -> str:
        """Create the conversation (its bot first, if the service has one at this hour) and
        give it its actor; ``started`` goes to ``peer`` (a WebChat visitor) first."""
        service_id = service.id
        now = self.clock.now()
        # Cluster mode: a conversation starts on the node that owns its service's routing
        # domain (the gateways forward a visitor's socket there: omni.gateway.tunnel).
        if self.cluster and not self.owns_group(self.start_home(service_id)):
            raise Rejected("moved", MOVED)
        year = admission.ticket_year(self.directory, service, now)
        ticket = admission.ticket(year, await self.store.next_ticket(year))
        token = self.entropy.token()
        bot = self.directory.bot_for(service, now)
        if bot is not None:
            conv, effects = domain.open_bot_conversation(
                conversation_id=self.entropy.identifier(),
                ticket=ticket,
                token_hash=hash_token(token),
                visitor=visitor,
                bot=bot,
                now=now,
                ctx=self.context(service_id),
                channel=channel,
                channel_user=channel_user,
            )
        else:
            group_id = self.directory.route(service, now)
            conv, effects = domain.open_conversation(
                conversation_id=self.entropy.identifier(),
                ticket=ticket,
                token_hash=hash_token(token),
                service=service,
                visitor=visitor,
                group_id=group_id,
                now=now,
                opens_at=(
                    None if group_id is not None else self.directory.next_opening(service, now)
                ),
                channel=channel,
                channel_user=channel_user,
            )
        if peer is not None:
            shown = p.ServiceRef(
                service.id, service.name, service.shown_avatar(), bot=conv.status is Status.BOT
            )
            # `started` (with the resume token) goes out with the first effects, after the
            # write that stores the conversation: a visitor is never told of one that is not
            # stored.
            effects.insert(0, domain.Signal("visitor", p.Started(conv.id, ticket, token, shown)))
        entry = self._spawn(conv, peer=peer, new=True)
        # Sent before anything else can reach the new mailbox, so it is the first thing handled.
        entry.ref.send_nowait(Effects(effects))
        return conv.id

    # -- messaging channels (issue 17) ------------------------------------------------------------

    async def channel_message(
        self, channel: Channel, message: Inbound, *, forwarded: bool = False
    ) -> str | None:
        """A message a person wrote on ``channel``: into their open conversation, else into a
        new one of the channel's service (which the message starts; a bot's first question
        is not answered by it). A message the channel took before (the platform's id, kept
        for good) is dropped: None. Messages of one user are taken one at a time, so a
        repeated delivery racing its original starts no second conversation.

        A refusal of the rules (the out-of-hours limit, an answer the bot does not take) is
        logged and the message dropped — the platform must not deliver it again and again —
        and the visitor is told why, once per kind of refusal per conversation.

        Cluster mode: a message whose conversation another node serves is handed to that node
        (:attr:`forward_channel`), once — ``forwarded`` messages are not handed on again."""
        key = (channel.id, message.user)
        lock = self._channel_locks.setdefault(key, trio.Lock())
        try:
            async with lock:
                return await self._channel_message(channel, message)
        except Rejected as exc:
            if exc.code != "moved" or forwarded or self.forward_channel is None:
                raise
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting:
                self._channel_locks.pop(key, None)
        # Nothing was written here (a start or a resume elsewhere refuses first).
        return await self.forward_channel(channel, message)

    async def _channel_message(self, channel: Channel, message: Inbound) -> str | None:
        store = self.store
        if await store.inbound_seen(channel.id, message.message_id):
            return None
        conversation_id = await store.channel_conversation(channel.id, message.user)
        started = conversation_id is None
        if conversation_id is None:
            service = self.directory.services.get(channel.service_id)
            if service is None:
                raise Rejected("unknown_service", f"there is no chat service {channel.service_id}")
            visitor = p.Visitor(name=message.name, phone=message.phone)
            ref = p.ChannelRef(channel.kind, channel.id)
            conversation_id = await self._open(service, visitor, None, ref, message.user)
        entry = await self.entry(conversation_id)
        if not (started and entry.status is Status.BOT):
            event = domain.VisitorMessage(message.message_id, message.text)
            media = message.media
            if (
                media is not None
                and self.channel_media is not None
                and entry.status
                in (
                    Status.QUEUED,
                    Status.OFFERED,
                    Status.ACTIVE,
                    Status.OUT_OF_HOURS,
                )
            ):
                # Fetched here, by the inbound request, not by the conversation's actor: a
                # slow platform holds this user's lock, never the conversation.
                upload_id = await self.channel_media(channel, media, conversation_id)
                if upload_id is not None:
                    event = domain.VisitorMessage(
                        message.message_id, media.caption or media.name or "", upload_id=upload_id
                    )
            try:
                await entry.ref.ask(Apply(event), timeout=self.settings.ask_timeout)
            except ActorStopped:
                log.warning("channel %s: conversation %s ended meanwhile", channel.id, entry)
            except Rejected as exc:
                log.info(
                    "channel %s: conversation %s refused a message: %s",
                    channel.id,
                    conversation_id,
                    exc.code,
                )
                await self._tell_refusal(channel, conversation_id, message.user, exc.code)
        await store.record_inbound(
            channel.id, message.message_id, conversation_id, self.clock.now()
        )
        return conversation_id

    async def _tell_refusal(
        self, channel: Channel, conversation_id: str, user: str, code: str
    ) -> None:
        """Tell a channel's visitor why their message was refused — once per kind of refusal
        per conversation (the outbox item's dedupe key), through the outbox like any reply,
        behind the replies queued before it."""
        key = f"channel:{conversation_id}:refused:{code}"
        if any(i.dedupe_key == key for i in await self.store.outbox_items(conversation_id)):
            return
        conv = await self.store.load_conversation(conversation_id)
        if conv is None:
            return
        ctx = self.context(conv.service_id)
        text = refusal_text(code, ctx.service, ctx.out_of_hours_messages)
        payload = {
            "channel": channel.id,
            "to": user,
            "text": text,
            "seq": None,
            "type": "notice",
            "id": f"{conversation_id}-{code}",
        }
        notice = OutboxEntry(
            "channel", key, conversation_id, payload, self.clock.now(), f"channel:{channel.id}"
        )
        await self.store.write(Write(outbox=[notice]))
        self.channel_replies_queued(1)

    def channel_replies_queued(self, count: int) -> None:
        self.metrics.channels["queued"] += count
        self.wake_outbox()

    def survey_url(self, conv: domain.Conversation) -> str | None:
        link = self.survey_link_of(conv)
        return None if link is None else link.url

    def _spawn(
        self, conv: domain.Conversation, *, peer: Peer | None, new: bool
    ) -> ConversationEntry:
        """The conversation's actor: ``new`` when its first effects follow, else it is put back
        into routing as it starts (and so is every incarnation after a crash)."""
        entry = ConversationEntry(
            conv.id,
            VisitorLink(conv.id, (conv.waiting_since, conv.ticket), peer),
            conv.status,
            conv.group_id,
            conv.service_id,
        )
        first: list[domain.Conversation | None] = [conv]

        def factory() -> ConversationActor:
            # The first incarnation takes the state it was created with; restarts reload it.
            state, first[0] = first[0], None
            return ConversationActor(self, entry, state, new=new and state is not None)

        self._spawned += 1
        # The suffix keeps names unique while a stopping incarnation drains its mailbox.
        entry.ref = self.conversations_supervisor.spawn(
            f"conversation:{conv.id}#{self._spawned}",
            factory,
            mailbox_size=self.settings.conversation_mailbox,
        )
        self.conversations[conv.id] = entry
        return entry

    async def resume_conversation(self, token: str, last_seq: int, peer: Peer) -> str:
        conversation_id = await self.store.find_by_token_hash(hash_token(token))
        if conversation_id is None:
            raise Rejected("invalid_token", "no conversation has this token")
        try:
            entry = await self.entry(conversation_id)
        except Rejected:
            return await self._replay_finished(conversation_id, last_seq, peer)
        await entry.ref.ask(AttachVisitor(peer, last_seq), timeout=self.settings.ask_timeout)
        return conversation_id

    async def _check_captcha(
        self, service_id: int, captcha: str | None, client: str | None
    ) -> None:
        """F19: a service that asks for a CAPTCHA starts nothing without a passed one; a check
        that cannot be made refuses too (fails closed), and the visitor may try again."""
        if self._captcha is None:
            raise Rejected(
                "captcha_unavailable",
                f"service {service_id} asks for a CAPTCHA but this server checks none",
            )
        if captcha is None:
            raise Rejected("captcha_required", f"service {service_id} asks for a CAPTCHA")
        try:
            passed = await self._captcha.verify(captcha, client)
        except CaptchaLimited as exc:
            raise Rejected(
                "rate_limited", "too many CAPTCHA checks from this address", exc.retry_after
            ) from None
        except CaptchaUnavailable:
            # Logged by the check itself, once per interval: not once per visitor.
            raise Rejected(
                "captcha_unavailable", "the CAPTCHA could not be checked; try again"
            ) from None
        if not passed:
            raise Rejected("captcha_failed", "the CAPTCHA was not passed")

    async def request_transcript(self, conversation_id: str, email: str, peer: Peer) -> None:
        """F14: e-mail the visitor what they saw of their conversation, once it has ended
        (the rules: :func:`omni.domain.transcript.check_request`).

        The e-mail is built now and stored in the outbox before ``transcript_queued`` is sent;
        the outbox worker delivers it."""
        if self._outbox is None or not self._outbox.sends("email"):
            raise Rejected("transcript_unavailable", "this server does not send e-mail")
        conv = await self.store.load_conversation(conversation_id)
        if conv is None:
            raise Rejected("unknown_conversation", f"no conversation {conversation_id}")
        if not await self.recall_service(conv.service_id):
            raise Rejected("transcript_disabled", "this conversation's service no longer exists")
        service = self.service(conv.service_id)
        queued = {i.dedupe_key for i in await self.store.outbox_items(conv.id) if i.kind == "email"}
        key = transcript.check_request(conv, service, email, queued)
        if key is not None:
            zone = ZoneInfo(self.directory.zone_of(service))
            history = History(self.store, conv.id, 0, conv.last_seq + 1, hidden="operator")
            events = [
                p.decode_event(e.frame)
                async for page in history.pages()
                for e in page
                if e.kind in ("message", "transferred")
            ]
            mail = transcript.render(conv, service, events, zone, self.transcript_link)
            payload = {"to": email, "subject": mail.subject, "body": mail.body}
            if await self.store.enqueue("email", key, conv.id, payload, self.clock.now()):
                self.metrics.emails["queued"] += 1
            self._outbox.wake()
        peer.deliver(p.encode(p.TranscriptQueued(conv.id, email)))

    def restore(self, conv: domain.Conversation) -> ConversationEntry:
        """Give an open conversation loaded from the store an actor again; it puts itself back
        into routing as it starts (see :meth:`ConversationActor.started`)."""
        return self._spawn(conv, peer=None, new=False)

    async def _replay_finished(self, conversation_id: str, last_seq: int, peer: Peer) -> str:
        """A finished conversation has no actor: replay its end from the store and stop there."""
        conv = await self.store.load_conversation(conversation_id)
        if conv is None:
            raise Rejected("invalid_token", "no conversation has this token")
        check_last_seq(conv, last_seq)
        replay_to_visitor(self.store, conv, last_seq, peer)
        return conversation_id

    async def entry(
        self, conversation_id: str, missing: str = "unknown_conversation"
    ) -> ConversationEntry:
        """The running conversation; one that is open in the store but has no actor (out of
        hours, or given up after crashes) is restored first."""
        entry = self.conversations.get(conversation_id)
        if entry is not None:
            return entry
        conv = await self.store.load_conversation(conversation_id)
        if conv is None or conv.status in domain.TERMINAL_STATUSES:
            raise Rejected(missing, f"conversation {conversation_id} is not open")
        if not self.owns_group(self.home(conv.group_id, conv.service_id)):
            raise Rejected("moved", MOVED)
        if not await self.recall_service(conv.service_id):
            raise Rejected(
                missing,
                f"conversation {conversation_id} belongs to service {conv.service_id}, "
                "which no longer exists",
            )
        return self.conversations.get(conversation_id) or self.restore(conv)

    async def recall_service(self, service_id: int) -> bool:
        """Whether conversations of ``service_id`` can run: it is configured, or was deleted
        while this process ran, or — after a restart — its definition at deletion comes back
        from the audit log (a deleted service's open conversations finish under it)."""
        if service_id in self.directory.services or service_id in self._retired_services:
            return True
        body = await self.store.deleted_config("services", str(service_id))
        if body is None:
            return False
        try:
            service: Service = configuration.decode("services", body, str(service_id))
        except ConfigInvalid as exc:
            log.error("service %s: its last definition cannot be read: %s", service_id, exc)
            return False
        if service_id not in self.directory.services:  # not re-created meanwhile
            self._retired_services.setdefault(service_id, service)
        return True

    async def send_event(
        self,
        conversation_id: str,
        event: domain.Event,
        origin: Peer,
        missing: str = "unknown_conversation",
    ) -> None:
        """Deliver a participant's event; refusals reach ``origin`` as error frames.

        ``missing`` is the error code when no open conversation has that id (for a visitor, whose
        conversation id came from the server, that means it has ended)."""
        entry = self.conversations.get(conversation_id) or await self.entry(
            conversation_id, missing
        )
        try:
            await entry.ref.send(Apply(event, origin))
        except ActorStopped:
            raise Rejected(
                "conversation_closed", f"conversation {conversation_id} has ended"
            ) from None

    def on_conversation_given_up(self, name: str, error: BaseException) -> None:
        """A conversation crashed more often than its restart budget allows: take it out of
        routing (its queue place, any operator slot) so it strands nobody, and close its visitor.
        Its record and events stay in the store for the operators to follow up."""
        conversation_id = name.partition(":")[2].partition("#")[0]
        entry = self.conversations.get(conversation_id)
        if entry is None or entry.ref.name != name:
            return
        del self.conversations[conversation_id]
        self._given_up.add(conversation_id)
        if entry.link.peer is not None:
            entry.link.peer.close("internal_error", "this conversation failed")
        if entry.status is Status.QUEUED and entry.group_id in self._groups:
            try:
                self._groups[entry.group_id].send_nowait(Withdraw(conversation_id))
            except MailboxFull:
                pass  # the group drops conversations without an actor when it pops them
        for state in self.roster:
            self.release(state.id, conversation_id)

    # -- the survey by link -----------------------------------------------------------------------

    def survey_link_of(self, conv: domain.Conversation) -> SurveyLink | None:
        """The link to the conversation's survey page while its survey waits for an answer
        (:func:`~omni.domain.conversation.survey_by_link` says ``open``); None otherwise, or
        when this server mints no survey links (no HTTP). Channels send it with their closing
        message (:func:`~omni.domain.conversation.closing_text`); the admin API shows it."""
        service = self.directory.services.get(conv.service_id) or self._retired_services.get(
            conv.service_id
        )
        if self.survey_links is None or service is None:
            return None
        if domain.survey_by_link(conv, service, self.clock.now()) != "open":
            return None
        deadline = domain.survey_deadline(conv, service)
        assert deadline is not None
        return self.survey_links.mint(conv.id, deadline)

    async def survey_link(self, conversation_id: str) -> SurveyLink | None:
        """:meth:`survey_link_of` the conversation ``conversation_id`` (None: there is none)."""
        conv = await self.store.load_conversation(conversation_id)
        if conv is None or not await self.recall_service(conv.service_id):
            return None
        return self.survey_link_of(conv)

    async def find_survey(self, token: str) -> LinkedSurvey:
        """What the survey link ``token`` leads to now: the conversation and its service (to
        show the page in its language and colours) and where its survey stands — ``invalid``
        (with neither) for a token this server did not sign, ``expired`` once the link's time
        is past."""
        if self.survey_links is None:
            return LinkedSurvey("invalid")
        try:
            conversation_id, expires = self.survey_links.read(token)
        except SurveyRefused:
            return LinkedSurvey("invalid")
        conv = await self.store.load_conversation(conversation_id)
        if conv is None or not await self.recall_service(conv.service_id):
            return LinkedSurvey("invalid")
        service = self.service(conv.service_id)
        now = self.clock.now()
        state = domain.survey_by_link(conv, service, now)
        if state == "open" and now >= expires:
            state = "expired"
        return LinkedSurvey(state, conv, service)

    async def answer_survey(self, token: str, answers: dict[str, object] | None) -> None:
        """Answer the survey of the link ``token`` (``answers``; None: the visitor declines
        it), once: refused with :class:`SurveyRefused` (why) unless :meth:`find_survey` says
        ``open``, with :class:`Rejected` ``invalid_survey`` for answers the questions refuse.

        An ``ended`` conversation's survey is answered through its actor, as the page's
        would be (it closes the conversation); a closed one's by
        :func:`~omni.domain.conversation.answer_closed_survey`, one at a time."""
        found = await self.find_survey(token)
        if found.state != "open":
            raise SurveyRefused(found.state)
        conv = found.conversation
        assert conv is not None
        if conv.status is Status.ENDED:
            event: domain.Event = (
                domain.SurveySkipped() if answers is None else domain.SurveyAnswered(answers)
            )
            try:
                entry = await self.entry(conv.id)
                await entry.ref.ask(Apply(event), timeout=self.settings.ask_timeout)
                return
            except ActorStopped:
                pass  # closed meanwhile: answered below, as a closed conversation
            except Rejected as exc:
                if exc.code == "invalid_survey":
                    raise
                # Closed meanwhile (the page answered, or its survey timed out): below.
        async with self._closed_surveys:
            # Read again under the lock: an answer just before this one is seen.
            conv = await self.store.load_conversation(conv.id)
            assert conv is not None
            if conv.status is not Status.CLOSED:
                raise SurveyRefused("none")
            ctx = self.context(conv.service_id)
            for effect in domain.answer_closed_survey(conv, answers, self.clock.now(), ctx):
                assert isinstance(effect, domain.SaveSurvey)
                await self.store.write(
                    Write(
                        conversation=conv,
                        survey=effect.answers,
                        survey_skipped=effect.answers is None,
                    )
                )

    # -- operators ------------------------------------------------------------------------------

    async def login(self, token: str, peer: Peer) -> OperatorSession:
        """Sign ``peer`` in with an operator's console token."""
        operator = self.directory.operator_by_token(token)
        if operator is None:
            raise Rejected("invalid_login", "unknown or inactive operator token")
        return await self._open_session(operator, peer, None)

    async def login_with_session(
        self, user_id: str, generation: int, peer: Peer
    ) -> OperatorSession:
        """Sign ``peer`` in as the operator a person's sign-in session (of ``user_id`` at
        ``generation``, unexpired: the caller checked) acts for; the connection is closed with
        ``session_ended`` when that session ends."""
        user = self.directory.session_user(user_id, generation)
        operator = None
        if user is not None and user.operator_id is not None:
            operator = self.directory.operators.get(user.operator_id)
        if operator is None or not operator.active:
            raise Rejected("invalid_login", "this session does not sign in an active operator")
        return await self._open_session(operator, peer, (user_id, generation))

    async def _open_session(
        self, operator: Operator, peer: Peer, account: tuple[str, int] | None
    ) -> OperatorSession:
        if self.cluster and not self.owns_group(self.operator_home(operator.id)):
            # Their groups are routed by another node: the console is served there.
            raise Rejected("moved", MOVED)
        previous = self.sessions.get(operator.id)
        session = OperatorSession(self, operator, peer)
        session.account = account
        if previous is not None:
            previous.replaced = True
            previous.peer.close("session_replaced", "you signed in on another connection")
        await session.open(previous is not None)
        return session

    # -- supervisors (the live view) ------------------------------------------------------------

    async def supervisor_login(self, token: str) -> p.SupervisorInfo:
        """Who ``token`` signs in to the live view as: the one check of ``/ws/supervisor``
        (an API token of role admin or supervisor). Sign-in sessions — bearer tokens with a
        role — plug in here, and only here."""
        found = self.directory.api_token(token)
        if found is None or found.role not in SUPERVISING:
            raise Rejected(
                "invalid_login", "unknown token, or not a supervisor's or an administrator's"
            )
        role: Literal["admin", "supervisor"] = "admin" if found.role is Role.ADMIN else "supervisor"
        return p.SupervisorInfo(found.id, found.name, role)

    def supervisor_session(self, user: User) -> p.SupervisorInfo:
        """Who a person's sign-in session (unexpired, of a good generation: the caller
        checked) signs in to the live view as: a supervisor or an administrator, as
        ``user:<id>``."""
        if user.role not in SUPERVISING:
            raise Rejected(
                "invalid_login", "this session is not a supervisor's or an administrator's"
            )
        role: Literal["admin", "supervisor"] = "admin" if user.role is Role.ADMIN else "supervisor"
        return p.SupervisorInfo(f"user:{user.id}", user.name, role)

    def watch_board(self, who: p.SupervisorInfo, peer: Peer, generation: int | None = None) -> None:
        """``peer`` watches the board; ``generation``: of the session it signed in with."""
        if generation is None:
            self.supervisors[peer] = ("token", who.id, 0)
        else:
            self.supervisors[peer] = ("user", who.id.removeprefix("user:"), generation)
        self.board.watch(peer)

    def unwatch_board(self, peer: Peer) -> None:
        self.supervisors.pop(peer, None)
        self.board.unwatch(peer)

    def make_board(self) -> p.Board:
        now = self.clock.now()
        self.today.roll(now)
        waiting: dict[int, list[datetime]] = {}
        for entry in self.conversations.values():
            if entry.status in _WAITING and entry.group_id is not None:
                waiting.setdefault(entry.group_id, []).append(entry.link.key[0])
        directory = self.directory
        return board_rules.board(
            self.today,
            now,
            directory.groups,
            waiting,
            [o for o in directory.operators.values() if o.active],
            self.roster,
            self._pause_labels(),
        )

    def _pause_labels(self) -> dict[int, str]:
        """Why each paused operator paused, as the configured reason's label (its id if the
        reason has left the list since)."""
        parameters = self.directory.parameters
        labels = {}
        for state in self.roster:
            if state.pause_reason is not None:
                reason = parameters.pause_reason(state.pause_reason)
                labels[state.id] = reason.label if reason else state.pause_reason
        return labels

    async def supervise(
        self,
        who: p.SupervisorInfo,
        conversation_id: str,
        event: domain.SupervisorAssign | domain.SupervisorTransferToGroup,
        origin: Peer,
        *,
        forwarded: bool = False,
    ) -> None:
        """A supervisor's transfer or assignment: carried out by the conversation (refusals
        raised as :class:`Rejected`), recorded in the audit log, confirmed with ``done``.
        Cluster mode: one another node serves is carried out there (:attr:`forward_supervise`,
        once: ``forwarded`` ones are not handed on)."""
        entry = self.conversations.get(conversation_id)
        if entry is None and self.forward_supervise is not None and not forwarded:
            await self.forward_supervise(who, conversation_id, event, origin)
            return
        if entry is None:
            raise Rejected("unknown_conversation", f"no open conversation {conversation_id}")
        was = (entry.status.value, entry.group_id)
        try:
            await entry.ref.ask(Apply(event, origin), timeout=self.settings.ask_timeout)
        except ActorStopped:
            raise Rejected(
                "conversation_closed", f"conversation {conversation_id} has ended"
            ) from None
        if isinstance(event, domain.SupervisorTransferToGroup):
            action: Literal["transfer", "assign"] = "transfer"
            target = {"group_id": event.group_id}
        else:
            action = "transfer" if event.transfer else "assign"
            target = {"operator_id": event.operator_id}
        detail = {"from": {"status": was[0], "group_id": was[1]}, **target}
        await self.store.record_action(
            self.clock.now(), _actor(who), action, "conversations", conversation_id, detail
        )
        origin.deliver(p.encode(p.Done(action, conversation_id)))

    def supervisor_transfer(
        self, group_id: int | None, operator_id: int | None
    ) -> domain.SupervisorAssign | domain.SupervisorTransferToGroup:
        """The event of a supervisor's ``transfer`` (its target checked, as an operator's)."""
        if (group_id is None) == (operator_id is None):
            raise Rejected(
                "invalid_frame", "transfer needs exactly one of group_id and operator_id"
            )
        if group_id is not None:
            group = self.directory.groups.get(group_id)
            if group is None:
                raise Rejected("unknown_group", f"there is no group {group_id}")
            return domain.SupervisorTransferToGroup(group.id, group.name)
        assert operator_id is not None
        return self.supervisor_assign(operator_id, transfer=True)

    def supervisor_assign(
        self, operator_id: int, *, transfer: bool = False
    ) -> domain.SupervisorAssign:
        target = self.directory.operators.get(operator_id)
        if target is None or not target.active:
            raise Rejected("unknown_operator", f"there is no operator {operator_id}")
        return domain.SupervisorAssign(target.id, target.name, transfer)

    # -- inspection -----------------------------------------------------------------------------

    def conversations_by_status(self) -> dict[str, int]:
        counts = {s.value: 0 for s in Status if s not in domain.TERMINAL_STATUSES}
        for entry in self.conversations.values():
            counts[entry.status.value] = counts.get(entry.status.value, 0) + 1
        return counts


#: Why a visitor or an operator is disconnected when their conversation's group moves to
#: another node (cluster mode).
MOVED = "this conversation is now served by another node; resume to continue"

#: The roles that may watch the board and act on it.
SUPERVISING = frozenset({Role.ADMIN, Role.SUPERVISOR})


def _actor(who: p.SupervisorInfo) -> str:
    """The audit log's actor for a supervisor: ``token:<id>``, or ``user:<id>`` for a person."""
    return who.id if who.id.startswith("user:") else f"token:{who.id}"


#: Conversations waiting for an operator (an offer not yet accepted still waits).
_WAITING = frozenset({Status.QUEUED, Status.OFFERED})


@asynccontextmanager
async def open_hub(
    directory: Directory,
    store: Store,
    clock: Clock,
    *,
    entropy: Entropy | None = None,
    settings: Settings | None = None,
    captcha: CaptchaCheck | None = None,
    outbox: OutboxSignal | None = None,
    counters: Counters | None = None,
    cluster: bool = False,
) -> AsyncIterator[Hub]:
    """The hub and its actors; leaving the block cancels them all. Every open conversation in
    the store is put back into routing first, in queue order (restart safety), and the pauses
    a stopped server left open are ended where it last knew them to go on.

    ``cluster``: cluster mode — no group runs and nothing is restored until this node owns
    groups (:meth:`Hub.own_group`, which restores that group's conversations)."""
    interrupted = await store.end_interrupted_pauses()
    if interrupted:
        log.warning("ended %d pauses left open by the last run", interrupted)
    async with trio.open_nursery() as nursery:
        hub = Hub(
            directory,
            store,
            clock,
            nursery,
            entropy=entropy or SystemEntropy(),
            settings=settings or Settings(),
            captcha=captcha,
            outbox=outbox,
            counters=counters,
            cluster=cluster,
        )
        today = hub.today
        for conv in await store.conversations_created_between(today.start, today.end):
            today.count(conv)
        for conv in [] if cluster else await store.open_conversations():
            if await hub.recall_service(conv.service_id):
                hub.restore(conv)
            else:
                log.warning(
                    "conversation %s: service %s no longer exists and its definition is not "
                    "in the audit log; not restored",
                    conv.id,
                    conv.service_id,
                )
        try:
            yield hub
        finally:
            await hub.pauses.close()
            nursery.cancel_scope.cancel()
