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

"""The engine's one retry policy: what is retried, how often, how long.

Every place that retries (a download's ``stat`` and its segments, an
``open()`` reader that resumes by range, an upload) asks one
:class:`RetryPolicy` whether to try again and how long to wait first; the
call site only waits (on its own cancel token) and logs what it does.  The
rules, in one place:

* only a :class:`~oslo_transfer.exceptions.TransferError` whose
  ``retryable`` is true is retried;
* at most ``[oslo_transfer] retries`` retries after the first attempt;
* the wait doubles from ``[oslo_transfer] retry_backoff``, at most
  :data:`MAX_DELAY` seconds, and never past the transfer's deadline
  (``total_timeout``);
* nothing is retried once the transfer is cancelled or out of time;
* failover comes first: while another candidate (location or driver) is
  left to try, a failing one gets at most one quick retry
  (:meth:`RetryPolicy.for_candidate`, :data:`QUICK_DELAY`); the full
  backoff applies only to the last candidate.  A 503 primary thus costs
  a fraction of a second before the next location serves, not the
  1+2+4+8+16 s of the full backoff;
* a call may override ``retries`` and ``retry_backoff``
  (:meth:`RetryPolicy.for_call`).
"""

import dataclasses
import logging

from oslo_transfer.engine import sizes
from oslo_transfer import exceptions

LOG = logging.getLogger(__name__)

__all__ = ['RetryPolicy', 'MAX_DELAY', 'QUICK_DELAY', 'stat']

#: the longest wait between two attempts, in seconds
MAX_DELAY = 30.0

#: the wait before the one quick retry of a candidate that is not the last
QUICK_DELAY = 0.2


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """When to retry a failed operation, and after how long.

    :param retries: retries allowed after the first attempt.
    :param backoff: seconds before the first retry; doubles each time.
    :param max_delay: the longest wait.
    """

    retries: int = 5
    backoff: float = 1.0
    max_delay: float = MAX_DELAY

    @classmethod
    def from_conf(cls, conf) -> 'RetryPolicy':
        """The policy of ``[oslo_transfer] retries`` and ``retry_backoff``."""
        g = conf.oslo_transfer
        return cls(retries=g.retries, backoff=g.retry_backoff)

    @classmethod
    def for_call(cls, conf, retries=None, backoff=None) -> 'RetryPolicy':
        """The configured policy with a call's overrides.

        :param retries: ``retries=`` of the call (None: the option's).
        :param backoff: ``retry_backoff=`` of the call (None: the
            option's).
        :raises ValueError: a negative value.
        """
        policy = cls.from_conf(conf)
        if retries is not None:
            if not isinstance(retries, int) or isinstance(retries, bool) \
                    or retries < 0:
                raise ValueError('retries must be an integer >= 0, not %r'
                                 % (retries,))
            policy = dataclasses.replace(policy, retries=retries)
        if backoff is not None:
            if isinstance(backoff, bool) or not isinstance(
                    backoff, (int, float)) or backoff < 0:
                raise ValueError('retry_backoff must be a number of seconds '
                                 '>= 0, not %r' % (backoff,))
            policy = dataclasses.replace(policy, backoff=float(backoff))
        return policy

    def for_candidate(self, last: bool) -> 'RetryPolicy':
        """The policy for one candidate of several.

        :param last: no other candidate is left after this one.
        :returns: this policy for the last candidate; otherwise at most
            one retry, after at most :data:`QUICK_DELAY` seconds.
        """
        if last:
            return self
        return dataclasses.replace(self, retries=min(self.retries, 1),
                                   backoff=min(self.backoff, QUICK_DELAY))

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (from 1)."""
        return min(self.max_delay, self.backoff * 2 ** (attempt - 1))

    def next_delay(self, exc: BaseException, retried: int,
                   ctx=None, cancel=None) -> float | None:
        """The wait before the next attempt, or None to give up.

        :param exc: what the last attempt raised.
        :param retried: retries already made for this operation.
        :param ctx: the transfer's
            :class:`~oslo_transfer.driver.Context` (its deadline and cancel
            token), if any.
        :param cancel: a :class:`~oslo_transfer.driver.CancelToken` of the
            operation itself (a segment's), checked besides ``ctx``'s.
        :returns: seconds to wait (capped at what is left of the
            deadline), or None when ``exc`` is not retryable, the retries
            are used up, or the transfer was cancelled or ran out of time.
        """
        if not isinstance(exc, exceptions.TransferError) or \
                not exc.retryable or retried >= self.retries:
            return None
        for token in (cancel, ctx and ctx.cancel):
            if token is not None and token.cancelled:
                return None
        delay = self.delay(retried + 1)
        left = ctx.remaining() if ctx is not None else None
        if left is not None:
            if left <= 0:
                return None
            delay = min(delay, left)
        return delay


def stat(policy, drv, loc, ctx):
    """``drv.stat(loc)`` with its size checked, retried by ``policy``.

    A stat that timed out is not retried: a host that does not answer is
    a better job for the next candidate than ``retries`` times
    ``io_timeout`` of waiting.
    """
    retried = 0
    while True:
        try:
            return sizes.checked_stat(drv.stat(loc, ctx), loc)
        except exceptions.TransferError as exc:
            delay = None if isinstance(exc, exceptions.TransferTimeout) \
                else policy.next_delay(exc, retried, ctx)
            if delay is None:
                raise
            retried += 1
            LOG.warning('%s: %s; retry %d/%d in %.1fs', loc.masked, exc,
                        retried, policy.retries, delay)
            if ctx.cancel.wait(delay):
                ctx.cancel.check()
