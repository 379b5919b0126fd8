"""The configuration file, and what an administrator sends: how both become stored resources.

Rules of this module (an edge: it translates, the rules live in ``omni.domain``):

* The entities are the domain's own types (``omni.domain.model``, ``omni.domain.schedule``);
  the file's tables and the admin API's bodies decode straight into them. The only types of
  this module are the *inputs* that carry a secret in clear — an operator's console token, an
  API token, a service's identity secret that may be left out to keep the stored one — and
  :func:`seal` turns an input into the entity that is kept (secrets hashed, never stored in
  clear, never returned).
* :data:`RESOURCES` lists, per kind of resource, what the API accepts and what it shows.
* A bad file is one :class:`ConfigError` naming the field (``... - at `$.services[0].id```) or
  the resource — never a half-built configuration.
"""

from __future__ import annotations

import base64
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import msgspec

from omni.accounts import hash_password
from omni.domain.bot import Bot
from omni.domain.configuration import (
    KINDS,
    ConfigInvalid,
    ConfigItem,
    build_directory,
    check_new_api_token,
    item_of,
    key_of,
)
from omni.domain.model import (
    CHANNEL_SECRETS,
    PASSWORD_MAX,
    ApiToken,
    ApiTokenProfile,
    Channel,
    ChannelProfile,
    ChannelSecret,
    Directory,
    Group,
    Operator,
    OperatorProfile,
    Parameters,
    Service,
    TelegramSecret,
    User,
    UserProfile,
    Webhook,
    WebhookProfile,
    WebhookSecret,
    hash_token,
    password_weakness,
    webhook_secret_key,
)
from omni.domain.schedule import Schedule
from omni.domain.values import Secret, SigningKey, secret_weakness
from omni.settings import ServerSettings


class ConfigError(Exception):
    pass


def _check_token(token: str | None) -> None:
    """Refuse a guessable secret where it is sent (the file, an API body): msgspec reports the
    ``ValueError`` with the resource's path."""
    if token is not None and (weakness := secret_weakness(token)) is not None:
        raise ValueError(f"token is too weak: {weakness}")


class OperatorInput(OperatorProfile, frozen=True, kw_only=True):
    """An operator as an administrator sends them. ``token`` (the console sign-in secret, at
    least 128 bits) is kept when left out of an update, stored only as its hash; the API issues
    one when it is left out of a creation, and shows it once."""

    token: Secret | None = None

    def __post_init__(self) -> None:
        _check_token(self.token)


class ApiTokenInput(ApiTokenProfile, frozen=True, kw_only=True):
    """An API token as an administrator sends it; ``token`` (at least 128 bits) is given on
    creation only (the API issues one when it is left out, and shows it once)."""

    token: Secret | None = None

    def __post_init__(self) -> None:
        _check_token(self.token)


class UserInput(UserProfile, frozen=True, kw_only=True):
    """A person who signs in, as an administrator sends them: ``password`` (in clear, hashed
    with argon2id before anything is kept) only when the user is created — the API's ``PUT
    /api/v1/users/{key}/password`` sets it later; without one the user cannot sign in yet."""

    password: Annotated[str, msgspec.Meta(max_length=PASSWORD_MAX)] | None = None

    def __post_init__(self) -> None:
        if self.password is not None and (
            weakness := password_weakness(self.password, self.username)
        ):
            raise ValueError(weakness)


class ServiceInput(Service, frozen=True, kw_only=True):
    """A service as an administrator sends it: ``identity_secret`` left out keeps the stored
    one; ``null`` removes it."""

    # Widened on purpose: "left out" must differ from null here, and only here.
    identity_secret: SigningKey | msgspec.UnsetType | None = msgspec.UNSET  # type: ignore[assignment]


class WebhookInput(WebhookProfile, frozen=True, kw_only=True):
    """A webhook as an administrator sends it: ``secret`` (``whsec_`` and the base64 of 24 to
    64 random bytes) left out keeps the stored one; the API issues one when it is left out of
    a creation, and shows it once."""

    secret: WebhookSecret | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.secret is not None:
            webhook_secret_key(self.secret)


class ChannelInput(ChannelProfile, frozen=True, kw_only=True):
    """A channel as an administrator sends it: each secret of its kind
    (:data:`~omni.domain.model.CHANNEL_SECRETS`) left out keeps the stored one; the generic
    channel's ``secret`` is issued when it is left out of a creation, and shown once."""

    token: ChannelSecret | None = None
    app_secret: ChannelSecret | None = None
    verify_token: ChannelSecret | None = None
    secret_token: TelegramSecret | None = None
    secret: WebhookSecret | None = None


def issue_webhook_secret() -> str:
    """A new signing secret: 32 random bytes (256 bits)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def seal(
    kind: str,
    sent: Any,
    stored: dict[str, Any] | None = None,
    *,
    password_hash: str | None = None,
) -> Any:
    """The entity to keep for what an administrator sent (``stored``: the body it replaces):
    clear tokens become their hash, a secret left out keeps the stored one. ``ValueError``
    when a secret is required and there is none.

    A user's ``password`` becomes ``password_hash`` — the one given (hashed off the event loop
    by the caller), else hashed here, which blocks: for files only. A user keeps their stored
    hash and session generation; a change that ends their sessions raises it
    (:meth:`User.ends_sessions`)."""
    if isinstance(sent, UserInput):
        fields = msgspec.structs.asdict(sent)
        password = fields.pop("password")
        before = None if stored is None else msgspec.convert(stored, User)
        if password is not None and password_hash is None:
            password_hash = hash_password(password)
        if password_hash is None and before is not None:
            password_hash = before.password_hash
        generation = 0 if before is None else before.generation
        user = User(**fields, password_hash=password_hash, generation=generation)
        if user.ends_sessions(before):
            user = msgspec.structs.replace(user, generation=generation + 1)
        return user
    if isinstance(sent, OperatorInput | ApiTokenInput):
        fields = msgspec.structs.asdict(sent)
        token = fields.pop("token")
        if token is not None:
            token_hash = hash_token(token)
        elif stored is not None and stored.get("token_hash"):
            token_hash = stored["token_hash"]
        else:
            noun = "an operator" if isinstance(sent, OperatorInput) else "an API token"
            raise ValueError(f"{noun} needs a token (at least 128 bits)")
        entity = Operator if isinstance(sent, OperatorInput) else ApiToken
        return entity(**fields, token_hash=token_hash)
    if isinstance(sent, WebhookInput):
        fields = msgspec.structs.asdict(sent)
        secret = fields.pop("secret") or (stored or {}).get("secret")
        if secret is None:
            raise ValueError("a webhook needs a secret (whsec_ and the base64 of 24-64 bytes)")
        return Webhook(**fields, secret=secret)
    if isinstance(sent, ChannelInput):
        fields = msgspec.structs.asdict(sent)
        if stored is not None and stored.get("kind") == sent.kind:
            for name in CHANNEL_SECRETS[sent.kind]:
                if fields[name] is None:
                    fields[name] = stored.get(name)
        return Channel(**fields)
    if isinstance(sent, ServiceInput):
        fields = msgspec.structs.asdict(sent)
        if sent.identity_secret is msgspec.UNSET:
            fields["identity_secret"] = (stored or {}).get("identity_secret")
        return Service(**fields)
    return sent


@dataclass(frozen=True)
class Resource:
    """How the admin API handles one kind of resource."""

    kind: str
    #: What a POST or PUT body decodes into.
    input: type[msgspec.Struct]
    #: What a GET shows (no secret).
    public: type[msgspec.Struct]

    @property
    def key_field(self) -> str | None:
        return KINDS[self.kind].key_field


RESOURCES: dict[str, Resource] = {
    r.kind: r
    for r in (
        Resource("schedules", Schedule, Schedule),
        Resource("groups", Group, Group),
        Resource("services", ServiceInput, Service),
        Resource("operators", OperatorInput, OperatorProfile),
        Resource("parameters", Parameters, Parameters),
        Resource("api_tokens", ApiTokenInput, ApiTokenProfile),
        Resource("users", UserInput, UserProfile),
        Resource("bots", Bot, Bot),
        Resource("webhooks", WebhookInput, WebhookProfile),
        Resource("channels", ChannelInput, ChannelProfile),
    )
}

#: Fields never shown: secrets are write-only, and a user's session generation is
#: bookkeeping.
SECRET_FIELDS = frozenset(
    {
        "token",
        "token_hash",
        "identity_secret",
        "password",
        "password_hash",
        "generation",
        "secret",
        "app_secret",
        "verify_token",
        "secret_token",
    }
)


def public(body: dict[str, Any] | None) -> dict[str, Any] | None:
    """A stored body as the API shows it: without its secrets."""
    if body is None:
        return None
    return {k: v for k, v in body.items() if k not in SECRET_FIELDS}


# -- the file -----------------------------------------------------------------------------------


class ConfigFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    schedules: tuple[Schedule, ...] = ()
    groups: tuple[Group, ...] = ()
    services: tuple[Service, ...] = ()
    operators: tuple[OperatorInput, ...] = ()
    parameters: Parameters | None = None
    api_tokens: tuple[ApiTokenInput, ...] = ()
    users: tuple[UserInput, ...] = ()
    bots: tuple[Bot, ...] = ()
    webhooks: tuple[WebhookInput, ...] = ()
    channels: tuple[ChannelInput, ...] = ()


@dataclass(frozen=True)
class Config:
    """A configuration file: the server's settings and the resources it bootstraps."""

    server: ServerSettings
    items: list[ConfigItem]
    directory: Directory


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return parse_config(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def parse_config(raw: dict[str, Any]) -> Config:
    try:
        file = msgspec.convert(raw, ConfigFile)
    except msgspec.ValidationError as exc:
        raise ConfigError(str(exc)) from None
    items: list[ConfigItem] = []
    try:
        for kind in (
            "schedules",
            "groups",
            "services",
            "operators",
            "api_tokens",
            "users",
            "bots",
            "webhooks",
            "channels",
        ):
            sent: tuple[Any, ...] = getattr(file, kind)
            keys = [key_of(kind, entity) for entity in sent]
            duplicates = sorted({k for k in keys if keys.count(k) > 1})
            if duplicates:
                raise ConfigInvalid(f"$.{kind}: duplicate id(s) {', '.join(duplicates)}")
            for index, entity in enumerate(sent):
                try:
                    kept = seal(kind, entity)
                except ValueError as exc:
                    raise ConfigInvalid(f"$.{kind}[{index}]: {exc}") from None
                if isinstance(kept, ApiToken):
                    check_new_api_token(kept)
                items.append(item_of(kind, kept))
        if file.parameters is not None:
            items.append(item_of("parameters", file.parameters))
        hashes = [i.body["token_hash"] for i in items if i.kind == "operators"]
        if len(set(hashes)) != len(hashes):
            raise ConfigInvalid("$.operators: two operators share a token")
        return Config(server=file.server, items=items, directory=build_directory(items))
    except ConfigInvalid as exc:
        raise ConfigError(exc.message) from None
