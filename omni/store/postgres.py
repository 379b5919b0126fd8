"""PostgresStore: the :class:`~omni.store.Store` on PostgreSQL through asyncpg.

Rules:

* asyncpg runs on the asyncio side of :mod:`omni.store.bridge`; the functions it runs are the
  free ``_db_*`` functions below, which take a pool or connection and use the SQL constants of
  this module. Nothing else here touches asyncpg objects.
* **Group commit.** :meth:`PostgresStore.write` does not talk to the database: it hands its rows
  to one batch writer and waits. The writer commits everything waiting — up to ``batch_max``
  writes from any number of conversations, gathered while the previous batch was committing or
  for at most ``batch_linger`` seconds — in one transaction, then releases every waiter. A
  waiter returns only after its batch committed with ``synchronous_commit`` on, so an
  acknowledged message survives a power cut. If a batch fails, its writes are retried one by
  one, so only a write that fails on its own gets the error (a failed claim as
  :class:`~omni.store.AttachmentClaimFailed`, the others as :class:`~omni.store.StoreError`).
  Batches commit on connections the writer holds for its whole life (``in_flight`` of them,
  one batch each; default 1), not on a pooled connection per batch: asyncpg resets a
  connection with a round trip each time it goes back to the pool.
* **Fences and notices.** A write's :attr:`~omni.store.Write.fence` is checked in its batch's
  transaction, before anything is written, with its lease rows locked until the commit
  (:mod:`omni.store.postgres_cluster`); a fence that fails fails the batch, whose writes are then
  retried one by one, so only the fenced write gets :class:`~omni.store.FencedOut`. A write's
  notices are ``pg_notify``-ed in the same transaction: sent at its commit, or never.
* Rows are built in the caller (the conversation actor) at the moment it writes, so the batch
  sees exactly the state of that step. Frames are stored as the JSON text that was delivered;
  replays send that text back without decoding it.
* Migrations are plain numbered SQL files applied in order at start-up, each in its own
  transaction, recorded in ``schema_migrations``; a database whose schema is newer than this
  code is refused.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

import msgspec
import trio

from omni.domain.bot import BotState
from omni.domain.conversation import Conversation, Status, Visitor
from omni.domain.protocol import ChannelRef
from omni.store import (
    CONFIG_CHANNEL,
    Attachment,
    AttachmentClaimFailed,
    AuditEntry,
    ConfigChange,
    ConfigItem,
    ConversationQuery,
    FencedOut,
    OutboxAttempt,
    OutboxItem,
    Pause,
    SignInSession,
    StaleConfiguration,
    StoredEvent,
    StoreError,
    Write,
)
from omni.store.bridge import Bridge, open_bridge
from omni.store.postgres_cluster import Q_FENCE, Q_NOTIFY_ALL, PostgresCoordination

log = logging.getLogger(__name__)


# -- SQL ------------------------------------------------------------------------------------------

_Q_CREATE_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""
_Q_LOCK_MIGRATIONS = "SELECT pg_advisory_xact_lock(7266001)"
_Q_APPLIED = "SELECT coalesce(max(version), 0) FROM schema_migrations"
_Q_IS_APPLIED = "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)"
_Q_RECORD_MIGRATION = "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)"

_Q_NEXT_TICKET = """
INSERT INTO tickets (year, last) VALUES ($1, 1)
ON CONFLICT (year) DO UPDATE SET last = tickets.last + 1
RETURNING last"""

_Q_UPSERT_CONVERSATION = """
INSERT INTO conversations (id, ticket, service_id, token_hash, visitor, status, group_id,
    operator_id, operator_name, offered_to, ended_by, grace_pending, waiting_since, created_at,
    answered_at, ended_at, arrived_out_of_hours, bot, survey, channel_kind, channel_id,
    channel_user)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
    $20, $21, $22)
ON CONFLICT (id) DO UPDATE SET
    status = excluded.status, group_id = excluded.group_id, operator_id = excluded.operator_id,
    operator_name = excluded.operator_name, offered_to = excluded.offered_to,
    ended_by = excluded.ended_by, grace_pending = excluded.grace_pending,
    waiting_since = excluded.waiting_since, answered_at = excluded.answered_at,
    ended_at = excluded.ended_at, visitor = excluded.visitor, bot = excluded.bot,
    arrived_out_of_hours = excluded.arrived_out_of_hours, survey = excluded.survey,
    updated_at = now()"""

_EVENT_COLUMNS = ("conversation_id", "seq", "kind", "audience", "author_key", "client_id", "frame")
_Q_INSERT_EVENT = """
INSERT INTO events (conversation_id, seq, kind, audience, author_key, client_id, frame)
VALUES ($1, $2, $3, $4, $5, $6, $7)"""

_Q_UPSERT_SURVEY = """
INSERT INTO surveys (conversation_id, answers, skipped) VALUES ($1, $2, $3)
ON CONFLICT (conversation_id) DO UPDATE
    SET answers = excluded.answers, skipped = excluded.skipped, answered_at = now()"""

_CONVERSATION_COLUMNS = """id, ticket, service_id, token_hash, visitor, status, group_id,
    operator_id, operator_name, offered_to, ended_by, grace_pending, waiting_since, created_at,
    answered_at, ended_at, arrived_out_of_hours, bot, survey, channel_kind, channel_id,
    channel_user,
    (SELECT max(seq) FROM events WHERE conversation_id = conversations.id) AS last_seq"""

_Q_LOAD_CONVERSATION = f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id = $1"
_Q_LAST_SEQ_AND_CLIENTS = """
SELECT seq, author_key, client_id FROM events
WHERE conversation_id = $1 AND (client_id IS NOT NULL OR seq = (
    SELECT max(seq) FROM events WHERE conversation_id = $1))"""
_Q_FIND_BY_TOKEN = "SELECT id FROM conversations WHERE token_hash = $1"
_Q_EVENTS_AFTER = """
SELECT seq, kind, audience, author_key, client_id, frame::text AS frame FROM events
WHERE conversation_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"""
_Q_SURVEY = "SELECT answers FROM surveys WHERE conversation_id = $1"
_Q_OPEN_CONVERSATIONS = f"""
SELECT {_CONVERSATION_COLUMNS} FROM conversations
WHERE status IN ('bot', 'queued', 'offered', 'active', 'ended')
ORDER BY waiting_since, ticket"""
_Q_OPEN_PLACES = """
SELECT id, group_id, service_id FROM conversations
WHERE status IN ('bot', 'queued', 'offered', 'active', 'ended')
ORDER BY waiting_since, ticket"""
_Q_COUNT_EVENTS = "SELECT count(*) FROM events"
_Q_CHANNEL_CONVERSATION = """
SELECT id FROM conversations
WHERE channel_id = $1 AND channel_user = $2 AND status NOT IN ('closed', 'abandoned')
ORDER BY created_at DESC LIMIT 1"""
_Q_INBOUND_SEEN = "SELECT 1 FROM channel_inbound WHERE channel_id = $1 AND message_id = $2"
_Q_RECORD_INBOUND = """
INSERT INTO channel_inbound (channel_id, message_id, conversation_id, received_at)
VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING"""
_Q_CREATED_BETWEEN = f"""
SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE created_at >= $1 AND created_at < $2"""

_Q_CONFIG_ITEMS = "SELECT kind, key, body FROM config_items ORDER BY kind, key"
_Q_UPSERT_CONFIG = """
INSERT INTO config_items (kind, key, body) VALUES ($1, $2, $3)
ON CONFLICT (kind, key) DO UPDATE SET body = excluded.body, updated_at = now()"""
_Q_DELETE_CONFIG = "DELETE FROM config_items WHERE kind = $1 AND key = $2"
#: Held by every configuration change until its commit: one at a time, whichever node makes it,
#: so the version read under it is the last one ("omnicfg" in ASCII, an advisory lock's key).
_CONFIG_LOCK = 0x6F6D6E69636667
_Q_LOCK_CONFIG = "SELECT pg_advisory_xact_lock($1)"
#: The configuration's version: its last change's audit entry (actions of ``record_action``
#: are never these three).
_Q_CONFIG_VERSION = """
SELECT coalesce(max(id), 0) FROM audit_log WHERE action IN ('create', 'update', 'delete')"""
_Q_NOTIFY_CONFIG = "SELECT pg_notify($1, $2)"
_Q_INSERT_AUDIT = """
INSERT INTO audit_log (at, actor, action, kind, key, before, after)
VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id"""
_Q_LAST_DELETED = """
SELECT before FROM audit_log WHERE kind = $1 AND key = $2 AND action = 'delete'
ORDER BY id DESC LIMIT 1"""
_Q_AUDIT = """
SELECT id, at, actor, action, kind, key, before, after FROM audit_log
WHERE $2::bigint IS NULL OR id < $2 ORDER BY id DESC LIMIT $1"""

_Q_FORGET_EXPIRED_SESSIONS = "DELETE FROM sessions WHERE expires_at <= $1"
_Q_ADD_SESSION = """
INSERT INTO sessions (token_hash, user_id, generation, created_at, expires_at)
VALUES ($1, $2, $3, $4, $5)"""
_Q_FIND_SESSION = """
SELECT token_hash, user_id, generation, created_at, expires_at FROM sessions
WHERE token_hash = $1"""
_Q_END_SESSIONS = "DELETE FROM sessions WHERE user_id = $1"

# An open pause never ends before it started (the table's check): the clock is the server's
# own, but a pause is ended by whatever instant the caller gives.
_Q_END_PAUSE = """
UPDATE pauses SET ended_at = greatest(started_at, $2)
WHERE operator_id = $1 AND ended_at IS NULL"""
_Q_START_PAUSE = """
INSERT INTO pauses (operator_id, reason, started_at, seen_at) VALUES ($1, $2, $3, $3)"""
_Q_PAUSES_ONGOING = """
UPDATE pauses SET seen_at = greatest(seen_at, $1) WHERE ended_at IS NULL"""
_Q_END_INTERRUPTED_PAUSES = "UPDATE pauses SET ended_at = seen_at WHERE ended_at IS NULL"
# The same expression as the pauses_period index, so that the index answers it.
_Q_PAUSES_BETWEEN = """
SELECT operator_id, reason, started_at, ended_at FROM pauses
WHERE tstzrange(started_at, ended_at, '[)') && tstzrange($1, $2, '[)')
ORDER BY started_at, id"""

_Q_ENQUEUE = """
INSERT INTO outbox (kind, dedupe_key, conversation_id, payload, created_at, next_attempt_at)
VALUES ($1, $2, $3, $4, $5, $5)
ON CONFLICT (dedupe_key) DO NOTHING
RETURNING id"""
_Q_ENQUEUE_ENTRY = """
INSERT INTO outbox (kind, dedupe_key, conversation_id, payload, created_at, next_attempt_at,
    subscription, body)
VALUES ($1, $2, $3, $4, $5, $5, $6, $7)
ON CONFLICT (dedupe_key) DO NOTHING"""
_OUTBOX_COLUMNS = """id, kind, dedupe_key, conversation_id, payload, created_at, attempts,
    next_attempt_at, sent_at, failed_at, last_error, subscription, body"""
_PENDING = "o.sent_at IS NULL AND o.failed_at IS NULL"
# The oldest pending delivery of its subscription and conversation (e-mails have no order).
_HEAD = """(o.subscription IS NULL OR NOT EXISTS (
    SELECT 1 FROM outbox b
    WHERE b.subscription = o.subscription AND b.conversation_id = o.conversation_id
      AND b.id < o.id AND b.sent_at IS NULL AND b.failed_at IS NULL))"""
_Q_OUTBOX_DUE = f"""
SELECT {_OUTBOX_COLUMNS} FROM outbox o
WHERE {_PENDING} AND o.next_attempt_at <= $1
  AND ($3::text[] IS NULL OR o.kind = ANY($3::text[])) AND {_HEAD}
ORDER BY o.next_attempt_at, o.id LIMIT $2"""
_Q_OUTBOX_NEXT_DUE = f"""
SELECT min(o.next_attempt_at) FROM outbox o
WHERE {_PENDING} AND ($1::text[] IS NULL OR o.kind = ANY($1::text[]))
  AND ($2::timestamptz IS NULL OR o.next_attempt_at > $2) AND {_HEAD}"""
# Due heads (the same conditions as outbox_due), not claimed by anyone now; SKIP LOCKED: two
# claimants at once take different items. A claimed item stays pending, so the next item of
# its subscription and conversation is not a head (not due) while it is claimed.
_Q_OUTBOX_CLAIM = f"""
WITH due AS (
    SELECT o.id FROM outbox o
    WHERE {_PENDING} AND o.next_attempt_at <= $1
      AND ($3::text[] IS NULL OR o.kind = ANY($3::text[]))
      AND (o.claimed_until IS NULL OR o.claimed_until <= now())
      AND {_HEAD}
    ORDER BY o.next_attempt_at, o.id LIMIT $2
    FOR UPDATE OF o SKIP LOCKED
)
UPDATE outbox o SET claimed_by = $4, claimed_until = now() + make_interval(secs => $5)
FROM due WHERE o.id = due.id
RETURNING o.id, o.kind, o.dedupe_key, o.conversation_id, o.payload, o.created_at, o.attempts,
    o.next_attempt_at, o.sent_at, o.failed_at, o.last_error, o.subscription, o.body"""
# Recording an outcome ends the item's claim.
_UNCLAIM = "claimed_by = NULL, claimed_until = NULL"
_Q_OUTBOX_SENT = f"UPDATE outbox SET sent_at = $2, {_UNCLAIM} WHERE id = $1"
_Q_OUTBOX_RETRY = f"""
UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3, {_UNCLAIM}
WHERE id = $1"""
_Q_OUTBOX_FAILED = f"""
UPDATE outbox SET attempts = attempts + 1, failed_at = $2, last_error = $3, {_UNCLAIM}
WHERE id = $1"""
_Q_OUTBOX_ATTEMPT = """
INSERT INTO outbox_attempts (item_id, at, duration, status_code, error)
VALUES ($1, $2, $3, $4, $5)"""
_Q_OUTBOX_ITEMS = f"""
SELECT {_OUTBOX_COLUMNS} FROM outbox
WHERE $1::text IS NULL OR conversation_id = $1 ORDER BY id"""
_Q_OUTBOX_ITEM = f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE id = $1"
_Q_OUTBOX_DELIVERIES = f"""
SELECT {_OUTBOX_COLUMNS} FROM outbox
WHERE subscription = $1 AND ($3::bigint IS NULL OR id < $3)
  AND ($4::text IS NULL
       OR ($4 = 'sent' AND sent_at IS NOT NULL)
       OR ($4 = 'failed' AND failed_at IS NOT NULL)
       OR ($4 = 'pending' AND sent_at IS NULL AND failed_at IS NULL))
ORDER BY id DESC LIMIT $2"""
_Q_OUTBOX_ATTEMPTS = """
SELECT item_id, at, duration, status_code, error FROM outbox_attempts
WHERE item_id = ANY($1::bigint[]) ORDER BY item_id, id"""
_Q_OUTBOX_REDELIVER = f"""
UPDATE outbox SET failed_at = NULL, next_attempt_at = $2, attempts = 0, {_UNCLAIM}
WHERE id = ANY($1::bigint[]) AND failed_at IS NOT NULL RETURNING id"""
_Q_OUTBOX_BACKLOG = """
SELECT kind, count(*) FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL
GROUP BY kind ORDER BY kind"""

_ATTACHMENT_COLUMNS = """id, conversation_id, uploaded_by, name, size, content_type, file_key,
    created_at, claimed_at"""
_Q_ADD_ATTACHMENT = f"""
INSERT INTO attachments ({_ATTACHMENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"""
_Q_ATTACHMENT = f"SELECT {_ATTACHMENT_COLUMNS} FROM attachments WHERE id = $1"
_Q_ATTACHMENT_USAGE = """
SELECT count(*), coalesce(sum(size), 0)::bigint FROM attachments WHERE conversation_id = $1"""
_Q_EXPIRED_ATTACHMENTS = """
SELECT a.id, a.conversation_id, a.uploaded_by, a.name, a.size, a.content_type, a.file_key,
    a.created_at, a.claimed_at
FROM attachments a JOIN conversations c ON c.id = a.conversation_id
WHERE ($1::timestamptz IS NOT NULL AND c.created_at < $1)
   OR (a.claimed_at IS NULL AND a.created_at < $2)
ORDER BY a.created_at, a.id LIMIT $3"""
# Finished (sent or failed) before $1, not claimed now; their attempts go with them (ON DELETE
# CASCADE). SKIP LOCKED: an item being redelivered meanwhile is left for the next pass.
_Q_OUTBOX_PURGE = """
WITH old AS (
    SELECT id FROM outbox
    WHERE (sent_at IS NOT NULL OR failed_at IS NOT NULL) AND coalesce(sent_at, failed_at) < $1
      AND (claimed_until IS NULL OR claimed_until <= now())
    ORDER BY coalesce(sent_at, failed_at), id LIMIT $2
    FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM outbox o USING old WHERE o.id = old.id RETURNING 1
)
SELECT count(*) FROM gone"""
_Q_DELETE_ATTACHMENTS = "DELETE FROM attachments WHERE id = ANY($1::text[])"
_Q_FILES_IN_USE = """
SELECT DISTINCT file_key FROM attachments WHERE file_key = ANY($1::text[])"""
_Q_ATTACHMENT_TOTALS = "SELECT count(*), coalesce(sum(size), 0)::bigint FROM attachments"
_Q_ATTACHMENT_FIGURES = """
SELECT c.service_id, count(*), sum(a.size)::bigint
FROM attachments a JOIN conversations c ON c.id = a.conversation_id
WHERE a.claimed_at IS NOT NULL AND c.created_at >= $1 AND c.created_at < $2
GROUP BY c.service_id ORDER BY c.service_id"""
_Q_CLAIM_ATTACHMENTS = """
UPDATE attachments a SET claimed_at = c.at
FROM unnest($1::text[], $2::timestamptz[]) AS c(id, at)
WHERE a.id = c.id AND a.claimed_at IS NULL"""

#: Seconds a statement may take before asyncpg gives up on it (pool and writer connections).
_COMMAND_TIMEOUT = 60

_json_encoder = msgspec.json.Encoder()


def _json(value: Any) -> str:
    """jsonb parameters: text that is already JSON (a delivered frame) goes in as it is."""
    if isinstance(value, str):
        return value
    return _json_encoder.encode(value).decode()


# -- migrations -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The numbered SQL files shipped in ``omni/store/migrations``, in order."""
    found = []
    for entry in resources.files("omni.store.migrations").iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            found.append(Migration(int(number), rest.removesuffix(".sql"), entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    # Increasing and unique; a gap is a number kept for a migration of another branch.
    assert versions == sorted(set(versions)) and versions[:1] == [1], (
        f"migration numbers must be unique, from 1: {versions}"
    )
    return found


async def _db_migrate(pool: Any, known: list[Migration]) -> list[int]:
    applied: list[int] = []
    async with pool.acquire() as conn:
        await conn.execute(_Q_CREATE_MIGRATIONS)
        async with conn.transaction():
            await conn.execute(_Q_LOCK_MIGRATIONS)
            current = await conn.fetchval(_Q_APPLIED)
            newest = known[-1].version if known else 0
            if current > newest:
                raise StoreError(
                    f"the database schema is at version {current}, newer than this Omni "
                    f"(which knows up to {newest}): upgrade Omni"
                )
        for migration in known:
            # By membership, not by the highest number: a number left free for a migration
            # of a parallel branch (docs/operations.md) is applied when it arrives.
            async with conn.transaction():
                await conn.execute(_Q_LOCK_MIGRATIONS)
                if await conn.fetchval(_Q_IS_APPLIED, migration.version):
                    continue  # applied before, or by another process meanwhile
                await conn.execute(migration.sql)
                await conn.execute(_Q_RECORD_MIGRATION, migration.version, migration.name)
                applied.append(migration.version)
    return applied


# -- database functions (asyncio side) ------------------------------------------------------------


async def _init_connection(conn: Any) -> None:
    await conn.set_type_codec(
        "jsonb", encoder=_json, decoder=msgspec.json.decode, schema="pg_catalog", format="text"
    )


async def _db_reset(conn: Any) -> None:
    """What a connection needs when it goes back to the pool: only a rollback, if a failure
    left a transaction open. (asyncpg's default reset — unlock advisory locks, close cursors,
    UNLISTEN, RESET ALL — is one more round trip per use; this store takes no session lock,
    keeps no cursor past a call, listens on connections of its own, and sets nothing.)"""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def _db_create_pool(dsn: str, min_size: int, max_size: int) -> Any:
    import asyncpg

    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_db_reset,
        command_timeout=_COMMAND_TIMEOUT,
    )


async def _db_close_pool(pool: Any) -> None:
    await pool.close()


async def _db_fetchval(pool: Any, query: str, *args: Any) -> Any:
    return await pool.fetchval(query, *args)


async def _db_fetch(pool: Any, query: str, *args: Any) -> list[Any]:
    rows: list[Any] = await pool.fetch(query, *args)
    return rows


class _WriterConnection:
    """A connection of the batch writer's own, held for the writer's whole life (asyncio side).

    Not a pooled connection per batch: asyncpg resets a connection with a round trip each time
    it goes back to the pool. A connection that broke is replaced by the next batch.
    """

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn: Any = None

    async def connection(self) -> Any:
        if self.conn is not None and self.conn.is_closed():
            self.conn = None
        if self.conn is None:
            import asyncpg

            conn = await asyncpg.connect(self.dsn, command_timeout=_COMMAND_TIMEOUT)
            await _init_connection(conn)
            self.conn = conn
        return self.conn

    async def aclose(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None and not conn.is_closed():
            await conn.close()


async def _db_writer_connections(dsn: str, count: int) -> list[_WriterConnection]:
    writers = [_WriterConnection(dsn) for _ in range(count)]
    try:
        for writer in writers:
            await writer.connection()
    except BaseException:
        await _db_close_writers(writers)
        raise
    return writers


async def _db_close_writers(writers: list[_WriterConnection]) -> None:
    for writer in writers:
        await writer.aclose()


async def _db_commit(
    writer: _WriterConnection,
    conversations: list[tuple[Any, ...]],
    events: list[tuple[Any, ...]],
    surveys: list[tuple[Any, ...]],
    claims: list[tuple[str, datetime]],
    outbox: list[tuple[Any, ...]],
    fences: list[tuple[str, int]] | None = None,
    notices: list[tuple[str, str]] | None = None,
) -> None:
    conn = await writer.connection()
    if not (conversations or surveys or claims or outbox or fences or notices):
        # Only events (the common case: messages): one statement is atomic on its own, so
        # no BEGIN/COMMIT round trips around it.
        await _db_insert_events(conn, events)
        return
    async with conn.transaction():
        if fences:
            # First, and locked until the commit: no owner change can slip in between.
            current = await conn.fetch(Q_FENCE, [f[0] for f in fences], [f[1] for f in fences])
            if len(current) != len(fences):
                raise FencedOut("a lease this write is fenced by is not current")
        if conversations:
            await conn.executemany(_Q_UPSERT_CONVERSATION, conversations)
        await _db_insert_events(conn, events)
        if surveys:
            await conn.executemany(_Q_UPSERT_SURVEY, surveys)
        if claims:
            # In the messages' transaction: a file's message and its claim commit together.
            status = await conn.execute(
                _Q_CLAIM_ATTACHMENTS, [c[0] for c in claims], [c[1] for c in claims]
            )
            if status != f"UPDATE {len(claims)}":
                raise AttachmentClaimFailed("an attachment to claim is unknown or claimed already")
        if outbox:
            # The transactional outbox: a step's webhooks commit with its events, or neither.
            await conn.executemany(_Q_ENQUEUE_ENTRY, outbox)
        if notices:
            # Sent by PostgreSQL at the commit, and only then: a notice means committed data.
            await conn.execute(Q_NOTIFY_ALL, [n[0] for n in notices], [n[1] for n in notices])


async def _db_insert_events(conn: Any, events: list[tuple[Any, ...]]) -> None:
    if len(events) > 1:
        # COPY, not one INSERT per row: the bulk of every batch is its events.
        await conn.copy_records_to_table("events", records=events, columns=_EVENT_COLUMNS)
    elif events:
        await conn.execute(_Q_INSERT_EVENT, *events[0])


async def _db_outbox_update(
    pool: Any, query: str, args: tuple[Any, ...], attempt: OutboxAttempt | None, item_id: int
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(query, *args)
        if attempt is not None:
            await conn.execute(
                _Q_OUTBOX_ATTEMPT,
                item_id,
                attempt.at,
                attempt.duration,
                attempt.status_code,
                attempt.error,
            )


async def _db_add_session(pool: Any, session: SignInSession) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_Q_FORGET_EXPIRED_SESSIONS, session.created_at)
        await conn.execute(
            _Q_ADD_SESSION,
            session.token_hash,
            session.user_id,
            session.generation,
            session.created_at,
            session.expires_at,
        )


async def _db_start_pause(pool: Any, operator_id: int, reason: str | None, at: datetime) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_Q_END_PAUSE, operator_id, at)
        await conn.execute(_Q_START_PAUSE, operator_id, reason, at)


async def _db_execute(pool: Any, query: str, *args: Any) -> str:
    status: str = await pool.execute(query, *args)
    return status


async def _db_change_config(pool: Any, change: Any, action: str, expected: int | None) -> int:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_Q_LOCK_CONFIG, _CONFIG_LOCK)
        if expected is not None:
            version = await conn.fetchval(_Q_CONFIG_VERSION)
            if version != expected:
                raise StaleConfiguration(
                    f"the configuration is at version {version}, not {expected}"
                )
        if change.after is None:
            await conn.execute(_Q_DELETE_CONFIG, change.kind, change.key)
        else:
            await conn.execute(_Q_UPSERT_CONFIG, change.kind, change.key, change.after)
        entry_id: int = await conn.fetchval(
            _Q_INSERT_AUDIT,
            change.at,
            change.actor,
            action,
            change.kind,
            change.key,
            change.before,
            change.after,
        )
        # Sent by PostgreSQL at the commit, and only then: the other nodes read it back.
        await conn.execute(_Q_NOTIFY_CONFIG, CONFIG_CHANNEL, f"{change.kind}:{entry_id}")
        return entry_id


def _conversation_filter(q: ConversationQuery) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []

    def add(clause: str, *values: Any) -> None:
        args.extend(values)
        clauses.append(
            clause.format(*(f"${len(args) - len(values) + i + 1}" for i in range(len(values))))
        )

    if q.status is not None:
        add("status = {0}", q.status)
    if q.service_id is not None:
        add("service_id = {0}", q.service_id)
    if q.group_id is not None:
        add("group_id = {0}", q.group_id)
    if q.operator_id is not None:
        add("operator_id = {0}", q.operator_id)
    if q.scope_operator_id is not None:
        add(
            "(operator_id = {0} OR service_id = ANY({1}::integer[]))",
            q.scope_operator_id,
            sorted(q.scope_service_ids),
        )
    if q.created_from is not None:
        add("created_at >= {0}", q.created_from)
    if q.created_to is not None:
        add("created_at < {0}", q.created_to)
    if q.search:
        pattern = "%" + q.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        add(
            "(visitor->>'name' ILIKE {0} OR visitor->>'email' ILIKE {0} OR ticket ILIKE {0})",
            pattern,
        )
    if q.cursor is not None:
        add("(created_at, id) < ({0}, {1})", *q.cursor)
    where = " AND ".join(clauses) or "true"
    args.append(q.limit)
    sql = (
        f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE {where} "
        f"ORDER BY created_at DESC, id DESC LIMIT ${len(args)}"
    )
    return sql, args


async def _db_load(pool: Any, conversation_id: str) -> tuple[Any, list[Any]]:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(_Q_LOAD_CONVERSATION, conversation_id)
        if row is None:
            return None, []
        return row, await conn.fetch(_Q_LAST_SEQ_AND_CLIENTS, conversation_id)


# -- rows -----------------------------------------------------------------------------------------


def _conversation_row(conv: Conversation) -> tuple[Any, ...]:
    return (
        conv.id,
        conv.ticket,
        conv.service_id,
        conv.token_hash,
        conv.visitor,
        conv.status.value,
        conv.group_id,
        conv.operator_id,
        conv.operator_name,
        conv.offered_to,
        conv.ended_by,
        conv.grace_pending,
        conv.waiting_since,
        conv.created_at,
        conv.answered_at,
        conv.ended_at,
        conv.arrived_out_of_hours,
        conv.bot,
        conv.survey,
        None if conv.channel is None else conv.channel.kind,
        None if conv.channel is None else conv.channel.id,
        conv.channel_user,
    )


def _conversation_from_row(row: Any) -> Conversation:
    return Conversation(
        id=row["id"],
        ticket=row["ticket"],
        service_id=row["service_id"],
        token_hash=row["token_hash"],
        visitor=msgspec.convert(row["visitor"], Visitor),
        status=Status(row["status"]),
        group_id=row["group_id"],
        created_at=row["created_at"],
        waiting_since=row["waiting_since"],
        operator_id=row["operator_id"],
        operator_name=row["operator_name"],
        offered_to=row["offered_to"],
        ended_by=row["ended_by"],
        grace_pending=row["grace_pending"],
        answered_at=row["answered_at"],
        ended_at=row["ended_at"],
        arrived_out_of_hours=row["arrived_out_of_hours"],
        last_seq=row["last_seq"] or 0,
        bot=None if row["bot"] is None else msgspec.convert(row["bot"], BotState),
        survey=row["survey"],
        channel=(
            None
            if row["channel_id"] is None
            else ChannelRef(row["channel_kind"], row["channel_id"])
        ),
        channel_user=row["channel_user"],
    )


def _list(kinds: Collection[str] | None) -> list[str] | None:
    return None if kinds is None else sorted(kinds)


def _outbox_item(row: Any) -> OutboxItem:
    return OutboxItem(
        row["id"],
        row["kind"],
        row["dedupe_key"],
        row["conversation_id"],
        row["payload"],
        row["created_at"],
        row["attempts"],
        row["next_attempt_at"],
        row["sent_at"],
        row["failed_at"],
        row["last_error"],
        row["subscription"],
        row["body"],
    )


def _attachment(row: Any) -> Attachment:
    return Attachment(
        row["id"],
        row["conversation_id"],
        row["uploaded_by"],
        row["name"],
        row["size"],
        row["content_type"],
        row["file_key"],
        row["created_at"],
        row["claimed_at"],
    )


class _Batch:
    """Writes that commit together, as rows ready for the database; their callers wait on
    :attr:`done`."""

    __slots__ = (
        "claims",
        "conversations",
        "done",
        "errors",
        "events",
        "fences",
        "notices",
        "outbox",
        "surveys",
        "writes",
    )

    def __init__(self) -> None:
        self.writes: list[Write] = []
        self.conversations: list[tuple[Any, ...]] = []
        self.events: list[tuple[Any, ...]] = []
        self.surveys: list[tuple[Any, ...]] = []
        self.claims: list[tuple[str, datetime]] = []
        self.outbox: list[tuple[Any, ...]] = []
        #: Distinct (resource, epoch) the writes are fenced by.
        self.fences: list[tuple[str, int]] = []
        self.notices: list[tuple[str, str]] = []
        self.done = trio.Event()
        #: Position of a write in :attr:`writes` -> why it was not stored.
        self.errors: dict[int, BaseException] = {}

    def add(self, write: Write) -> int:
        """Take ``write``'s rows (built now: the batch stores the state of this step); returns
        its position."""
        conv = write.conversation
        if conv is not None:
            self.conversations.append(_conversation_row(conv))
            if write.survey is not None or write.survey_skipped:
                self.surveys.append((conv.id, write.survey, write.survey is None))
        self.claims += write.claims
        if write.fence is not None:
            fence = (write.fence.resource, write.fence.epoch)
            if fence not in self.fences:
                self.fences.append(fence)
        self.notices += [(n.channel, n.payload) for n in write.notices]
        for o in write.outbox:
            self.outbox.append(
                (
                    o.kind,
                    o.dedupe_key,
                    o.conversation_id,
                    o.payload,
                    o.created_at,
                    o.subscription,
                    o.body,
                )
            )
        append = self.events.append
        for e in write.events:
            key = e.client_key
            append(
                (
                    e.conversation_id,
                    e.seq,
                    e.kind,
                    e.audience,
                    key[0] if key else None,
                    key[1] if key else None,
                    e.frame,
                )
            )
        self.writes.append(write)
        return len(self.writes) - 1


@dataclass
class BatchStatistics:
    batches: int = 0
    writes: int = 0
    largest: int = 0


class PostgresStore(PostgresCoordination):
    def __init__(
        self, bridge: Bridge, pool: Any, writers: list[Any], batch_max: int = 512, dsn: str = ""
    ) -> None:
        self._bridge = bridge
        self._pool = pool
        #: Where notices are listened for (a connection of its own).
        self._dsn = dsn
        #: Writer connections not committing a batch now (opaque asyncio-side handles).
        self._writers = writers
        self._batch_max = batch_max
        #: Batches waiting for a writer connection; writes join the last one until it is full.
        self._waiting: deque[_Batch] = deque()
        self._wakeup = trio.Event()
        self._closed = False
        self.batch_statistics = BatchStatistics()

    # -- the Store protocol ---------------------------------------------------------------------

    async def next_ticket(self, year: int) -> int:
        number: int = await self._bridge.run(_db_fetchval, self._pool, _Q_NEXT_TICKET, year)
        return number

    async def write(self, write: Write) -> None:
        if self._closed:
            raise StoreError("the write was not stored: the store is closed")
        waiting = self._waiting
        if waiting and len(waiting[-1].writes) < self._batch_max:
            batch = waiting[-1]
        else:
            batch = _Batch()
            waiting.append(batch)
        position = batch.add(write)
        self._wakeup.set()
        await batch.done.wait()
        error = batch.errors.get(position)
        if error is not None:
            # The claim's and the fence's own classes reach their caller, who can answer them.
            kind = StoreError
            for special in (AttachmentClaimFailed, FencedOut):
                if isinstance(error, special):
                    kind = special
            raise kind(f"the write was not stored: {error}") from error

    async def load_conversation(self, conversation_id: str) -> Conversation | None:
        row, events = await self._bridge.run(_db_load, self._pool, conversation_id)
        if row is None:
            return None
        conv = _conversation_from_row(row)
        for event in events:
            conv.last_seq = max(conv.last_seq, event["seq"])
            if event["client_id"] is not None:
                conv.client_ids[(event["author_key"], event["client_id"])] = event["seq"]
        return conv

    async def find_by_token_hash(self, token_hash: str) -> str | None:
        found: str | None = await self._bridge.run(
            _db_fetchval, self._pool, _Q_FIND_BY_TOKEN, token_hash
        )
        return found

    async def events_after(
        self, conversation_id: str, after_seq: int, limit: int | None = None
    ) -> list[StoredEvent]:
        rows = await self._bridge.run(
            _db_fetch, self._pool, _Q_EVENTS_AFTER, conversation_id, after_seq, limit
        )
        return [
            StoredEvent(
                conversation_id,
                row["seq"],
                row["kind"],
                row["audience"],
                row["frame"],
                (row["author_key"], row["client_id"]) if row["client_id"] is not None else None,
            )
            for row in rows
        ]

    async def survey(self, conversation_id: str) -> dict[str, Any] | None:
        answers: dict[str, Any] | None = await self._bridge.run(
            _db_fetchval, self._pool, _Q_SURVEY, conversation_id
        )
        return answers

    async def open_conversations(self) -> list[Conversation]:
        rows = await self._bridge.run(_db_fetch, self._pool, _Q_OPEN_CONVERSATIONS)
        conversations = []
        for row in rows:
            conv = await self.load_conversation(row["id"])
            if conv is not None:
                conversations.append(conv)
        return conversations

    async def open_conversation_places(self) -> list[tuple[str, int | None, int]]:
        rows = await self._bridge.run(_db_fetch, self._pool, _Q_OPEN_PLACES)
        return [(row["id"], row["group_id"], row["service_id"]) for row in rows]

    async def channel_conversation(self, channel_id: str, user: str) -> str | None:
        found: str | None = await self._bridge.run(
            _db_fetchval, self._pool, _Q_CHANNEL_CONVERSATION, channel_id, user
        )
        return found

    async def inbound_seen(self, channel_id: str, message_id: str) -> bool:
        found = await self._bridge.run(
            _db_fetchval, self._pool, _Q_INBOUND_SEEN, channel_id, message_id
        )
        return found is not None

    async def record_inbound(
        self, channel_id: str, message_id: str, conversation_id: str, at: datetime
    ) -> None:
        await self._bridge.run(
            _db_execute, self._pool, _Q_RECORD_INBOUND, channel_id, message_id, conversation_id, at
        )

    async def list_conversations(self, query: ConversationQuery) -> list[Conversation]:
        sql, args = _conversation_filter(query)
        rows = await self._bridge.run(_db_fetch, self._pool, sql, *args)
        return [_conversation_from_row(row) for row in rows]

    async def conversations_created_between(
        self, start: datetime, end: datetime
    ) -> list[Conversation]:
        rows = await self._bridge.run(_db_fetch, self._pool, _Q_CREATED_BETWEEN, start, end)
        return [_conversation_from_row(row) for row in rows]

    async def config_items(self) -> list[ConfigItem]:
        rows = await self._bridge.run(_db_fetch, self._pool, _Q_CONFIG_ITEMS)
        return [ConfigItem(row["kind"], row["key"], row["body"]) for row in rows]

    async def config_version(self) -> int:
        version: int = await self._bridge.run(_db_fetchval, self._pool, _Q_CONFIG_VERSION)
        return version

    async def change_config(
        self, change: ConfigChange, expected_version: int | None = None
    ) -> AuditEntry:
        entry_id = await self._bridge.run(
            _db_change_config, self._pool, change, change.action, expected_version
        )
        return AuditEntry(
            entry_id,
            change.at,
            change.actor,
            change.action,
            change.kind,
            change.key,
            change.before,
            change.after,
        )

    async def deleted_config(self, kind: str, key: str) -> dict[str, Any] | None:
        before: dict[str, Any] | None = await self._bridge.run(
            _db_fetchval, self._pool, _Q_LAST_DELETED, kind, key
        )
        return before

    async def add_session(self, session: SignInSession) -> None:
        await self._bridge.run(_db_add_session, self._pool, session)

    async def find_session(self, token_hash: str) -> SignInSession | None:
        rows = await self._bridge.run(_db_fetch, self._pool, _Q_FIND_SESSION, token_hash)
        if not rows:
            return None
        row = rows[0]
        return SignInSession(
            row["token_hash"],
            row["user_id"],
            row["generation"],
            row["created_at"],
            row["expires_at"],
        )

    async def end_sessions(self, user_id: str) -> int:
        status = await self._bridge.run(_db_execute, self._pool, _Q_END_SESSIONS, user_id)
        return int(status.rpartition(" ")[2] or 0)

    async def record_action(
        self, at: datetime, actor: str, action: str, kind: str, key: str, detail: dict[str, Any]
    ) -> AuditEntry:
        entry_id: int = await self._bridge.run(
            _db_fetchval, self._pool, _Q_INSERT_AUDIT, at, actor, action, kind, key, None, detail
        )
        return AuditEntry(entry_id, at, actor, action, kind, key, None, detail)

    async def audit_entries(self, limit: int, before_id: int | None = None) -> list[AuditEntry]:
        rows = await self._bridge.run(_db_fetch, self._pool, _Q_AUDIT, limit, before_id)
        return [
            AuditEntry(
                row["id"],
                row["at"],
                row["actor"],
                row["action"],
                row["kind"],
                row["key"],
                row["before"],
                row["after"],
            )
            for row in rows
        ]

    # -- operators' pauses ----------------------------------------------------------------------

    async def pause_started(self, operator_id: int, reason: str | None, at: datetime) -> None:
        await self._bridge.run(_db_start_pause, self._pool, operator_id, reason, at)

    async def pause_ended(self, operator_id: int, at: datetime) -> None:
        await self._bridge.run(_db_execute, self._pool, _Q_END_PAUSE, operator_id, at)

    async def pauses_ongoing(self, at: datetime) -> None:
        await self._bridge.run(_db_execute, self._pool, _Q_PAUSES_ONGOING, at)

    async def end_interrupted_pauses(self) -> int:
        status = await self._bridge.run(_db_execute, self._pool, _Q_END_INTERRUPTED_PAUSES)
        return int(status.rpartition(" ")[2] or 0)

    async def pauses_between(self, start: datetime, end: datetime) -> list[Pause]:
        if start >= end:
            return []  # an empty period (and tstzrange refuses a reversed one)
        rows = await self._bridge.run(_db_fetch, self._pool, _Q_PAUSES_BETWEEN, start, end)
        return [
            Pause(row["operator_id"], row["reason"], row["started_at"], row["ended_at"])
            for row in rows
        ]

    # -- outbox ---------------------------------------------------------------------------------

    async def enqueue(
        self,
        kind: str,
        dedupe_key: str,
        conversation_id: str | None,
        payload: dict[str, Any],
        at: datetime,
    ) -> bool:
        try:
            stored = await self._bridge.run(
                _db_fetchval, self._pool, _Q_ENQUEUE, kind, dedupe_key, conversation_id, payload, at
            )
        except Exception as exc:
            raise StoreError(f"outbox: {exc}") from exc
        return stored is not None

    async def outbox_due(
        self, at: datetime, limit: int, kinds: Collection[str] | None = None
    ) -> list[OutboxItem]:
        rows = await self._bridge.run(_db_fetch, self._pool, _Q_OUTBOX_DUE, at, limit, _list(kinds))
        return [_outbox_item(row) for row in rows]

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
        rows = await self._bridge.run(
            _db_fetch, self._pool, _Q_OUTBOX_CLAIM, at, limit, _list(kinds), claimant, seconds
        )
        # UPDATE … RETURNING keeps no order.
        return sorted((_outbox_item(row) for row in rows), key=lambda i: (i.next_attempt_at, i.id))

    async def outbox_next_due(
        self, kinds: Collection[str] | None = None, after: datetime | None = None
    ) -> datetime | None:
        due: datetime | None = await self._bridge.run(
            _db_fetchval, self._pool, _Q_OUTBOX_NEXT_DUE, _list(kinds), after
        )
        return due

    async def outbox_sent(
        self, item_id: int, at: datetime, attempt: OutboxAttempt | None = None
    ) -> None:
        await self._bridge.run(
            _db_outbox_update, self._pool, _Q_OUTBOX_SENT, (item_id, at), attempt, item_id
        )

    async def outbox_retry(
        self,
        item_id: int,
        next_attempt_at: datetime,
        error: str,
        attempt: OutboxAttempt | None = None,
    ) -> None:
        args = (item_id, next_attempt_at, error)
        await self._bridge.run(
            _db_outbox_update, self._pool, _Q_OUTBOX_RETRY, args, attempt, item_id
        )

    async def outbox_failed(
        self, item_id: int, at: datetime, error: str, attempt: OutboxAttempt | None = None
    ) -> None:
        args = (item_id, at, error)
        await self._bridge.run(
            _db_outbox_update, self._pool, _Q_OUTBOX_FAILED, args, attempt, item_id
        )

    async def outbox_items(self, conversation_id: str | None = None) -> list[OutboxItem]:
        rows = await self._bridge.run(_db_fetch, self._pool, _Q_OUTBOX_ITEMS, conversation_id)
        return [_outbox_item(row) for row in rows]

    async def outbox_item(self, item_id: int) -> OutboxItem | None:
        rows = await self._bridge.run(_db_fetch, self._pool, _Q_OUTBOX_ITEM, item_id)
        return _outbox_item(rows[0]) if rows else None

    async def outbox_deliveries(
        self,
        subscription: str,
        state: str | None = None,
        limit: int = 50,
        before_id: int | None = None,
    ) -> list[OutboxItem]:
        rows = await self._bridge.run(
            _db_fetch, self._pool, _Q_OUTBOX_DELIVERIES, subscription, limit, before_id, state
        )
        return [_outbox_item(row) for row in rows]

    async def outbox_attempts(self, item_ids: Collection[int]) -> dict[int, list[OutboxAttempt]]:
        rows = await self._bridge.run(_db_fetch, self._pool, _Q_OUTBOX_ATTEMPTS, list(item_ids))
        found: dict[int, list[OutboxAttempt]] = {}
        for row in rows:
            found.setdefault(row["item_id"], []).append(
                OutboxAttempt(row["at"], row["duration"], row["status_code"], row["error"])
            )
        return found

    async def outbox_redeliver(self, item_ids: Collection[int], at: datetime) -> list[int]:
        rows = await self._bridge.run(
            _db_fetch, self._pool, _Q_OUTBOX_REDELIVER, sorted(set(item_ids)), at
        )
        return sorted(row["id"] for row in rows)

    async def outbox_backlog(self) -> dict[str, int]:
        rows = await self._bridge.run(_db_fetch, self._pool, _Q_OUTBOX_BACKLOG)
        return {row[0]: int(row[1]) for row in rows}

    async def outbox_purge(self, before: datetime, limit: int) -> int:
        count: int = await self._bridge.run(
            _db_fetchval, self._pool, _Q_OUTBOX_PURGE, before, limit
        )
        return count

    async def count_events(self) -> int:
        count: int = await self._bridge.run(_db_fetchval, self._pool, _Q_COUNT_EVENTS)
        return count

    # -- attachments ----------------------------------------------------------------------------

    async def add_attachment(self, attachment: Attachment) -> None:
        a = attachment
        try:
            await self._bridge.run(
                _db_execute,
                self._pool,
                _Q_ADD_ATTACHMENT,
                a.id,
                a.conversation_id,
                a.uploaded_by,
                a.name,
                a.size,
                a.content_type,
                a.file_key,
                a.created_at,
                a.claimed_at,
            )
        except Exception as exc:
            raise StoreError(f"attachment {a.id}: {exc}") from exc

    async def attachment(self, attachment_id: str) -> Attachment | None:
        rows = await self._bridge.run(_db_fetch, self._pool, _Q_ATTACHMENT, attachment_id)
        return _attachment(rows[0]) if rows else None

    async def attachment_usage(self, conversation_id: str) -> tuple[int, int]:
        rows = await self._bridge.run(_db_fetch, self._pool, _Q_ATTACHMENT_USAGE, conversation_id)
        return int(rows[0][0]), int(rows[0][1])

    async def expired_attachments(
        self, conversations_before: datetime | None, pending_before: datetime, limit: int
    ) -> list[Attachment]:
        rows = await self._bridge.run(
            _db_fetch,
            self._pool,
            _Q_EXPIRED_ATTACHMENTS,
            conversations_before,
            pending_before,
            limit,
        )
        return [_attachment(row) for row in rows]

    async def delete_attachments(self, attachment_ids: list[str]) -> None:
        await self._bridge.run(_db_execute, self._pool, _Q_DELETE_ATTACHMENTS, attachment_ids)

    async def files_in_use(self, file_keys: list[str]) -> set[str]:
        rows = await self._bridge.run(_db_fetch, self._pool, _Q_FILES_IN_USE, file_keys)
        return {row[0] for row in rows}

    async def attachment_totals(self) -> tuple[int, int]:
        rows = await self._bridge.run(_db_fetch, self._pool, _Q_ATTACHMENT_TOTALS)
        return int(rows[0][0]), int(rows[0][1])

    async def attachment_figures(
        self, start: datetime, end: datetime
    ) -> dict[int, tuple[int, int]]:
        rows = await self._bridge.run(_db_fetch, self._pool, _Q_ATTACHMENT_FIGURES, start, end)
        return {int(row[0]): (int(row[1]), int(row[2])) for row in rows}

    # -- group commit ---------------------------------------------------------------------------

    async def _run_writer(self, batch_linger: float) -> None:
        # One batch at a time commits on each writer connection. Writes of one conversation
        # never overlap (its actor awaits each), so concurrent batches are independent.
        free = trio.Semaphore(len(self._writers))

        async def commit(writer: Any, batch: _Batch) -> None:
            try:
                await self._commit(writer, batch)
            finally:
                self._writers.append(writer)
                free.release()

        async with trio.open_nursery() as nursery:
            while True:
                # A free connection first, then the batch: everything that queued up while
                # the connections were busy goes into this batch, not into the one after it.
                await free.acquire()
                batch = await self._next_batch(batch_linger)
                if batch is None:
                    return  # closed, and everything written is committed or committing
                nursery.start_soon(commit, self._writers.pop(), batch)

    async def _next_batch(self, linger: float) -> _Batch | None:
        """The oldest waiting batch — waiting for a first write if there is none, and then up
        to ``linger`` seconds for more (unless it fills up); None once closed and drained."""
        waiting = self._waiting
        while not waiting:
            if self._closed:
                return None
            await self._wakeup.wait()
            self._wakeup = trio.Event()
        if linger > 0:
            with trio.move_on_after(linger):
                while len(waiting[0].writes) < self._batch_max and not self._closed:
                    await self._wakeup.wait()
                    self._wakeup = trio.Event()
        return waiting.popleft()

    def _close(self) -> None:
        """Take no more writes; the writer commits what is waiting, then stops."""
        self._closed = True
        self._wakeup.set()

    async def _commit(self, writer: Any, batch: _Batch) -> None:
        try:
            with trio.CancelScope(shield=True):
                await self._bridge.run(
                    _db_commit,
                    writer,
                    batch.conversations,
                    batch.events,
                    batch.surveys,
                    batch.claims,
                    batch.outbox,
                    batch.fences,
                    batch.notices,
                )
        except Exception as exc:
            if len(batch.writes) == 1:
                # A failed claim is a race the caller answers (a message's upload was deleted
                # meanwhile), not a fault of the store; a failed fence is a lost lease, which
                # its owner answers by stopping.
                expected = (AttachmentClaimFailed, FencedOut)
                level = logging.INFO if isinstance(exc, expected) else logging.ERROR
                log.log(level, "a write failed: %s", _reason(exc))
                batch.errors[0] = exc
            else:
                # One bad write must not fail its neighbours: commit them one by one.
                log.warning(
                    "a batch of %d writes failed (%s); retrying them one by one",
                    len(batch.writes),
                    _reason(exc),
                )
                for position, write in enumerate(batch.writes):
                    alone = _Batch()
                    alone.add(write)
                    await self._commit(writer, alone)
                    if 0 in alone.errors:
                        batch.errors[position] = alone.errors[0]
                batch.done.set()
                return
        else:
            stats = self.batch_statistics
            stats.batches += 1
            stats.writes += len(batch.writes)
            stats.largest = max(stats.largest, len(batch.writes))
        batch.done.set()


@asynccontextmanager
async def open_postgres_store(
    dsn: str,
    *,
    bridge: str = "thread",
    pool_size: int = 8,
    batch_max: int = 512,
    batch_linger: float = 0.0,
    in_flight: int = 1,
) -> AsyncIterator[PostgresStore]:
    """Connect, migrate, and run the batch writer until the block exits (pending writes are
    committed first)."""
    async with open_bridge(bridge) as bridged:
        try:
            pool = await bridged.run(_db_create_pool, dsn, 1, pool_size)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"cannot connect to PostgreSQL at {_redact(dsn)}: {exc}") from exc
        try:
            applied = await bridged.run(_db_migrate, pool, migrations())
            if applied:
                log.info("applied migrations %s", applied)
            # Batches commit on connections of their own; the pool serves queries.
            writers = await bridged.run(_db_writer_connections, dsn, max(1, in_flight))
            try:
                store = PostgresStore(bridged, pool, list(writers), batch_max, dsn)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(store._run_writer, batch_linger)
                    try:
                        yield store
                    finally:
                        store._close()  # the writer commits what is waiting, then stops
            finally:
                with trio.CancelScope(shield=True):
                    await bridged.run(_db_close_writers, writers)
        finally:
            with trio.CancelScope(shield=True):
                await bridged.run(_db_close_pool, pool)


async def migrate(dsn: str) -> list[int]:
    """Apply pending migrations and return the versions applied (``omni migrate``)."""
    async with open_bridge("thread") as bridged:
        try:
            pool = await bridged.run(_db_create_pool, dsn, 1, 2)
        except Exception as exc:
            raise StoreError(f"cannot connect to PostgreSQL at {_redact(dsn)}: {exc}") from exc
        try:
            applied: list[int] = await bridged.run(_db_migrate, pool, migrations())
            return applied
        finally:
            await bridged.run(_db_close_pool, pool)


def _redact(dsn: str) -> str:
    """The DSN without its password, for messages."""
    if "@" not in dsn or "://" not in dsn:
        return dsn
    scheme, _, rest = dsn.partition("://")
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}@{host}" if user else f"{scheme}://{host}"


def _reason(exc: BaseException) -> str:
    """A failed write as the log tells it: the error's kind and PostgreSQL's code, never its
    text — asyncpg's messages quote the values they could not take (what a visitor wrote)."""
    sqlstate = getattr(exc, "sqlstate", None)
    return f"{type(exc).__name__}" + (f" (SQLSTATE {sqlstate})" if sqlstate else "")
