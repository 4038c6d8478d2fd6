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

"""Copy into an existing block device or file, in place (a volume).

``copy(source, DEST, write_in_place=True)``, the default when ``DEST`` is a
block device.  A volume cannot be staged and renamed: the bytes go straight
into ``DEST`` (``O_DIRECT`` where the engine writes one stream), with no
``DEST.part`` and no rename.  The order of events:

1. ``DEST`` must exist.  A symlink to a block device is followed (os-brick
   hands out ``/dev/disk/by-path/...`` links); a symlink to a file is
   refused, as for any copy.
2. The state lives in ``[oslo_transfer] state_dir``/``inplace``, keyed by
   the device (``st_rdev``) or by the file's inode: ``KEY.lock`` (one
   writer per volume) and ``KEY.ctl``, the same control file as a
   ``.part``'s, from which a killed copy resumes.  Without a checksum,
   the prefix that the control file says is held is hashed again from the
   device before it is trusted; with one, the read back at the end covers
   it.
3. ``if_exists="error"`` refuses (a device always exists); ``"verify"``
   and ``"replace"`` overwrite, once the source is known to fit: a source
   larger than the device is refused before any byte is written.  A
   regular file grows to the source's size and never shrinks.
4. Zero runs are written as zeros, unless the caller says the target reads
   as zeros (``assume_zeroed=True``); a resumed copy writes them anyway,
   since an interrupted write may have left data where zeros belong.
5. At the end, ``fsync``; with a checksum, the written bytes are read back
   from the device and hashed (instead of the stream: one hash covers the
   source, the wire and the write).  A mismatch raises
   :class:`~oslo_transfer.exceptions.ChecksumMismatch` after the write: the
   device holds the bad bytes, and the control file is dropped.
"""

import collections
from concurrent import futures
import errno
import logging
import mmap
import os
import stat as stat_mod
import time

from oslo_transfer import _utils
from oslo_transfer.engine import download
from oslo_transfer.engine import journal as journal_mod
from oslo_transfer.engine import partfile
from oslo_transfer import exceptions
from oslo_transfer import result as result_mod

LOG = logging.getLogger(__name__)

#: Bytes per read when the written data is read back and hashed.
REREAD_BYTES = 4 * 1024 * 1024
#: Reads in flight meanwhile.
REREAD_DEPTH = 4


def is_block_device(path) -> bool:
    """True when ``path`` is (or links to) a block device."""
    try:
        return stat_mod.S_ISBLK(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


class Target(partfile.PartFile):
    """The destination itself: never truncated, renamed or removed.

    :param block_device: ``path`` is a block device: its size is fixed and
        the source must fit.
    :param assume_zeroed: the target reads as zeros, so zero runs need not
        be written.
    """

    def __init__(self, path, block_device, assume_zeroed, durable=True,
                 direct_io=True):
        super().__init__(path, sparse=assume_zeroed, durable=durable,
                         direct_io=direct_io)
        self.block_device = block_device
        self.capacity = None

    def open(self, fresh: bool):
        """Open the existing target (``fresh`` changes nothing here)."""
        self.close()
        flags = os.O_RDWR | os.O_CLOEXEC
        if not self.block_device:
            flags |= os.O_NOFOLLOW
        try:
            fd = os.open(self.path, flags)
        except OSError as exc:
            raise partfile._dest_error(self.path, exc, 'open') from exc
        st = os.fstat(fd)
        kind = stat_mod.S_ISBLK if self.block_device else stat_mod.S_ISREG
        if not kind(st.st_mode):
            os.close(fd)
            raise exceptions.DestinationError(
                '%s changed type while it was being opened' % self.path)
        self.fd = fd
        self.capacity = _utils.fd_size(fd) if self.block_device else None

    def prepare(self, size, held, preallocate=False):
        """Check that ``size`` bytes fit; grow a regular file to them."""
        if size is None:
            return
        if self.block_device:
            if size > self.capacity:
                raise exceptions.DestinationError(
                    'the source has %d bytes and does not fit in %s (%d '
                    'bytes); nothing was written' % (size, self.path,
                                                     self.capacity))
            return
        try:
            if os.fstat(self.fd).st_size < size:
                os.ftruncate(self.fd, size)
        except OSError as exc:
            raise partfile._dest_error(self.path, exc, 'resize') from exc

    def size(self) -> int:
        self.flush()
        return _utils.fd_size(self.fd)

    def truncate(self, size: int):
        """A volume keeps its size: only what is held is written out."""
        self.flush()

    def commit(self, dest=None, mode=None, replace=False):
        """Write out what is held and ``fsync`` (always: it is a volume)."""
        self.flush()
        try:
            os.fsync(self.fd)
        except OSError as exc:
            raise partfile._dest_error(self.path, exc, 'sync') from exc

    def remove(self):
        """Close; the target stays (its bytes are the caller's)."""
        self.close()


class _DeviceReader:
    """Positional reads of ``path`` as the device returns them.

    ``O_DIRECT`` where the file system allows it, so that the page cache
    does not answer for the disk; otherwise the cached pages are dropped
    first.
    """

    def __init__(self, path):
        self.path = path
        self.fd = None
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC |
                              getattr(os, 'O_DIRECT', 0))
            # A file system may take O_DIRECT at open and refuse the read.
            os.preadv(self.fd, [mmap.mmap(-1, mmap.PAGESIZE)], 0)
        except OSError as exc:
            if self.fd is not None and exc.errno != errno.EINVAL:
                os.close(self.fd)
                raise
            self._buffered()

    def _buffered(self):
        if self.fd is not None:
            os.close(self.fd)
        self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)

    def read_into(self, buf, pos) -> int:
        return os.preadv(self.fd, [buf], pos)

    def close(self):
        os.close(self.fd)


def reread(path, size, new_hash, cancel):
    """``(hexdigest, bytes)`` of the first ``size`` bytes of ``path``.

    :data:`REREAD_DEPTH` reads are in flight while this thread hashes the
    oldest (hashlib releases the GIL on large updates): one direct read at
    a time left the device idle while the hash ran, and a single queued
    request is the slowest way to read a disk.
    """
    h = new_hash()
    dev = _DeviceReader(path)
    pos = 0
    try:
        with futures.ThreadPoolExecutor(
                REREAD_DEPTH,
                thread_name_prefix='oslo-transfer-reread') as ex:
            free = [mmap.mmap(-1, REREAD_BYTES) for _ in range(REREAD_DEPTH)]
            pending = collections.deque()
            ahead = 0
            while pos < size:
                while free and ahead < size:
                    buf = free.pop()
                    pending.append((buf, ex.submit(dev.read_into, buf,
                                                   ahead)))
                    ahead += REREAD_BYTES
                cancel.check()
                buf, fut = pending.popleft()
                n = fut.result()
                k = min(n, size - pos)
                if k <= 0:
                    break
                h.update(memoryview(buf)[:k])
                pos += k
                if n < REREAD_BYTES:
                    break       # the end of a regular file
                free.append(buf)
            for _buf, fut in pending:
                fut.cancel()
    finally:
        dev.close()
    return h.hexdigest(), pos


class InPlaceDownload(download.Download):
    """One copy of a source into an existing block device or file."""

    #: one location at a time (a multi-source fill is not written in place)
    several_at_once = False

    def __init__(self, transfer, plan, dest, checksum, ctx,
                 assume_zeroed=False, **kwargs):
        super().__init__(transfer, plan, dest, checksum, ctx, **kwargs)
        g = transfer.conf.oslo_transfer
        try:
            st = os.stat(dest)
        except FileNotFoundError:
            raise exceptions.DestinationError(
                '%s does not exist: writing in place needs an existing '
                'block device or file' % dest) from None
        except OSError as exc:
            raise partfile._dest_error(dest, exc, 'stat') from exc
        if stat_mod.S_ISBLK(st.st_mode):
            self.dest = os.path.realpath(dest)
            key = 'dev-%d-%d' % (os.major(st.st_rdev), os.minor(st.st_rdev))
        elif stat_mod.S_ISREG(st.st_mode) and not os.path.islink(dest):
            key = 'file-%d-%d' % (st.st_dev, st.st_ino)
        else:
            raise exceptions.DestinationError(
                '%s is neither a block device nor a regular file (symlinks '
                'are followed to block devices only); cannot write it in '
                'place' % dest)
        self.block_device = stat_mod.S_ISBLK(st.st_mode)
        self.state_dir = os.path.join(g.state_dir, 'inplace')
        self.part = Target(self.dest, self.block_device, assume_zeroed,
                           durable=g.fsync, direct_io=g.direct_io)
        self.journal = journal_mod.Journal(
            os.path.join(self.state_dir, key + '.ctl'), durable=g.fsync)
        self.lock = journal_mod.DestinationLock(
            os.path.join(self.state_dir, key + '.lock'), name=self.dest)

    def run(self) -> result_mod.Result:
        if self.if_exists == 'error':
            raise exceptions.DestinationExists(
                '%s exists (if_exists="error"); writing in place overwrites '
                'an existing device or file: pass "verify" or "replace"'
                % self.dest)
        try:
            os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise exceptions.DestinationError(
                'cannot create %s for the state of writes in place '
                '([oslo_transfer] state_dir): %s' % (
                    self.state_dir, exc.strerror or exc)) from exc
        return self._scheduled(self._write_locked)

    def _write_locked(self):
        self._acquire()
        try:
            if self.journal.load() and self.part.sparse:
                LOG.info('%s: an earlier write in place was interrupted; '
                         'zero runs are written, not assumed', self.dest)
                self.part.sparse = False
            return self._run_candidates()
        finally:
            self.part.close()
            self.lock.release(remove=not os.path.exists(self.journal.path))

    def _whole_file_wanted(self, drv, loc) -> bool:
        if download.Cap.READ not in drv.capabilities:
            raise exceptions.DestinationError(
                'the %s driver cannot stream %s, and writing in place into '
                '%s needs a stream' % (drv.name, loc.masked, self.dest))
        return False

    def _new_hasher(self):
        """No hash of the stream when a checksum is given.

        The bytes are read back from the device and hashed at the end
        (:meth:`_complete`): that check covers the source, the wire and
        the write at once, and hashing the stream as well would hash every
        byte twice.  Other digests (``hash_algos``) or a verifier asked
        for explicitly are computed on the stream as for any copy.
        """
        if self.checksum is not None and not self.explicit_algos:
            return None, None
        return super()._new_hasher()

    def _complete(self, cand, fill, size, resumed_from, algo):
        if self.expected_size is not None and size != self.expected_size:
            raise exceptions.SizeMismatch(
                '%s delivered %d bytes, expected %d'
                % (cand.url, size, self.expected_size), url=cand.url)
        digest = fill.hasher.hexdigest() if fill.hasher else None
        digests = fill.hasher.hexdigests() if fill.hasher else {}
        if fill.hasher:
            try:
                fill.hasher.verify(cand.url)
            except exceptions.VerificationFailed:
                self.journal.remove()
                raise
        self.part.commit()
        if self.checksum is not None:
            algo = self.checksum.algorithm
            try:
                digest, _n = reread(self.dest, size, self.checksum.new,
                                    self.ctx.cancel)
            except OSError as exc:
                raise partfile._dest_error(self.dest, exc,
                                           'read back') from exc
            if digest != self.checksum.hexdigest:
                self.journal.remove()
                raise exceptions.ChecksumMismatch(
                    '%s: the %d bytes written from %s read back with %s '
                    'digest %s, expected %s; the device holds those bytes '
                    'now' % (self.dest, size, cand.url, algo, digest,
                             self.checksum.hexdigest),
                    url=cand.url, expected=self.checksum.hexdigest,
                    actual=digest)
            digests[algo] = digest
        self.part.close()
        self.journal.remove()
        self.done = self.total = size
        self._report()
        self._count_location(cand.url, self._cand_wire)
        return result_mod.Result(
            bytes_transferred=self.wire, bytes_resumed=resumed_from,
            bytes_by_location=dict(self._wire_by), driver=cand.driver,
            url=cand.url, digest=digest, algorithm=algo,
            digests=digests, size=size,
            elapsed=time.monotonic() - self._started, plan=self.plan,
            dest=self.dest)
