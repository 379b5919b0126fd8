"""Data stored by an earlier Omni reads back after the migrations (DESIGN §5): a database at
schema 3 — configuration bodies with their always-null ``token``, a conversation whose
``waiting_since`` is POSIX seconds — is migrated, and the server restores it as it was."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
import trio

from omni.domain.configuration import build_directory
from omni.domain.conversation import Status, Visitor
from omni.store.postgres import _db_migrate, migrations, open_postgres_store
from tests.support import ALWAYS_OPEN

pytestmark = pytest.mark.postgresql

CREATED = datetime(2026, 11, 25, 12, 0, 0, 250000, tzinfo=UTC)
#: What schema 3's code stored for an operator and an API token (``token`` always null).
OLD_OPERATOR = {
    "id": 1,
    "name": "Alice",
    "groups": [1],
    "capacity": 2,
    "active": True,
    "token": None,
    "token_hash": "ab" * 32,
}
OLD_TOKEN = {
    "id": "root",
    "name": "Root",
    "role": "admin",
    "operator_id": None,
    "token": None,
    "token_hash": "cd" * 32,
}


async def _at_schema_3(dsn: str) -> None:
    """The database as Omni at schema 3 left it."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        await _db_migrate(pool, migrations()[:3])
        async with pool.acquire() as conn:
            for kind, key, body in (
                ("operators", "1", OLD_OPERATOR),
                ("api_tokens", "root", OLD_TOKEN),
                ("schedules", "always", ALWAYS_OPEN),
                ("groups", "1", {"id": 1, "name": "Support"}),
            ):
                await conn.execute(
                    "INSERT INTO config_items (kind, key, body) VALUES ($1, $2, $3::jsonb)",
                    kind,
                    key,
                    json.dumps(body),
                )
            await conn.execute(
                """INSERT INTO conversations (id, ticket, service_id, token_hash, visitor, status,
                    group_id, waiting_since, created_at)
                VALUES ('c1', '2026-000001', 25, 'h1', $1::jsonb, 'queued', 1, $2, $3)""",
                '{"name": "Vera", "email": "vera@example.com"}',
                CREATED.timestamp(),
                CREATED,
            )
    finally:
        await pool.close()


def test_data_of_schema_3_reads_back_after_the_migrations(postgres_dsn: str) -> None:
    asyncio.run(_at_schema_3(postgres_dsn))
    found: dict[str, Any] = {}

    async def read_back() -> None:
        async with open_postgres_store(postgres_dsn) as store:  # migrates to the latest
            found["items"] = await store.config_items()
            found["conv"] = await store.load_conversation("c1")
            found["open"] = await store.open_conversations()

    trio.run(read_back)
    items, conv = found["items"], found["conv"]
    bodies = {(i.kind, i.key): i.body for i in items}
    assert "token" not in bodies[("operators", "1")]
    assert "token" not in bodies[("api_tokens", "root")]
    directory = build_directory(items)  # the domain reads what was stored
    assert directory.operators[1].token_hash == "ab" * 32
    assert directory.api_tokens["root"].token_hash == "cd" * 32
    assert conv.waiting_since == CREATED and conv.created_at == CREATED
    assert conv.visitor == Visitor("Vera", "vera@example.com") and conv.status is Status.QUEUED
    assert [c.id for c in found["open"]] == ["c1"]


async def _at_schema_9_with_surveys(dsn: str) -> None:
    """Conversations as Omni before the survey by link left them: one waiting for its survey,
    one answered, one skipped (or timed out: stored alike), one that had no survey."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        await _db_migrate(pool, [m for m in migrations() if m.version <= 9])
        async with pool.acquire() as conn:
            for n, status in enumerate(("ended", "closed", "closed", "closed"), 1):
                await conn.execute(
                    """INSERT INTO conversations (id, ticket, service_id, token_hash, visitor,
                        status, group_id, waiting_since, created_at, ended_at)
                    VALUES ($1, $2, 25, $3, '{"name": "Vera"}'::jsonb, $4, 1, $5, $5, $5)""",
                    f"c{n}",
                    f"2026-00000{n}",
                    f"h{n}",
                    status,
                    CREATED,
                )
            await conn.execute(
                """INSERT INTO surveys (conversation_id, answers, skipped)
                VALUES ('c2', '{"rating": 5}'::jsonb, false), ('c3', NULL, true)"""
            )
    finally:
        await pool.close()


def test_the_survey_state_of_earlier_conversations(postgres_dsn: str) -> None:
    """Migration 11: a conversation still ``ended`` waits for its survey (its link works); an
    answered or skipped one is settled, so no link reopens it; one without a survey has none."""
    asyncio.run(_at_schema_9_with_surveys(postgres_dsn))
    found: dict[str, Any] = {}

    async def read_back() -> None:
        async with open_postgres_store(postgres_dsn) as store:
            for n in range(1, 5):
                conv = await store.load_conversation(f"c{n}")
                assert conv is not None
                found[conv.id] = conv.survey

    trio.run(read_back)
    assert found == {"c1": "pending", "c2": "answered", "c3": "skipped", "c4": None}
