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

"""Helpers that several drivers share, and nothing else needs.

* :class:`SessionPool` and :class:`Lease`: logged-in sessions (ftp,
  sftp, iscsi) and mounted contexts (nfs);
* :class:`BlockPool` and :func:`block_pool`: page-aligned read buffers for
  the drivers that fill memory from C (nfs, iscsi) or ``preadv`` (file);
* :func:`load_library` and :class:`ServiceLoop`: loading libnfs or
  libiscsi, and the event loop of one of their contexts;
* :func:`max_segments_opt`: the option of a driver that caps its segments.

The engine never imports this module (what the engine and the drivers both
need lives in :mod:`oslo_transfer._utils`).

**Sessions.**  Logging in costs several round trips (and a key exchange
for SSH), and the engine reads parallel segments from several threads at
once.  Each call of a driver *leases* a session for its own use; a session
is never shared by two threads at the same time.  When the call ends
cleanly the session goes back to the pool, keyed by everything that
identifies the login (scheme, host, port, user and a digest of the
secret); after an error it is destroyed, because its protocol state is
unknown (an iSCSI session logs out politely only when it is clean).
Idle sessions older than ``max_idle_seconds`` are destroyed instead of
reused (servers drop idle control connections), and a session is checked
with ``is_alive`` before it is handed out again.

**Blocks.**  When the consumer of a read takes views of page-aligned
memory (:attr:`oslo_transfer.driver.Context.aligned_views`: the download
engine, which writes them with ``O_DIRECT`` as they are), a driver reads
into :class:`~oslo_transfer._utils.AlignedBlock` objects from a
:class:`BlockPool` and yields views of them.  A block is ordinary mutable
memory, filled again only once no view of it is left; when every block is
held the driver yields ``bytes`` instead, so a read never waits for
memory.  Fresh memory per answer would cost a page fault per 4 KiB.
"""

import collections
import contextlib
import ctypes
import logging
import mmap
import select
import socket
import sys
import threading
import time
import typing

from oslo_config import cfg

from oslo_transfer import _utils
from oslo_transfer import exceptions

LOG = logging.getLogger(__name__)

__all__ = ['SessionPool', 'Lease', 'BlockPool', 'block_pool',
           'load_library', 'ServiceLoop', 'socket_error', 'max_segments_opt']

#: answers shorter than this are copied into ``bytes``, not into a block
MIN_BLOCK_BYTES = 4096


class SessionPool:
    """Idle sessions per key; at most ``max_idle`` kept per key.

    :param close: ``close(session)`` of a clean session; must not raise.
    :param is_alive: ``is_alive(session) -> bool``, called on an idle
        session before reuse; a dead one is destroyed and skipped.
    :param max_idle: idle sessions kept per key (extra ones are closed).
    :param max_idle_seconds: idle sessions older than this are destroyed.
    :param destroy: ``destroy(session)`` of a session in an unknown state
        (after an error, stale or dead); must not raise.  Default
        ``close``.
    """

    def __init__(self, close: typing.Callable,
                 is_alive: typing.Callable | None = None, max_idle: int = 4,
                 max_idle_seconds: float = 30.0,
                 destroy: typing.Callable | None = None):
        self._close = close
        self._destroy = destroy or close
        self._is_alive = is_alive
        self.max_idle = max_idle
        self.max_idle_seconds = max_idle_seconds
        self._idle = collections.defaultdict(list)
        self._lock = threading.Lock()
        self._closed = False

    def _take(self, key):
        """Pop the freshest idle session of ``key``; close stale ones."""
        stale = []
        found = None
        now = time.monotonic()
        with self._lock:
            idle = self._idle.get(key, [])
            while idle:
                session, since = idle.pop()
                if now - since > self.max_idle_seconds:
                    stale.append(session)
                    continue
                found = session
                break
            if not idle:
                self._idle.pop(key, None)
        for s in stale:
            self._destroy(s)
        return found

    def take(self, key):
        """An idle session of ``key`` that is still alive, or None."""
        while True:
            session = self._take(key)
            if session is None:
                return None
            try:
                alive = self._is_alive is None or self._is_alive(session)
            except Exception:  # noqa: any failure means "not alive"
                alive = False
            if alive:
                return session
            LOG.debug('dropping a dead pooled session')
            self._destroy(session)

    def acquire(self, key, factory: typing.Callable):
        """An idle session of ``key`` that is still alive, or ``factory()``."""
        session = self.take(key)
        return factory() if session is None else session

    def release(self, key, session) -> None:
        """Give back a session that is in a clean protocol state."""
        with self._lock:
            if not self._closed and len(self._idle[key]) < self.max_idle:
                self._idle[key].append((session, time.monotonic()))
                return
        self._close(session)

    def discard(self, session) -> None:
        """Destroy a session whose state is unknown (after an error)."""
        self._destroy(session)

    @contextlib.contextmanager
    def lease(self, key, factory: typing.Callable):
        """``with pool.lease(key, factory) as session``.

        The session goes back to the pool when the block ends normally and
        is closed when it raises.  Code that leaves the session in a dirty
        state without raising calls :meth:`discard` and sets
        ``session = None`` by raising, or uses acquire/release directly.
        """
        session = self.acquire(key, factory)
        try:
            yield session
        except BaseException:
            self.discard(session)
            raise
        self.release(key, session)

    def close_all(self) -> None:
        """Close every idle session; sessions in use close on release."""
        with self._lock:
            self._closed = True
            idle = [s for lst in self._idle.values() for s, _ in lst]
            self._idle.clear()
        for s in idle:
            self._close(s)

    def idle_count(self, key=None) -> int:
        """Idle sessions (of ``key``, or in total); for tests."""
        with self._lock:
            if key is not None:
                return len(self._idle.get(key, []))
            return sum(len(v) for v in self._idle.values())


class Lease:
    """One pooled session, borrowed by one call and given back once.

    For drivers whose reads outlive the call that opened them (a
    generator, a writer object): :meth:`release` puts the session back in
    its pool, or destroys it when its ``broken`` attribute is true (a
    call on it failed half-way).  A lease dropped unreleased (a generator
    closed before its first ``next()`` never runs its ``finally``)
    destroys its session.
    """

    def __init__(self, pool: SessionPool, key, session):
        self.pool, self.key, self.session = pool, key, session

    def release(self) -> None:
        session, self.session = self.session, None
        if session is None:
            return
        if getattr(session, 'broken', False):
            self.pool.discard(session)
        else:
            self.pool.release(self.key, session)

    def __del__(self):
        if self.session is not None:
            self.pool.discard(self.session)


_libraries = {}
_libraries_lock = threading.Lock()


def load_library(soname: str, prototypes: dict, needs: str,
                 package: str) -> ctypes.CDLL:
    """Load a shared object once per process and declare its prototypes.

    :param prototypes: ``{name: (restype, argtypes)}``.
    :param needs: what needs it, for the message (``"the nfs driver needs
        libnfs 4"``).
    :param package: the Debian package that ships it.
    :raises MissingDependency: the library or one of its symbols is
        missing; the message names the package.
    """
    with _libraries_lock:
        lib = _libraries.get(soname)
        if lib is not None:
            return lib
        try:
            lib = ctypes.CDLL(soname)
            for name, (restype, argtypes) in prototypes.items():
                func = getattr(lib, name)
                func.restype = restype
                func.argtypes = argtypes
        except (OSError, AttributeError) as exc:
            raise exceptions.MissingDependency(
                '%s (%s): %s; install the Debian package %s (or your '
                'distribution\'s equivalent)'
                % (needs, soname, exc, package)) from exc
        _libraries[soname] = lib
        return lib


class ServiceLoop:
    """The event loop of one libnfs or libiscsi context, run by a caller.

    Both libraries drive one TCP connection through the same three calls:
    the socket (``*_get_fd``; it changes when the library reconnects), the
    poll events it waits for (``*_which_events``), and
    ``*_service(revents)``, which reads, writes and runs the completion
    callbacks, and returns a negative number when the connection failed.
    :meth:`run` polls and services in the calling thread until the
    operation is done, checks ``cancel`` every :attr:`tick` seconds, and
    gives up after ``timeout`` seconds *without socket activity* (a deep
    queue on a slow link is not a timeout).

    :param get_fd: ``get_fd() -> int``; negative: no connection.
    :param which_events: ``which_events() -> int``, the poll mask.
    :param service: ``service(revents) -> int``.
    :param error: ``error(kind, reason) -> Exception`` in the library's
        terms, for ``kind`` ``"timeout"`` (no activity), ``"closed"`` (no
        socket), ``"socket"`` (``POLLNVAL``: the socket went away under
        the library) or ``"failed"`` (``service`` failed; ``reason`` is
        the socket's pending errno or 0).
    """

    #: the longest poll between two checks of ``cancel``
    tick = 0.2

    def __init__(self, get_fd, which_events, service, error):
        self._get_fd = get_fd
        self._which_events = which_events
        self._service = service
        self._error = error
        self._poll = select.poll()
        self._fd = -1

    def run(self, done, cancel, timeout: float) -> None:
        """Until ``done()``; raises ``error(...)`` or ``Cancelled``."""
        limit = time.monotonic() + timeout
        reason = 0
        while not done():
            if cancel is not None and cancel.cancelled:
                raise exceptions.Cancelled(cancel.reason or 'cancelled')
            left = limit - time.monotonic()
            if left <= 0:
                raise self._error('timeout', 0)
            fd = self._get_fd()
            if fd != self._fd:
                if self._fd >= 0:
                    try:
                        self._poll.unregister(self._fd)
                    except KeyError:
                        pass
                self._fd = fd
            if fd < 0:
                raise self._error('closed', 0)
            self._poll.register(fd, self._which_events())
            events = self._poll.poll(min(left, self.tick) * 1000)
            revents = events[0][1] if events else 0
            if revents & select.POLLNVAL:
                raise self._error('socket', 0)
            if revents & (select.POLLERR | select.POLLHUP):
                reason = socket_error(fd)
            if self._service(revents) < 0:
                raise self._error('failed', reason)
            if revents:
                limit = time.monotonic() + timeout


def socket_error(fd: int) -> int:
    """The pending error (``SO_ERROR``) of a library's socket, or 0."""
    try:
        with socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as sock:
            return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    except OSError:
        return 0


def _refs(items, i):
    """``sys.getrefcount`` of ``items[i]``, measured as the pool does."""
    return sys.getrefcount(items[i])


#: the count :func:`_refs` gives for an object that only its list holds
_ALONE = _refs([object()], 0)


class BlockPool:
    """Page-aligned blocks for the answers of one read, reused once unused.

    A block is free once nobody holds a view of it: every ``memoryview``
    of a block (and every slice of one) keeps a reference to it, so the
    pool's own reference being the only one means that no view is left.
    Not thread-safe: one read uses it, from the thread that reads.

    :param limit: blocks made at most; when all are held (a slow writer,
        a consumer that keeps chunks) :meth:`take` returns None and the
        caller reads into ``bytes`` of its own.
    :param size: bytes per block (rounded up to the page size); an answer
        larger than that gets no block either.
    """

    def __init__(self, limit: int, size: int):
        self.limit = limit
        self.size = -(-size // mmap.PAGESIZE) * mmap.PAGESIZE
        self._blocks = []
        self._addresses = []
        self._next = 0
        #: blocks made
        self.made = 0

    def take(self, n: int):
        """``(view, address)`` of ``n`` bytes of a free block, or None.

        None when every block is held (or ``n`` is larger than a block).
        The view's content is undefined until filled; ``address`` is where
        a C call fills it.
        """
        if n > self.size:
            return None
        blocks = self._blocks
        k = len(blocks)
        for j in range(k):
            i = (self._next + j) % k
            if _refs(blocks, i) == _ALONE:
                self._next = i + 1
                return memoryview(blocks[i])[:n], self._addresses[i]
        if k >= self.limit:
            return None
        block = _utils.AlignedBlock(-1, self.size)
        blocks.append(block)
        self._addresses.append(_utils.buffer_address(block))
        self.made += 1
        self._next = 0
        return memoryview(block)[:n], self._addresses[-1]

    def fill(self, data: int, n: int):
        """``n`` bytes copied from the C address ``data``.

        A view of a free block, or ``bytes`` when none is free (or the
        answer is shorter than :data:`MIN_BLOCK_BYTES`).
        """
        if n >= MIN_BLOCK_BYTES:
            got = self.take(n)
            if got is not None:
                ctypes.memmove(got[1], data, n)
                return got[0]
        return ctypes.string_at(data, n)


def block_pool(ctx, in_flight: int, size: int) -> BlockPool | None:
    """The :class:`BlockPool` of one read, or None to read into ``bytes``.

    None unless the consumer takes views of aligned blocks
    (:attr:`~oslo_transfer.driver.Context.aligned_views`).  The pool has
    room for the answers in flight, for what the consumer may hold
    besides (:attr:`~oslo_transfer.driver.Context.held_bytes`) and for a
    few more (the chunk the reader holds, one being passed on).

    :param ctx: the read's :class:`~oslo_transfer.driver.Context`.
    :param in_flight: answers the driver has outstanding at once.
    :param size: bytes per answer.
    """
    if not ctx.aligned_views:
        return None
    return BlockPool(in_flight + ctx.held_bytes // max(size, 1) + 4, size)


def max_segments_opt(why: str, unit: str, related=()) -> cfg.IntOpt:
    """The ``max_segments`` option of a driver whose ``stat()`` caps segments.

    Return ``Stat(max_segments=self.options.max_segments or None)``.

    :param why: what one segment costs and why one is the default.
    :param unit: what one segment is, for the "Possible values" list
        ("stream", "connection", "session").
    :param related: the driver's other options worth reading with it.
    """
    lines = ['* %s' % r
             for r in ('[oslo_transfer] segments',) + tuple(related)]
    return _utils.IntOpt(
        'max_segments', default=1, min=0, max=64,
        help='%s\n\nPossible values:\n\n* 1 (default): one %s per object\n'
             '* N > 1: at most N segments, and never more than '
             '[oslo_transfer] segments\n* 0: no cap of its own; '
             '[oslo_transfer] segments decides\n\nRelated options:\n\n%s'
             % (why, unit, '\n'.join(lines)))
