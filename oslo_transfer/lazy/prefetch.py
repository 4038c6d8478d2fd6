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

"""The prefetch of a lazy image: the blocks nobody asked for yet.

One thread per image, in this order:

1. the units of a matching access profile
   (:mod:`oslo_transfer.lazy.profile`), in first-touch order, at the
   ``interactive`` class, a few at a time;
2. ranges asked for with :meth:`LazyImage.prefetch
   <oslo_transfer.lazy.image.LazyImage.prefetch>`;
3. with ``prefetch=True``, every other missing block, in order, at the
   ``background`` class.

Ranges asked for and the sweep follow the scheduler's policy for the
``background`` class (:meth:`Scheduler.policy
<oslo_transfer.engine.throttle.Scheduler.policy>`), so that on-demand reads
overtake them:

* one read at a time (one connection);
* one unit in flight while readers miss: a read asks for one fetch unit
  until the image has had no on-demand miss for :data:`BUSY_SECONDS`,
  then for up to the class's
  :attr:`~oslo_transfer.engine.throttle.ClassPolicy.request_bytes` (the
  bytes that a miss may find ahead of it on the link);
* a pause after each on-demand miss: no block is claimed until the
  class's :attr:`~oslo_transfer.engine.throttle.ClassPolicy.yield_seconds`
  have passed since the image's last miss, so that the prefetch never
  holds blocks (that a reader may want next) while it waits;
* a reader that waits for a block the prefetch is fetching lends the
  run its class (:meth:`Run.promote
  <oslo_transfer.lazy.fetch.Run.promote>`): the run does not yield to
  the misses of the reader that waits for it.

A read that fails after the retries is tried again later, the wait
doubling from 1 to 30 seconds: the prefetch resumes once the origin
answers again.  The thread ends when the image is complete, closed, or
can no longer cache (a full disk).
"""

import collections
import logging
import threading
import time

from oslo_transfer.engine import throttle
from oslo_transfer import exceptions

LOG = logging.getLogger(__name__)

__all__ = ['Prefetcher']

#: seconds between two tries of a failed prefetch, doubling up to
#: :data:`MAX_BACKOFF`
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0
#: seconds after an on-demand miss during which the prefetch reads one
#: fetch unit at a time
BUSY_SECONDS = 1.0


class Prefetcher:
    """Fetches an image's blocks before they are read.

    :param image: the image's shared state (``_Image``).
    :param sweep: go on with every missing block after the profile and
        the ranges asked for.
    """

    def __init__(self, image, sweep: bool):
        self.image = image
        self.sweep = sweep
        self.alive = True
        self._asked = collections.deque()
        self._more = threading.Event()
        self._cursor = 0
        self._backoff = FIRST_BACKOFF
        self._failing = False

    def add(self, first: int, last: int) -> None:
        """Fetch blocks ``[first, last]`` before the sweep goes on.

        Called with the image's lock held, on a prefetcher still alive.
        """
        self._asked.append((first, last))
        self._more.set()

    def run(self) -> None:
        try:
            self._profile_first()
            while self._go_on():
                if not self._step():
                    self._idle()
        except exceptions.Cancelled:
            pass
        except Exception:  # noqa: a thread must not die in silence
            LOG.exception('prefetch of %s failed', self.image.dest)
        finally:
            with self.image._lock:
                self.alive = False

    def _go_on(self) -> bool:
        """Whether to go on; a False is final (``alive`` drops with it)."""
        img = self.image
        if img.closed or img._done.is_set():
            return False
        if img.cache.failed is not None:
            LOG.warning('prefetch of %s stops: %s', img.dest,
                        img.cache.failed)
            return False
        with img._lock:
            # (under the lock that add() is called with: no range asked
            # for meanwhile is lost)
            if self.sweep or self._asked:
                return True
            self.alive = False
            return False

    def _profile_first(self):
        img = self.image
        units = list(img.profile_units)
        window = img.segments
        for pos in range(0, len(units), window):
            if img.closed:
                return
            need = []
            for u in units[pos:pos + window]:
                first = u * img.unit_blocks
                need.extend(range(first, min(first + img.unit_blocks,
                                             img.count)))
            waits = img.request(need, throttle.INTERACTIVE)
            for pending in waits.values():
                pending.event.wait()
                if pending.error is not None and \
                        isinstance(pending.error, exceptions.Cancelled):
                    return

    def _step(self) -> bool:
        """Fetch one run; False when there was nothing to fetch."""
        img = self.image
        self._pause()
        job = self._job()
        if self._asked:
            first, last = self._asked[0]
            run = img.claim_run(first, self._most(), last, job=job)
            if run is None:
                self._asked.popleft()
                return True
        else:
            run = img.claim_run(self._cursor, self._most(), job=job)
            if run is None:
                if self._cursor == 0:
                    return False
                self._cursor = 0
                return True
            self._cursor = run.last + 1
        self._fetch(run)
        return True

    def _policy(self):
        sched = self.image.ctx.scheduler
        return None if sched is None else sched.policy(throttle.BACKGROUND)

    def _job(self):
        """A scheduler Job for the next run (lent a reader's class)."""
        sched = self.image.ctx.scheduler
        return None if sched is None else sched.job(throttle.BACKGROUND)

    def _since_miss(self, now=None) -> float:
        """Seconds since the image's last on-demand miss (inf: none)."""
        last = self.image.last_miss
        if last is None:
            return float('inf')
        return (time.monotonic() if now is None else now) - last

    def pause_left(self, now=None) -> float:
        """Seconds the prefetch still waits after the last miss (>= 0)."""
        pol = self._policy()
        pause = pol.yield_seconds if pol is not None else 0.0
        return max(0.0, pause - self._since_miss(now))

    def _pause(self):
        """Wait until :meth:`pause_left` is 0 (cancellable)."""
        img = self.image
        while True:
            left = self.pause_left()
            if left <= 0:
                return
            if img.token.wait(left):
                img.token.check()

    def _most(self, now=None) -> int:
        """Bytes the next read asks for (at least one block)."""
        img = self.image
        if self._since_miss(now) < BUSY_SECONDS:
            return img.unit
        pol = self._policy()
        if pol is None:
            return 1
        return pol.request_bytes or 1

    def _fetch(self, run):
        img = self.image
        try:
            img.fetch_claimed(run, throttle.BACKGROUND)
        except exceptions.Cancelled:
            raise
        except exceptions.TransferError as exc:
            if not self._failing:
                LOG.warning('prefetch of %s: %s; trying again in %.0fs and '
                            'on', img.dest, exc, self._backoff)
            self._failing = True
            self._cursor = min(self._cursor, run.next)
            if img.token.wait(self._backoff):
                img.token.check()
            self._backoff = min(MAX_BACKOFF, self._backoff * 2)
            return
        if self._failing:
            LOG.info('prefetch of %s goes on', img.dest)
        self._failing = False
        self._backoff = FIRST_BACKOFF

    def _idle(self):
        """Nothing to claim: blocks in flight elsewhere, or all present."""
        self._more.wait(0.5)
        self._more.clear()
