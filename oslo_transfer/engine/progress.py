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

"""Progress callbacks: in the caller's request context, never fatal.

``progress(done, total)`` is called from whichever engine thread moved
the bytes: a segment worker or the checkpoint thread of a download, the
calling thread for uploads and for waiters on another writer.  oslo.log
finds a service's request context in a thread-local store, which those
threads do not have; :func:`in_context` makes the caller's context
current around each call (``context.update_store()``, as oslo.context's
``RequestContext`` has) and puts back whatever the thread had before.
"""

import functools
import logging

LOG = logging.getLogger(__name__)

__all__ = ['in_context']


def _store():
    """oslo.context's thread-local store, or None without oslo.context."""
    try:
        from oslo_context import context as ctx_mod
    except ImportError:
        return None
    return ctx_mod


def in_context(callback, context):
    """``callback`` wrapped to run with ``context`` current.

    :param callback: ``progress(done, total)``, or None.
    :param context: an object with ``update_store()`` (an oslo.context
        ``RequestContext``), or None to call ``callback`` as it is.
    :returns: the callable to hand to the engine (None stays None).
    :raises TypeError: ``context`` has no ``update_store()``.
    """
    if callback is None or context is None:
        return callback
    if not callable(getattr(context, 'update_store', None)):
        raise TypeError('context must have update_store() (an '
                        'oslo_context RequestContext), not %r'
                        % type(context).__name__)
    mod = _store()

    @functools.wraps(callback)
    def call(done, total):
        before = mod.get_current() if mod is not None else None
        context.update_store()
        try:
            return callback(done, total)
        finally:
            if before is not None:
                before.update_store()
            elif mod is not None:
                # The thread had none: leave none, not the caller's.
                mod._request_store.__dict__.pop('context', None)

    return call
