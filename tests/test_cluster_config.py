"""Cluster mode (docs/scale-out.md): the live configuration is changed on one node and applied on
every node — each stored change commits an ``omni_config`` notice, every node listens and reads
the configuration again on each notice and each resync. A change is stored only against the
version its node validated it on: one made on stale items is validated again, or refused.

Two in-process nodes on one PostgreSQL, each on a store (pool) of its own, as in
``test_cluster_ownership``; the version rules on both stores, with no server at all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed

from omni.accounts import Accounts, hash_password
from omni.actors.configuration import Configuration
from omni.domain.configuration import ConfigConflict, ConfigInvalid, body_of, build_directory
from omni.domain.model import Directory, Role, User
from omni.server import RunningServer, open_server
from omni.store import CONFIG_CHANNEL, ConfigChange, Store
from omni.store.memory import MemoryStore
from omni.store.postgres import PostgresStore, _db_execute, _db_fetchval
from tests.cluster_support import FAST_CLUSTER, cluster_node
from tests.support import TOK_CARLA, Client, connect_tcp, eventually, login, make_config

CLUSTER = FAST_CLUSTER
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


class Applied:
    """Counts the directories a hub is given (its ``apply_directory``, wrapped)."""

    def __init__(self, server: RunningServer) -> None:
        self.count = 0
        apply = server.hub.apply_directory

        def counting(directory: Directory) -> None:
            self.count += 1
            apply(directory)

        server.hub.apply_directory = counting  # type: ignore[method-assign]


@asynccontextmanager
async def _node(
    dsn: str, name: str, listeners: dict[str, Any] | None = None
) -> AsyncIterator[tuple[RunningServer, PostgresStore]]:
    """A server in cluster mode as node ``name``, on a store (pool) of its own; ``listeners``
    gets the listener of its ``omni_config`` notices (to cut its connection)."""

    def record(store: PostgresStore) -> None:
        listen = store.listen

        @asynccontextmanager
        async def recording(channels: Any, **options: Any) -> AsyncIterator[Any]:
            async with listen(channels, **options) as inbox:
                if listeners is not None and CONFIG_CHANNEL in channels:
                    listeners[name] = store.listener
                yield inbox

        store.listen = recording  # type: ignore[method-assign]

    async with cluster_node(dsn, name, prepare=record) as (server, store):
        yield server, store


async def _nodes(
    stack: AsyncExitStack, dsn: str, listeners: dict[str, Any] | None = None
) -> tuple[RunningServer, RunningServer, PostgresStore]:
    a, store = await stack.enter_async_context(_node(dsn, "a", listeners))
    b, _ = await stack.enter_async_context(_node(dsn, "b", listeners))
    return a, b, store


def _owned(server: RunningServer) -> set[int]:
    assert server.ownership is not None
    return set(server.ownership.owned)


async def _closed_with(client: Client) -> tuple[str, int, str]:
    """The code of the error frame sent before the server closed the connection, and the
    close's code and reason."""
    code = ""
    with trio.fail_after(10):
        while True:
            try:
                frame = await client.recv()
            except ConnectionClosed as closed:
                return code, closed.reason.code, closed.reason.reason or ""
            if frame["type"] == "error":
                code = frame["code"]


# -- across nodes (PostgreSQL) --------------------------------------------------------------------


@pytest.mark.postgresql
@pytest.mark.slow
async def test_a_group_created_on_one_node_runs_on_the_other(postgres_dsn: str) -> None:
    async with AsyncExitStack() as stack:
        a, b, _ = await _nodes(stack, postgres_dsn)
        applied = {"a": Applied(a), "b": Applied(b)}
        await a.configuration.put("groups", "9", {"id": 9, "name": "Nine"}, "token:root")
        await eventually(lambda: 9 in b.hub.directory.groups, seconds=5)
        assert b.configuration.get("groups", "9") == {"id": 9, "name": "Nine"}
        # One of the nodes takes the new group's lease, as any group's.
        await eventually(lambda: 9 in _owned(a) | _owned(b), seconds=10)
        # A change on b comes back to a behind a's own notice (one channel, in commit order):
        # once a has b's, it has handled its own — which changed nothing there.
        await b.configuration.put("groups", "9", {"id": 9, "name": "Nine!"}, "token:root")
        await eventually(lambda: a.hub.directory.groups[9].name == "Nine!", seconds=5)
        assert (applied["a"].count, applied["b"].count) == (2, 2)
        assert not await a.configuration.reload() and not await b.configuration.reload()


@pytest.mark.postgresql
@pytest.mark.slow
async def test_an_operator_deactivated_on_one_node_is_signed_out_on_the_other(
    postgres_dsn: str,
) -> None:
    async with AsyncExitStack() as stack:
        a, b, _ = await _nodes(stack, postgres_dsn)
        # Carla (group 1) connects to the node that routes her group; the other deactivates her.
        await eventually(lambda: 1 in _owned(a) | _owned(b), seconds=10)
        here, elsewhere = (a, b) if 1 in _owned(a) else (b, a)
        async with connect_tcp(f"{here.ws_url}/ws/operator") as carla:
            await login(carla, TOK_CARLA)
            assert 3 in here.hub.sessions
            body = elsewhere.configuration.get("operators", "3")
            assert body is not None and body["active"] is True
            await elsewhere.configuration.put("operators", "3", {**body, "active": False}, "t:x")
            # The same close as a deactivation on the node itself (test_live_config).
            assert await _closed_with(carla) == (
                "operator_deactivated",
                1008,
                "operator_deactivated",
            )
        await eventually(lambda: 3 not in here.hub.sessions, seconds=5)
        async with connect_tcp(f"{here.ws_url}/ws/operator") as again:
            await again.send("login", token=TOK_CARLA)
            assert (await again.expect("error"))["code"] == "invalid_login"


@pytest.mark.postgresql
@pytest.mark.slow
async def test_a_person_signed_out_on_one_node_loses_their_console_on_the_other(
    postgres_dsn: str,
) -> None:
    async with AsyncExitStack() as stack:
        a, b, _ = await _nodes(stack, postgres_dsn)
        await eventually(lambda: 1 in _owned(a) | _owned(b), seconds=10)
        here, elsewhere = (a, b) if 1 in _owned(a) else (b, a)
        password_hash = await trio.to_thread.run_sync(hash_password, "her console passphrase 7")
        olga = User(
            id="olga",
            username="olga",
            name="Olga",
            role=Role.OPERATOR,
            operator_id=3,
            password_hash=password_hash,
        )
        # Made on one node, signed in on the other.
        await elsewhere.configuration.put("users", "olga", body_of(olga), "token:root")
        await eventually(lambda: "olga" in here.hub.directory.users, seconds=5)
        token, _ = await Accounts(here.hub, 3600).open_session(here.hub.directory.users["olga"])
        async with connect_tcp(f"{here.ws_url}/ws/operator") as console:
            await login(console, token)
            # She signs out on the other node: her generation moves on, her console here closes.
            await Accounts(elsewhere.hub, 3600).end_sessions(
                elsewhere.configuration, "olga", "user:olga"
            )
            code, close, _ = await _closed_with(console)
            assert code == "session_ended" and close == 1008
        async with connect_tcp(f"{here.ws_url}/ws/operator") as again:
            await again.send("login", token=token)
            assert (await again.expect("error"))["code"] == "invalid_login"


async def _change_unnoticed(store: PostgresStore, name: str) -> None:
    """Rename group 3 behind every node's back: no notice (as if it was missed)."""
    await store._bridge.run(
        _db_execute,
        store._pool,
        "UPDATE config_items SET body = jsonb_set(body, '{name}', to_jsonb($1::text)) "
        "WHERE kind = 'groups' AND key = '3'",
        name,
    )


@pytest.mark.postgresql
@pytest.mark.slow
async def test_a_resync_makes_a_node_read_the_configuration_again(postgres_dsn: str) -> None:
    listeners: dict[str, Any] = {}
    async with AsyncExitStack() as stack:
        a, b, store = await _nodes(stack, postgres_dsn, listeners)
        await _change_unnoticed(store, "Missed")
        await trio.sleep(0.5)
        assert b.hub.directory.groups[3].name == "Night"  # nothing told it
        # b's listening connection is lost: once back, it reads the configuration again.
        pid = await listeners["b"].backend_pid()
        killed = await store._bridge.run(
            _db_fetchval, store._pool, "SELECT pg_terminate_backend($1)", pid
        )
        assert killed is True
        await eventually(lambda: b.hub.directory.groups[3].name == "Missed", seconds=15)
        assert a.hub.directory.groups[3].name == "Night"  # a lost nothing, heard nothing
        # The reload a resync runs, called directly: it applies what differs, once.
        assert await a.configuration.reload()
        assert a.hub.directory.groups[3].name == "Missed"
        assert not await a.configuration.reload()


async def test_with_cluster_mode_off_nothing_listens_for_configuration_changes() -> None:
    store = MemoryStore()

    def listening() -> bool:
        return any(CONFIG_CHANNEL in channels for channels, _ in store._inboxes)

    async with open_server(make_config(), store=store, host="127.0.0.1", http=False) as one:
        assert not one.hub.cluster and not listening()
        before = one.hub.directory
        await store.change_config(
            ConfigChange("groups", "9", {"id": 9, "name": "Nine"}, None, "elsewhere", NOW)
        )
        await trio.sleep(0.1)
        assert one.hub.directory is before
    # The same server in cluster mode does (on the same kind of store).
    cluster_store = MemoryStore()
    async with open_server(
        make_config(cluster=CLUSTER), store=cluster_store, host="127.0.0.1", http=False
    ):
        assert [c for c, _ in cluster_store._inboxes if CONFIG_CHANNEL in c]


# -- the version a change is made against (both stores, no server) ------------------------------


class Live:
    """A stand-in for the hub: the directories applied, nothing open."""

    def __init__(self) -> None:
        self.applied: list[Directory] = []

    def apply_directory(self, directory: Directory) -> None:
        self.applied.append(directory)

    def open_in_group(self, group_id: int) -> int:
        return 0


async def _two_nodes(store: Store) -> tuple[Configuration, Live, Configuration, Live]:
    """Two nodes' configurations over one store, both read now, neither following the other."""
    for item in make_config().items:
        await store.change_config(ConfigChange(item.kind, item.key, item.body, None, "boot", NOW))
    await store.change_config(
        ConfigChange("groups", "9", {"id": 9, "name": "Nine"}, None, "boot", NOW)
    )
    olga = User(id="olga", username="olga", name="Olga", role=Role.OPERATOR, operator_id=3)
    await store.change_config(ConfigChange("users", "olga", body_of(olga), None, "boot", NOW))

    async def read() -> tuple[Configuration, Live]:
        version = await store.config_version()
        live = Live()
        return Configuration(live, store, await store.config_items(), lambda: NOW, version), live

    return (*await read(), *await read())


def _service(links: list[int]) -> dict[str, Any]:
    return {"id": 30, "name": "Thirty", "links": [{"group": g} for g in links]}


async def test_a_change_validated_on_stale_items_is_validated_again(store: Store) -> None:
    """b deletes group 9; a, not knowing, links a new service to it: valid on a's items, but
    stored it would leave a service on a group that is gone. a's change is refused by the
    store, validated again on what is stored, and refused as invalid — the store stays valid."""
    a, a_live, b, _ = await _two_nodes(store)
    await b.delete("groups", "9", "token:b")
    with pytest.raises(ConfigInvalid):
        await a.put("services", "30", _service([9]), "token:a")
    stored = await store.config_items()
    build_directory(stored)  # still a valid configuration
    assert ("groups", "9") not in {(i.kind, i.key) for i in stored}
    # a has read b's change meanwhile (and applied it).
    assert a.get("groups", "9") is None and 9 not in a_live.applied[-1].groups


async def test_a_change_still_valid_on_the_new_items_is_stored(store: Store) -> None:
    a, a_live, b, b_live = await _two_nodes(store)
    await b.put("groups", "10", {"id": 10, "name": "Ten"}, "token:b")
    entry = await a.put("services", "30", _service([9]), "token:a")  # on a's stale items
    assert entry.id == await store.config_version()
    assert 10 in a_live.applied[-1].groups and 30 in a_live.applied[-1].services
    assert a.get("groups", "10") == {"id": 10, "name": "Ten"}
    # b, stale in turn, learns both on its next change.
    await b.put("groups", "11", {"id": 11, "name": "Eleven"}, "token:b")
    assert b.get("services", "30") is not None
    assert {30} <= set(b_live.applied[-1].services) and 11 in b_live.applied[-1].groups


async def test_an_update_over_a_stale_body_is_made_again_over_the_stored_one(
    store: Store,
) -> None:
    """Olga signs out on b (her generation 0 -> 1); a, not knowing yet, ends her sessions too:
    made over the stored body, her generation moves on to 2 — not to 1 again, which would keep
    a session opened at 1 (after b's sign-out) good."""
    a, _, b, _ = await _two_nodes(store)
    made_over: list[int] = []

    def ended(body: dict[str, Any] | None) -> dict[str, Any]:
        assert body is not None
        made_over.append(body["generation"])
        return {**body, "generation": body["generation"] + 1}

    await b.update("users", "olga", ended, "user:olga", exists=True)
    entry = await a.update("users", "olga", ended, "token:root", exists=True)
    assert made_over == [0, 0, 1]  # b's; a's on its stale body, refused; a's again
    assert entry.after is not None and entry.after["generation"] == 2
    [stored] = [i.body for i in await store.config_items() if i.kind == "users"]
    assert stored["generation"] == 2


async def test_a_change_that_keeps_losing_is_refused_as_a_conflict(store: Store) -> None:
    a, _, _, _ = await _two_nodes(store)
    change_config: Callable[..., Any] = store.change_config

    async def busy(change: ConfigChange, expected_version: int | None = None) -> Any:
        # Another node commits just before each attempt of a's.
        other = ConfigChange("groups", "12", {"id": 12, "name": "Busy"}, None, "other", NOW)
        await change_config(other)
        return await change_config(change, expected_version)

    store.change_config = busy  # type: ignore[method-assign]
    with pytest.raises(ConfigConflict, match="kept changing"):
        await a.put("groups", "13", {"id": 13, "name": "Never"}, "token:a")
    store.change_config = change_config  # type: ignore[method-assign]
    assert ("groups", "13") not in {(i.kind, i.key) for i in await store.config_items()}


async def test_a_follower_reloads_once_for_a_burst_and_again_on_a_resync() -> None:
    store = MemoryStore()
    _, _, b, b_live = await _two_nodes(store)
    reloads = 0
    reload = b.reload

    async def counting() -> bool:
        nonlocal reloads
        reloads += 1
        return await reload()

    b.reload = counting  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        await nursery.start(b.follow)
        await trio.testing.wait_all_tasks_blocked()
        assert reloads == 1  # what was committed before it listened
        for n in range(20, 30):  # a burst: ten changes committed, their notices together
            body = {"id": n, "name": f"G{n}"}
            await store.change_config(ConfigChange("groups", str(n), body, None, "other", NOW))
        assert reloads == 1
        await trio.testing.wait_all_tasks_blocked()
        assert reloads == 2 and b.get("groups", "29") is not None
        assert len(b_live.applied) == 1
        # A resync (a lost connection, a full buffer): read again, whatever the notices said.
        [(_, inbox)] = [(c, i) for c, i in store._inboxes if CONFIG_CHANNEL in c]
        store._config.pop(("groups", "29"))  # as if changed unnoticed
        inbox.resync("test")
        await trio.testing.wait_all_tasks_blocked()
        assert reloads == 3 and b.get("groups", "29") is None
        assert len(b_live.applied) == 2
        nursery.cancel_scope.cancel()
