"""The store contract of what the admin API needs — configuration items and their audit log,
conversation listing and reports — one contract, two stores: every test runs against
MemoryStore and PostgresStore (marked ``postgresql``), as in ``test_store_contract``.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from omni.domain.conversation import Conversation, Status, Visitor
from omni.store import (
    AuditEntry,
    ConfigChange,
    ConfigItem,
    ConversationQuery,
    Pause,
    SignInSession,
    Store,
    Write,
)
from tests.support import make_conversation

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


# -- configuration and audit ------------------------------------------------------------------

GROUP = {"id": 1, "name": "Support"}
SERVICE = {
    "id": 25,
    "name": "Suporte ✓",
    "links": [{"group": 1, "schedule": None}],
    "greeting": 'Olá "{visitor}" \\ bem-vindo',
    "timers": {"offer_timeout": 30.5, "queue_timeout": None},
    "transcript_email": True,
    "allowed_origins": [],
}
OPERATOR = {"id": 3, "name": "Carla", "groups": [1], "capacity": 1, "token_hash": "ab" * 32}


def change(
    kind: str,
    key: str,
    after: dict[str, Any] | None,
    before: dict[str, Any] | None = None,
    *,
    actor: str = "token:root",
    seconds: float = 0,
) -> ConfigChange:
    return ConfigChange(kind, key, after, before, actor, NOW + timedelta(seconds=seconds))


async def items(store: Store) -> dict[tuple[str, str], dict[str, Any]]:
    found = await store.config_items()
    assert all(isinstance(i, ConfigItem) for i in found)
    by_key = {(i.kind, i.key): i.body for i in found}
    assert len(by_key) == len(found), "one item per (kind, key)"
    return by_key


async def test_config_items_start_empty(store: Store) -> None:
    assert await store.config_items() == []
    assert await store.audit_entries(10) == []


async def test_create_update_delete_config_items(store: Store) -> None:
    await store.change_config(change("groups", "1", GROUP))
    await store.change_config(change("services", "25", SERVICE))
    await store.change_config(change("operators", "3", OPERATOR))
    await store.change_config(change("parameters", "default", {"logo": ""}))
    assert await items(store) == {
        ("groups", "1"): GROUP,
        ("services", "25"): SERVICE,
        ("operators", "3"): OPERATOR,
        ("parameters", "default"): {"logo": ""},
    }

    renamed = {**GROUP, "name": "Suporte"}
    await store.change_config(change("groups", "1", renamed, GROUP))
    # Same key in another kind is another item.
    await store.change_config(change("api_tokens", "1", {"id": "1", "role": "admin"}))
    await store.change_config(change("operators", "3", None, OPERATOR))
    assert await items(store) == {
        ("groups", "1"): renamed,
        ("services", "25"): SERVICE,
        ("parameters", "default"): {"logo": ""},
        ("api_tokens", "1"): {"id": "1", "role": "admin"},
    }


async def test_a_deleted_items_last_body_is_remembered(store: Store) -> None:
    assert await store.deleted_config("services", "25") is None
    await store.change_config(change("services", "25", SERVICE))
    assert await store.deleted_config("services", "25") is None  # never deleted
    await store.change_config(change("services", "25", None, SERVICE))
    assert await store.deleted_config("services", "25") == SERVICE
    # Re-created, changed and deleted again: the body it had at the last deletion.
    renamed = {**SERVICE, "name": "Renamed"}
    await store.change_config(change("services", "25", SERVICE))
    await store.change_config(change("services", "25", renamed, SERVICE))
    await store.change_config(change("services", "25", None, renamed))
    found = await store.deleted_config("services", "25")
    assert found == renamed
    assert found is not None
    found["name"] = "not the stored object"
    assert await store.deleted_config("services", "25") == renamed
    # Per kind and key.
    assert await store.deleted_config("groups", "25") is None
    assert await store.deleted_config("services", "26") is None


async def test_stored_bodies_are_not_the_callers_objects(store: Store) -> None:
    body = {"id": 1, "name": "Support", "tags": ["a"]}
    before_body = {"id": 1, "name": "Old"}
    await store.change_config(change("groups", "1", body, before_body))
    body["name"] = "changed after the call"
    body["tags"].append("b")
    before_body["name"] = "changed too"
    assert await items(store) == {("groups", "1"): {"id": 1, "name": "Support", "tags": ["a"]}}
    [entry] = await store.audit_entries(5)
    assert entry.after == {"id": 1, "name": "Support", "tags": ["a"]}
    assert entry.before == {"id": 1, "name": "Old"}


async def test_every_change_is_audited(store: Store) -> None:
    created = await store.change_config(change("groups", "1", GROUP, seconds=1))
    updated = await store.change_config(
        change("groups", "1", {**GROUP, "name": "B"}, GROUP, actor="import-config", seconds=2.5)
    )
    deleted = await store.change_config(
        change("groups", "1", None, {**GROUP, "name": "B"}, actor="token:ops", seconds=3.000001)
    )
    assert isinstance(created, AuditEntry)
    assert created.id < updated.id < deleted.id
    assert (created.action, updated.action, deleted.action) == ("create", "update", "delete")
    assert created == AuditEntry(
        created.id, NOW + timedelta(seconds=1), "token:root", "create", "groups", "1", None, GROUP
    )
    assert updated.before == GROUP and updated.after == {**GROUP, "name": "B"}
    assert updated.actor == "import-config"
    assert deleted.before == {**GROUP, "name": "B"} and deleted.after is None
    assert deleted.at == NOW + timedelta(seconds=3.000001)

    stored = await store.audit_entries(10)
    assert stored == [deleted, updated, created]
    for entry in stored:
        assert entry.at.tzinfo is not None
    assert await items(store) == {}


async def test_audit_time_is_an_instant(store: Store) -> None:
    at = datetime(2026, 11, 25, 9, 0, 0, 123456, tzinfo=timezone(timedelta(hours=-3)))
    await store.change_config(ConfigChange("groups", "1", GROUP, None, "token:root", at))
    [entry] = await store.audit_entries(1)
    assert entry.at == at == datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)


async def test_an_action_is_audited_without_changing_the_configuration(store: Store) -> None:
    await store.change_config(change("groups", "1", GROUP))
    at = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    detail = {"from": {"status": "queued", "group_id": 1}, "operator_id": 3}
    recorded = await store.record_action(at, "boss", "assign", "conversations", "c1", detail)
    [entry, _] = await store.audit_entries(2)
    assert entry == recorded
    assert (entry.at, entry.actor, entry.action, entry.kind, entry.key) == (
        at,
        "boss",
        "assign",
        "conversations",
        "c1",
    )
    assert (entry.before, entry.after) == (None, detail)
    assert await items(store) == {("groups", "1"): GROUP}


async def test_audit_entries_page_newest_first(store: Store) -> None:
    ids = []
    for n in range(7):
        entry = await store.change_config(change("groups", str(n), {"id": n}, seconds=n))
        ids.append(entry.id)
    assert ids == sorted(ids) and len(set(ids)) == 7
    newest_first = ids[::-1]

    assert [e.id for e in await store.audit_entries(3)] == newest_first[:3]
    assert [e.id for e in await store.audit_entries(100)] == newest_first
    assert [e.id for e in await store.audit_entries(3, before_id=ids[4])] == [
        ids[3],
        ids[2],
        ids[1],
    ]
    assert [e.id for e in await store.audit_entries(3, before_id=ids[1])] == [ids[0]]
    assert await store.audit_entries(3, before_id=ids[0]) == []
    assert [e.id for e in await store.audit_entries(1, before_id=ids[-1] + 100)] == [ids[-1]]
    assert [e.key for e in await store.audit_entries(2)] == ["6", "5"]

    # Walking with before_id visits every entry once.
    walked: list[int] = []
    before: int | None = None
    while True:
        page = await store.audit_entries(2, before)
        walked += [e.id for e in page]
        if len(page) < 2:
            break
        before = page[-1].id
    assert walked == newest_first


UNSTORABLE = {"id": 1, "lock": threading.Lock()}  # neither JSON nor copyable


async def test_a_change_that_cannot_be_stored_changes_nothing(store: Store) -> None:
    await store.change_config(change("groups", "1", GROUP))
    with pytest.raises(Exception):  # noqa: B017 - each store has its own error for this
        await store.change_config(change("groups", "2", UNSTORABLE))
    assert await items(store) == {("groups", "1"): GROUP}
    assert len(await store.audit_entries(10)) == 1


async def test_the_item_and_its_audit_entry_are_written_atomically(store: Store) -> None:
    """The new body is fine but the audit entry cannot be written (its ``before`` is not
    storable): the item must not change either."""
    await store.change_config(change("groups", "1", GROUP))
    with pytest.raises(Exception):  # noqa: B017 - each store has its own error for this
        await store.change_config(change("groups", "1", {**GROUP, "name": "New"}, UNSTORABLE))
    assert await items(store) == {("groups", "1"): GROUP}
    assert len(await store.audit_entries(10)) == 1
    # And the store still works afterwards.
    entry = await store.change_config(change("groups", "1", {**GROUP, "name": "New"}, GROUP))
    assert entry.action == "update"
    assert await items(store) == {("groups", "1"): {**GROUP, "name": "New"}}


# -- conversations ----------------------------------------------------------------------------


def conversation(
    n: int,
    seconds: float,
    status: Status,
    visitor: dict[str, Any] | Visitor,
    *,
    service_id: int = 25,
    group_id: int | None = 1,
    operator_id: int | None = None,
) -> Conversation:
    at = NOW + timedelta(seconds=seconds)
    return make_conversation(
        n,
        status,
        at=at,
        visitor=visitor if isinstance(visitor, Visitor) else Visitor(**visitor),
        service_id=service_id,
        group_id=group_id,
        operator_id=operator_id,
        operator_name={1: "Alice", 2: "Bruno"}.get(operator_id or 0),
        answered_at=at + timedelta(seconds=5) if operator_id else None,
    )


CONVERSATIONS = [
    conversation(
        1, 1, Status.CLOSED, {"name": "Vera Lopez", "email": "Vera@Example.com"}, operator_id=1
    ),
    conversation(
        2,
        2,
        Status.ACTIVE,
        {"name": "Bob 50% off", "email": "bob_smith@corp.test"},
        service_id=27,
        group_id=2,
        operator_id=2,
    ),
    conversation(
        3, 3.25, Status.OUT_OF_HOURS, {"name": "Olga O'Neil \\ HQ"}, service_id=26, group_id=None
    ),
    conversation(4, 4, Status.ABANDONED, {"name": "Zed 500 off", "email": "zed@x.io"}),
    conversation(5, 5.000001, Status.QUEUED, {"name": "bobXsmith", "email": "bobxsmith@corp.test"}),
    # Two created at the same instant: the id breaks the tie.
    conversation(6, 6, Status.OFFERED, {"name": "Twin A"}, service_id=27, group_id=2),
    conversation(7, 6, Status.ENDED, {"name": "Twin B"}, operator_id=1),
]
NEWEST_FIRST = ["c7", "c6", "c5", "c4", "c3", "c2", "c1"]


@pytest.fixture
async def filled(store: Store) -> Store:
    # Written out of order: the order of the results comes from created_at, not from writes.
    for conv in sorted(CONVERSATIONS, key=lambda c: c.ticket[-1] in "246"):
        await store.write(Write(conversation=conv))
    return store


async def listed(store: Store, **filters: Any) -> list[str]:
    return [c.id for c in await store.list_conversations(ConversationQuery(**filters))]


async def test_list_conversations_newest_first(filled: Store) -> None:
    assert await listed(filled) == NEWEST_FIRST
    assert await listed(filled, limit=3) == NEWEST_FIRST[:3]
    assert await listed(filled, limit=1) == ["c7"]
    found = await filled.list_conversations(ConversationQuery(status="active"))
    [bob] = found
    assert bob.visitor == Visitor("Bob 50% off", "bob_smith@corp.test")
    assert bob.ticket == "2026-000002" and bob.service_id == 27 and bob.group_id == 2
    assert bob.operator_id == 2 and bob.operator_name == "Bruno"
    assert bob.created_at == CONVERSATIONS[1].created_at
    assert bob.answered_at == CONVERSATIONS[1].answered_at and bob.ended_at is None


async def test_list_conversations_by_field(filled: Store) -> None:
    assert await listed(filled, status="closed") == ["c1"]
    assert await listed(filled, status="out_of_hours") == ["c3"]
    assert await listed(filled, status="queued") == ["c5"]
    assert await listed(filled, status=Status.ENDED.value) == ["c7"]
    assert await listed(filled, service_id=25) == ["c7", "c5", "c4", "c1"]
    assert await listed(filled, service_id=27) == ["c6", "c2"]
    assert await listed(filled, service_id=99) == []
    assert await listed(filled, group_id=2) == ["c6", "c2"]
    assert await listed(filled, group_id=1) == ["c7", "c5", "c4", "c1"]
    assert await listed(filled, operator_id=1) == ["c7", "c1"]
    assert await listed(filled, operator_id=2) == ["c2"]
    assert await listed(filled, operator_id=3) == []
    assert await listed(filled, status="ended", operator_id=1, service_id=25, group_id=1) == ["c7"]
    assert await listed(filled, status="closed", operator_id=2) == []


async def test_list_conversations_in_an_operators_scope(filled: Store) -> None:
    """An operator token's view: the operator's own conversations, or those of its services."""
    assert await listed(filled, scope_operator_id=2) == ["c2"]
    assert await listed(filled, scope_operator_id=2, scope_service_ids=frozenset({26})) == [
        "c3",
        "c2",
    ]
    assert await listed(filled, scope_operator_id=1, scope_service_ids=frozenset({27})) == [
        "c7",
        "c6",
        "c2",
        "c1",
    ]
    assert await listed(filled, scope_operator_id=3, scope_service_ids=frozenset()) == []
    # Other filters narrow the scope further, never widen it.
    scoped = {"scope_operator_id": 1, "scope_service_ids": frozenset({27})}
    assert await listed(filled, service_id=26, **scoped) == []
    assert await listed(filled, status="closed", **scoped) == ["c1"]
    assert await listed(filled, operator_id=2, **scoped) == ["c2"]
    assert await listed(filled, limit=2, **scoped) == ["c7", "c6"]


async def test_list_conversations_by_creation_time(filled: Store) -> None:
    def at(seconds: float) -> datetime:
        return NOW + timedelta(seconds=seconds)

    # [from, to): from is inclusive, to exclusive.
    assert await listed(filled, created_from=at(seconds=4)) == ["c7", "c6", "c5", "c4"]
    assert await listed(filled, created_to=at(seconds=4)) == ["c3", "c2", "c1"]
    assert await listed(filled, created_from=at(seconds=2), created_to=at(seconds=5)) == [
        "c4",
        "c3",
        "c2",
    ]
    # Microseconds count.
    assert await listed(filled, created_to=at(seconds=5.000001)) == ["c4", "c3", "c2", "c1"]
    assert await listed(filled, created_from=at(seconds=5.000001), limit=10) == ["c7", "c6", "c5"]
    assert await listed(filled, created_from=at(seconds=3.25), created_to=at(seconds=3.25)) == []
    # Any zone: the same instant.
    sao_paulo = timezone(timedelta(hours=-3))
    assert await listed(filled, created_from=at(seconds=6).astimezone(sao_paulo)) == ["c7", "c6"]
    assert await listed(filled, created_from=at(seconds=7)) == []


SEARCHES = [
    ("vera", ["c1"]),
    ("VERA LOPEZ", ["c1"]),
    ("example.COM", ["c1"]),
    ("corp.test", ["c5", "c2"]),
    ("2026-000004", ["c4"]),
    ("000003", ["c3"]),
    ("2026-", NEWEST_FIRST),
    # Wildcards are plain text.
    ("50%", ["c2"]),
    ("%", ["c2"]),
    ("bob_smith", ["c2"]),
    ("_", ["c2"]),
    ("%_", []),
    ("\\", ["c3"]),
    ("o'neil \\ hq", ["c3"]),
    ("twin", ["c7", "c6"]),
    ("nobody", []),
]


async def test_search_is_literal_and_case_insensitive(filled: Store) -> None:
    for search, expected in SEARCHES:
        assert await listed(filled, search=search) == expected, search


async def test_search_combines_with_the_other_filters(filled: Store) -> None:
    assert await listed(filled, search="corp", status="queued") == ["c5"]
    assert await listed(filled, search="corp", created_to=NOW + timedelta(seconds=3)) == ["c2"]
    assert await listed(filled, search="twin", limit=1) == ["c7"]
    # An empty search is no filter.
    assert await listed(filled, search="") == NEWEST_FIRST


def _cursor(conv: Conversation) -> tuple[datetime, str]:
    return conv.created_at, conv.id


async def test_cursor_paging_visits_each_conversation_once(filled: Store) -> None:
    for limit in (1, 2, 3, 7, 8):
        walked: list[str] = []
        cursor = None
        for _ in range(20):
            page = await filled.list_conversations(ConversationQuery(cursor=cursor, limit=limit))
            assert len(page) <= limit
            walked += [c.id for c in page]
            if len(page) < limit:
                break
            cursor = _cursor(page[-1])
        assert walked == NEWEST_FIRST, limit


async def test_cursor_paging_with_filters_and_ties(filled: Store) -> None:
    # After c7 (same created_at as c6): c6 is next, the tie is broken by id.
    c7 = next(c for c in CONVERSATIONS if c.id == "c7")
    assert await listed(filled, cursor=_cursor(c7), limit=2) == ["c6", "c5"]
    c6 = next(c for c in CONVERSATIONS if c.id == "c6")
    assert await listed(filled, cursor=_cursor(c6)) == ["c5", "c4", "c3", "c2", "c1"]
    walked: list[str] = []
    cursor = None
    while True:
        page = await filled.list_conversations(
            ConversationQuery(service_id=25, cursor=cursor, limit=1)
        )
        if not page:
            break
        walked += [c.id for c in page]
        cursor = _cursor(page[-1])
    assert walked == ["c7", "c5", "c4", "c1"]
    # A cursor is an instant: any zone.
    at, cid = _cursor(c6)
    assert await listed(filled, cursor=(at.astimezone(timezone(timedelta(hours=5))), cid)) == [
        "c5",
        "c4",
        "c3",
        "c2",
        "c1",
    ]


async def test_listing_sees_the_latest_write(filled: Store) -> None:
    queued = next(c for c in CONVERSATIONS if c.id == "c5")
    moved = conversation(5, 5.000001, Status.ACTIVE, queued.visitor, operator_id=2)
    await filled.write(Write(conversation=moved))
    assert await listed(filled, status="queued") == []
    assert await listed(filled, operator_id=2) == ["c5", "c2"]
    assert await listed(filled) == NEWEST_FIRST


async def test_conversations_created_between_is_half_open(filled: Store) -> None:
    async def between(start: float, end: float) -> set[str]:
        found = await filled.conversations_created_between(
            NOW + timedelta(seconds=start), NOW + timedelta(seconds=end)
        )
        ids = [c.id for c in found]
        assert len(ids) == len(set(ids))
        return set(ids)

    assert await between(0, 100) == set(NEWEST_FIRST)
    assert await between(2, 4) == {"c2", "c3"}
    assert await between(1, 2) == {"c1"}
    assert await between(6, 7) == {"c6", "c7"}
    assert await between(5, 5.000001) == set()
    assert await between(5.000001, 5.000002) == {"c5"}
    assert await between(3.25, 3.25) == set()
    assert await between(-10, 1) == set()
    [closed] = await filled.conversations_created_between(NOW, NOW + timedelta(seconds=1.5))
    assert closed.status is Status.CLOSED and closed.answered_at == CONVERSATIONS[0].answered_at
    assert closed.visitor == Visitor("Vera Lopez", "Vera@Example.com")


# -- sign-in sessions -------------------------------------------------------------------------


def sign_in_session(token_hash: str, user_id: str, hours: float = 8) -> SignInSession:
    return SignInSession(token_hash, user_id, 3, NOW, NOW + timedelta(hours=hours))


async def test_a_session_is_kept_by_its_hash_and_found_again(store: Store) -> None:
    kept = sign_in_session("ab" * 32, "ana")
    await store.add_session(kept)
    found = await store.find_session("ab" * 32)
    assert found is not None
    assert (found.token_hash, found.user_id, found.generation) == ("ab" * 32, "ana", 3)
    assert found.created_at == NOW and found.expires_at == NOW + timedelta(hours=8)
    assert await store.find_session("cd" * 32) is None


async def test_ending_a_users_sessions_ends_all_of_theirs_and_no_one_elses(store: Store) -> None:
    for index, user in enumerate(("ana", "ana", "bia")):
        await store.add_session(sign_in_session(f"{index:064x}", user))
    assert await store.end_sessions("ana") == 2
    assert await store.find_session(f"{0:064x}") is None
    assert await store.find_session(f"{1:064x}") is None
    assert await store.find_session(f"{2:064x}") is not None
    assert await store.end_sessions("ana") == 0


async def test_a_new_session_forgets_the_expired_ones(store: Store) -> None:
    old = SignInSession("01" * 32, "ana", 0, NOW - timedelta(hours=9), NOW - timedelta(hours=1))
    await store.add_session(old)
    await store.add_session(sign_in_session("02" * 32, "bia"))
    assert await store.find_session("01" * 32) is None
    assert await store.find_session("02" * 32) is not None


# -- operators' pauses ------------------------------------------------------------------------


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


async def test_a_pause_is_kept_from_its_start_to_its_end(store: Store) -> None:
    await store.pause_started(1, "lunch", at(0))
    await store.pause_started(2, None, at(5))
    assert await store.pauses_between(at(0), at(100)) == [
        Pause(1, "lunch", at(0)),
        Pause(2, None, at(5)),
    ]
    await store.pause_ended(1, at(60))
    await store.pause_ended(1, at(90))  # none open: nothing changes
    await store.pause_ended(3, at(90))  # never paused
    assert await store.pauses_between(at(0), at(100)) == [
        Pause(1, "lunch", at(0), at(60)),
        Pause(2, None, at(5)),
    ]


async def test_a_new_reason_ends_the_open_pause_where_the_next_starts(store: Store) -> None:
    await store.pause_started(1, None, at(0))
    await store.pause_started(1, "break", at(30))
    await store.pause_ended(1, at(45))
    await store.pause_started(1, "lunch", at(50))
    assert await store.pauses_between(at(0), at(100)) == [
        Pause(1, None, at(0), at(30)),
        Pause(1, "break", at(30), at(45)),
        Pause(1, "lunch", at(50)),
    ]


async def test_pauses_between_are_those_overlapping_the_half_open_period(store: Store) -> None:
    await store.pause_started(1, "a", at(0))
    await store.pause_ended(1, at(10))  # ends as the period starts: out
    await store.pause_started(1, "b", at(15))
    await store.pause_ended(1, at(25))  # inside
    await store.pause_started(2, "c", at(5))
    await store.pause_ended(2, at(40))  # across both bounds
    await store.pause_started(3, "d", at(30))  # starts as the period ends: out
    await store.pause_started(4, "e", at(12))
    await store.pause_ended(4, at(12))  # no length: out
    await store.pause_started(5, None, at(-50))  # still open, started before: in
    found = await store.pauses_between(at(10), at(30))
    assert [(p.operator_id, p.reason) for p in found] == [(5, None), (2, "c"), (1, "b")]
    assert await store.pauses_between(at(30), at(10)) == []
    assert await store.pauses_between(at(10), at(10)) == []


async def test_a_pause_never_ends_before_it_started(store: Store) -> None:
    await store.pause_started(1, None, at(10))
    await store.pause_ended(1, at(5))
    # Ended (no longer open), with no length (so it overlaps nothing).
    assert await store.pauses_between(at(0), at(100)) == []


async def test_interrupted_pauses_end_where_they_were_last_known_to_go_on(store: Store) -> None:
    await store.pause_started(1, "lunch", at(0))
    await store.pause_started(2, None, at(50))
    await store.pause_started(3, None, at(0))
    await store.pause_ended(3, at(20))
    await store.pauses_ongoing(at(60))
    await store.pauses_ongoing(at(55))  # a late heartbeat never moves one back
    await store.pause_started(4, "break", at(70))  # after the last heartbeat
    assert await store.end_interrupted_pauses() == 3
    assert await store.pauses_between(at(0), at(1000)) == [
        Pause(1, "lunch", at(0), at(60)),
        Pause(3, None, at(0), at(20)),
        Pause(2, None, at(50), at(60)),
    ]  # and 4 ended where it started: no length, so it is in no period
    assert await store.end_interrupted_pauses() == 0
