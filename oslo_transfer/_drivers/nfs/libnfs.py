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

"""A ctypes binding of libnfs 4.0 (Debian ``libnfs13``), loaded on first use.

Only the asynchronous API is used: each call queues RPCs on an NFS context
and :meth:`Context.wait` runs the event loop (``poll`` on the context's
socket, then ``nfs_service``) in the calling thread.  ctypes releases the
GIL inside every C call, so several threads with a context each run in
parallel.  Owning the loop gives three things the synchronous API lacks:
several outstanding READs on one connection (:meth:`Context.pread_iter`),
an inactivity timeout that we enforce ourselves, and a cancel check at
least every :attr:`~oslo_transfer._drivers._common.ServiceLoop.tick`
seconds.

A context is not thread-safe: one thread uses it at a time (the driver
keeps a pool).  A context on which anything went wrong (an error, a
timeout, a generator abandoned half-way) is ``broken`` and must be
destroyed, never reused.

libnfs 4.0 hands a READ's data to the callback in its own buffer (there
is no API that reads into the caller's memory), so each answer is copied
once: into a free page-aligned block of the read's
:class:`~oslo_transfer._drivers._common.BlockPool` when the consumer takes
views of such blocks (the download engine, which writes them with
``O_DIRECT`` as they are), else into a new ``bytes``.

Errors are raised as :class:`NFSError` (``errno`` and libnfs' message);
the driver translates them into :mod:`oslo_transfer.exceptions`.
"""

import collections
import ctypes
import errno
import itertools
import os
import socket

from oslo_transfer._drivers import _common

#: the shared object and the Debian package that ships it
SONAME = 'libnfs.so.13'
PACKAGE = 'libnfs13'


_CB = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                       ctypes.c_void_p)
_VP = ctypes.c_void_p
_U64 = ctypes.c_uint64
_INT = ctypes.c_int
_STR = ctypes.c_char_p


class Stat64(ctypes.Structure):
    """``struct nfs_stat_64`` (17 uint64 fields, 136 bytes)."""

    _fields_ = [(name, ctypes.c_uint64) for name in (
        'dev', 'ino', 'mode', 'nlink', 'uid', 'gid', 'rdev', 'size',
        'blksize', 'blocks', 'atime', 'mtime', 'ctime', 'atime_nsec',
        'mtime_nsec', 'ctime_nsec', 'used')]


class _URL(ctypes.Structure):
    """``struct nfs_url``."""

    _fields_ = [('server', _STR), ('path', _STR), ('file', _STR)]


_PROTOTYPES = {
    'nfs_init_context': (_VP, []),
    'nfs_destroy_context': (None, [_VP]),
    'nfs_parse_url_full': (ctypes.POINTER(_URL), [_VP, _STR]),
    'nfs_destroy_url': (None, [ctypes.POINTER(_URL)]),
    'nfs_get_error': (_STR, [_VP]),
    'nfs_get_fd': (_INT, [_VP]),
    'nfs_which_events': (_INT, [_VP]),
    'nfs_service': (_INT, [_VP, _INT]),
    'nfs_set_autoreconnect': (None, [_VP, _INT]),
    'nfs_get_readmax': (_U64, [_VP]),
    'nfs_get_writemax': (_U64, [_VP]),
    'nfs_mount_async': (_INT, [_VP, _STR, _STR, _CB, _VP]),
    'nfs_open2_async': (_INT, [_VP, _STR, _INT, _INT, _CB, _VP]),
    'nfs_close_async': (_INT, [_VP, _VP, _CB, _VP]),
    'nfs_stat64_async': (_INT, [_VP, _STR, _CB, _VP]),
    'nfs_fstat64_async': (_INT, [_VP, _VP, _CB, _VP]),
    # this ABI puts offset and count before the callback (and the buffer)
    'nfs_pread_async': (_INT, [_VP, _VP, _U64, _U64, _CB, _VP]),
    'nfs_pwrite_async': (_INT, [_VP, _VP, _U64, _U64, _VP, _CB, _VP]),
    'nfs_fsync_async': (_INT, [_VP, _VP, _CB, _VP]),
    'nfs_ftruncate_async': (_INT, [_VP, _VP, _U64, _CB, _VP]),
    'nfs_fchmod_async': (_INT, [_VP, _VP, _INT, _CB, _VP]),
    'nfs4_set_client_name': (None, [_VP, _STR]),
    'nfs4_set_verifier': (None, [_VP, _STR]),
}


def load(soname: str | None = None) -> ctypes.CDLL:
    """Load libnfs once and declare the prototypes this module uses.

    :param soname: the shared object to load (tests point it elsewhere);
        defaults to :data:`SONAME`.
    :raises MissingDependency: the library or one of its symbols is missing;
        the message names the Debian package.
    """
    return _common.load_library(soname or SONAME, _PROTOTYPES,
                                'the nfs driver needs libnfs 4', PACKAGE)


class NFSError(Exception):
    """A libnfs call failed.

    :ivar errno: the (positive) errno that libnfs reported.
    :ivar message: libnfs' own text.
    """

    def __init__(self, err: int, message: str):
        super().__init__(message)
        self.errno = err
        self.message = message


class NFSTimeout(NFSError):
    """Nothing moved on the connection for a whole I/O timeout."""

    def __init__(self, message):
        super().__init__(errno.ETIMEDOUT, message)


# Callbacks: one C function pointer for the whole process (a ctypes
# callback must outlive every call that may invoke it); ``private_data``
# is the key of the pending operation.
_OPS = {}
_keys = itertools.count(1)


class _Op:
    """One queued libnfs call and, once its callback ran, its result."""

    __slots__ = ('kind', 'done', 'status', 'value', 'error', 'offset',
                 'count', 'keep', 'owner', 'into')

    def __init__(self, kind, offset=0, count=0, keep=None, into=None):
        self.kind = kind
        self.done = False
        self.status = 0
        self.value = None
        self.error = None
        self.offset = offset
        self.count = count
        self.keep = keep  # a buffer that must live until the callback
        self.owner = None  # the keys of the context's pending calls
        self.into = into  # a READ's _common.BlockPool, or None

    def complete(self, status, data):
        self.status = status
        if status < 0:
            self.error = (ctypes.string_at(data).decode('utf-8', 'replace')
                          if data else os.strerror(-status))
        elif self.kind == 'read':
            if not status:
                self.value = b''
            elif self.into is not None:
                self.value = self.into.fill(data, status)
            else:
                self.value = ctypes.string_at(data, status)
        elif self.kind == 'fh':
            self.value = data
        elif self.kind == 'stat':
            st = Stat64()
            ctypes.memmove(ctypes.byref(st), data, ctypes.sizeof(st))
            self.value = st
        elif self.kind == 'write':
            self.value = status
        self.done = True

    def result(self):
        if self.status < 0:
            raise NFSError(-self.status, self.error)
        return self.value


def _dispatch(status, nfs, data, private):
    op = _OPS.pop(private, None)
    if op is not None:
        op.owner.discard(private)
        try:
            op.complete(status, data)
        except Exception as exc:  # noqa: never raise into C
            op.status, op.error, op.done = -errno.EIO, str(exc), True


_dispatch_cb = _CB(_dispatch)


class Context:
    """One libnfs context: one TCP connection and one mounted export.

    :param url: an ``nfs://`` URL; its query arguments (``version``,
        ``nfsport``, ``mountport``, ``uid``, ...) configure the context.
    :param timeout: seconds without socket activity before a wait raises
        :class:`NFSTimeout`.
    :param soname: the library to load (tests).
    """

    def __init__(self, url: str, timeout: float, soname: str | None = None):
        self._lib = load(soname)
        self.timeout = timeout
        self.broken = False
        self._ptr = self._lib.nfs_init_context()
        if not self._ptr:
            raise NFSError(errno.ENOMEM, 'cannot create an NFS context')
        self._loop = _common.ServiceLoop(
            lambda: self._lib.nfs_get_fd(self._ptr),
            lambda: self._lib.nfs_which_events(self._ptr),
            lambda revents: self._lib.nfs_service(self._ptr, revents),
            self._loop_error)
        self._keys = set()
        # NFSv4: contexts of one process that share a client name confirm
        # each other's client IDs away (NFS4ERR_STALE_CLIENTID): one each
        self._client = ('oslo-transfer-%s-%d-%d-%s' % (
            socket.gethostname(), os.getpid(), next(_keys),
            os.urandom(4).hex())).encode()
        self._verifier = os.urandom(8)
        self._lib.nfs4_set_client_name(self._ptr, self._client)
        self._lib.nfs4_set_verifier(self._ptr, self._verifier)
        self._lib.nfs_set_autoreconnect(self._ptr, 0)
        parsed = self._lib.nfs_parse_url_full(self._ptr, url.encode())
        if not parsed:
            msg = self.error_text() or 'cannot parse the URL'
            self.destroy()
            raise NFSError(errno.EINVAL, msg)
        try:
            self.server = parsed.contents.server.decode()
            self.export = parsed.contents.path.decode()
            self.file = parsed.contents.file.decode()
        finally:
            self._lib.nfs_destroy_url(parsed)

    # -- plumbing --------------------------------------------------------

    def error_text(self) -> str:
        if not self._ptr:
            return ''
        text = self._lib.nfs_get_error(self._ptr)
        return text.decode('utf-8', 'replace') if text else ''

    def _submit(self, func, args, kind, offset=0, count=0, keep=None,
                into=None):
        if self.broken or not self._ptr:
            raise NFSError(errno.EBADF, 'the NFS context is closed')
        op = _Op(kind, offset, count, keep, into)
        key = next(_keys)
        _OPS[key] = op
        op.owner = self._keys
        self._keys.add(key)
        rc = func(self._ptr, *args, _dispatch_cb, key)
        if rc != 0:
            _OPS.pop(key, None)
            self._keys.discard(key)
            self.broken = True
            raise NFSError(errno.EIO, self.error_text() or
                           'libnfs could not queue the request')
        return op

    def wait(self, op: _Op, cancel=None):
        """Run the event loop until ``op`` completed; return its result.

        :raises NFSTimeout: no socket activity for ``timeout`` seconds.
        :raises Cancelled: ``cancel`` was set.
        :raises NFSError: the call or the connection failed.
        """
        try:
            self._loop.run(lambda: op.done, cancel, self.timeout)
        except BaseException:
            self.broken = True
            raise
        return op.result()

    def _loop_error(self, kind, reason):
        """The :class:`NFSError` for a :class:`ServiceLoop` failure."""
        if kind == 'timeout':
            return NFSTimeout('no answer from the NFS server for %.0f '
                              'seconds' % self.timeout)
        if kind == 'closed':
            return NFSError(errno.ENOTCONN, self.error_text() or
                            'the NFS connection is closed')
        if kind == 'socket':
            return NFSError(errno.EBADF, 'the NFS socket was closed')
        text = self.error_text() or 'the NFS connection failed'
        if reason:
            text = '%s (%s)' % (text, os.strerror(reason))
        return NFSError(reason or errno.ECONNRESET, text)

    # -- calls -----------------------------------------------------------

    def mount(self, cancel=None):
        self.wait(self._submit(self._lib.nfs_mount_async,
                               (self.server.encode(), self.export.encode()),
                               'none'), cancel)

    @property
    def readmax(self) -> int:
        return int(self._lib.nfs_get_readmax(self._ptr))

    @property
    def writemax(self) -> int:
        return int(self._lib.nfs_get_writemax(self._ptr))

    def stat(self, path: str, cancel=None) -> Stat64:
        return self.wait(self._submit(self._lib.nfs_stat64_async,
                                      (path.encode(),), 'stat'), cancel)

    def open(self, path: str, flags: int, mode: int = 0o644,
             cancel=None) -> int:
        """Open ``path``; return the file handle (an opaque pointer)."""
        return self.wait(self._submit(self._lib.nfs_open2_async,
                                      (path.encode(), flags, mode), 'fh'),
                         cancel)

    def fstat(self, fh: int, cancel=None) -> Stat64:
        return self.wait(self._submit(self._lib.nfs_fstat64_async, (fh,),
                                      'stat'), cancel)

    def close(self, fh: int, cancel=None):
        self.wait(self._submit(self._lib.nfs_close_async, (fh,), 'none'),
                  cancel)

    def fsync(self, fh: int, cancel=None):
        self.wait(self._submit(self._lib.nfs_fsync_async, (fh,), 'none'),
                  cancel)

    def ftruncate(self, fh: int, size: int, cancel=None):
        self.wait(self._submit(self._lib.nfs_ftruncate_async, (fh, size),
                               'none'), cancel)

    def fchmod(self, fh: int, mode: int, cancel=None):
        self.wait(self._submit(self._lib.nfs_fchmod_async, (fh, mode),
                               'none'), cancel)

    def set_timeout(self, timeout: float):
        """Change the inactivity timeout (a pooled context, a new call).

        libnfs' own ``nfs_set_timeout`` is not used: it counts from when
        an RPC was queued, so with several READs outstanding on a slow
        link it would expire healthy requests.  :meth:`wait` enforces
        ``timeout`` as "no byte moved on the connection for that long".
        """
        self.timeout = timeout

    def pread_iter(self, fh: int, offset: int, length: int, request: int,
                   window: int, cancel=None, blocks=None):
        """Yield the bytes ``[offset, offset + length)`` in order.

        Up to ``window`` READs of ``request`` bytes are outstanding at once.
        A short answer is followed by a READ of the rest; an empty one
        (end of file) raises :class:`NFSError` with ``errno`` ``ENODATA``.
        Each answer is a ``bytes``, or a view of a page-aligned
        :class:`~oslo_transfer._utils.AlignedBlock` of ``blocks`` (a
        :class:`~oslo_transfer._drivers._common.BlockPool`) while one is
        free.
        """
        pending = collections.deque()
        pos, end = offset, offset + length
        ok = False
        try:
            while pos < end or pending:
                while pos < end and len(pending) < window:
                    n = min(request, end - pos)
                    pending.append(self._submit(
                        self._lib.nfs_pread_async, (fh, pos, n), 'read',
                        pos, n, into=blocks))
                    pos += n
                head = pending.popleft()
                data = self.wait(head, cancel)
                if len(data) < head.count:
                    if not data:
                        raise NFSError(errno.ENODATA, 'end of file at byte '
                                       '%d, before %d' % (head.offset, end))
                    rest = head.count - len(data)
                    pending.appendleft(self._submit(
                        self._lib.nfs_pread_async,
                        (fh, head.offset + len(data), rest), 'read',
                        head.offset + len(data), rest, into=blocks))
                yield data
            ok = True
        finally:
            if not ok:
                # outstanding READs would leave answers on the socket
                self.broken = True

    def pwrite_all(self, fh: int, offset: int, chunks, request: int,
                   window: int, cancel=None, written=None) -> int:
        """Write ``chunks`` from ``offset`` with up to ``window`` WRITEs out.

        The server may carry out outstanding WRITEs in any order; they are
        acknowledged to ``written`` in file order, so what ``written`` has
        counted is always a contiguous prefix.  When ``chunks`` raises, the
        WRITEs already sent are waited for (the file then ends at a clean
        prefix) before the exception goes on.

        :param written: called with each byte count once the server
            acknowledged it (in file order).
        :returns: the number of bytes written.
        """
        pending = collections.deque()
        pos = offset
        done = 0
        it = iter(chunks)
        try:
            while True:
                try:
                    chunk = next(it)
                except StopIteration:
                    break
                except BaseException:
                    while pending:
                        done += self._finish_write(fh, pending.popleft(),
                                                   cancel, written)
                    raise
                view = memoryview(chunk).cast('B')
                for start in range(0, len(view), request):
                    piece = bytes(view[start:start + request])
                    pending.append(self._submit(
                        self._lib.nfs_pwrite_async,
                        (fh, pos, len(piece), piece), 'write', pos,
                        len(piece), keep=piece))
                    pos += len(piece)
                    while len(pending) >= window:
                        done += self._finish_write(fh, pending.popleft(),
                                                   cancel, written)
            while pending:
                done += self._finish_write(fh, pending.popleft(),
                                           cancel, written)
            return done
        finally:
            if pending:
                # answers to outstanding WRITEs would stay on the socket
                self.broken = True

    def _finish_write(self, fh, op, cancel, written):
        total = 0
        while True:
            n = self.wait(op, cancel)
            total += n
            if n >= op.count:
                break
            if n <= 0:
                raise NFSError(errno.EIO, 'the server wrote nothing at byte '
                               '%d' % op.offset)
            # NFS allows short writes: send the rest, then go on
            rest = op.keep[n:]
            op = self._submit(self._lib.nfs_pwrite_async,
                              (fh, op.offset + n, len(rest), rest),
                              'write', op.offset + n, len(rest), keep=rest)
        if written is not None:
            written(total)
        return total

    def fileno(self) -> int:
        return self._lib.nfs_get_fd(self._ptr) if self._ptr else -1

    def destroy(self):
        """Free the context (closes the socket; no UMNT is sent)."""
        if self._ptr:
            ptr, self._ptr = self._ptr, None
            self.broken = True
            self._lib.nfs_destroy_context(ptr)
            # callbacks of calls still queued never run: drop their buffers
            for key in self._keys:
                _OPS.pop(key, None)
            self._keys.clear()
