"""OperatorSession: one connected operator console.

Rules:

* One session per operator: signing in again replaces the older connection without touching the
  operator's conversations.
* A fresh sign-in starts ``paused``: nothing is offered until the operator says ``available``.
  An operator who comes back within the grace period gets the status they had and their
  conversations back; each conversation cancels its grace timer.
* When the connection drops, the operator goes ``offline``: offers not yet accepted go straight
  back to the head of their queue, and each active conversation starts its grace timer.
* The session is driven by the connection's own task (the gateway's); it is not a mailbox actor,
  because it has no state to protect beyond its connection. It sees the server only through
  :class:`OperatorHost`.
"""

from __future__ import annotations

from typing import Literal, Protocol

from omni.actors.conversation import Apply, ConversationEntry, Summary, SyncOperator
from omni.actors.pauses import PauseRecorder
from omni.actors.peer import History, Peer
from omni.actors.runtime import ActorStopped
from omni.clock import Clock
from omni.domain import conversation as domain
from omni.domain import protocol as p
from omni.domain.conversation import Rejected
from omni.domain.model import Directory, Operator
from omni.domain.routing import Presence, Roster
from omni.store import ConversationQuery, Store, page_cursor, parse_cursor

#: Conversations per page of a console folder.
FOLDER_PAGE = 50


class OperatorHost(Protocol):
    """What an operator session needs of the server around it."""

    @property
    def directory(self) -> Directory: ...

    @property
    def roster(self) -> Roster: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def store(self) -> Store: ...

    @property
    def ask_timeout(self) -> float: ...

    #: The signed-in operators' sessions, by operator id.
    sessions: dict[int, OperatorSession]
    #: Presence (and pause reason) an operator had when their connection dropped, restored
    #: if they come back.
    remembered_presence: dict[int, tuple[Presence, str | None]]

    @property
    def pauses(self) -> PauseRecorder:
        """Records the operators' pauses in the store (the reports)."""
        ...

    def running(self, conversation_id: str) -> ConversationEntry | None:
        """The conversation's actor, if it has one now."""
        ...

    async def entry(self, conversation_id: str) -> ConversationEntry:
        """The open conversation's actor, restored from the store if it has none; refusals
        are :class:`Rejected`."""
        ...

    async def send_event(self, conversation_id: str, event: domain.Event, origin: Peer) -> None: ...

    def poke_groups(self, operator_id: int) -> None:
        """The operator's groups may dispatch (a slot freed, or the operator is available)."""
        ...

    def presence_changed(self, operator_id: int) -> None:
        """The operator signed in, changed status or left (the supervisors' board)."""
        ...


class OperatorSession:
    def __init__(self, host: OperatorHost, operator: Operator, peer: Peer) -> None:
        self.host = host
        self.operator = operator
        self.peer = peer
        self.replaced = False
        #: The sign-in session this connection logged in with: (user id, the user's session
        #: generation); None for a console token. The hub closes the connection when that
        #: session ends.
        self.account: tuple[str, int] | None = None
        #: conversation -> highest seq this connection has been sent (replays skip below it).
        self.delivered: dict[str, int] = {}

    @property
    def id(self) -> int:
        return self.operator.id

    # -- as a conversation sees it (omni.actors.conversation.OperatorLink) ----------------------

    def deliver(self, frame: str) -> None:
        self.peer.deliver(frame)

    def deliver_event(self, conversation_id: str, seq: int, frame: str) -> None:
        """Deliver a frame that carries ``seq`` (an event or an ack) and remember it was sent."""
        self.peer.deliver(frame)
        if seq > self.delivered.get(conversation_id, 0):
            self.delivered[conversation_id] = seq

    def deliver_history(self, history: History) -> None:
        self.peer.deliver_history(history)
        last = history.before - 1
        if last > self.delivered.get(history.conversation_id, 0):
            self.delivered[history.conversation_id] = last

    def sent_up_to(self, conversation_id: str) -> int:
        return self.delivered.get(conversation_id, 0)

    async def open(self, takeover: bool) -> None:
        host, op = self.host, self.operator
        host.sessions[op.id] = self
        state = host.roster.configure(op.id, op.name, op.groups, op.capacity)
        if not takeover:
            returning = bool(state.load)
            fresh: tuple[Presence, str | None] = (Presence.PAUSED, None)
            remembered = host.remembered_presence.pop(op.id, fresh)
            self._set_presence(*(remembered if returning else fresh))
            for conversation_id in sorted(state.load):
                entry = host.running(conversation_id)
                if entry is not None:
                    await entry.ref.send(Apply(domain.OperatorReturned(op.id)))
        summaries: list[p.ConversationSummary] = []
        for conversation_id in sorted(state.load):
            entry = host.running(conversation_id)
            if entry is None:
                continue
            summary = await entry.ref.ask(Summary(), timeout=host.ask_timeout)
            if summary.status is domain.Status.ACTIVE:
                summaries.append(summary)
        directory = host.directory
        welcome = p.Welcome(
            operator=p.OperatorInfo(
                op.id, op.name, op.capacity, state.presence.value, state.pause_reason
            ),
            groups=tuple(
                p.GroupRef(g, directory.groups[g].name) for g in op.groups if g in directory.groups
            ),
            conversations=tuple(summaries),
            pause_reasons=directory.parameters.pause_reasons,
        )
        self.peer.deliver(p.encode(welcome))
        host.poke_groups(op.id)

    async def aclose(self) -> None:
        """The connection ended."""
        host = self.host
        if self.replaced or host.sessions.get(self.id) is not self:
            return
        del host.sessions[self.id]
        state = host.roster.get(self.id)
        host.remembered_presence[self.id] = (state.presence, state.pause_reason)
        self._set_presence(Presence.OFFLINE)
        for conversation_id in sorted(state.load):
            entry = host.running(conversation_id)
            if entry is not None:
                await entry.ref.send(Apply(domain.OperatorLeft(self.id)))

    # -- commands ---------------------------------------------------------------------------

    def _set_presence(self, presence: Presence, reason: str | None = None) -> None:
        """The operator's presence in the roster (routing, metrics), and their pauses in the
        store (the reports: written behind, never waited for here)."""
        host = self.host
        host.roster.set_presence(self.id, presence, host.clock.monotonic(), reason)
        host.pauses.presence(self.id, presence is Presence.PAUSED, reason, host.clock.now())
        host.presence_changed(self.id)

    async def set_status(
        self, status: Literal["available", "paused"], reason: str | None = None
    ) -> None:
        """``paused`` may give one of the configured pause reasons (by id)."""
        presence = Presence(status)
        if reason is not None:
            if presence is not Presence.PAUSED:
                raise Rejected("invalid_frame", "a reason goes only with status paused")
            if self.host.directory.parameters.pause_reason(reason) is None:
                raise Rejected("unknown_pause_reason", f"there is no pause reason {reason!r}")
        self._set_presence(presence, reason)
        self.peer.deliver(p.encode(p.StatusSet(status, reason)))
        if presence is Presence.AVAILABLE:
            self.host.poke_groups(self.id)

    async def accept(self, conversation_id: str) -> None:
        await self._send(conversation_id, domain.Accept(self.id, self.operator.name))

    async def message(self, conversation_id: str, client_id: str, text: str) -> None:
        await self._send(conversation_id, domain.OperatorMessage(self.id, client_id, text))

    async def attachment(self, conversation_id: str, client_id: str, upload_id: str) -> None:
        await self._send(
            conversation_id, domain.OperatorMessage(self.id, client_id, "", upload_id=upload_id)
        )

    async def typing(self, conversation_id: str) -> None:
        await self._send(conversation_id, domain.OperatorTyping(self.id))

    async def end(self, conversation_id: str) -> None:
        await self._send(conversation_id, domain.OperatorEnd(self.id))

    async def transfer(
        self, conversation_id: str, group_id: int | None, operator_id: int | None
    ) -> None:
        directory = self.host.directory
        if (group_id is None) == (operator_id is None):
            raise Rejected(
                "invalid_frame", "transfer needs exactly one of group_id and operator_id"
            )
        if group_id is not None:
            group = directory.groups.get(group_id)
            if group is None:
                raise Rejected("unknown_group", f"there is no group {group_id}")
            await self._send(conversation_id, domain.TransferToGroup(self.id, group.id, group.name))
            return
        assert operator_id is not None
        target = directory.operators.get(operator_id)
        if target is None or not target.active:
            raise Rejected("unknown_operator", f"there is no operator {operator_id}")
        await self._send(
            conversation_id, domain.TransferToOperator(self.id, target.id, target.name)
        )

    async def targets(self, conversation_id: str) -> None:
        """What a ``transfer`` of the held conversation would accept now: the groups linked to
        its service (its current group too: a transfer there requeues it), and the signed-in
        operators other than this one who have free capacity (paused ones too, as a transfer
        to an operator accepts them)."""
        entry = await self.host.entry(conversation_id)
        summary = await entry.ref.ask(Summary(), timeout=self.host.ask_timeout)
        if summary.operator_id != self.id:
            raise Rejected("not_your_conversation", f"conversation {conversation_id} is not yours")
        if summary.status is not domain.Status.ACTIVE:
            raise Rejected(
                "invalid_state", f"conversation {conversation_id} is {summary.status.value}"
            )
        host = self.host
        directory = host.directory
        service = directory.services.get(summary.service_id)
        links = [link.group for link in service.links] if service else []
        groups = tuple(
            p.GroupRef(g, directory.groups[g].name) for g in links if g in directory.groups
        )
        operators = []
        for operator_id in sorted(host.sessions):
            operator = directory.operators.get(operator_id)
            if operator_id == self.id or operator is None or not operator.active:
                continue
            free = host.roster.get(operator_id).free
            if free > 0:
                operators.append(p.TargetOperator(operator_id, operator.name, free))
        self.peer.deliver(p.encode(p.Targets(conversation_id, groups, tuple(operators))))

    async def resume(self, conversation_id: str, *, scoped: bool = True) -> None:
        """Take an out-of-hours conversation by an active contact (F4). Should it have to be
        requeued later, it goes to this operator's group among the service's links.

        ``scoped``: the operator asks for themselves (console, operator API token), so only a
        conversation they may see (:meth:`~omni.domain.model.Directory.operator_may_see`); an
        administrator directing them to one is not limited.

        Returns once the conversation is this operator's (and stored so); a refusal is raised
        (:class:`Rejected`), not sent to the console, so the admin API can answer with it."""
        entry = await self.host.entry(conversation_id)
        timeout = self.host.ask_timeout
        summary = await entry.ref.ask(Summary(), timeout=timeout)
        directory = self.host.directory
        if scoped and not directory.operator_may_see(
            self.id, summary.service_id, summary.operator_id
        ):
            # Alike to a conversation that does not exist: ids of others' are not confirmed.
            raise Rejected("unknown_conversation", f"no open conversation {conversation_id}")
        service = directory.services.get(summary.service_id)
        links = [link.group for link in service.links] if service else []
        mine = [g for g in links if g in self.operator.groups]
        group_id = (mine or links or list(self.operator.groups))[0]
        event = domain.ResumeByOperator(self.id, self.operator.name, group_id)
        try:
            await entry.ref.ask(Apply(event, self.peer), timeout=timeout)
        except ActorStopped:
            raise Rejected(
                "conversation_closed", f"conversation {conversation_id} has ended"
            ) from None

    async def folder(self, name: str, cursor: str | None = None) -> None:
        """F4: the console's folder of out-of-hours conversations the operator may resume —
        those of the services their groups serve, newest first, a page at a time."""
        if name != "out_of_hours":
            raise Rejected("unknown_folder", f"there is no folder {name!r} (out_of_hours)")
        after = None if cursor is None else parse_cursor(cursor)
        if cursor is not None and after is None:
            raise Rejected("invalid_cursor", "the cursor is not one the server gave")
        query = ConversationQuery(
            status="out_of_hours",
            cursor=after,
            limit=FOLDER_PAGE,
            scope_operator_id=self.id,
            scope_service_ids=self.host.directory.services_of(self.id),
        )
        found = await self.host.store.list_conversations(query)
        last = found[-1] if len(found) == FOLDER_PAGE else None
        page = p.Folder(
            name=name,
            conversations=tuple(c.summary() for c in found),
            next_cursor=None if last is None else page_cursor(last),
        )
        self.peer.deliver(p.encode(page))

    async def sync(self, conversation_id: str, last_seq: int) -> None:
        entry = await self.host.entry(conversation_id)
        await entry.ref.send(SyncOperator(self.id, self.peer, last_seq))

    async def _send(self, conversation_id: str, event: domain.Event) -> None:
        await self.host.send_event(conversation_id, event, self.peer)
