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

"""Flow control: rate limits and per-origin connection caps.

All scheduling of bytes and connections lives here, so that priority
classes (interactive boots before background prefetch) can be added in one
place later.
"""

import collections
import contextlib
import threading
import time


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


class OriginLimiter:
    """Caps concurrent connections per ``host:port`` across the process."""

    def __init__(self):
        self._lock = threading.Condition()
        self._busy = collections.Counter()
        self.limit = 8

    @contextlib.contextmanager
    def slot(self, origin: str, cancel=None, poll: float = 0.2):
        with self._lock:
            while self._busy[origin] >= self.limit:
                if cancel is not None:
                    cancel.check()
                self._lock.wait(poll)
            self._busy[origin] += 1
        try:
            yield
        finally:
            with self._lock:
                self._busy[origin] -= 1
                if not self._busy[origin]:
                    del self._busy[origin]
                self._lock.notify_all()


ORIGINS = OriginLimiter()
