"""MemoryStore: the :class:`~omni.store.Store` kept in this process, for tests and the simulator.

It copies conversations on write and on load, so that the store never aliases an actor's live
state: a crashed actor restarts from what was written, exactly as it would from PostgreSQL.
"""

from __future__ import annotations

import copy
import dataclasses
from bisect import bisect_right
from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from typing import Any

import msgspec

from omni.domain.conversation import OPEN_STATUSES, TERMINAL_STATUSES, Conversation
from omni.store import (
    CONFIG_CHANNEL,
    Attachment,
    AttachmentClaimFailed,
    AuditEntry,
    ConfigChange,
    ConfigItem,
    ConversationQuery,
    Notice,
    OutboxAttempt,
    OutboxItem,
    Pause,
    SignInSession,
    StaleConfiguration,
    StoredEvent,
    StoreError,
    Write,
)
from omni.store.memory_cluster import MemoryCoordination


class MemoryStore(MemoryCoordination):
    def __init__(self, now: Callable[[], datetime] | None = None) -> None:
        """``now``: the store's clock (PostgreSQL's ``now()``) for heartbeats, leases and
        claims; default trio's clock (:func:`~omni.store.memory_cluster.trio_now`)."""
        self._init_coordination(now)
        self._tickets: dict[int, int] = {}
        self._conversations: dict[str, Conversation] = {}
        self._events: dict[str, list[StoredEvent]] = {}
        #: (channel id, platform message id) -> (conversation id, received at).
        self._inbound: dict[tuple[str, str], tuple[str, datetime]] = {}
        self._by_token: dict[str, str] = {}
        self._surveys: dict[str, dict[str, Any] | None] = {}
        self._config: dict[tuple[str, str], ConfigItem] = {}
        self._audit: list[AuditEntry] = []
        #: The audit entry id of the last configuration change.
        self._config_version = 0
        self._outbox: dict[int, OutboxItem] = {}
        self._outbox_keys: set[str] = set()
        self._outbox_last_id = 0
        self._attempts: dict[int, list[OutboxAttempt]] = {}
        self._sessions: dict[str, SignInSession] = {}
        #: Every pause, in the order started, and the last instant each open one was seen.
        self._pauses: list[Pause] = []
        self._pause_seen: dict[int, datetime] = {}
        self._attachments: dict[str, Attachment] = {}
        self.writes = 0

    async def next_ticket(self, year: int) -> int:
        number = self._tickets.get(year, 0) + 1
        self._tickets[year] = number
        return number

    async def write(self, write: Write) -> None:
        # Check before changing anything: a write is all or nothing.
        self._check_fence(write.fence)
        for event in write.events:
            existing = self._events.get(event.conversation_id)
            if existing and existing[-1].seq >= event.seq:
                raise StoreError(
                    f"event {event.conversation_id}#{event.seq} is not after #{existing[-1].seq}"
                )
        for attachment_id, _ in write.claims:
            found = self._attachments.get(attachment_id)
            if found is None or not found.pending:
                raise AttachmentClaimFailed(f"attachment {attachment_id} is unknown or claimed")
        written = write.conversation.id if write.conversation is not None else None
        for entry in write.outbox:
            if (
                entry.conversation_id != written
                and entry.conversation_id not in self._conversations
            ):
                raise StoreError(f"outbox: no conversation {entry.conversation_id}")
        self.writes += 1
        if write.conversation is not None:
            conv = write.conversation
            # A copy: the store never aliases the actor's live state.
            stored = self._conversations[conv.id] = copy.copy(conv)
            stored.client_ids = {}
            stored.bot = None if conv.bot is None else conv.bot.copy()
            self._by_token[conv.token_hash] = conv.id
        for event in write.events:
            self._events.setdefault(event.conversation_id, []).append(event)
        for attachment_id, at in write.claims:
            found = self._attachments[attachment_id]
            self._attachments[attachment_id] = dataclasses.replace(found, claimed_at=at)
        if write.survey is not None or write.survey_skipped:
            assert write.conversation is not None
            self._surveys[write.conversation.id] = write.survey
        for entry in write.outbox:
            if entry.dedupe_key in self._outbox_keys:
                continue
            self._add_item(
                entry.kind,
                entry.dedupe_key,
                entry.conversation_id,
                dict(entry.payload),
                entry.created_at,
                entry.subscription,
                entry.body,
            )
        self._publish(write.notices)

    async def load_conversation(self, conversation_id: str) -> Conversation | None:
        conv = self._conversations.get(conversation_id)
        if conv is None:
            return None
        restored = self._snapshot(conv)
        for event in self._events.get(conversation_id, []):
            if event.client_key is not None:
                restored.client_ids[event.client_key] = event.seq
        return restored

    async def find_by_token_hash(self, token_hash: str) -> str | None:
        return self._by_token.get(token_hash)

    async def events_after(
        self, conversation_id: str, after_seq: int, limit: int | None = None
    ) -> list[StoredEvent]:
        events = self._events.get(conversation_id, [])
        start = bisect_right(events, after_seq, key=lambda e: e.seq)
        return events[start : None if limit is None else start + limit]

    async def survey(self, conversation_id: str) -> dict[str, Any] | None:
        return self._surveys.get(conversation_id)

    async def channel_conversation(self, channel_id: str, user: str) -> str | None:
        found = [
            c
            for c in self._conversations.values()
            if c.channel is not None
            and c.channel.id == channel_id
            and c.channel_user == user
            and c.status not in TERMINAL_STATUSES
        ]
        return max(found, key=lambda c: c.created_at).id if found else None

    async def inbound_seen(self, channel_id: str, message_id: str) -> bool:
        return (channel_id, message_id) in self._inbound

    async def record_inbound(
        self, channel_id: str, message_id: str, conversation_id: str, at: datetime
    ) -> None:
        self._inbound.setdefault((channel_id, message_id), (conversation_id, at))

    async def open_conversations(self) -> list[Conversation]:
        restored = []
        for conv in self._conversations.values():
            if conv.status in OPEN_STATUSES:
                loaded = await self.load_conversation(conv.id)
                assert loaded is not None
                restored.append(loaded)
        restored.sort(key=lambda c: (c.waiting_since, c.ticket))
        return restored

    async def open_conversation_places(self) -> list[tuple[str, int | None, int]]:
        return [(c.id, c.group_id, c.service_id) for c in await self.open_conversations()]

    async def list_conversations(self, query: ConversationQuery) -> list[Conversation]:
        found = [c for c in self._conversations.values() if _matches(c, query)]
        found.sort(key=lambda c: (c.created_at, c.id), reverse=True)
        if query.cursor is not None:
            found = [c for c in found if (c.created_at, c.id) < query.cursor]
        return [self._snapshot(c) for c in found[: query.limit]]

    async def conversations_created_between(
        self, start: datetime, end: datetime
    ) -> list[Conversation]:
        return [
            self._snapshot(c) for c in self._conversations.values() if start <= c.created_at < end
        ]

    async def config_items(self) -> list[ConfigItem]:
        return list(self._config.values())

    async def config_version(self) -> int:
        return self._config_version

    async def deleted_config(self, kind: str, key: str) -> dict[str, Any] | None:
        for entry in reversed(self._audit):
            if entry.kind == kind and entry.key == key and entry.action == "delete":
                return _json_copy(entry.before)
        return None

    # -- sign-in sessions -----------------------------------------------------------------------

    async def add_session(self, session: SignInSession) -> None:
        expired = [h for h, s in self._sessions.items() if s.expires_at <= session.created_at]
        for token_hash in expired:
            del self._sessions[token_hash]
        self._sessions[session.token_hash] = session

    async def find_session(self, token_hash: str) -> SignInSession | None:
        return self._sessions.get(token_hash)

    async def end_sessions(self, user_id: str) -> int:
        ended = [h for h, s in self._sessions.items() if s.user_id == user_id]
        for token_hash in ended:
            del self._sessions[token_hash]
        return len(ended)

    # -- operators' pauses ----------------------------------------------------------------------

    async def pause_started(self, operator_id: int, reason: str | None, at: datetime) -> None:
        await self.pause_ended(operator_id, at)
        self._pause_seen[len(self._pauses)] = at
        self._pauses.append(Pause(operator_id, reason, at))

    async def pause_ended(self, operator_id: int, at: datetime) -> None:
        for index in list(self._pause_seen):
            pause = self._pauses[index]
            if pause.operator_id == operator_id:
                self._end_pause(index, max(at, pause.start))

    async def pauses_ongoing(self, at: datetime) -> None:
        for index, seen in self._pause_seen.items():
            self._pause_seen[index] = max(seen, at)

    async def end_interrupted_pauses(self) -> int:
        interrupted = list(self._pause_seen.items())
        for index, seen in interrupted:
            self._end_pause(index, seen)
        return len(interrupted)

    def _end_pause(self, index: int, at: datetime) -> None:
        del self._pause_seen[index]
        self._pauses[index] = dataclasses.replace(self._pauses[index], end=at)

    async def pauses_between(self, start: datetime, end: datetime) -> list[Pause]:
        if start >= end:
            return []
        found = [
            p
            for p in self._pauses
            if p.start < end and (p.end is None or (p.end > start and p.end > p.start))
        ]
        return sorted(found, key=lambda p: p.start)

    # -- outbox -----------------------------------------------------------------------------

    async def enqueue(
        self,
        kind: str,
        dedupe_key: str,
        conversation_id: str | None,
        payload: dict[str, Any],
        at: datetime,
    ) -> bool:
        if dedupe_key in self._outbox_keys:
            return False
        if conversation_id is not None and conversation_id not in self._conversations:
            raise StoreError(f"outbox: no conversation {conversation_id}")
        try:
            stored = _json_copy(payload)
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            raise StoreError(f"not storable as JSON: {exc}") from None
        assert stored is not None
        self._add_item(kind, dedupe_key, conversation_id, stored, at, None, None)
        return True

    def _add_item(
        self,
        kind: str,
        dedupe_key: str,
        conversation_id: str | None,
        payload: dict[str, Any],
        at: datetime,
        subscription: str | None,
        body: str | None,
    ) -> None:
        # Never an id used before, even once items are deleted (retention).
        item_id = self._outbox_last_id = self._outbox_last_id + 1
        self._outbox[item_id] = OutboxItem(
            item_id,
            kind,
            dedupe_key,
            conversation_id,
            payload,
            at,
            0,
            at,
            subscription=subscription,
            body=body,
        )
        self._outbox_keys.add(dedupe_key)

    def _heads(self, kinds: Collection[str] | None) -> list[OutboxItem]:
        """Pending items of ``kinds``, the oldest of each subscription and conversation only,
        by when they are due."""
        heads: list[OutboxItem] = []
        seen: set[tuple[str, str | None]] = set()
        for item_id in sorted(self._outbox):
            item = self._outbox[item_id]
            if item.sent_at is not None or item.failed_at is not None:
                continue
            if kinds is not None and item.kind not in kinds:
                continue
            if item.subscription is not None:
                key = (item.subscription, item.conversation_id)
                if key in seen:
                    continue
                seen.add(key)
            heads.append(item)
        return sorted(heads, key=lambda i: (i.next_attempt_at, i.id))

    async def outbox_due(
        self, at: datetime, limit: int, kinds: Collection[str] | None = None
    ) -> list[OutboxItem]:
        return [copy.deepcopy(i) for i in self._heads(kinds) if i.next_attempt_at <= at][:limit]

    async def outbox_next_due(
        self, kinds: Collection[str] | None = None, after: datetime | None = None
    ) -> datetime | None:
        due = [
            i.next_attempt_at
            for i in self._heads(kinds)
            if after is None or i.next_attempt_at > after
        ]
        return min(due, default=None)

    async def outbox_claim(
        self,
        claimant: str,
        at: datetime,
        limit: int,
        seconds: float,
        kinds: Collection[str] | None = None,
    ) -> list[OutboxItem]:
        if not 0 < seconds <= 7 * 86_400:
            raise ValueError(f"a claim lasts over 0 s and at most a week, not {seconds!r}")
        until = self._now() + timedelta(seconds=seconds)
        taken = [
            i for i in self._heads(kinds) if i.next_attempt_at <= at and not self._claimed(i.id)
        ][:limit]
        for item in taken:
            self._claims[item.id] = (claimant, until)
        return [copy.deepcopy(i) for i in taken]

    def _update(self, item_id: int, attempt: OutboxAttempt | None, **changes: Any) -> None:
        # Every outcome (and a redelivery) ends the item's claim.
        self._unclaim(item_id)
        item = self._outbox[item_id]
        self._outbox[item_id] = dataclasses.replace(item, **changes)
        if attempt is not None:
            self._attempts.setdefault(item_id, []).append(attempt)

    async def outbox_sent(
        self, item_id: int, at: datetime, attempt: OutboxAttempt | None = None
    ) -> None:
        self._update(item_id, attempt, sent_at=at)

    async def outbox_retry(
        self,
        item_id: int,
        next_attempt_at: datetime,
        error: str,
        attempt: OutboxAttempt | None = None,
    ) -> None:
        attempts = self._outbox[item_id].attempts + 1
        self._update(
            item_id, attempt, attempts=attempts, next_attempt_at=next_attempt_at, last_error=error
        )

    async def outbox_failed(
        self, item_id: int, at: datetime, error: str, attempt: OutboxAttempt | None = None
    ) -> None:
        attempts = self._outbox[item_id].attempts + 1
        self._update(item_id, attempt, attempts=attempts, failed_at=at, last_error=error)

    async def outbox_items(self, conversation_id: str | None = None) -> list[OutboxItem]:
        return [
            copy.deepcopy(i)
            for _, i in sorted(self._outbox.items())
            if conversation_id is None or i.conversation_id == conversation_id
        ]

    async def outbox_item(self, item_id: int) -> OutboxItem | None:
        item = self._outbox.get(item_id)
        return None if item is None else copy.deepcopy(item)

    async def outbox_deliveries(
        self,
        subscription: str,
        state: str | None = None,
        limit: int = 50,
        before_id: int | None = None,
    ) -> list[OutboxItem]:
        found = [
            copy.deepcopy(i)
            for item_id, i in sorted(self._outbox.items(), reverse=True)
            if i.subscription == subscription
            and (state is None or i.status == state)
            and (before_id is None or item_id < before_id)
        ]
        return found[:limit]

    async def outbox_attempts(self, item_ids: Collection[int]) -> dict[int, list[OutboxAttempt]]:
        return {i: list(self._attempts[i]) for i in item_ids if self._attempts.get(i)}

    async def outbox_redeliver(self, item_ids: Collection[int], at: datetime) -> list[int]:
        again = sorted(
            i for i in set(item_ids) if i in self._outbox and self._outbox[i].failed_at is not None
        )
        for item_id in again:
            self._update(item_id, None, failed_at=None, next_attempt_at=at, attempts=0)
        return again

    async def outbox_backlog(self) -> dict[str, int]:
        backlog: dict[str, int] = {}
        for item in self._outbox.values():
            if item.sent_at is None and item.failed_at is None:
                backlog[item.kind] = backlog.get(item.kind, 0) + 1
        return dict(sorted(backlog.items()))

    async def outbox_purge(self, before: datetime, limit: int) -> int:
        def finished(item: OutboxItem) -> datetime | None:
            return item.sent_at or item.failed_at

        old = sorted(
            (
                (at, item_id)
                for item_id, item in self._outbox.items()
                if (at := finished(item)) is not None and at < before and not self._claimed(item_id)
            )
        )[: max(limit, 0)]
        for _, item_id in old:
            item = self._outbox.pop(item_id)
            self._outbox_keys.discard(item.dedupe_key)
            self._attempts.pop(item_id, None)
            self._unclaim(item_id)
        return len(old)

    async def change_config(
        self, change: ConfigChange, expected_version: int | None = None
    ) -> AuditEntry:
        # Stored as JSON, like PostgreSQL would: what cannot be encoded is refused before
        # anything changes (and the round trip is the copy that keeps callers from aliasing).
        try:
            after, before = _json_copy(change.after), _json_copy(change.before)
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            raise StoreError(f"not storable as JSON: {exc}") from None
        if expected_version is not None and expected_version != self._config_version:
            raise StaleConfiguration(
                f"the configuration is at version {self._config_version}, not {expected_version}"
            )
        if after is None:
            self._config.pop((change.kind, change.key), None)
        else:
            self._config[(change.kind, change.key)] = ConfigItem(change.kind, change.key, after)
        entry = AuditEntry(
            id=len(self._audit) + 1,
            at=change.at,
            actor=change.actor,
            action=change.action,
            kind=change.kind,
            key=change.key,
            before=before,
            after=_json_copy(after),
        )
        self._audit.append(entry)
        self._config_version = entry.id
        self._publish([Notice(CONFIG_CHANNEL, f"{change.kind}:{entry.id}")])
        return entry

    async def audit_entries(self, limit: int, before_id: int | None = None) -> list[AuditEntry]:
        entries = [e for e in reversed(self._audit) if before_id is None or e.id < before_id]
        return entries[:limit]

    async def record_action(
        self, at: datetime, actor: str, action: str, kind: str, key: str, detail: dict[str, Any]
    ) -> AuditEntry:
        try:
            after = _json_copy(detail)
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            raise StoreError(f"not storable as JSON: {exc}") from None
        entry = AuditEntry(len(self._audit) + 1, at, actor, action, kind, key, None, after)
        self._audit.append(entry)
        return entry

    # -- inspection, for tests and reports ------------------------------------------------------

    def conversations(self) -> list[Conversation]:
        return [self._snapshot(c) for c in self._conversations.values()]

    def _snapshot(self, conv: Conversation) -> Conversation:
        """A copy of the stored record, as a load from PostgreSQL gives it: its ``last_seq``
        from the stored events, no ``client_ids`` (``load_conversation`` adds them)."""
        clone = copy.copy(conv)
        clone.bot = None if conv.bot is None else conv.bot.copy()
        events = self._events.get(conv.id)
        clone.last_seq = events[-1].seq if events else 0
        clone.client_ids = {}
        return clone

    def all_events(self, conversation_id: str) -> list[StoredEvent]:
        return list(self._events.get(conversation_id, []))

    # -- attachments ----------------------------------------------------------------------------

    async def add_attachment(self, attachment: Attachment) -> None:
        if attachment.conversation_id not in self._conversations:
            raise StoreError(f"no conversation {attachment.conversation_id}")
        if attachment.id in self._attachments:
            raise StoreError(f"attachment {attachment.id} exists")
        self._attachments[attachment.id] = attachment

    async def attachment(self, attachment_id: str) -> Attachment | None:
        return self._attachments.get(attachment_id)

    async def attachment_usage(self, conversation_id: str) -> tuple[int, int]:
        mine = [a for a in self._attachments.values() if a.conversation_id == conversation_id]
        return len(mine), sum(a.size for a in mine)

    async def expired_attachments(
        self, conversations_before: datetime | None, pending_before: datetime, limit: int
    ) -> list[Attachment]:
        def expired(a: Attachment) -> bool:
            conv = self._conversations.get(a.conversation_id)
            old = (
                conversations_before is not None
                and conv is not None
                and conv.created_at < conversations_before
            )
            return old or (a.pending and a.created_at < pending_before)

        found = sorted(
            (a for a in self._attachments.values() if expired(a)),
            key=lambda a: (a.created_at, a.id),
        )
        return found[:limit]

    async def delete_attachments(self, attachment_ids: list[str]) -> None:
        for attachment_id in attachment_ids:
            self._attachments.pop(attachment_id, None)

    async def files_in_use(self, file_keys: list[str]) -> set[str]:
        wanted = set(file_keys)
        return {a.file_key for a in self._attachments.values() if a.file_key in wanted}

    async def attachment_totals(self) -> tuple[int, int]:
        return len(self._attachments), sum(a.size for a in self._attachments.values())

    async def attachment_figures(
        self, start: datetime, end: datetime
    ) -> dict[int, tuple[int, int]]:
        figures: dict[int, tuple[int, int]] = {}
        for a in self._attachments.values():
            conv = self._conversations.get(a.conversation_id)
            if a.pending or conv is None or not start <= conv.created_at < end:
                continue
            files, size = figures.get(conv.service_id, (0, 0))
            figures[conv.service_id] = (files + 1, size + a.size)
        return dict(sorted(figures.items()))


def _json_copy(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    copied: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(value))
    return copied


def _matches(conv: Conversation, q: ConversationQuery) -> bool:
    if q.status is not None and conv.status.value != q.status:
        return False
    if q.service_id is not None and conv.service_id != q.service_id:
        return False
    if q.group_id is not None and conv.group_id != q.group_id:
        return False
    if q.operator_id is not None and conv.operator_id != q.operator_id:
        return False
    if (
        q.scope_operator_id is not None
        and conv.operator_id != q.scope_operator_id
        and conv.service_id not in q.scope_service_ids
    ):
        return False
    created = conv.created_at
    if q.created_from is not None and created < q.created_from:
        return False
    if q.created_to is not None and created >= q.created_to:
        return False
    if q.search:
        needle = q.search.casefold()
        haystack = (conv.visitor.name, conv.visitor.email or "", conv.ticket)
        if not any(needle in field.casefold() for field in haystack):
            return False
    return True
