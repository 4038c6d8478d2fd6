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

"""One call's cancel token, and ``total_timeout`` as a real deadline.

``io_timeout`` bounds each blocking operation, not a call: a server that
trickles a body, its headers or an FTP reply (a byte every quarter of a
second) keeps every read within ``io_timeout`` and a copy alive for ever.
So each call (``copy``, ``open``, ``upload``) runs on a
:class:`~oslo_transfer.driver.CancelToken` of its own, which
:class:`CallScope` cancels when the caller cancels *or* when the call's
``expires_at`` passes (a timer).  Every driver already stops a blocking
operation on cancel (it shuts its sockets down), so the deadline reaches
whatever the call is blocked in.  The caller's own token is never
cancelled by the deadline (``TransferHandle.cancelled`` stays false), and
what ends the call is a non-retryable
:class:`~oslo_transfer.exceptions.TransferTimeout` ("ran out of time
([oslo_transfer] total_timeout)"), not ``Cancelled``; resumable state is
kept as a cancel keeps it.
"""

import threading
import time

from oslo_transfer import driver as driver_mod
from oslo_transfer import exceptions

__all__ = ['CallScope']

#: the reason given to the call's token when its time is up
REASON = 'ran out of time ([oslo_transfer] total_timeout)'


class CallScope:
    """The token of one call: cancelled by the caller or by the deadline.

    Building one replaces ``ctx.cancel`` with the call's token; use it as
    a context manager (or call :meth:`close`) to stop the timer and let go
    of the caller's token, and pass what ends the call through
    :meth:`error`.

    :param ctx: the call's :class:`~oslo_transfer.driver.Context`, whose
        ``cancel`` is the caller's token and ``expires_at`` the deadline
        (None: no timer).
    """

    def __init__(self, ctx: driver_mod.Context):
        self.caller = ctx.cancel
        self.token = driver_mod.CancelToken()
        self.expired = False
        self._timer = None
        self._key = self.caller.on_cancel(self._caller_cancelled)
        if ctx.expires_at is not None:
            delay = max(0.0, ctx.expires_at - time.monotonic())
            self._timer = threading.Timer(delay, self._expire)
            self._timer.daemon = True
            self._timer.name = 'oslo-transfer-deadline'
            self._timer.start()
        ctx.cancel = self.token

    def _caller_cancelled(self):
        self.token.cancel(self.caller.reason or 'cancelled')

    def _expire(self):
        # (Before the cancel: whoever sees the token cancelled must find
        # the reason.)
        self.expired = True
        self.token.cancel(REASON)

    def timed_out(self) -> bool:
        """True when the deadline, not the caller, stopped the call."""
        return self.expired and not self.caller.cancelled

    def error(self, exc: BaseException) -> BaseException:
        """What to raise for ``exc``, the exception that ended the call.

        Past the deadline, a ``Cancelled`` (the call's token) or a failed
        connection (a socket shut down under a read) is the
        ``TransferTimeout`` it stands for; anything else is itself.
        """
        if self.timed_out() and isinstance(
                exc, (exceptions.Cancelled, exceptions.ConnectionFailed)) \
                and not (isinstance(exc, exceptions.TransferTimeout) and
                         not exc.retryable):
            return driver_mod.out_of_time(getattr(exc, 'url', None))
        return exc

    def close(self):
        """Stop the timer and forget the caller's token (idempotent)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.caller.remove(self._key)

    def __enter__(self) -> 'CallScope':
        return self

    def __exit__(self, etype, exc, tb):
        self.close()
        if exc is not None:
            err = self.error(exc)
            if err is not exc:
                raise err from exc
        return False
