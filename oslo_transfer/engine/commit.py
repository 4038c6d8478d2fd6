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

"""How the engine ends a driver's write: commit, retried, or abort.

:meth:`Writer.commit <oslo_transfer.driver.Writer.commit>` gets the
transfer's context and its retryable errors are retried through the one
retry policy (:mod:`oslo_transfer.engine.retry`), as errors of ``write()``
are.  When it finally fails, :meth:`~oslo_transfer.driver.Writer.abort`
runs, with a fresh context when the transfer was cancelled (the clean-up
may need I/O).  Writers with the older argument-less methods are called
without the context, with a ``DeprecationWarning`` (their signature is
inspected once per class).
"""

import dataclasses
import functools
import inspect
import logging
import time
import warnings

from oslo_transfer import driver as driver_mod
from oslo_transfer import exceptions

LOG = logging.getLogger(__name__)

__all__ = ['commit', 'abort']


@functools.lru_cache(maxsize=None)
def _takes_context(cls, name: str) -> bool:
    """Whether ``cls.name`` accepts the context (inspected once)."""
    try:
        params = inspect.signature(getattr(cls, name)).parameters
    except (TypeError, ValueError):
        return True
    args = [p for p in list(params.values())[1:]
            if p.kind not in (p.VAR_KEYWORD,)]
    if args:
        return True
    warnings.warn(
        '%s.%s() takes no context: writers must accept '
        '%s(ctx) (oslo_transfer.driver.Writer); the argument-less form '
        'will stop working in a future release'
        % (cls.__qualname__, name, name), DeprecationWarning, stacklevel=4)
    return False


def _call(writer, name, ctx):
    method = getattr(writer, name)
    if _takes_context(type(writer), name):
        return method(ctx)
    return method()


def commit(writer, ctx, policy, url: str) -> None:
    """Commit ``writer``, retrying retryable errors; abort if it fails.

    :param policy: the engine's :class:`~oslo_transfer.engine.retry.
        RetryPolicy`.
    :param url: the masked destination, for log lines.
    :raises TransferError: the commit failed for good (after the abort).
    """
    tries = 0
    while True:
        try:
            _call(writer, 'commit', ctx)
            return
        except exceptions.TransferError as exc:
            delay = policy.next_delay(exc, tries, ctx)
            if delay is None:
                abort(writer, ctx, url)
                raise
            tries += 1
            LOG.warning('commit of %s: %s; retry %d in %.1fs', url, exc,
                        tries, delay)
            if ctx.cancel.wait(delay):
                abort(writer, ctx, url)
                ctx.cancel.check()
        except BaseException:
            abort(writer, ctx, url)
            raise


def abort(writer, ctx, url: str) -> None:
    """Abort ``writer``; log (never raise) what the abort itself meets.

    A cancelled or expired context would refuse every I/O of the
    clean-up: ``abort()`` then gets a copy with a fresh cancel token and
    one I/O timeout of time.
    """
    if ctx.cancel.cancelled or ctx.expired():
        ctx = dataclasses.replace(
            ctx, cancel=driver_mod.CancelToken(),
            expires_at=time.monotonic() + ctx.io_timeout)
    try:
        _call(writer, 'abort', ctx)
    except Exception as exc:  # noqa: the first error is the one to report
        LOG.warning('abort of the write to %s failed: %s', url, exc)
