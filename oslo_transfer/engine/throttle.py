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

"""Flow control: a Transfer's scheduler, rate limits, connection caps.

All waiting for connections, bytes and submitted transfers goes through
one :class:`Scheduler` per :class:`~oslo_transfer.transfer.Transfer`
(``transfer.scheduler``), so that classes, deadlines and rate limits are
decided in one place (DESIGN, "Scheduling" and "Flow control"):

* :meth:`Scheduler.slot` ``(origin, cls, deadline, cancel)``: a context
  manager for one connection to ``origin`` (``scheme://host:port``);
* :meth:`Scheduler.consume` ``(nbytes, cls, origin, cancel)``: blocks until
  ``nbytes`` may pass;
* :meth:`Scheduler.queue_job`: what :meth:`Transfer.submit
  <oslo_transfer.transfer.Transfer.submit>` queues into.

Drivers never import this module: they reach the first two through the
:class:`~oslo_transfer.driver.Context` they are given (``ctx.slot(origin)``,
``ctx.consume(nbytes, origin)``), which carries the class and the deadline
of the call.

The classes, highest first: :data:`INTERACTIVE`, :data:`NORMAL` (the
default) and :data:`BACKGROUND`.  The policy (``scheduler = classes``, the
default):

* **bytes** under a rate limit (``process_rate_limit``, and
  ``origin_rate_limit`` per origin) are shared between the classes waiting
  by start-time fair queueing with the class weights (``class_weights``,
  default interactive 8, normal 4, background 1): a class that arrives is
  served first, classes that all wait share in proportion to their weights
  (per class, not per transfer), a lower class is never starved, and a
  class alone takes the whole limit (work-conserving).  Within a class the
  earliest deadline goes first, then first come;
* **connection slots** per origin (``max_connections_per_origin``) go to
  the waiter of the highest class (earliest deadline, then first come),
  except that a class holding no slot to the origin is served before the
  classes that hold some (when the cap allows two or more); a holder of a
  lower class lends its slot at its next chunk (its next ``consume``) when
  a higher class waits for one, keeping its class's last slot, and takes
  one back in class order;
* **submitted transfers** start in the same order (weighted by class,
  deadline then first come) when one of ``executor_workers`` is free; a
  higher class does not wait for a worker that a lower class holds: it
  starts at once on one of as many extra workers;
* **pacing**: when the network, not our own limit, is the bottleneck,
  the lower classes' bytes through it (``shared_bottleneck``: the host's
  link, or one origin) are paced to their weighted share of its capacity
  while a higher class moves bytes through it (:meth:`Scheduler._pace`),
  and pacing that does not help stops for a while (:class:`_Pacing`);
* a waiter on a destination lock lends its class to the holder
  (:class:`Loan`);
* each class follows its :class:`ClassPolicy` (a lazy image's prefetch,
  the background class, asks for at most 256 KiB per read, through
  sockets with a 256 KiB receive buffer, and pauses 200 ms after each
  request of a higher class to the same origin).

``scheduler = fifo`` keeps the behaviour before classes (one class, first
come first served, no admission) for comparisons.  Admission of deadlines
is :mod:`oslo_transfer.engine.admission`.
"""

import bisect
import collections
import contextlib
import dataclasses
import itertools
import logging
import math
import threading
import time

LOG = logging.getLogger(__name__)

__all__ = ['INTERACTIVE', 'NORMAL', 'BACKGROUND', 'CLASSES', 'ClassPolicy',
           'DEFAULT_WEIGHTS', 'FairQueue', 'Loan', 'Scheduler', 'TokenBucket',
           'origin_key', 'parse_weights', 'rank']

#: a guest (or a caller) waits for these bytes now
INTERACTIVE = 'interactive'
#: copies, uploads and streams: the default class
NORMAL = 'normal'
#: work nobody waits for (a lazy image's prefetch, bulk copies)
BACKGROUND = 'background'
#: the classes, highest first
CLASSES = (INTERACTIVE, NORMAL, BACKGROUND)
_RANK = {name: rank for rank, name in enumerate(CLASSES)}
#: ``[oslo_transfer] class_weights`` by default
DEFAULT_WEIGHTS = {INTERACTIVE: 8, NORMAL: 4, BACKGROUND: 1}

KiB = 1024
#: seconds of history behind the bytes/s of :meth:`Scheduler.stats`
RATE_WINDOW = 5
#: seconds of history behind the capacity estimate (the highest 1 s rate)
CAPACITY_WINDOW = 30
#: seconds without bytes that make a second no sample of the capacity
PAUSE = 0.25
#: seconds of pacing after which its effect is judged
PACING_TRIAL = 2.0
#: the gain the higher class must show after :data:`PACING_TRIAL` seconds
PACING_GAIN = 1.10
#: seconds pacing stays off after a trial that did not help
PACING_BACKOFF = 30.0
#: ``[oslo_transfer] shared_bottleneck`` values
BOTTLENECKS = ('host', 'origin')
#: the origin of local copies (no network: never paced, never pacing)
LOCAL = 'file://local'


def rank(cls: str) -> int:
    """0 for the highest class; :exc:`ValueError` for an unknown one."""
    try:
        return _RANK[cls]
    except KeyError:
        raise ValueError('unknown scheduling class %r: one of %s'
                         % (cls, ', '.join(CLASSES))) from None


def origin_key(loc, drv=None) -> str:
    """``scheme://host:port`` of a Location: the origin of its slots.

    With the driver, the server it contacts
    (:meth:`~oslo_transfer.driver.Driver.origin`: the first of its
    ``policy_urls()``), so that an S3 bucket counts as its endpoint.
    """
    if drv is not None and loc.scheme != 'file':
        return drv.origin(loc)
    if loc.scheme == 'file':
        return LOCAL
    return '%s://%s' % (loc.scheme, loc.parts().netloc.rpartition('@')[2])


def parse_weights(value) -> dict:
    """``{class: weight}`` from a dict or ``"interactive:8,normal:4,..."``.

    Classes left out keep their default weight.

    :raises ValueError: an unknown class or a weight that is not > 0.
    """
    if isinstance(value, str):
        items = []
        for part in value.split(','):
            if part.strip():
                name, _, w = part.partition(':')
                items.append((name.strip(), w.strip()))
    else:
        items = list((value or {}).items())
    weights = dict(DEFAULT_WEIGHTS)
    for name, w in items:
        rank(name)
        try:
            w = float(w)
        except (TypeError, ValueError):
            w = 0
        if not w > 0:
            raise ValueError('class weight of %s must be a number > 0, not '
                             '%r' % (name, w))
        weights[name] = w
    return weights


class TokenBucket:
    """A bytes-per-second limit shared by the threads that consume it.

    :param rate: bytes per second; 0 or None means unlimited.
    :param burst: bytes that may pass at once (default: a quarter second).
    :param clock: the clock (tests give a fake one).
    """

    def __init__(self, rate: int | None, burst: int | None = None,
                 clock=time.monotonic):
        self.rate = rate or 0
        self.burst = burst or max(64 * 1024, self.rate // 4)
        self._tokens = self.burst
        self._clock = clock
        self._stamp = clock()
        self._lock = threading.Lock()

    def set_rate(self, rate: int | None):
        with self._lock:
            self.rate = rate or 0
            self.burst = max(64 * 1024, self.rate // 4)

    def refill(self) -> float:
        """The tokens now (may be negative: a debt)."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens +
                           (now - self._stamp) * self.rate)
        self._stamp = now
        return self._tokens

    def take(self, nbytes: int) -> float:
        """Take ``nbytes`` if tokens are left: 0, else seconds to wait."""
        tokens = self.refill()
        if tokens > -1:             # (less than a byte short: rounding)
            self._tokens -= nbytes
            return 0.0
        return max(-tokens / self.rate, 1e-3)

    def consume(self, nbytes: int, cancel=None):
        """Block until ``nbytes`` may pass (cancel ends the wait)."""
        if not self.rate:
            return
        with self._lock:
            self.refill()
            self._tokens -= nbytes
            wait = -self._tokens / self.rate if self._tokens < 0 else 0
        if wait > 0:
            if cancel is not None:
                if cancel.wait(wait):
                    cancel.check()
            else:
                time.sleep(wait)


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
    :param receive_buffer: ``SO_RCVBUF`` in bytes of the sockets the
        class's calls open (set before ``connect()``, so that it also
        bounds the TCP window the connection may scale to); None: the
        kernel's autotuning (which a fixed size turns off for that
        socket, so only lower classes get one).  A small buffer bounds
        what a connection of the class has in flight, in the network and
        in its receive buffer, when a higher class arrives.  Drivers read
        it as :attr:`Context.receive_buffer
        <oslo_transfer.driver.Context.receive_buffer>`; not every driver
        honours it (see :doc:`/user/flow`).
    """

    connections: int | None = None
    request_bytes: int | None = None
    yield_seconds: float = 0.0
    receive_buffer: int | None = None


#: the policy of each class: background reads ask for at most 256 KiB,
#: through sockets with a 256 KiB receive buffer, and pause 200 ms after
#: each request of a higher class to the same origin (a lazy image's
#: on-demand miss overtakes its prefetch).
DEFAULT_POLICIES = {
    INTERACTIVE: ClassPolicy(),
    NORMAL: ClassPolicy(),
    BACKGROUND: ClassPolicy(request_bytes=256 * KiB, yield_seconds=0.2,
                            receive_buffer=256 * KiB),
}


@dataclasses.dataclass(eq=False)
class _Request:
    """One waiter of a :class:`FairQueue`."""

    cls: str
    cost: float
    deadline: float
    seq: int
    payload: object = None
    granted: bool = False


class FairQueue:
    """Start-time fair queueing across classes; EDF then FIFO within one.

    The decision part of the scheduler, without threads or clocks, so that
    it can be tested alone.  A class's next request starts at virtual time
    ``max(V, F[class])`` and moves ``F[class]`` by ``cost / weight``; the
    request with the smallest start goes next, ties to the higher class.
    A class that was idle starts at ``V`` (no credit saved up), so classes
    that all wait get shares in proportion to their weights and a class
    alone gets everything.

    :param weights: ``{class: weight}``; None treats every class as one
        (first come, first served).
    """

    def __init__(self, weights=None):
        self.weights = weights
        self._queues = collections.defaultdict(list)
        self._finish = collections.defaultdict(float)
        self._vtime = 0.0
        self._seq = itertools.count()

    def _key(self, cls):
        return cls if self.weights is not None else NORMAL

    def add(self, cls, cost=1.0, deadline=None, payload=None) -> _Request:
        """Queue a request; returns it (for :meth:`remove`)."""
        cls = self._key(cls)
        d = math.inf if deadline is None or self.weights is None \
            else deadline
        req = _Request(cls, float(cost), d, next(self._seq), payload)
        bisect.insort(self._queues[cls], req,
                      key=lambda r: (r.deadline, r.seq))
        return req

    def first(self, cls):
        """The first request of ``cls`` (EDF, then FIFO), or None."""
        q = self._queues.get(self._key(cls))
        return q[0] if q else None

    def remove(self, req):
        q = self._queues.get(req.cls)
        if q and req in q:
            q.remove(req)

    def __len__(self):
        return sum(len(q) for q in self._queues.values())

    def queued(self, cls) -> int:
        return len(self._queues.get(self._key(cls), ()))

    def requests(self) -> list:
        """Every waiting request, any class."""
        return [r for q in self._queues.values() for r in q]

    def head(self):
        """The request that goes next, or None."""
        best = None
        for cls, q in self._queues.items():
            if not q:
                continue
            start = max(self._vtime, self._finish[cls])
            k = (start, _RANK[cls])
            if best is None or k < best[0]:
                best = (k, q[0])
        return None if best is None else best[1]

    def pop(self, req=None):
        """Serve ``req`` (default: :meth:`head`); returns it."""
        req = req or self.head()
        if req is None:
            return None
        cls = req.cls
        self._queues[cls].remove(req)
        start = max(self._vtime, self._finish[cls])
        w = self.weights[cls] if self.weights is not None else 1.0
        self._finish[cls] = start + req.cost / w
        self._vtime = start
        req.granted = True
        return req


class _Stats:
    """Counters of one class, one origin or the host.

    Also the capacity estimate of a bottleneck (:meth:`capacity`): the
    bytes of each whole second, with the seconds that are no sample of
    the capacity set apart (a pause in the bytes, or lower classes
    paced).
    """

    def __init__(self):
        self.completed = self.missed = self.refused = 0
        self.total = 0
        self.seconds = collections.deque()     # (second, bytes)
        self.last = None         # when bytes last moved
        self.pauses = set()      # seconds with a pause in the bytes
        self.paced = set()       # seconds when lower classes were paced
        self.held = 0            # C as estimated before pacing began

    def add_bytes(self, now, n):
        self.total += n
        sec = int(now)
        self._pause_before(now)
        self.last = now
        if self.seconds and self.seconds[-1][0] == sec:
            self.seconds[-1][1] += n
        else:
            self.seconds.append([sec, n])
        while self.seconds and self.seconds[0][0] < sec - CAPACITY_WINDOW:
            self.seconds.popleft()
        if len(self.pauses) + len(self.paced) > 8 * CAPACITY_WINDOW:
            self.pauses = {s for s in self.pauses
                           if s >= sec - CAPACITY_WINDOW}
            self.paced = {s for s in self.paced
                          if s >= sec - CAPACITY_WINDOW}

    def _pause_before(self, now):
        """Mark the seconds of a pause (no bytes for :data:`PAUSE` s)."""
        if self.last is None:
            self.pauses.add(int(now))
        elif now - self.last > PAUSE:
            first = max(int(self.last), int(now) - CAPACITY_WINDOW - 1)
            self.pauses.update(range(first, int(now) + 1))

    def rate(self, now) -> float:
        sec = int(now)
        total = sum(b for s, b in self.seconds
                    if sec - RATE_WINDOW <= s < sec)
        return total / RATE_WINDOW

    def capacity(self, now) -> float:
        """C: the highest 1 s rate over the last :data:`CAPACITY_WINDOW` s.

        Only whole seconds in which the bytes never paused for more than
        :data:`PAUSE` s are samples (a second with a pause measured the
        demand, not the capacity).  Pacing never lowers C: while the
        window holds seconds when lower classes were paced, C stays at
        least what it was before pacing began (a paced second counts only
        when it is higher: no measured rate is above the capacity).
        0: unknown.
        """
        sec = int(now)
        if self.last is not None and now - self.last > PAUSE:
            self.pauses.add(int(self.last))
        best = max((b for s, b in self.seconds
                    if sec - CAPACITY_WINDOW <= s < sec and
                    s not in self.pauses), default=0)
        if any(sec - CAPACITY_WINDOW <= s < sec for s in self.paced):
            best = max(best, self.held)
        self.held = best
        return best

    def floor(self, now) -> float:
        """A lower bound of C: the highest rate of any whole second.

        Over the last :data:`CAPACITY_WINDOW` s, pauses included (no
        measured rate is above the capacity).  Pacing falls back on it
        while :meth:`capacity` is unknown: many connections that each
        hand over their bytes in large chunks (an HTTP read's 1 MiB) do
        so in bursts, with gaps longer than :data:`PAUSE` between them
        although the link never idled, which can leave no second that
        counts as a sample for several seconds.  0: nothing measured.
        """
        sec = int(now)
        return max((b for s, b in self.seconds
                    if sec - CAPACITY_WINDOW <= s < sec), default=0)

    def mark_paced(self, now):
        """Lower classes are paced in this second (no sample of C)."""
        if int(now) not in self.paced:
            self.held = self.capacity(now)
            self.paced.add(int(now))


class _Pacing:
    """Pacing of one bottleneck (the host, or one origin): on, off, judged.

    Pacing starts when a class holds a connection through the bottleneck
    while a lower class does too, and the capacity ``C`` is known.  The
    top class is then expected to get ``C`` x its connections / all
    connections without pacing (TCP's share); after
    :data:`PACING_TRIAL` seconds its measured rate must be at least
    :data:`PACING_GAIN` x that, else pacing stops for
    :data:`PACING_BACKOFF` seconds (the network was not the bottleneck:
    per-connection limits at the server, a top class that asks for
    little, our own rate limit).
    """

    def __init__(self):
        self.top = None          # the class paced for (None: not pacing)
        self.since = 0.0         # when pacing for it began
        self.mark = 0            # the top class's bytes then
        self.expected = 0.0      # its bytes/s without pacing
        self.judged = False
        self.off_until = -math.inf

    def start(self, top, now, mark, expected):
        self.top, self.since, self.mark = top, now, mark
        self.expected, self.judged = expected, False

    def stop(self):
        self.top = None

    def judge(self, now, moved) -> bool:
        """After the trial: False (and off for a while) if it did not help.

        :param moved: the top class's bytes through the bottleneck so far.
        """
        if self.judged or now - self.since < PACING_TRIAL:
            return True
        rate = (moved - self.mark) / (now - self.since)
        if rate >= PACING_GAIN * self.expected:
            self.judged = True
            return True
        self.top = None
        self.off_until = now + PACING_BACKOFF
        return False


@dataclasses.dataclass(eq=False)
class _Waiter:
    key: tuple
    origin: str
    cls: str


@dataclasses.dataclass(eq=False)
class _Held:
    origin: str
    cls: str
    deadline: float
    lent: bool = False


class Job:
    """One transfer as the scheduler sees it (active, admitted, counted).

    The engine fills in :attr:`origin` and :attr:`remaining` once it
    knows them (after ``stat``).
    """

    def __init__(self, sched, cls, deadline):
        self.sched = sched
        self.cls = cls
        self.deadline = deadline
        self.origin = None
        #: ``remaining() -> bytes`` still to move; None: not yet known
        self.remaining = None
        self.rate = 0           # the transfer's own rate limit, if any
        self.outcome = None
        #: classes lent by waiters on this transfer's destination lock
        self.lent = []

    @property
    def current_cls(self) -> str:
        """The class its bytes and connections go at now.

        Its own, or a higher one lent by a waiter (:meth:`borrow`).
        """
        return min([self.cls] + self.lent, key=rank)

    def borrow(self, cls):
        """A waiter of class ``cls`` waits for this transfer: run at it.

        Until :meth:`give_back`.  Lending follows the destination lock in
        this process only: a holder in another process is not seen.
        """
        cls = self.sched.cls(cls)
        with self.sched._cond:
            self.lent.append(cls)
            self.sched._cond.notify_all()

    def give_back(self, cls):
        with self.sched._cond:
            self.lent.remove(self.sched.cls(cls))

    def __enter__(self):
        self.sched._job_start(self)
        return self

    def __exit__(self, etype, exc, tb):
        self.sched._job_end(self, exc)


class Loan:
    """A waiter's class lent to the transfer it waits for.

    DESIGN, "Scheduling": a waiter on a destination lock lends its class
    to the holder.  :meth:`lend` raises the holder (a :class:`Job` of the
    same scheduler) to the waiter's class until :meth:`end`; the holder's
    next slot and bytes go at it.  Only a holder in this process is seen.

    :param waiter: the waiter's :class:`Job`, or None (not scheduled).
    """

    def __init__(self, waiter):
        self.waiter = waiter
        self.holder = None

    def lend(self, holder):
        """Lend to ``holder`` (a :class:`Job` or None), once."""
        if self.holder is not None or holder is None or \
                self.waiter is None or holder.sched is not self.waiter.sched:
            return
        holder.borrow(self.waiter.cls)
        self.holder = holder

    def end(self):
        """The wait is over: the holder goes back to its own class."""
        if self.holder is not None:
            self.holder.give_back(self.waiter.cls)
            self.holder = None


class Scheduler:
    """Slots, bytes and submitted transfers by class (see the module).

    :param limit: connections per origin, all classes together
        (``[oslo_transfer] max_connections_per_origin``).
    :param rate: bytes/s of every transfer together (``process_rate_limit``;
        0: none).
    :param origin_rate: bytes/s per origin (``origin_rate_limit``; 0: none).
    :param weights: ``{class: weight}`` (``class_weights``).
    :param mode: ``"classes"`` or ``"fifo"`` (one class, no admission).
    :param admission: refuse transfers whose deadline cannot be met.
    :param workers: transfers :meth:`queue_job` runs at once.
    :param extra_workers: transfers of a higher class that may start
        beyond ``workers`` while lower classes hold all of them (the
        launcher must have room for ``workers + extra_workers``).
    :param policies: ``{class: ClassPolicy}`` (default
        :data:`DEFAULT_POLICIES`).
    :param bottleneck: which flows share the network bottleneck that
        pacing acts on (``shared_bottleneck``): ``"host"`` (all of them)
        or ``"origin"`` (those to one origin).
    :param clock: the clock (tests give a fake one).
    """

    def __init__(self, limit=8, rate=0, origin_rate=0, weights=None,
                 mode='classes', admission=True, workers=4, policies=None,
                 bottleneck='host', extra_workers=0, clock=time.monotonic):
        if mode not in ('classes', 'fifo'):
            raise ValueError('scheduler must be "classes" or "fifo", not %r'
                             % (mode,))
        if bottleneck not in BOTTLENECKS:
            raise ValueError('shared_bottleneck must be "host" or "origin", '
                             'not %r' % (bottleneck,))
        self.clock = clock
        self.mode = mode
        self.admission = admission and mode == 'classes'
        self.weights = parse_weights(weights)
        self._cond = threading.Condition()
        self._busy = collections.Counter()
        self._held = collections.Counter()
        self._waiting = []
        self._demand = {}
        self._seq = itertools.count()
        self._local = threading.local()
        self.limit = limit
        self.policies = dict(DEFAULT_POLICIES)
        self.policies.update(policies or {})
        fq_weights = self.weights if mode == 'classes' else None
        self.bucket = TokenBucket(rate, clock=clock)
        self._bytes_q = FairQueue(fq_weights)
        self.origin_rate = origin_rate or 0
        self._origin_q = {}      # origin -> (TokenBucket, FairQueue)
        self.bottleneck = bottleneck
        #: pace lower classes when the network is the bottleneck
        self.pacing = True
        self._pacers = {}        # (bottleneck, class) -> TokenBucket
        self._pacing = {}        # bottleneck -> _Pacing
        self._dom_bytes = collections.Counter()  # (bottleneck, class)
        self._fq_weights = fq_weights
        self.workers = workers
        self._jobs_q = FairQueue(fq_weights)
        self._running = 0
        self._borrowed = 0       # transfers started on extra_workers
        self._running_cls = collections.Counter()
        self.extra_workers = extra_workers
        self.jobs = []           # active Jobs
        self._cls_stats = {c: _Stats() for c in CLASSES}
        self._origin_stats = collections.defaultdict(_Stats)
        self._all = _Stats()
        self._host = _Stats()    # the bytes from the network

    @property
    def rate(self) -> int:
        """The process rate limit (bytes/s, 0: none)."""
        return self.bucket.rate

    def cls(self, cls: str) -> str:
        """``cls`` checked; in ``fifo`` mode every class is ``normal``."""
        rank(cls)
        return cls if self.mode == 'classes' else NORMAL

    def policy(self, cls: str) -> ClassPolicy:
        """The :class:`ClassPolicy` of ``cls``."""
        rank(cls)
        return self.policies.get(cls, ClassPolicy())

    def receive_buffer(self, cls: str) -> int | None:
        """``SO_RCVBUF`` for the new sockets of ``cls``, or None.

        The :attr:`ClassPolicy.receive_buffer` of the class; None with
        ``scheduler = fifo`` (one class: the kernel's autotuning).
        """
        if self.mode != 'classes':
            return None
        return self.policy(cls).receive_buffer or None

    # -- connections ----------------------------------------------------------

    @contextlib.contextmanager
    def slot(self, origin: str, cls: str = NORMAL,
             deadline: float | None = None, cancel=None,
             poll: float = 0.2):
        """Hold one connection to ``origin`` for the ``with`` block.

        :param origin: ``scheme://host:port`` (any string that names the
            server).
        :param cls: the scheduling class.
        :param deadline: clock value by which the caller must be done:
            earliest deadline first within a class.
        :param cancel: a :class:`~oslo_transfer.driver.CancelToken` that
            ends the wait (raising ``Cancelled``).
        """
        cls = self.cls(cls)
        d = math.inf if deadline is None else deadline
        held = _Held(origin, cls, d)
        with self._cond:
            self._note_demand(origin, rank(cls))
            self._acquire(held, next(self._seq), cancel, poll)
        stack = self._stack()
        stack.append(held)
        try:
            yield
        finally:
            stack.remove(held)
            with self._cond:
                if not held.lent:
                    self._release(held)
                self._cond.notify_all()

    def _stack(self):
        stack = getattr(self._local, 'held', None)
        if stack is None:
            stack = self._local.held = []
        return stack

    def _acquire(self, held, seq, cancel, poll):
        """Wait in class order for a slot (the lock is held)."""
        waiter = _Waiter((rank(held.cls), held.deadline, seq), held.origin,
                         held.cls)
        bisect.insort(self._waiting, waiter, key=lambda w: w.key)
        try:
            while not self._may_start(waiter):
                if cancel is not None:
                    cancel.check()
                self._cond.wait(self._wait_time(held.origin, held.cls,
                                                poll))
        finally:
            self._waiting.remove(waiter)
            self._cond.notify_all()
        self._busy[held.origin] += 1
        self._held[held.origin, held.cls] += 1
        held.lent = False

    def _release(self, held):
        origin, cls = held.origin, held.cls
        self._busy[origin] -= 1
        self._held[origin, cls] -= 1
        if not self._busy[origin]:
            del self._busy[origin]
        if not self._held[origin, cls]:
            del self._held[origin, cls]

    def _note_demand(self, origin, r):
        self._demand[origin, r] = self.clock()

    def _yield_left(self, origin, cls) -> float:
        """Seconds ``cls`` still waits after a higher class's request."""
        pause = self.policy(cls).yield_seconds
        if not pause or self.mode != 'classes':
            return 0.0
        now = self.clock()
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

    def _starved(self, waiter) -> bool:
        """Its class holds no slot to the origin while others hold some."""
        return (self.limit >= 2 and
                not self._held[waiter.origin, waiter.cls] and
                self._busy[waiter.origin] > 0)

    def _may_start(self, waiter) -> bool:
        if self._busy[waiter.origin] >= self.limit or \
                not self._eligible(waiter):
            return False
        mine = self._starved(waiter)
        for other in self._waiting:
            if other is waiter:
                continue
            if other.origin != waiter.origin or not self._eligible(other):
                continue
            theirs = self._starved(other)
            if (theirs, ) > (mine, ) or (theirs == mine and
                                         other.key < waiter.key):
                return False        # a higher (or earlier) one goes first
        return True

    def _higher_blocked(self, origin, cls) -> bool:
        """A waiter of a higher class waits for a slot to ``origin``."""
        if self._busy[origin] < self.limit:
            return False
        r = rank(cls)
        return any(w.origin == origin and rank(w.cls) < r and
                   self._eligible(w) for w in self._waiting)

    def _lend(self, origin, cls, cancel):
        """At a chunk: lend this thread's slot to a higher class waiting."""
        stack = getattr(self._local, 'held', None)
        if not stack:
            return
        for held in stack:
            if held.origin == origin and held.cls == cls:
                break
        else:
            return
        with self._cond:
            if not self._higher_blocked(origin, cls):
                return
            if self.limit >= 2 and self._held[origin, cls] <= 1:
                return              # a class keeps its last slot
            self._release(held)
            held.lent = True
            self._cond.notify_all()
            self._acquire(held, next(self._seq), cancel, 0.2)

    # -- bytes ---------------------------------------------------------------

    def consume(self, nbytes: int, cls: str = NORMAL,
                origin: str | None = None, cancel=None,
                deadline: float | None = None) -> None:
        """Block until ``nbytes`` may pass.

        Lends this thread's slot to ``origin`` when a higher class waits
        for one, waits out the class's pause after a higher class's
        request, then takes the bytes from the origin's rate limit
        (``origin_rate_limit``) and the process's (``process_rate_limit``)
        by weighted class share.
        """
        cls = self.cls(cls)
        if origin is not None:
            self._lend(origin, cls, cancel)
            self._wait_yield(origin, cls, cancel)
            if self.origin_rate:
                bucket, q = self._origin_queue(origin)
                self._through(bucket, q, nbytes, cls, deadline, cancel)
        if self.bucket.rate:
            self._through(self.bucket, self._bytes_q, nbytes, cls, deadline,
                          cancel)
        if origin is not None and self.mode == 'classes':
            self._pace(origin, cls, nbytes, cancel)
        self.account(nbytes, cls, origin)

    def _domain(self, origin):
        """The bottleneck ``origin``'s bytes share (``shared_bottleneck``).

        None for local copies (no network).
        """
        if origin is None or origin == LOCAL:
            return None
        return 'host' if self.bottleneck == 'host' else origin

    def same_bottleneck(self, a, b) -> bool:
        """Bytes from origins ``a`` and ``b`` share a bottleneck.

        (``shared_bottleneck``); an origin not known yet (None) shares
        any.
        """
        if a is None or b is None:
            return True
        return self._domain(a) == self._domain(b)

    def _active(self, dom) -> dict:
        """``{class: connections}`` held through the bottleneck ``dom``.

        A copy running at a class lent by a waiter (:meth:`Job.borrow`)
        counts in that class too.
        """
        active = collections.Counter()
        for (o, c), n in self._held.items():
            if n > 0 and self._domain(o) == dom:
                active[c] += n
        for j in self.jobs:
            if j.lent and self._domain(j.origin) == dom:
                active[j.current_cls] += 0
        return active

    def _dom_stats(self, dom) -> _Stats:
        """The counters of the bottleneck ``dom``.

        ``"host"``: every byte from the network; None (local copies, no
        origin): every byte.
        """
        if dom is None:
            return self._all
        if dom == 'host':
            return self._host
        return self._origin_stats[dom]

    def _peak(self, dom, now) -> float:
        """C of the bottleneck ``dom`` as measured (0: unknown).

        See :meth:`_Stats.capacity`.
        """
        return self._dom_stats(dom).capacity(now)

    def _pace_cap(self, dom, now) -> float:
        """C of the bottleneck: measured, or else the configured limits.

        While C is not known (no second without a pause yet), the highest
        rate of any second (:meth:`_Stats.floor`): a lower bound, which
        paces the lower classes harder rather than not at all.
        """
        limits = [r for r in (self.bucket.rate, self.origin_rate
                              if dom != 'host' else 0) if r]
        peak = self._peak(dom, now) or self._dom_stats(dom).floor(now)
        return min([peak] + limits) if peak else min(limits, default=0)

    def _pacing_update(self, dom, active, now):
        """Start, judge or stop pacing ``dom`` (the lock is held).

        :returns: the top class paced for, or None.
        """
        state = self._pacing.get(dom)
        if state is None:
            state = self._pacing[dom] = _Pacing()
        top = min(active, key=rank) if active else None
        if top is None or all(c == top for c in active):
            state.stop()
            return None
        if state.top is not None and state.top != top:
            state.stop()
        if state.top is None:
            if now < state.off_until:
                return None
            cap = self._pace_cap(dom, now)
            if not cap:
                LOG.debug('not pacing the classes below %s through %s: its '
                          'capacity is not known yet', top, dom)
                return None
            total = sum(active.values()) or 1
            expected = cap * max(active[top], 1) / max(total, 1)
            state.start(top, now, self._dom_bytes[dom, top], expected)
            LOG.debug('pacing the classes below %s through %s (capacity '
                      '%.0f bytes/s)', top, dom, cap)
            return top
        moved = self._dom_bytes[dom, top]
        if not state.judge(now, moved):
            LOG.info('pacing the classes below %s did not raise its rate '
                     'by %d%% in %.0fs (%.0f bytes/s against %.0f '
                     'unpaced): not pacing %s for %.0fs', top,
                     round((PACING_GAIN - 1) * 100), PACING_TRIAL,
                     (moved - state.mark) / (now - state.since),
                     state.expected, dom, PACING_BACKOFF)
            return None
        return top

    def _pace(self, origin, cls, nbytes, cancel):
        """Pace a lower class to its share while a higher one is active.

        Active: holds a connection through the same bottleneck (the host,
        or the origin: ``shared_bottleneck``), even when it does not wait
        in the scheduler: its bytes may be stuck in the network, where TCP
        would give it only its share of the connections.  The share is
        the class's weight over the active classes' of the capacity ``C``
        (the highest 1 s rate of the last 30 s, never sampled while
        pacing; else the configured limits).  See :class:`_Pacing` for
        when pacing stops.
        """
        dom = self._domain(origin)
        if dom is None or not self.pacing:
            return
        now = self.clock()
        with self._cond:
            active = self._active(dom)
            active[cls] = max(active[cls], 1)     # the caller's bytes
            top = self._pacing_update(dom, active, now)
            if top is None:
                return
            self._dom_stats(dom).mark_paced(now)
            if rank(cls) <= rank(top):
                return
            cap = self._pace_cap(dom, now)
            share = self.weights[cls] / sum(self.weights[c] for c in active)
            rate = max(1, int(cap * share))
            pacer = self._pacers.get((dom, cls))
            if pacer is None:
                pacer = self._pacers[dom, cls] = TokenBucket(
                    rate, burst=max(64 * KiB, nbytes), clock=self.clock)
            elif pacer.rate != rate:
                pacer.rate = rate
        pacer.consume(nbytes, cancel)

    def account(self, nbytes, cls=NORMAL, origin=None):
        """Count bytes that moved (for stats and the capacity estimate)."""
        now = self.clock()
        with self._cond:
            self._cls_stats[self.cls(cls)].add_bytes(now, nbytes)
            self._all.add_bytes(now, nbytes)
            if origin is not None:
                self._origin_stats[origin].add_bytes(now, nbytes)
                dom = self._domain(origin)
                if dom is not None:
                    self._dom_bytes[dom, self.cls(cls)] += nbytes
                    if dom == 'host':
                        self._host.add_bytes(now, nbytes)

    def _origin_queue(self, origin):
        with self._cond:
            pair = self._origin_q.get(origin)
            if pair is None:
                pair = self._origin_q[origin] = (
                    TokenBucket(self.origin_rate, clock=self.clock),
                    FairQueue(self._fq_weights))
            return pair

    def _through(self, bucket, q, nbytes, cls, deadline, cancel):
        with self._cond:
            req = q.add(cls, nbytes, deadline)
            try:
                while True:
                    if q.head() is req:
                        wait = bucket.take(nbytes)
                        if not wait:
                            q.pop(req)
                            self._cond.notify_all()
                            return
                    else:
                        wait = 0.2
                    if cancel is not None:
                        cancel.check()
                    self._cond.wait(min(wait, 0.2))
            finally:
                if not req.granted:
                    q.remove(req)
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

    # -- transfers ------------------------------------------------------------

    def queue_job(self, start, cls=NORMAL, deadline=None, launch=None,
                  size=None):
        """Queue ``start()`` to run when a worker is free, in class order.

        :param start: the callable (it runs in ``launch``'s thread).
        :param launch: ``launch(fn)`` runs ``fn`` (an executor's
            ``submit``); default a new thread.
        :param size: the bytes it will move, if known before its
            ``stat`` (admission counts a queued transfer with a deadline
            and a size: :meth:`queued_load`).
        """
        cls = self.cls(cls)
        with self._cond:
            self._jobs_q.add(cls, 1.0, deadline, (start, launch, size))
        self._pump()

    def queued_load(self) -> list:
        """``[(class, deadline, bytes, key)]`` of the queued transfers.

        Those not started yet that have a deadline and a known size (the
        lock is held by the caller): admission counts their bytes.
        """
        return [(r.cls, r.deadline, r.payload[2], ('queued', r.seq))
                for r in self._jobs_q.requests()
                if r.deadline != math.inf and r.payload[2] is not None]

    def _next_job(self):
        """``(request, borrowed)`` to start now, or None (lock held).

        In class order when a worker is free; else a queued transfer of a
        class above one that holds a worker starts on one of the
        ``extra_workers`` (the lower-class holder cannot give its worker
        back mid-copy, as it gives back a connection slot; its bytes are
        paced behind the newcomer's).
        """
        if not len(self._jobs_q):
            return None
        if self._running < self.workers:
            return self._jobs_q.pop(), False
        if self.mode != 'classes' or self._borrowed >= self.extra_workers:
            return None
        lowest = max((rank(c) for c, n in self._running_cls.items() if n),
                     default=-1)
        for cls in CLASSES[:max(lowest, 0)]:
            req = self._jobs_q.first(cls)
            if req is not None:
                return self._jobs_q.pop(req), True
        return None

    def _pump(self):
        while True:
            with self._cond:
                nxt = self._next_job()
                if nxt is None:
                    return
                req, borrowed = nxt
                self._running += 1
                self._borrowed += borrowed
                self._running_cls[req.cls] += 1
            start, launch, _size = req.payload

            def run(start=start, cls=req.cls, borrowed=borrowed):
                try:
                    start()
                finally:
                    with self._cond:
                        self._running -= 1
                        self._borrowed -= borrowed
                        self._running_cls[cls] -= 1
                        self._cond.notify_all()
                    self._pump()

            if launch is None:
                threading.Thread(target=run, daemon=True).start()
            else:
                launch(run)

    def drain(self):
        """Wait until every queued transfer has started and ended."""
        with self._cond:
            while len(self._jobs_q) or self._running:
                self._cond.wait(0.2)

    def job(self, cls=NORMAL, deadline=None) -> Job:
        """A :class:`Job` to run one transfer in (a context manager)."""
        return Job(self, self.cls(cls), deadline)

    def _job_start(self, job):
        with self._cond:
            self.jobs.append(job)

    def _job_end(self, job, exc):
        from oslo_transfer import exceptions
        now = self.clock()
        with self._cond:
            self.jobs.remove(job)
            stats = [self._cls_stats[job.cls]]
            if job.origin is not None:
                stats.append(self._origin_stats[job.origin])
            if isinstance(exc, exceptions.DeadlineUnreachable):
                job.outcome = 'refused'
            elif exc is None:
                job.outcome = 'completed'
                if job.deadline is not None and now > job.deadline:
                    job.outcome = 'missed'
            else:
                job.outcome = 'failed'
            for s in stats:
                if job.outcome == 'refused':
                    s.refused += 1
                elif job.outcome == 'completed':
                    s.completed += 1
                elif job.outcome == 'missed':
                    s.completed += 1
                    s.missed += 1

    def capacity(self, origin=None) -> tuple:
        """``(bytes/s, how)``: the capacity deadlines are judged against.

        The configured limits (``process_rate_limit``, and
        ``origin_rate_limit`` for ``origin``) and C, the highest 1 s rate
        of the last 30 s through ``origin``'s bottleneck
        (``shared_bottleneck``), never sampled while pacing, the lowest of
        them; ``(0, ...)`` when none is known (no limit and no history).
        """
        now = self.clock()
        with self._cond:
            peak = self._peak(self._domain(origin), now)
        known = []
        if self.bucket.rate:
            known.append((self.bucket.rate, 'process_rate_limit'))
        if self.origin_rate and origin is not None:
            known.append((self.origin_rate, 'origin_rate_limit'))
        if peak:
            known.append((peak, 'the highest 1 s rate of the last %d s'
                          % CAPACITY_WINDOW))
        if not known:
            return 0, 'no limit and no throughput history'
        return min(known)

    # -- stats --------------------------------------------------------------

    def stats(self) -> dict:
        """Per class and per origin: active, queued, bytes/s and outcomes.

        See :meth:`Transfer.stats <oslo_transfer.transfer.Transfer.stats>`.
        """
        now = self.clock()
        with self._cond:
            classes = {}
            for c in CLASSES:
                s = self._cls_stats[c]
                classes[c] = {
                    'active': sum(1 for j in self.jobs if j.cls == c),
                    'queued': self._jobs_q.queued(c),
                    'bytes_per_second': s.rate(now), 'bytes': s.total,
                    'completed': s.completed, 'missed': s.missed,
                    'refused': s.refused}
            origins = {}
            names = set(self._origin_stats) | set(self._busy) | {
                w.origin for w in self._waiting}
            for o in sorted(names):
                s = self._origin_stats[o]
                origins[o] = {
                    'active': self._busy.get(o, 0),
                    'queued': sum(1 for w in self._waiting
                                  if w.origin == o),
                    'bytes_per_second': s.rate(now), 'bytes': s.total,
                    'completed': s.completed, 'missed': s.missed,
                    'refused': s.refused}
        return {'classes': classes, 'origins': origins}
