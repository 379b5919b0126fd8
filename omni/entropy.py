"""Randomness, injected (STYLE §4).

The server draws resume tokens and conversation ids from an :class:`Entropy`. In production that
is :class:`SystemEntropy` (the ``secrets`` module: tokens must be unguessable); the simulator and
tests use :class:`SeededEntropy` so that a run with the same seed produces the same ids.
"""

from __future__ import annotations

import random
import secrets
import uuid
from typing import Protocol


class Entropy(Protocol):
    def token(self) -> str: ...

    def identifier(self) -> str: ...


class SystemEntropy:
    def token(self) -> str:
        return secrets.token_urlsafe(24)

    def identifier(self) -> str:
        return str(uuid.uuid4())


class SeededEntropy:
    """Reproducible ids and tokens: for the simulator and tests only, never for production."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)

    def token(self) -> str:
        return self._random.randbytes(18).hex()

    def identifier(self) -> str:
        return str(uuid.UUID(int=self._random.getrandbits(128), version=4))
