"""A small supervised-actor runtime on trio.

Rules of this module:

* An actor owns a bounded mailbox and handles one message at a time; its state is its own.
  ``send`` waits for room (backpressure); ``send_nowait`` raises :class:`MailboxFull` instead;
  ``ask`` sends and waits, up to a timeout, for the handler's return value.
* An actor's expected refusals (the exception types in ``Actor.expected_errors``) are answered to
  the asker, or handed to ``Actor.on_rejected``; they never crash the actor.
* Any other exception crashes the actor. Its supervisor builds a new incarnation from the same
  factory (which reloads state from the store) on the *same* mailbox, so every reference stays
  valid and the messages behind the failing one are still handled. Siblings are not touched
  (one-for-one). More than ``max_restarts`` crashes within ``window`` seconds and the supervisor
  gives up on that child only: pending asks fail with :class:`ActorCrashed` and later sends with
  :class:`ActorStopped`. An actor whose mailbox was closed (``ActorRef.close``) is on its way out:
  a crash stops it, without a restart.
* Timers (``call_later``) are kept by one :class:`Timers` queue per runtime, on trio's clock
  (``MockClock`` drives them): timers due at the same instant fire in the order they were set —
  trio wakes tasks sleeping until one instant in an order of its own (by memory address), which
  differs from one process to the next, and a simulation must replay the same run. A timer dies
  with the incarnation that set it.
* No task outlives its owner: an actor lives in its supervisor's nursery, a supervisor in the
  nursery of whoever opened it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import trio

log = logging.getLogger(__name__)

M = TypeVar("M")


class ActorStopped(Exception):
    """The actor has stopped (or was given up on) and takes no more messages."""


class MailboxFull(Exception):
    """``send_nowait`` found the mailbox full."""


class ActorCrashed(Exception):
    """The actor crashed while handling this ask (or was given up on before handling it)."""


class AskTimeout(TimeoutError):
    """No answer within the ask's timeout."""


class _Reply:
    """A one-shot answer slot for ``ask``."""

    __slots__ = ("_done", "_error", "_value")

    def __init__(self) -> None:
        self._done = trio.Event()
        self._value: Any = None
        self._error: BaseException | None = None

    def set(self, value: Any) -> None:
        if not self._done.is_set():
            self._value = value
            self._done.set()

    def fail(self, error: BaseException) -> None:
        if not self._done.is_set():
            self._error = error
            self._done.set()

    async def wait(self) -> Any:
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value


@dataclass(frozen=True, slots=True)
class ActorStatistics:
    name: str
    mailbox_used: int
    mailbox_size: int
    handled: int
    restarts: int
    stopped: bool


class ActorRef(Generic[M]):
    """The address of an actor: what others hold to talk to it."""

    __slots__ = ("_child", "name")

    def __init__(self, child: _Child) -> None:
        self._child = child
        self.name = child.name

    async def send(self, message: M) -> None:
        tx = self._child.tx
        try:
            # Fast path: with room in the mailbox, no scheduling round trip is needed (the
            # caller's next receive is its checkpoint); wait for room only when full.
            tx.send_nowait((message, None))
        except trio.WouldBlock:
            try:
                await tx.send((message, None))
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                raise ActorStopped(self.name) from None
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ActorStopped(self.name) from None

    def send_nowait(self, message: M) -> None:
        try:
            self._child.tx.send_nowait((message, None))
        except trio.WouldBlock:
            raise MailboxFull(self.name) from None
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ActorStopped(self.name) from None

    # A timeout parameter rather than a cancel scope: an ask must fail with AskTimeout, which the
    # caller reports to the client, instead of silently cancelling the caller's own work.
    async def ask(self, message: M, timeout: float = 5.0) -> Any:  # noqa: ASYNC109
        reply = _Reply()
        with trio.move_on_after(timeout) as scope:
            try:
                await self._child.tx.send((message, reply))
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                raise ActorStopped(self.name) from None
            return await reply.wait()
        assert scope.cancelled_caught
        raise AskTimeout(f"{self.name} did not answer within {timeout} s")

    def close(self) -> None:
        """Stop taking messages; the actor stops once it has handled those already sent (a
        crash meanwhile stops it too: an actor on its way out is not restarted)."""
        self._child.closing = True
        self._child.tx.close()

    @property
    def stopped(self) -> bool:
        return self._child.stopped

    def statistics(self) -> ActorStatistics:
        child = self._child
        stats = child.tx.statistics()
        return ActorStatistics(
            name=child.name,
            mailbox_used=stats.current_buffer_used,
            mailbox_size=int(stats.max_buffer_size),
            handled=child.handled,
            restarts=child.restarts,
            stopped=child.stopped,
        )


class Timer:
    """A message due at ``deadline`` (trio's clock); :meth:`cancel` disarms it."""

    __slots__ = ("_fire", "_owner", "deadline")

    def __init__(self, deadline: float, fire: Callable[[], None], owner: set[Timer]) -> None:
        self.deadline = deadline
        self._fire: Callable[[], None] | None = fire
        self._owner = owner
        owner.add(self)

    def cancel(self) -> None:
        self._fire = None
        self._owner.discard(self)

    def expire(self) -> None:
        """Run it now (the queue calls this when it falls due); a cancelled one does nothing."""
        fire, self._fire = self._fire, None
        self._owner.discard(self)
        if fire is not None:
            fire()


class Timers:
    """One queue for the timers of every actor it serves, and one task sleeping until the
    earliest: due timers fire in (deadline, order set) order — the same in every run."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()
        self._sleep = trio.CancelScope()

    def at(self, deadline: float, fire: Callable[[], None], owner: set[Timer]) -> Timer:
        timer = Timer(deadline, fire, owner)
        heapq.heappush(self._heap, (deadline, next(self._order), timer))
        if deadline < self._sleep.deadline:
            self._sleep.deadline = deadline
        return timer

    async def run(self) -> None:
        """Fire timers as they fall due, until cancelled."""
        heap = self._heap
        while True:
            self._sleep = trio.CancelScope(deadline=heap[0][0] if heap else math.inf)
            with self._sleep:
                await trio.sleep_forever()
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                heapq.heappop(heap)[2].expire()


class Actor(Generic[M]):
    """Base class: subclasses implement :meth:`handle` and, if they keep state, :meth:`started`."""

    #: Exception types that refuse one message without crashing the actor.
    expected_errors: ClassVar[tuple[type[Exception], ...]] = ()

    _ref: ActorRef[M]
    _nursery: trio.Nursery
    _timer_queue: Timers
    _armed: set[Timer]

    @property
    def ref(self) -> ActorRef[M]:
        return self._ref

    async def started(self) -> None:
        """Called at the start of each incarnation, before the first message."""

    async def handle(self, message: M) -> Any:
        raise NotImplementedError

    def on_rejected(self, message: M, error: Exception) -> None:
        """A message sent without ``ask`` was refused with one of ``expected_errors``."""
        # The message's type, not its contents: those may hold what a visitor wrote.
        log.info("%s refused a %s: %s", self._ref.name, type(message).__name__, error)

    def on_crash(self, error: BaseException) -> None:
        """Best-effort cleanup of the dying incarnation (e.g. close its connections)."""

    def call_later(self, seconds: float, message: M) -> Timer:
        """Deliver ``message`` to this actor after ``seconds`` (trio's clock); ``cancel()``
        the timer to disarm it."""
        return self._timer_queue.at(
            trio.current_time() + seconds, lambda: self._deliver(message), self._armed
        )

    def _deliver(self, message: M) -> None:
        try:
            self._ref.send_nowait(message)
        except MailboxFull:
            # Never hold up the other timers: wait for room beside them.
            self._nursery.start_soon(self._send_later, message)
        except ActorStopped:
            pass

    async def _send_later(self, message: M) -> None:
        try:
            await self._ref.send(message)
        except ActorStopped:
            pass

    def stop(self) -> None:
        """Stop after the messages already in the mailbox."""
        self._ref.close()


class _Child:
    __slots__ = ("closing", "factory", "handled", "name", "restarts", "rx", "stopped", "tx")

    def __init__(self, name: str, factory: Callable[[], Actor[Any]], mailbox_size: int) -> None:
        self.name = name
        self.factory = factory
        self.tx, self.rx = trio.open_memory_channel[tuple[Any, _Reply | None]](mailbox_size)
        self.handled = 0
        self.restarts = 0
        self.stopped = False
        #: Its mailbox was closed (:meth:`ActorRef.close`): it is on its way out.
        self.closing = False


@dataclass(frozen=True, slots=True)
class SupervisorStatistics:
    name: str
    children: int
    restarts: int
    given_up: int


class Supervisor:
    """Owns child actors in its nursery and restarts them one-for-one."""

    def __init__(
        self,
        name: str,
        nursery: trio.Nursery,
        *,
        max_restarts: int = 5,
        window: float = 60.0,
        on_give_up: Callable[[str, BaseException], None] | None = None,
        timers: Timers | None = None,
    ) -> None:
        self.name = name
        self._nursery = nursery
        if timers is None:
            timers = Timers()
            nursery.start_soon(timers.run)
        #: The runtime's timers (shared with the other supervisors of one hub).
        self.timers = timers
        self.max_restarts = max_restarts
        self.window = window
        self._on_give_up = on_give_up
        self._children: dict[str, _Child] = {}
        self._restarts = 0
        self._given_up = 0

    def spawn(
        self, name: str, factory: Callable[[], Actor[M]], *, mailbox_size: int = 256
    ) -> ActorRef[M]:
        """Start a child now; messages sent before it has started wait in its mailbox."""
        if name in self._children:
            raise ValueError(f"{self.name}: a child named {name!r} is running")
        child = _Child(name, factory, mailbox_size)
        self._children[name] = child
        ref: ActorRef[M] = ActorRef(child)
        self._nursery.start_soon(self._supervise, child, ref, name=f"actor:{name}")
        return ref

    def __contains__(self, name: str) -> bool:
        return name in self._children

    def statistics(self) -> SupervisorStatistics:
        return SupervisorStatistics(self.name, len(self._children), self._restarts, self._given_up)

    async def _supervise(self, child: _Child, ref: ActorRef[Any]) -> None:
        crashes: deque[float] = deque()
        try:
            while True:
                try:
                    await self._incarnation(child, ref)
                    return  # mailbox closed and drained: a normal stop
                except Exception as exc:
                    error = _unwrap(exc)
                    if child.closing:
                        # Closed (its group moved to another node, say) and failing on what
                        # it was still handling: its neighbours are going too; no restart.
                        log.info("%s: %s stopped on a crash while closing", self.name, child.name)
                        return
                    now = trio.current_time()
                    while crashes and crashes[0] <= now - self.window:
                        crashes.popleft()
                    crashes.append(now)
                    if len(crashes) > self.max_restarts:
                        log.error(
                            "%s: giving up on %s after %d crashes",
                            self.name,
                            child.name,
                            len(crashes),
                            exc_info=error,
                        )
                        self._given_up += 1
                        self._give_up(child, error)
                        return
                    log.warning(
                        "%s: restarting %s after a crash", self.name, child.name, exc_info=error
                    )
                    child.restarts += 1
                    self._restarts += 1
        finally:
            # However the child ended (stopped, given up, or cancelled with its supervisor), its
            # mailbox takes nothing more and nobody keeps waiting for an answer.
            child.stopped = True
            self._children.pop(child.name, None)
            self._close_mailbox(child, ActorStopped(child.name))

    async def _incarnation(self, child: _Child, ref: ActorRef[Any]) -> None:
        actor = child.factory()
        actor._ref = ref
        actor._timer_queue = self.timers
        actor._armed = set()
        try:
            async with trio.open_nursery() as nursery:
                actor._nursery = nursery
                await actor.started()
                await self._loop(actor, child)
                nursery.cancel_scope.cancel()
        except Exception as exc:
            try:
                actor.on_crash(_unwrap(exc))
            except Exception:
                log.exception("%s: on_crash of %s failed", self.name, child.name)
            raise
        finally:
            for timer in list(actor._armed):  # timers die with the incarnation
                timer.cancel()

    @staticmethod
    async def _loop(actor: Actor[Any], child: _Child) -> None:
        expected = actor.expected_errors
        async for message, reply in child.rx:
            result: Any = None
            try:
                result = await actor.handle(message)
            except expected as error:
                if reply is not None:
                    reply.fail(error)
                else:
                    actor.on_rejected(message, error)
            except BaseException:
                if reply is not None:
                    reply.fail(ActorCrashed(child.name))
                raise
            else:
                if reply is not None:
                    reply.set(result)
            child.handled += 1
            # An idle actor holds nothing of its last message (a detached visitor's whole
            # connection, say) while it waits for the next one.
            del message, reply, result

    @staticmethod
    def _close_mailbox(child: _Child, error: Exception) -> None:
        child.tx.close()
        while True:
            try:
                _, reply = child.rx.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            if reply is not None:
                reply.fail(error)
        child.rx.close()

    def _give_up(self, child: _Child, error: BaseException) -> None:
        self._close_mailbox(child, ActorCrashed(child.name))
        if self._on_give_up is not None:
            self._on_give_up(child.name, error)


def _unwrap(exc: BaseException) -> BaseException:
    """The single exception inside (nested) exception groups, else the group itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


@asynccontextmanager
async def open_supervisor(
    name: str,
    *,
    max_restarts: int = 5,
    window: float = 60.0,
    on_give_up: Callable[[str, BaseException], None] | None = None,
) -> AsyncIterator[Supervisor]:
    """A supervisor whose children are cancelled when the block exits."""
    async with trio.open_nursery() as nursery:
        supervisor = Supervisor(
            name, nursery, max_restarts=max_restarts, window=window, on_give_up=on_give_up
        )
        try:
            yield supervisor
        finally:
            nursery.cancel_scope.cancel()
