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

"""The local ``DEST.part`` file: sparse positional writes, durability,
and the final atomic rename."""

import ctypes
import errno
import logging
import os
import stat as stat_mod

from oslo_transfer import _utils
from oslo_transfer.engine import writers
from oslo_transfer import exceptions

LOG = logging.getLogger(__name__)

_SYNC_FILE_RANGE_WRITE = 0x02
_WRITEBACK_BYTES = 8 * 1024 * 1024
# The granularity of holes in sparse writes (a filesystem block).
_BLOCK = 4096
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = None


def _fadvise(fd, advice):
    """``posix_fadvise`` of the whole file, where the platform has it."""
    value = getattr(os, advice, None)
    if value is None:
        return
    try:
        os.posix_fadvise(fd, 0, 0, value)
    except OSError:
        pass


def _libc_calls():
    """The process's libc, with fallocate and sync_file_range typed."""
    global _libc
    if _libc is None:
        # The process's own libc: find_library('c') runs ``ldconfig -p``.
        lib = ctypes.CDLL(None, use_errno=True)
        lib.fallocate.argtypes = [ctypes.c_int, ctypes.c_int,
                                  ctypes.c_longlong, ctypes.c_longlong]
        lib.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_longlong,
                                        ctypes.c_longlong, ctypes.c_uint]
        _libc = lib
    return _libc


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a range back (does not wait)."""
    _libc_calls().sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def punch_hole(fd: int, offset: int, length: int) -> bool:
    """Deallocate ``[offset, offset+length)``; False if unsupported."""
    if length <= 0:
        return True
    flags = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
    rc = _libc_calls().fallocate(fd, flags, offset, length)
    return rc == 0


def _data_runs(view, offset: int):
    """Yield ``(start, end)`` of the runs of non-zero blocks in ``view``.

    Blocks are ``_BLOCK`` bytes aligned on the file (``offset`` is where
    ``view`` lands), so that skipped runs can become whole holes.
    """
    n = len(view)
    pos = 0
    first = (-offset) % _BLOCK or _BLOCK
    run = None
    while pos < n:
        end = min(n, pos + (first if pos == 0 else _BLOCK))
        if _utils.is_zero(view[pos:end]):
            if run is not None:
                yield run, pos
                run = None
        elif run is None:
            run = pos
        pos = end
    if run is not None:
        yield run, n


def _umask() -> int:
    """The process umask, read without changing it.

    ``os.umask()`` can only be read by setting it, and a service's other
    threads would create files with the temporary value meanwhile; Linux
    shows it in ``/proc/self/status`` since 4.7.
    """
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _dest_error(path, exc, what='write'):
    if exc.errno == errno.ENOSPC:
        msg = 'no space left on the device of %s' % path
    elif exc.errno == errno.EDQUOT:
        msg = 'disk quota exceeded for %s' % path
    else:
        msg = 'cannot %s %s: %s' % (what, path, exc.strerror or exc)
    return exceptions.DestinationError(msg)


class PartFile:
    """``DEST.part``, written at offsets, with holes for zero runs.

    :param path: the ``.part`` path.
    :param sparse: skip writing zero chunks (they read back as holes).
    :param durable: make the data durable (``fdatasync``) before it is
        recorded as held and before the rename.
    :param direct_io: let :meth:`use_background` write a durable stream
        with ``O_DIRECT`` (see :mod:`oslo_transfer.engine.writers`).
    """

    def __init__(self, path: str, sparse: bool = True, durable: bool = True,
                 direct_io: bool = True):
        self.path = path
        self.sparse = sparse
        self.durable = durable
        self.direct_io = direct_io and durable
        self.fd = None
        self.writer = None      # see use_background()
        self.size_hint = None
        # True once open() refused what is at the path (a symlink, not a
        # regular file, several hard links): remove() then leaves it.
        self.refused = False

    def use_background(self) -> str | None:
        """Write what follows from a thread of its own; returns its kind.

        The engine calls this when one worker writes the file in order, so
        that the worker goes on receiving while the chunks are written (see
        :mod:`oslo_transfer.engine.writers`).  A durable file on a local
        disk, unless ``direct_io`` is off, is written with ``O_DIRECT``
        (``'direct'``); any other through the page cache (``'queued'``).
        Parallel segments read their bytes back to hash them, which the
        page cache serves and the disk would not, so they write at once.
        None before :meth:`open`.
        """
        if self.writer is None and self.fd is not None:
            if self.direct_io:
                self.writer = writers.open_direct(self.path, self.fd)
                if self.writer is not None:
                    # No readahead on the buffered fd: a read back (the
                    # hasher's, for a chunk it could not keep) must not
                    # pull into the page cache pages that an O_DIRECT
                    # write is about to fill (open(2) warns against
                    # mixing buffered and direct I/O on the same bytes).
                    _fadvise(self.fd, 'POSIX_FADV_RANDOM')
            if self.writer is None:
                self.writer = writers.QueuedWriter(
                    self.fd, self._after_write if self.durable else None)
        if self.writer is None:
            return None
        return ('direct' if isinstance(self.writer, writers.DirectWriter)
                else 'queued')

    def use_buffered(self):
        """Write what follows at once, through the page cache (segments)."""
        if self.writer is not None:
            try:
                self.flush()
            finally:
                if isinstance(self.writer, writers.DirectWriter):
                    _fadvise(self.fd, 'POSIX_FADV_NORMAL')
                self.writer.close()
                self.writer = None

    def flush(self):
        """Hand whatever :meth:`write` holds in memory to the file."""
        if self.writer is not None:
            try:
                self.writer.flush()
            except OSError as exc:
                raise _dest_error(self.path, exc) from exc

    def open(self, fresh: bool):
        self.close()
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        if fresh:
            flags |= os.O_TRUNC
        try:
            self.fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self.refused = True
                raise exceptions.DestinationError(
                    'refusing to follow the symlink %s' % self.path) from exc
            if exc.errno == errno.EISDIR:
                self.refused = True
            raise _dest_error(self.path, exc, 'create') from exc
        st = os.fstat(self.fd)
        if not stat_mod.S_ISREG(st.st_mode):
            os.close(self.fd)
            self.fd = None
            self.refused = True
            raise exceptions.DestinationError(
                '%s exists and is not a regular file' % self.path)
        if st.st_nlink > 1:
            os.close(self.fd)
            self.fd = None
            self.refused = True
            raise exceptions.DestinationError(
                '%s has several hard links; refusing to write it' % self.path)
        if st.st_mode & 0o077:
            os.fchmod(self.fd, 0o600)

    def prepare(self, size: int | None, held, preallocate: bool = False):
        """Size the file and make every range not ``held`` read as zeros.

        Bytes outside ``held`` may hold leftovers of an interrupted write;
        punching holes there keeps "skip zero chunks" correct.
        """
        cur = os.fstat(self.fd).st_size
        if size is not None and cur > size:
            self.truncate(size)
            cur = size
        if self.sparse and held is not None and cur:
            for s, e in held.holes(cur):
                if not punch_hole(self.fd, s, e - s):
                    LOG.debug('cannot punch holes in %s; writing zeros',
                              self.path)
                    self.sparse = False
                    break
        if size is not None:
            try:
                if preallocate:
                    os.posix_fallocate(self.fd, 0, size)
                elif cur < size:
                    os.ftruncate(self.fd, size)
            except OSError as exc:
                if exc.errno in (errno.EFBIG, errno.EINVAL):
                    raise exceptions.DestinationError(
                        'the file system of %s cannot hold a file of %d '
                        'bytes (%s)' % (self.path, size,
                                        exc.strerror or exc)) from exc
                raise _dest_error(self.path, exc, 'allocate') from exc

    def write(self, offset: int, data) -> None:
        if self.sparse:
            if _utils.is_zero(data):
                return
            n = len(data)
            if n > _BLOCK and (_utils.is_zero(data[:_BLOCK]) or
                               _utils.is_zero(data[n - _BLOCK:])):
                # A chunk that starts or ends with zeros (a data island in a
                # sparse image): write only its non-zero blocks, so that the
                # holes of the copy are those of the source, block for block.
                # Dense data pays two short compares per chunk.
                view = memoryview(data)
                for s, e in _data_runs(view, offset):
                    self._write(offset + s, view[s:e])
                return
        self._write(offset, data)

    def _write(self, offset: int, data) -> None:
        if self.writer is not None:
            try:
                self.writer.write(offset, data)
            except OSError as exc:
                raise _dest_error(self.path, exc) from exc
            return
        start = offset
        try:
            view = memoryview(data)
            while view:
                n = os.pwrite(self.fd, view, offset)
                view = view[n:]
                offset += n
        except OSError as exc:
            raise _dest_error(self.path, exc) from exc
        if self.durable:
            self._after_write(start, offset)

    def _after_write(self, start: int, end: int) -> None:
        """Start the writeback of each whole ``_WRITEBACK_BYTES`` passed.

        Overlaps the disk writes with the download so that the checkpoints
        and the final fsync find little left to do (durable files only).
        """
        if end // _WRITEBACK_BYTES != start // _WRITEBACK_BYTES:
            block = (end // _WRITEBACK_BYTES) * _WRITEBACK_BYTES
            start_writeback(self.fd, max(0, block - _WRITEBACK_BYTES),
                            _WRITEBACK_BYTES)

    def read(self, offset: int, length: int) -> bytes:
        self.flush()
        return os.pread(self.fd, length, offset)

    def written_below(self):
        """The offset below which every write landed, after a failed one.

        None if the writer thread did not fail (or there is none).  See
        :meth:`oslo_transfer.engine.writers._Background.written_below`.
        """
        if self.writer is None:
            return None
        return self.writer.written_below()

    def sync(self, flush: bool = True):
        if flush:
            self.flush()
        if not self.durable:
            return
        try:
            os.fdatasync(self.fd)
        except OSError as exc:
            raise _dest_error(self.path, exc, 'sync') from exc

    def truncate(self, size: int):
        self.flush()
        try:
            os.ftruncate(self.fd, size)
        except OSError as exc:
            raise _dest_error(self.path, exc, 'resize') from exc

    def size(self) -> int:
        self.flush()
        return os.fstat(self.fd).st_size

    def commit(self, dest: str, mode: int | None, replace: bool):
        """fsync, chmod and rename to ``dest``; fsync the directory."""
        self.flush()
        try:
            if self.durable:
                os.fsync(self.fd)
            if mode is None:
                mode = 0o666 & ~_umask()
            os.fchmod(self.fd, mode)
            if replace:
                os.replace(self.path, dest)
            else:
                # link() fails if dest appeared meanwhile; never clobber.
                os.link(self.path, dest)
                os.unlink(self.path)
            if self.durable:
                dfd = os.open(os.path.dirname(os.path.abspath(dest)),
                              os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        except FileExistsError as exc:
            raise exceptions.DestinationExists(
                '%s appeared while it was being written; the new data is '
                'kept in %s' % (dest, self.path)) from exc
        except OSError as exc:
            raise _dest_error(dest, exc, 'rename to') from exc

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def remove(self):
        """Close and unlink ``.part`` (never what :meth:`open` refused)."""
        self.close()
        if self.refused:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
