"""The live configuration (DESIGN §2 "directory"): stored resources, validated changes, applied
to the running actors without a restart (F20).

Rules:

* The store holds the resources (:class:`~omni.domain.configuration.ConfigItem`); this object
  keeps the same items in memory. The rules of a change are the domain's
  (:func:`~omni.domain.configuration.propose_put`, ``propose_delete``): a change that would
  leave the configuration inconsistent is refused whole and nothing is written. This object
  adds only what depends on what is going on: a group with open conversations cannot be
  deleted (:class:`~omni.domain.configuration.ConfigConflict`).
* Changes are serialised (one at a time), stored together with their audit entry, then applied
  to the hub in one step: the hub sees either the old directory or the new one.
* More than one node (cluster mode, docs/scale-out.md): every stored change is notified on
  :data:`~omni.store.CONFIG_CHANNEL`; :meth:`Configuration.follow` reads the items again on
  each notice (a burst: once) and on each :class:`~omni.store.Resync`, and applies them
  through the same path as a change made here when they differ from those held. A change is
  stored only against the version its items were read at (``version``): one validated
  against items another node changed meanwhile is validated again against the new ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import trio

from omni.domain.configuration import (
    ConfigConflict,
    ConfigInvalid,
    ConfigItem,
    Items,
    build_directory,
    propose_delete,
    propose_put,
)
from omni.domain.model import Directory
from omni.store import CONFIG_CHANNEL, AuditEntry, ConfigChange, Resync, StaleConfiguration, Store

log = logging.getLogger(__name__)

#: How many times a change is validated again after another node changed the configuration
#: under it, before it is refused as a conflict.
ATTEMPTS = 5
#: Seconds between two tries to read a configuration the store could not give.
RELOAD_RETRY_SECONDS = 1.0

#: What a change would do: the body before and after, the items and directory that result.
_Plan = tuple[
    dict[str, Any] | None, dict[str, Any] | None, dict[tuple[str, str], ConfigItem], Directory
]


class LiveConfiguration(Protocol):
    """What this object needs of the running server: to apply a directory, and to know what
    is still open in a group."""

    def apply_directory(self, directory: Directory) -> None: ...

    def open_in_group(self, group_id: int) -> int:
        """Conversations waiting in, or held by operators of, the group."""
        ...


class Configuration:
    def __init__(
        self,
        live: LiveConfiguration,
        store: Store,
        items: list[ConfigItem],
        now: Callable[[], datetime],
        version: int | None = None,
    ) -> None:
        """``version``: the store's :meth:`~omni.store.Store.config_version`, read before
        ``items``; a change is then stored only while it is current. None: not checked (one
        node, which alone changes the configuration)."""
        self._live = live
        self.store = store
        self._items: Items = {(i.kind, i.key): i for i in items}
        self._now = now
        self._lock = trio.Lock()
        self._version = version

    def list(self, kind: str) -> list[dict[str, Any]]:
        return [i.body for (k, _), i in sorted(self._items.items(), key=_order) if k == kind]

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        item = self._items.get((kind, key))
        return None if item is None else item.body

    async def put(
        self, kind: str, key: str, body: dict[str, Any], actor: str, *, exists: bool | None = None
    ) -> AuditEntry:
        """Create or replace; ``exists`` True/False insists that it does/doesn't exist yet
        (checked under the lock, so two concurrent creations of one id make one)."""
        return await self.update(kind, key, lambda _: body, actor, exists=exists)

    async def update(
        self,
        kind: str,
        key: str,
        make: Callable[[dict[str, Any] | None], dict[str, Any]],
        actor: str,
        *,
        exists: bool | None = None,
    ) -> AuditEntry:
        """:meth:`put` the body ``make`` makes of the current one (None: there is none), under
        the lock — made again if another node changed the configuration meanwhile, so what it
        keeps of the current body (a secret, a session generation) is never a stale one."""

        def plan() -> _Plan:
            before = self.get(kind, key)
            if exists is False and before is not None:
                raise ConfigConflict(f"{kind} {key} exists")
            if exists is True and before is None:
                raise LookupError(f"no {kind} {key}")
            body = make(before)
            return (before, body, *propose_put(self._items, kind, key, body))

        return await self._change(kind, key, actor, plan)

    async def delete(self, kind: str, key: str, actor: str) -> AuditEntry:
        def plan() -> _Plan:
            before = self.get(kind, key)
            if before is None:
                raise LookupError(f"no {kind} {key}")
            if kind == "groups" and (still_open := self._live.open_in_group(int(key))):
                raise ConfigConflict(
                    f"group {key} still has {still_open} open conversation(s); "
                    "transfer or end them first"
                )
            return (before, None, *propose_delete(self._items, kind, key))

        return await self._change(kind, key, actor, plan)

    async def _change(
        self, kind: str, key: str, actor: str, plan: Callable[[], _Plan]
    ) -> AuditEntry:
        """Validate (``plan``, against the items held), store, apply; validated again when
        another node changed the stored configuration meanwhile."""
        async with self._lock:
            for _ in range(ATTEMPTS):
                before, after, candidate, directory = plan()
                change = ConfigChange(kind, key, after, before, actor, self._now())
                try:
                    entry = await self.store.change_config(change, self._version)
                except StaleConfiguration:
                    await self._reload()
                    continue
                self._items = candidate
                if self._version is not None:
                    self._version = entry.id
                self._live.apply_directory(directory)
                return entry
        raise ConfigConflict(
            "the configuration kept changing on other nodes while this change was made; try again"
        )

    # -- more than one node ---------------------------------------------------------------------

    async def reload(self) -> bool:
        """Read the stored configuration; when it is not the one held (changed by another node),
        hold it and apply it to the running server. Whether it was."""
        async with self._lock:
            return await self._reload()

    async def _reload(self) -> bool:
        version = await self.store.config_version()  # before the items: never newer than them
        stored = {(i.kind, i.key): i for i in await self.store.config_items()}
        if stored == self._items:
            if self._version is not None:
                self._version = version
            return False
        try:
            directory = build_directory(stored.values())
        except ConfigInvalid as exc:
            # Kept as it is (and its version too: no change is stored against what was not read).
            log.error("configuration: the stored configuration is invalid, not applied: %s", exc)
            return False
        changed = sorted(
            k for k in stored.keys() | self._items.keys() if stored.get(k) != self._items.get(k)
        )
        self._items = stored
        if self._version is not None:
            self._version = version
        self._live.apply_directory(directory)
        log.info(
            "configuration: %d change(s) made elsewhere applied (%s%s)",
            len(changed),
            ", ".join(f"{kind} {key}" for kind, key in changed[:10]),
            ", …" if len(changed) > 10 else "",
        )
        return True

    async def follow(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Cluster mode: listen on :data:`~omni.store.CONFIG_CHANNEL` and :meth:`reload` on each
        notice and each :class:`~omni.store.Resync` — notices arriving together (or during a
        reload) make one reload — until cancelled. Started once listening and up to date."""
        asked = trio.Event()

        async def reload_when_asked() -> None:
            nonlocal asked
            while True:
                await asked.wait()
                # Notices that arrive from now on ask again; those before are read by this.
                asked = trio.Event()
                while True:
                    try:
                        await self.reload()
                        break
                    except Exception as exc:  # the store is away: the next try reads it all
                        log.warning(
                            "configuration: cannot read the stored configuration (%s); "
                            "again in %.0f s",
                            exc,
                            RELOAD_RETRY_SECONDS,
                        )
                        await trio.sleep(RELOAD_RETRY_SECONDS)

        async with self.store.listen([CONFIG_CHANNEL]) as notices, trio.open_nursery() as nursery:
            await self.reload()  # what was committed before this node listened
            nursery.start_soon(reload_when_asked)
            task_status.started()
            async for notice in notices:
                if isinstance(notice, Resync):
                    log.info(
                        "configuration: notices may have been missed (%s); reading it again",
                        notice.reason,
                    )
                asked.set()


def _order(pair: tuple[tuple[str, str], ConfigItem]) -> tuple[str, int, str]:
    (kind, key), _ = pair
    return (kind, int(key) if key.isdigit() else 0, key)
