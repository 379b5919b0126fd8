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
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import trio

from omni.domain.configuration import (
    ConfigConflict,
    ConfigItem,
    Items,
    propose_delete,
    propose_put,
)
from omni.domain.model import Directory
from omni.store import AuditEntry, ConfigChange, Store


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
    ) -> None:
        self._live = live
        self.store = store
        self._items: Items = {(i.kind, i.key): i for i in items}
        self._now = now
        self._lock = trio.Lock()

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
        async with self._lock:
            before = self.get(kind, key)
            if exists is False and before is not None:
                raise ConfigConflict(f"{kind} {key} exists")
            if exists is True and before is None:
                raise LookupError(f"no {kind} {key}")
            candidate, directory = propose_put(self._items, kind, key, body)
            return await self._commit(kind, key, before, body, actor, candidate, directory)

    async def delete(self, kind: str, key: str, actor: str) -> AuditEntry:
        async with self._lock:
            before = self.get(kind, key)
            if before is None:
                raise LookupError(f"no {kind} {key}")
            if kind == "groups" and (still_open := self._live.open_in_group(int(key))):
                raise ConfigConflict(
                    f"group {key} still has {still_open} open conversation(s); "
                    "transfer or end them first"
                )
            candidate, directory = propose_delete(self._items, kind, key)
            return await self._commit(kind, key, before, None, actor, candidate, directory)

    async def _commit(
        self,
        kind: str,
        key: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        actor: str,
        candidate: dict[tuple[str, str], ConfigItem],
        directory: Directory,
    ) -> AuditEntry:
        change = ConfigChange(kind, key, after, before, actor, self._now())
        entry = await self.store.change_config(change)
        self._items = candidate
        self._live.apply_directory(directory)
        return entry


def _order(pair: tuple[tuple[str, str], ConfigItem]) -> tuple[str, int, str]:
    (kind, key), _ = pair
    return (kind, int(key) if key.isdigit() else 0, key)
