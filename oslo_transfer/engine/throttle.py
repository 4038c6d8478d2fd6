#    Licensed under the Apache License, Version 2.0 (the "License"); you may
#    not use this file except in compliance with the License. You may obtain
#    a copy of the License at
#
#         http://www.apache.org/licenses/LICENSE-2.0
#
#    Unless required by applicable law or agreed to in writing, software
#    distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
#    WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
#    License for the specific language governing permissions and limitations
#    under the License.

"""Flow control: the process's scheduler, rate limits, connection caps.

All waiting for connections and bytes goes through one :class:`Scheduler`
per process (:data:`SCHEDULER`), so that classes, deadlines and rate limits
are decided in one place (DESIGN, "Scheduling"):

* :meth:`Scheduler.slot` ``(origin, cls, deadline, cancel)``: a context
  manager for one connection to ``origin`` (``scheme://host:port``);
* :meth:`Scheduler.consume` ``(nbytes, cls, origin, cancel)``: blocks until
  ``nbytes`` may pass.

Drivers never import this module: they reach both through the
:class:`~oslo_transfer.driver.Context` they are given (``ctx.slot(origin)``,
``ctx.consume(nbytes, origin)``), which carries the class and the deadline
of the call.

The classes, highest first: :data:`INTERACTIVE` (a guest waiting for a
block of a lazy image), :data:`NORMAL` (every copy, upload and stream; the
default) and :data:`BACKGROUND` (a lazy image's prefetch).  The policy of
this first version is strict priority:

* a slot goes to the waiter of the highest class first (earliest deadline
  first within a class, then first come);
* bytes under the process rate limit go to the highest class waiting;
* each class follows its :class:`ClassPolicy`: the background class holds
  at most one connection per origin, asks for at most 256 KiB per read
  (:attr:`ClassPolicy.request_bytes`, what it may have in flight when a
  higher class arrives) and pauses 200 ms after each request of a higher
  class to the same origin, so that a guest's on-demand reads overtake a
  prefetch.

The flow-control issue builds the full policy (weighted shares, pacing,
deadlines that refuse work) on this interface.
"""

import bisect
import collections
import contextlib
import dataclasses
import itertools
import math
import threading
import time

__all__ = ['INTERACTIVE', 'NORMAL', 'BACKGROUND', 'CLASSES', 'ClassPolicy',
           'Scheduler', 'TokenBucket', 'SCHEDULER', 'PROCESS_BUCKET']

#: a guest (or a caller) waits for these bytes now
INTERACTIVE = 'interactive'
#: copies, uploads and streams: the default class
NORMAL = 'normal'
#: work nobody waits for (a lazy image's prefetch)
BACKGROUND = 'background'
#: the classes, highest first
CLASSES = (INTERACTIVE, NORMAL, BACKGROUND)
_RANK = {name: rank for rank, name in enumerate(CLASSES)}

KiB = 1024


def rank(cls: str) -> int:
    """0 for the highest class; :exc:`ValueError` for an unknown one."""
    try:
        return _RANK[cls]
    except KeyError:
        raise ValueError('unknown scheduling class %r: one of %s'
                         % (cls, ', '.join(CLASSES))) from None


class TokenBucket:
    """A bytes-per-second limit shared by the threads that consume it.

    :param rate: bytes per second; 0 or None means unlimited.
    :param burst: bytes that may pass at once (default: a quarter second).
    """

    def __init__(self, rate: int | None, burst: int | None = None):
        self.rate = rate or 0
        self.burst = burst or max(64 * 1024, self.rate // 4)
        self._tokens = self.burst
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def set_rate(self, rate: int | None):
        with self._lock:
            self.rate = rate or 0
            self.burst = max(64 * 1024, self.rate // 4)

    def consume(self, nbytes: int, cancel=None):
        """Block until ``nbytes`` may pass (cancel ends the wait)."""
        if not self.rate:
            return
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens +
                               (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= nbytes
            wait = -self._tokens / self.rate if self._tokens < 0 else 0
        if wait > 0:
            if cancel is not None:
                if cancel.wait(wait):
                    cancel.check()
            else:
                time.sleep(wait)


#: the per-process limit, ``[oslo_transfer] process_rate_limit``
PROCESS_BUCKET = TokenBucket(0)


@dataclasses.dataclass(frozen=True)
class ClassPolicy:
    """How the scheduler treats one class.

    :param connections: the most slots the class holds per origin at once;
        None: only the origin's cap (``max_connections_per_origin``).
    :param request_bytes: the most bytes one read of the class should ask
        for (what it has in flight, in the network and the receive
        buffers, when a higher class arrives); None: no limit.  Readers
        that size their own requests (a lazy image's prefetch) read it
        with :meth:`Scheduler.policy`.
    :param yield_seconds: after a higher class asked for a slot to the
        same origin, the class waits this long before its next slot or
        bytes.
    """

    connections: int | None = None
    request_bytes: int | None = None
    yield_seconds: float = 0.0


#: the policy of each class; the background one is a lazy image's
#: prefetch: one connection, one read of at most 256 KiB in flight, and a
#: 200 ms pause after each on-demand miss.
DEFAULT_POLICIES = {
    INTERACTIVE: ClassPolicy(),
    NORMAL: ClassPolicy(),
    BACKGROUND: ClassPolicy(connections=1, request_bytes=256 * KiB,
                            yield_seconds=0.2),
}


@dataclasses.dataclass(eq=False)
class _Waiter:
    key: tuple
    origin: str
    cls: str


class Scheduler:
    """Connection slots per origin and bytes, by class (see the module).

    :ivar limit: connections per origin, all classes together
        (``[oslo_transfer] max_connections_per_origin``).
    :param policies: ``{class: ClassPolicy}`` (default
        :data:`DEFAULT_POLICIES`).
    """

    def __init__(self, policies=None):
        self._cond = threading.Condition()
        self._busy = collections.Counter()
        self._held = collections.Counter()
        self._waiting = []
        self._demand = {}
        self._seq = itertools.count()
        self._rate_waiting = collections.Counter()
        self.limit = 8
        self.policies = dict(DEFAULT_POLICIES)
        self.policies.update(policies or {})

    def policy(self, cls: str) -> ClassPolicy:
        """The :class:`ClassPolicy` of ``cls``."""
        rank(cls)
        return self.policies.get(cls, ClassPolicy())

    # -- connections ----------------------------------------------------------

    @contextlib.contextmanager
    def slot(self, origin: str, cls: str = NORMAL,
             deadline: float | None = None, cancel=None,
             poll: float = 0.2):
        """Hold one connection to ``origin`` for the ``with`` block.

        :param origin: ``scheme://host:port`` (any string that names the
            server).
        :param cls: the scheduling class.
        :param deadline: ``time.monotonic()`` value by which the caller
            must be done: earliest deadline first within a class.
        :param cancel: a :class:`~oslo_transfer.driver.CancelToken` that
            ends the wait (raising ``Cancelled``).
        """
        r = rank(cls)
        waiter = _Waiter((r, math.inf if deadline is None else deadline,
                          next(self._seq)), origin, cls)
        with self._cond:
            self._note_demand(origin, r)
            bisect.insort(self._waiting, waiter, key=lambda w: w.key)
            try:
                while not self._may_start(waiter):
                    if cancel is not None:
                        cancel.check()
                    self._cond.wait(self._wait_time(origin, cls, poll))
            finally:
                self._waiting.remove(waiter)
                self._cond.notify_all()
            self._busy[origin] += 1
            self._held[origin, cls] += 1
        try:
            yield
        finally:
            with self._cond:
                self._busy[origin] -= 1
                self._held[origin, cls] -= 1
                if not self._busy[origin]:
                    del self._busy[origin]
                if not self._held[origin, cls]:
                    del self._held[origin, cls]
                self._cond.notify_all()

    def _note_demand(self, origin, r):
        now = time.monotonic()
        self._demand[origin, r] = now

    def _yield_left(self, origin, cls) -> float:
        """Seconds ``cls`` still waits after a higher class's request."""
        pause = self.policy(cls).yield_seconds
        if not pause:
            return 0.0
        now = time.monotonic()
        left = 0.0
        for higher in range(rank(cls)):
            t = self._demand.get((origin, higher))
            if t is not None:
                left = max(left, t + pause - now)
        return left

    def _wait_time(self, origin, cls, poll):
        left = self._yield_left(origin, cls)
        return min(poll, left) if left > 0 else poll

    def _eligible(self, waiter) -> bool:
        pol = self.policy(waiter.cls)
        if pol.connections is not None and \
                self._held[waiter.origin, waiter.cls] >= pol.connections:
            return False
        return self._yield_left(waiter.origin, waiter.cls) <= 0

    def _may_start(self, waiter) -> bool:
        if self._busy[waiter.origin] >= self.limit or \
                not self._eligible(waiter):
            return False
        for other in self._waiting:
            if other is waiter:
                return True
            if other.origin == waiter.origin and self._eligible(other):
                return False        # a higher (or earlier) one goes first
        return True

    # -- bytes ---------------------------------------------------------------

    def consume(self, nbytes: int, cls: str = NORMAL,
                origin: str | None = None, cancel=None) -> None:
        """Block until ``nbytes`` may pass.

        Waits out the class's pause after a higher class's request to
        ``origin``, then takes the bytes from the process rate limit
        (``[oslo_transfer] process_rate_limit``), the highest class
        waiting first.
        """
        r = rank(cls)
        if origin is not None:
            self._wait_yield(origin, cls, cancel)
        bucket = PROCESS_BUCKET
        if not bucket.rate:
            return
        with self._cond:
            self._rate_waiting[r] += 1
        try:
            with self._cond:
                while any(self._rate_waiting[h] for h in range(r)):
                    if cancel is not None:
                        cancel.check()
                    self._cond.wait(0.05)
            bucket.consume(nbytes, cancel)
        finally:
            with self._cond:
                self._rate_waiting[r] -= 1
                self._cond.notify_all()

    def _wait_yield(self, origin, cls, cancel):
        while True:
            with self._cond:
                left = self._yield_left(origin, cls)
            if left <= 0:
                return
            if cancel is not None:
                if cancel.wait(left):
                    cancel.check()
            else:
                time.sleep(left)


#: the process's scheduler
SCHEDULER = Scheduler()

#: Older names: the per-origin connection caps are the scheduler's.
OriginLimiter = Scheduler
ORIGINS = SCHEDULER
