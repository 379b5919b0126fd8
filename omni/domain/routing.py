"""Routing: who is waiting, who can take a conversation, and who gets the next one.

Rules of this module:

* An operator's *load* is the set of conversations offered to or held by them; it never exceeds
  their capacity (:meth:`Roster.reserve` refuses).
* Only ``available`` operators with free capacity are offered anything; ``paused`` and
  ``offline`` operators keep what they hold but get nothing new.
* The next conversation goes to the eligible operator who has been idle longest: the one whose
  last offer (or whose return to ``available``) is oldest. Ties go to the lowest operator id, so
  routing is deterministic.
* Operators belong to several groups but have one capacity, so the roster is shared by every
  group. Its methods are synchronous: under trio's cooperative scheduling a pick and a reserve
  made without an ``await`` between them cannot race with another group's.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Presence(StrEnum):
    AVAILABLE = "available"
    PAUSED = "paused"
    OFFLINE = "offline"


@dataclass
class OperatorState:
    id: int
    name: str
    groups: frozenset[int]
    capacity: int
    presence: Presence = Presence.OFFLINE
    #: Why they are paused (a configured pause reason's id); None when not paused or unsaid.
    pause_reason: str | None = None
    #: Monotonic time (seconds) since which the operator has been waiting for work.
    idle_since: float = 0.0
    load: set[str] = field(default_factory=set)

    @property
    def free(self) -> int:
        return self.capacity - len(self.load)

    def eligible(self, group_id: int) -> bool:
        return self.presence is Presence.AVAILABLE and self.free > 0 and group_id in self.groups


class CapacityExceeded(Exception):
    pass


class Roster:
    """Presence, status and load of every operator, shared by all groups."""

    def __init__(self) -> None:
        self._operators: dict[int, OperatorState] = {}

    def __contains__(self, operator_id: int) -> bool:
        return operator_id in self._operators

    def __iter__(self) -> Iterator[OperatorState]:
        return iter(self._operators.values())

    def get(self, operator_id: int) -> OperatorState:
        return self._operators[operator_id]

    def configure(
        self, operator_id: int, name: str, groups: Iterable[int], capacity: int
    ) -> OperatorState:
        """Add an operator or update its configuration, keeping presence and load."""
        state = self._operators.get(operator_id)
        if state is None:
            state = OperatorState(operator_id, name, frozenset(groups), capacity)
            self._operators[operator_id] = state
        else:
            state.name, state.groups, state.capacity = name, frozenset(groups), capacity
        return state

    def set_presence(
        self, operator_id: int, presence: Presence, now: float, reason: str | None = None
    ) -> None:
        """Set the operator's presence; ``reason`` counts only with ``paused``."""
        state = self._operators[operator_id]
        if presence is Presence.AVAILABLE and state.presence is not Presence.AVAILABLE:
            state.idle_since = now
        state.presence = presence
        state.pause_reason = reason if presence is Presence.PAUSED else None

    def pick(self, group_id: int) -> OperatorState | None:
        """The operator who should get the next conversation of ``group_id``, if any."""
        best: OperatorState | None = None
        for state in self._operators.values():
            if state.eligible(group_id) and (
                best is None or (state.idle_since, state.id) < (best.idle_since, best.id)
            ):
                best = state
        return best

    def has_candidate(self, group_id: int) -> bool:
        return any(state.eligible(group_id) for state in self._operators.values())

    def free_slots(self, group_id: int) -> int:
        """How many conversations of ``group_id`` could be offered right now (the free
        capacity of its eligible operators, which other groups may also claim)."""
        return sum(state.free for state in self._operators.values() if state.eligible(group_id))

    def reserve(self, operator_id: int, conversation_id: str, now: float) -> None:
        """Count ``conversation_id`` against the operator's capacity (an offer or a transfer)."""
        state = self._operators[operator_id]
        if conversation_id in state.load:
            return
        if state.free <= 0:
            raise CapacityExceeded(f"operator {operator_id} is at capacity {state.capacity}")
        state.load.add(conversation_id)
        state.idle_since = now

    def hold(self, operator_id: int, conversation_id: str) -> None:
        """Count a conversation restored after a restart, even beyond capacity (never refused:
        the conversation is already with this operator)."""
        self._operators[operator_id].load.add(conversation_id)

    def rank_last(self, operator_id: int, now: float) -> None:
        """Put the operator behind the other idle ones for the next offer (as if they had
        just been offered something): they let a conversation down."""
        state = self._operators.get(operator_id)
        if state is not None:
            state.idle_since = now

    def release(self, operator_id: int, conversation_id: str) -> bool:
        """Free the slot; True if it was held (so the operator's groups may dispatch again)."""
        state = self._operators.get(operator_id)
        if state is None or conversation_id not in state.load:
            return False
        state.load.discard(conversation_id)
        return True


class WaitingQueue:
    """The conversations waiting in one group, ordered by a key (the time each visitor began
    waiting, then the ticket); the head is offered first."""

    def __init__(self) -> None:
        self._keys: list[tuple[datetime, str]] = []
        self._items: list[str] = []

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, conversation_id: str) -> bool:
        return conversation_id in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def push(self, conversation_id: str, key: tuple[datetime, str]) -> int:
        """Insert in key order (after equal keys); returns the 0-based index."""
        self.remove(conversation_id)
        index = bisect_right(self._keys, key)
        self._keys.insert(index, key)
        self._items.insert(index, conversation_id)
        return index

    def pop(self) -> str | None:
        if not self._items:
            return None
        del self._keys[0]
        return self._items.pop(0)

    def remove(self, conversation_id: str) -> bool:
        try:
            index = self._items.index(conversation_id)
        except ValueError:
            return False
        del self._keys[index], self._items[index]
        return True

    def position(self, conversation_id: str) -> int:
        """1-based position."""
        return self._items.index(conversation_id) + 1
