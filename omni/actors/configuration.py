"""The live configuration (DESIGN §2 "directory"): stored resources, validated changes, applied
to the running actors without a restart (F20).

Rules:

* The store holds the resources (:class:`~omni.store.ConfigItem`); this object keeps the same
  items in memory and the :class:`~omni.domain.model.Directory` built from them.
* A change is checked by building the directory it would produce *before* anything is stored:
  a change that would leave the configuration inconsistent is refused whole
  (:class:`ConfigRejected`), and nothing is written.
* API tokens: an operator token names the operator it acts for, and the last admin token can
  be neither revoked nor demoted (nobody could change the configuration any more).
* Changes are serialised (one at a time), stored together with their audit entry, then applied
  to the hub in one step: the hub sees either the old directory or the new one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import trio

from omni.actors.hub import Hub
from omni.config import build_directory, check_api_token
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
            if kind == "api_tokens":
                try:
                    check_api_token(body)
                except ValueError as exc:
                    raise ConfigRejected(422, str(exc)) from None
            candidate = dict(self._items)
            candidate[(kind, key)] = ConfigItem(kind, key, body)
            _keep_an_admin(self._items, candidate)
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
            _keep_an_admin(self._items, candidate)
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


def _admins(items: dict[tuple[str, str], ConfigItem]) -> int:
    return sum(1 for (k, _), i in items.items() if k == "api_tokens" and i.body["role"] == "admin")


def _keep_an_admin(
    before: dict[tuple[str, str], ConfigItem], after: dict[tuple[str, str], ConfigItem]
) -> None:
    """Refuse to revoke or demote the last admin token: nobody could change the configuration
    through the API any more (a new installation with no token yet is not affected)."""
    if _admins(before) and not _admins(after):
        raise ConfigRejected(
            409, "this would leave no admin API token; create another admin token first"
        )


def _build(items: dict[tuple[str, str], ConfigItem], status: int) -> Any:
    try:
        return build_directory(items.values())
    except ValueError as exc:
        raise ConfigRejected(status, str(exc)) from None
