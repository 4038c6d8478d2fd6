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
   ``background`` class: one read at a time, each of at most the class's
   :attr:`~oslo_transfer.engine.throttle.ClassPolicy.request_bytes` (and
   at least one block), so that the scheduler's background policy holds
   (one connection, one unit in flight, a pause after each on-demand
   miss).

A read that fails after the retries is tried again later, the wait
doubling from 1 to 30 seconds: the prefetch resumes once the origin
answers again.  The thread ends when the image is complete, closed, or
can no longer cache (a full disk).
"""

import collections
import logging
import threading

from oslo_transfer.engine import throttle
from oslo_transfer import exceptions

LOG = logging.getLogger(__name__)

__all__ = ['Prefetcher']

#: seconds between two tries of a failed prefetch, doubling up to
#: :data:`MAX_BACKOFF`
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0


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
        if self._asked:
            first, last = self._asked[0]
            run = img.claim_run(first, self._most(), last)
            if run is None:
                self._asked.popleft()
                return True
        else:
            run = img.claim_run(self._cursor, self._most())
            if run is None:
                if self._cursor == 0:
                    return False
                self._cursor = 0
                return True
            self._cursor = run.last + 1
        self._fetch(run)
        return True

    def _most(self) -> int:
        return throttle.SCHEDULER.policy(
            throttle.BACKGROUND).request_bytes or 1

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
