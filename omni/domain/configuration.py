"""The configuration as resources, and the rules a change must satisfy before it applies (F20).

Rules of this module:

* A resource is a :class:`ConfigItem`: its kind (``"services"``), its key (the id as text) and
  its body — the entity's JSON, exactly as the entity encodes (:func:`body_of`). :data:`KINDS`
  says which entity each kind holds and which of its fields is the key.
* :func:`decode` turns a body into its entity and :func:`build_directory` turns items into the
  :class:`~omni.domain.model.Directory`; both raise :class:`ConfigInvalid` naming the resource
  and the field, never a half-built configuration.
* :func:`propose_put` and :func:`propose_delete` are the whole rulebook of a change: they
  return the items and the directory the change would produce, or raise. Nothing is stored or
  applied here; the caller does that only with what these functions returned.
* Refusals come in two kinds, which the edges translate: :class:`ConfigInvalid` (the body does
  not fit, alone or with the rest) and :class:`ConfigConflict` (it clashes with other
  resources or with what is going on, e.g. the last admin token).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from omni.domain.bot import Bot
from omni.domain.model import (
    ApiToken,
    Channel,
    Directory,
    Group,
    Operator,
    Parameters,
    Role,
    Service,
    User,
    Webhook,
)
from omni.domain.schedule import Schedule

#: The key of the one ``parameters`` resource.
SINGLETON = "default"


class ConfigRejected(Exception):
    """A configuration change that cannot be made; the message says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigInvalid(ConfigRejected):
    """The body does not fit: on its own, or with the rest of the configuration."""


class ConfigConflict(ConfigRejected):
    """The change clashes with other resources or with the current state."""


@dataclass(frozen=True, slots=True)
class ConfigItem:
    """One configuration resource: its kind, its key (the id as text), its body as JSON."""

    kind: str
    key: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Kind:
    name: str
    entity: type[msgspec.Struct]
    #: The entity's field that is its key (None: a singleton, key ``"default"``).
    key_field: str | None


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("schedules", Schedule, "id"),
        Kind("groups", Group, "id"),
        Kind("services", Service, "id"),
        Kind("operators", Operator, "id"),
        Kind("parameters", Parameters, None),
        Kind("api_tokens", ApiToken, "id"),
        Kind("users", User, "id"),
        Kind("bots", Bot, "id"),
        Kind("webhooks", Webhook, "id"),
        Kind("channels", Channel, "id"),
    )
}

Items = Mapping[tuple[str, str], ConfigItem]


def key_of(kind: str, entity: msgspec.Struct) -> str:
    field = KINDS[kind].key_field
    return SINGLETON if field is None else str(getattr(entity, field))


def body_of(entity: msgspec.Struct) -> dict[str, Any]:
    """The entity as the JSON object it is stored and shown as."""
    body: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(entity))
    return body


def item_of(kind: str, entity: msgspec.Struct) -> ConfigItem:
    return ConfigItem(kind, key_of(kind, entity), body_of(entity))


def decode(kind: str, body: Mapping[str, Any], key: str | None = None) -> Any:
    """The entity of a stored (or proposed) body; :class:`ConfigInvalid` names the resource."""
    try:
        return msgspec.convert(body, KINDS[kind].entity)
    except msgspec.ValidationError as exc:
        where = f"{kind} {key}" if key is not None else kind
        raise ConfigInvalid(f"{where}: {exc}") from None


def build_directory(items: Iterable[ConfigItem]) -> Directory:
    """The Directory of these items; :class:`ConfigInvalid` naming the resource when they
    don't fit."""
    entities: dict[str, list[Any]] = {kind: [] for kind in KINDS}
    for item in items:
        entities[item.kind].append(decode(item.kind, item.body, item.key))
    parameters: list[Parameters] = entities["parameters"]
    try:
        return Directory(
            schedules={s.id: s for s in entities["schedules"]},
            groups={g.id: g for g in entities["groups"]},
            services={s.id: s for s in entities["services"]},
            operators={o.id: o for o in entities["operators"]},
            parameters=parameters[0] if parameters else Parameters(),
            api_tokens={t.id: t for t in entities["api_tokens"]},
            users={u.id: u for u in entities["users"]},
            bots={b.id: b for b in entities["bots"]},
            webhooks={w.id: w for w in entities["webhooks"]},
            channels={c.id: c for c in entities["channels"]},
        )
    except ValueError as exc:
        raise ConfigInvalid(str(exc)) from None


def check_new_api_token(token: ApiToken) -> None:
    """What a new or changed API token must satisfy beyond its type: an operator token is
    tied to an operator. (Tokens stored before ``operator_id`` existed still load; the API
    refuses them until an admin ties them.)"""
    if token.role is Role.OPERATOR and token.operator_id is None:
        raise ConfigInvalid(
            f"api token {token.id}: an operator token needs operator_id (the operator it acts for)"
        )


def propose_put(
    items: Items, kind: str, key: str, body: dict[str, Any]
) -> tuple[dict[tuple[str, str], ConfigItem], Directory]:
    """Create or replace one resource: the items and directory that would result."""
    entity = decode(kind, body, key)
    if key_of(kind, entity) != key:
        raise ConfigInvalid(f"{kind} {key}: the body's id must be {key}")
    if isinstance(entity, ApiToken):
        check_new_api_token(entity)
    candidate = dict(items)
    candidate[(kind, key)] = ConfigItem(kind, key, body)
    _keep_an_admin(items, candidate)
    return candidate, build_directory(candidate.values())


def propose_delete(
    items: Items, kind: str, key: str
) -> tuple[dict[tuple[str, str], ConfigItem], Directory]:
    """Delete one resource: what would result. What still refers to it makes a conflict."""
    candidate = dict(items)
    del candidate[(kind, key)]
    _keep_an_admin(items, candidate)
    try:
        return candidate, build_directory(candidate.values())
    except ConfigInvalid as exc:
        raise ConfigConflict(exc.message) from None


def _admins(items: Items) -> int:
    return sum(1 for (k, _), i in items.items() if k == "api_tokens" and i.body["role"] == "admin")


def _keep_an_admin(before: Items, after: Items) -> None:
    """Refuse to revoke or demote the last admin token: nobody could change the configuration
    through the API any more (a new installation with no token yet is not affected)."""
    if _admins(before) and not _admins(after):
        raise ConfigConflict(
            "this would leave no admin API token; create another admin token first"
        )
