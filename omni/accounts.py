"""People who sign in with a user name and a password: their passwords and their sessions
(docs/security.md, "Passwords and sessions").

Rules of this module:

* Passwords are hashed with argon2id (argon2-cffi's :class:`~argon2.PasswordHasher`, whose
  defaults are RFC 9106's argon2id profile). A hash or a check costs tens of milliseconds of CPU
  and 64 MiB: it always runs on a worker thread (:func:`trio.to_thread.run_sync`), at most
  :data:`HASHING_AT_ONCE` at a time, never on the event loop and never in the domain.
* An unknown user name costs the same check as a wrong password (against a dummy hash), so
  the time taken does not tell which user names exist.
* A session token is 256 random bits after :data:`SESSION_PREFIX` (a bearer token says which
  kind it is; a leaked one is recognisable), shown once, kept as its SHA-256 (the store's
  :class:`~omni.store.SignInSession`). It lasts ``[server] session_ttl`` from the sign-in,
  not renewed by use.
* A session is good while the store has it, it has not expired (the hub's :class:`Clock`) and
  the directory says its user is still at the generation it was opened in
  (:meth:`~omni.domain.model.Directory.session_user`). Ending a person's sessions — signing
  out, a password change or reset, deactivation — raises their generation, a configuration
  change applied live (the hub closes their consoles with ``session_ended``), and forgets
  their stored sessions.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import msgspec
import trio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from omni.actors.configuration import Configuration
from omni.clock import Clock
from omni.domain.configuration import body_of
from omni.domain.model import Directory, User, hash_token
from omni.store import SignInSession, Store

#: What every session token starts with.
SESSION_PREFIX = "omni_session_"
#: Password hashes computed at once, at most (each takes 64 MiB while it runs).
HASHING_AT_ONCE = 4

_hasher = PasswordHasher()
_limiter: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar("password_hashing")
_dummy_hash: list[str] = []


def hash_password(password: str) -> str:
    """The argon2id hash of ``password``: blocks for tens of milliseconds, so only for what
    runs before the server does (a configuration file); the server uses
    :func:`hash_password_off_loop`."""
    return _hasher.hash(password)


def _hashing() -> trio.CapacityLimiter:
    try:
        return _limiter.get()
    except LookupError:
        limiter = trio.CapacityLimiter(HASHING_AT_ONCE)
        _limiter.set(limiter)
        return limiter


async def hash_password_off_loop(password: str) -> str:
    return await trio.to_thread.run_sync(_hasher.hash, password, limiter=_hashing())


def _verify(password_hash: str | None, password: str) -> bool:
    if password_hash is None:
        if not _dummy_hash:
            _dummy_hash.append(_hasher.hash(secrets.token_urlsafe(16)))
        password_hash = _dummy_hash[0]
        found = False
    else:
        found = True
    try:
        return _hasher.verify(password_hash, password) and found
    except (VerificationError, InvalidHashError):
        return False


async def check_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``password_hash`` (None: there is no such user; the check
    still takes as long)."""
    return await trio.to_thread.run_sync(_verify, password_hash, password, limiter=_hashing())


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A good session: the user it acts for, and the stored session."""

    user: User
    session: SignInSession


class AccountsHost(Protocol):
    """What sessions need of the running server (the hub): read when used."""

    @property
    def store(self) -> Store: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def directory(self) -> Directory: ...


class Accounts:
    """Sign-in, sessions and their end, over the host's store, live directory and clock;
    sessions last ``ttl`` seconds."""

    def __init__(self, host: AccountsHost, ttl: float) -> None:
        self._host = host
        self.ttl = ttl

    def _directory(self) -> Directory:
        return self._host.directory

    async def check(self, username: str, password: str) -> User | None:
        """The active user of ``username`` when ``password`` is theirs; None otherwise (after
        the same work either way)."""
        user = self._directory().user_by_name(username)
        known = user is not None and user.active and user.password_hash is not None
        ok = await check_password(user.password_hash if known and user else None, password)
        # Looked up again: the user may have changed while the hash was being checked.
        directory = self._directory()
        user = directory.user_by_name(username)
        if not ok or user is None:
            return None
        return directory.session_user(user.id, user.generation)

    async def open_session(self, user: User) -> tuple[str, SignInSession]:
        """A new session for ``user`` at their current generation: its token (shown once)
        and what is stored."""
        token = SESSION_PREFIX + secrets.token_urlsafe(32)
        now = self._host.clock.now()
        session = SignInSession(
            hash_token(token), user.id, user.generation, now, now + timedelta(seconds=self.ttl)
        )
        await self._host.store.add_session(session)
        return token, session

    async def session(self, token: str) -> SignedIn | None:
        """The session of ``token`` while it is good, else None."""
        if not token.startswith(SESSION_PREFIX) or len(token) > 200:
            return None
        found = await self._host.store.find_session(hash_token(token))
        if found is None or found.expires_at <= self._host.clock.now():
            return None
        user = self._directory().session_user(found.user_id, found.generation)
        return None if user is None else SignedIn(user, found)

    async def end_sessions(
        self,
        configuration: Configuration,
        user_id: str,
        actor: str,
        *,
        password_hash: str | None = None,
    ) -> None:
        """End every session of ``user_id`` (giving them ``password_hash`` if set), as one
        audited change by ``actor``. ``LookupError``: no such user."""

        def ended(body: dict[str, Any] | None) -> dict[str, Any]:
            # The generation after the stored one (read again if another node changed it).
            user = msgspec.convert(body, User)
            changes: dict[str, Any] = {"generation": user.generation + 1}
            if password_hash is not None:
                changes["password_hash"] = password_hash
            return body_of(msgspec.structs.replace(user, **changes))

        await configuration.update("users", user_id, ended, actor, exists=True)
        await self._host.store.end_sessions(user_id)
