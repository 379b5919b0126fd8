"""The live configuration (DESIGN §2 "directory"): stored resources, validated changes, applied
to the running actors without a restart (F20).

Rules:

* The store holds the resources (:class:`~omni.store.ConfigItem`); this object keeps the same
  items in memory and the :class:`~omni.domain.model.Directory` built from them.
* A change is checked by building the directory it would produce *before* anything is stored:
  a change that would leave the configuration inconsistent is refused whole
  (:class:`ConfigRejected`), and nothing is written.
* Changes are serialised (one at a time), stored together with their audit entry, then applied
  to the hub in one step: the hub sees either the old directory or the new one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import trio

from omni.actors.hub import Hub
from omni.config import build_directory
from omni.store import AuditEntry, ConfigChange, ConfigItem, Store


class ConfigRejected(Exception):
    """``status`` 422 (the body does not fit) or 409 (conflicts with other resources)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Configuration:
    def __init__(
        self, hub: Hub, store: Store, items: list[ConfigItem], now: Callable[[], datetime]
    ) -> None:
        self.hub = hub
        self.store = store
        self._items = {(i.kind, i.key): i for i in items}
        self._now = now
        self._lock = trio.Lock()

    @classmethod
    async def load(cls, hub: Hub, store: Store) -> Configuration:
        return cls(hub, store, await store.config_items(), hub.clock.now)

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
                raise ConfigRejected(409, f"{kind} {key} exists")
            if exists is True and before is None:
                raise LookupError(f"no {kind} {key}")
            candidate = dict(self._items)
            candidate[(kind, key)] = ConfigItem(kind, key, body)
            directory = _build(candidate, 422)
            return await self._commit(kind, key, before, body, actor, candidate, directory)

    async def delete(self, kind: str, key: str, actor: str) -> AuditEntry:
        async with self._lock:
            before = self.get(kind, key)
            if before is None:
                raise LookupError(f"no {kind} {key}")
            if kind == "groups":
                group_id = int(key)
                open_here = sum(
                    1 for e in self.hub.conversations.values() if e.group_id == group_id
                )
                waiting = self.hub.queue_lengths.get(group_id, 0)
                if open_here or waiting:
                    raise ConfigRejected(
                        409,
                        f"group {key} still has {max(open_here, waiting)} open conversation(s); "
                        "transfer or end them first",
                    )
            candidate = dict(self._items)
            del candidate[(kind, key)]
            directory = _build(candidate, 409)
            return await self._commit(kind, key, before, None, actor, candidate, directory)

    async def _commit(
        self,
        kind: str,
        key: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        actor: str,
        candidate: dict[tuple[str, str], ConfigItem],
        directory: Any,
    ) -> AuditEntry:
        change = ConfigChange(kind, key, after, before, actor, self._now())
        entry = await self.store.change_config(change)
        self._items = candidate
        self.hub.apply_directory(directory)
        return entry


def _order(pair: tuple[tuple[str, str], ConfigItem]) -> tuple[str, int, str]:
    (kind, key), _ = pair
    return (kind, int(key) if key.isdigit() else 0, key)


def _build(items: dict[tuple[str, str], ConfigItem], status: int) -> Any:
    try:
        return build_directory(items.values())
    except ValueError as exc:
        raise ConfigRejected(status, str(exc)) from None
