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

"""Local paths and ``file://`` URLs: zero-copy and sparse-aware.

The whole-file path (``copy_to_path``) tries, in order: a reflink
(``FICLONE``, copy-on-write on btrfs/XFS, instant), then
``os.copy_file_range`` over the data extents only (``SEEK_DATA`` /
``SEEK_HOLE``: holes stay holes, the kernel moves the bytes), then a read
loop for sources that are not regular files (block devices such as an iSCSI
LUN attached by os-brick), where zero blocks become holes.
"""

import errno
import fcntl
import logging
import os
import stat as stat_mod
import struct

from oslo_config import cfg

from oslo_transfer._drivers import _common
from oslo_transfer import _utils
from oslo_transfer import driver
from oslo_transfer import exceptions
from oslo_transfer import locations

LOG = logging.getLogger(__name__)

_FICLONE = 0x40049409
_FICLONERANGE = 0x4020940d
#: the most ``copy_to_path`` copies between two ``target.record`` calls;
#: at most a quarter of the engine's checkpoint interval, so that the
#: engine syncs a checkpoint while the copy goes on (see _step)
_STEP = 64 * 1024 * 1024
_MIN_STEP = 1024 * 1024

OPTS = [
    cfg.BoolOpt('reflink', default=True,
                help='Try a copy-on-write clone (FICLONE) first when source '
                     'and destination share a filesystem that supports it.'),
    cfg.BoolOpt('zero_copy', default=True,
                help='Copy with os.copy_file_range (in the kernel) instead '
                     'of reading through user space.'),
]


def _path(location):
    return locations.local_path(location.url)


def _open_error(path, exc):
    if exc.errno == errno.ENOENT:
        return exceptions.SourceNotFound('%s does not exist' % path,
                                         url=path)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return exceptions.PermissionDenied('%s: permission denied' % path,
                                           url=path)
    return exceptions.TransferError('%s: %s' % (path, exc.strerror),
                                    url=path)


def _step(target) -> int:
    """Bytes to copy between two records: a quarter checkpoint interval.

    What a crash costs is what was copied and not yet recorded; the
    engine starts a checkpoint every half interval and holds ``record()``
    at the whole one, so smaller steps let a sync overlap the copy.
    """
    ckpt = getattr(target, 'checkpoint_bytes', None)
    if not ckpt:
        return _STEP
    return max(_MIN_STEP, min(_STEP, ckpt // 4))


def _validator(st) -> str | None:
    """Inode, size and modification time of a regular file; None else.

    (A block device has no version: resume splices only when the size and
    a checksum are known, the engine's rule.)
    """
    if stat_mod.S_ISREG(st.st_mode):
        return 'file:%d:%d:%d' % (st.st_ino, st.st_size, st.st_mtime_ns)
    return None


def _check_unchanged(fd, path, ctx, when):
    """Raise SourceChanged unless ``fd`` is the version the engine stat'ed.

    A local read has no ``If-Range``: the file can be rewritten in place
    (same inode, new mtime) or replaced by a rename (a new inode, which a
    retry would open) while it is copied.  Checked when a read opens the
    file and after its last byte, so a copy never joins two versions; the
    engine then starts again or raises (``[oslo_transfer]
    on_source_change``).  The soak found copies that held the new
    version's end behind the old one's start.
    """
    expected = getattr(ctx, 'validator', None)
    if not expected or not expected.startswith('file:'):
        return
    now = _validator(os.fstat(fd))
    if now != expected:
        raise exceptions.SourceChanged(
            '%s changed %s (validator %s, now %s)'
            % (path, when, expected, now), url=path)


def _size_of(fd, st):
    if stat_mod.S_ISREG(st.st_mode):
        return st.st_size
    if stat_mod.S_ISBLK(st.st_mode):
        return os.lseek(fd, 0, os.SEEK_END)
    return None


class FileDriver(driver.Driver):
    """Local files and block devices."""

    name = 'file'
    schemes = ('file',)
    capabilities = (driver.Capability.READ | driver.Capability.WRITE |
                    driver.Capability.RANGED_READ |
                    driver.Capability.ZERO_COPY |
                    driver.Capability.COPY_TO_PATH |
                    driver.Capability.ATOMIC_COMMIT)

    def __init__(self, conf):
        super().__init__(conf)
        self._clone_cache = {}

    @classmethod
    def list_opts(cls):
        return OPTS

    def _open(self, path, flags=os.O_RDONLY):
        try:
            return os.open(path, flags | os.O_CLOEXEC)
        except OSError as exc:
            raise _open_error(path, exc) from exc

    def stat(self, location, ctx):
        path = _path(location)
        fd = self._open(path)
        try:
            st = os.fstat(fd)
            if stat_mod.S_ISDIR(st.st_mode):
                raise exceptions.InvalidLocation('%s is a directory' % path,
                                                 url=path)
            size = _size_of(fd, st)
        finally:
            os.close(fd)
        validator = _validator(st)
        # One stream: a local read is not latency-bound, and the engine
        # hashes a single stream from memory, where parallel segments would
        # make it read most of the data back.
        return driver.Stat(size=size, validator=validator, ranges=True,
                           mtime=st.st_mtime, max_segments=1)

    def use_copy_to_path(self, location, target_dir, hashing, ctx):
        # Without a digest to compute, the in-kernel copy is the fastest
        # way.  With one, the engine would read the copy back: streaming
        # (pread + pwrite on one thread, hashing on another) costs one pass
        # less, unless the copy is a reflink, which costs no pass at all.
        if not hashing:
            return True
        return self._can_clone(_path(location), target_dir)

    def _can_clone(self, src, target_dir):
        """True if ``src`` can be reflinked into ``target_dir``."""
        if not self.options.reflink:
            return False
        try:
            st = os.stat(src)
            key = (st.st_dev, os.stat(target_dir).st_dev)
        except OSError:
            return False
        if not stat_mod.S_ISREG(st.st_mode) or st.st_size < 4096:
            return False
        # (src device, target device) -> can reflink; probed once per pair
        if key not in self._clone_cache:
            self._clone_cache[key] = self._probe_clone(src, target_dir)
        return self._clone_cache[key]

    @staticmethod
    def _probe_clone(src, target_dir):
        """Reflink one block of ``src`` into an unnamed temporary file."""
        try:
            sfd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            try:
                dfd = os.open(target_dir, os.O_TMPFILE | os.O_WRONLY |
                              os.O_CLOEXEC, 0o600)
            except OSError:
                return False
            try:
                arg = struct.pack('=qQQQ', sfd, 0, 4096, 0)
                fcntl.ioctl(dfd, _FICLONERANGE, arg)
                return True
            except OSError as exc:
                LOG.debug('no reflink from %s into %s: %s', src, target_dir,
                          exc.strerror)
                return False
            finally:
                os.close(dfd)
        finally:
            os.close(sfd)

    def read(self, location, offset, length, ctx):
        path = _path(location)
        fd = self._open(path)
        try:
            _check_unchanged(fd, path, ctx, 'since it was first read')
        except BaseException:
            os.close(fd)
            raise
        return self._read(fd, path, offset, length, ctx)

    def _read(self, fd, path, offset, length, ctx):
        # For the download engine: read into page-aligned blocks that its
        # O_DIRECT writer writes as they are (see _common.BlockPool).
        blocks = _common.block_pool(ctx, 0, self.chunk_size)
        try:
            pos = offset
            end = None if length is None else offset + length
            while end is None or pos < end:
                ctx.cancel.check()
                n = self.chunk_size if end is None else min(self.chunk_size,
                                                            end - pos)
                block = blocks.take(n) if blocks is not None else None
                if block is not None:
                    got = os.preadv(fd, [block[0]], pos)
                    data = block[0] if got == n else block[0][:got]
                    del block
                else:
                    data = os.pread(fd, n, pos)
                if not data:
                    break
                pos += len(data)
                yield data
            _check_unchanged(fd, path, ctx, 'while it was read')
            if end is not None and pos < end:
                raise exceptions.SizeMismatch(
                    '%s ended at %d, before %d (it shrank?)'
                    % (path, pos, end), url=path)
        finally:
            os.close(fd)

    def copy_to_path(self, location, target, ctx, progress=None):
        src = _path(location)
        sfd = self._open(src)
        try:
            dfd = os.open(target.path, os.O_WRONLY | os.O_NOFOLLOW |
                          os.O_CLOEXEC)
        except OSError as exc:
            os.close(sfd)
            raise exceptions.DestinationError('%s: %s' % (
                target.path, exc.strerror)) from exc
        try:
            _check_unchanged(sfd, src, ctx, 'since it was first read')
            st = os.fstat(sfd)
            size = _size_of(sfd, st)
            held = target.held()
            if stat_mod.S_ISREG(st.st_mode):
                if not held and self._reflink(sfd, dfd, src):
                    _check_unchanged(sfd, src, ctx, 'while it was cloned')
                    target.record(0, size)
                    if progress:
                        progress(size)
                    return
                self._copy_extents(sfd, dfd, size, held, target, ctx,
                                   progress, src)
            else:
                self._copy_loop(sfd, dfd, size, held, target, ctx, progress,
                                src)
            _check_unchanged(sfd, src, ctx, 'while it was copied')
            # No fdatasync here: the engine syncs the .part (same inode)
            # before it records the ranges, and not at all with
            # [oslo_transfer] fsync = false.
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise exceptions.DestinationError(
                    'no space left on the device of %s' % target.path
                ) from exc
            raise exceptions.TransferError('copying %s: %s' % (
                src, exc.strerror or exc), url=src) from exc
        finally:
            os.close(sfd)
            os.close(dfd)

    def _reflink(self, sfd, dfd, src):
        if not self.options.reflink:
            return False
        try:
            fcntl.ioctl(dfd, _FICLONE, sfd)
        except OSError as exc:
            LOG.debug('no reflink for %s: %s', src, exc.strerror)
            return False
        LOG.debug('%s cloned (reflink)', src)
        return True

    @staticmethod
    def _extents(fd, size):
        """Yield the data extents ``(start, end)`` of a regular file."""
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    return
                if exc.errno == errno.EINVAL:
                    yield (pos, size)
                    return
                raise
            end = os.lseek(fd, start, os.SEEK_HOLE)
            yield (start, min(end, size))
            pos = end

    def _copy_extents(self, sfd, dfd, size, held, target, ctx, progress,
                      src):
        have = _utils.RangeSet(held)
        zero_copy = self.options.zero_copy
        step = _step(target)
        for start, end in self._extents(sfd, size):
            for s, e in have.holes(end) if have else [(start, end)]:
                s, e = max(s, start), min(e, end)
                pos = s
                while pos < e:
                    ctx.cancel.check()
                    n = min(step, e - pos)
                    if zero_copy:
                        try:
                            done = os.copy_file_range(sfd, dfd, n, pos, pos)
                        except OSError as exc:
                            if exc.errno not in (errno.EXDEV, errno.EINVAL,
                                                 errno.ENOSYS,
                                                 errno.EOPNOTSUPP):
                                raise
                            zero_copy = False
                            continue
                    else:
                        data = os.pread(sfd, min(n, self.chunk_size), pos)
                        done = os.pwrite(dfd, data, pos) if data else 0
                    if not done:
                        _check_unchanged(sfd, src, ctx, 'while it was copied')
                        raise exceptions.SizeMismatch(
                            '%s shrank while it was copied' % src, url=src)
                    target.record(pos, done)
                    if progress:
                        progress(done)
                    pos += done

    def _copy_loop(self, sfd, dfd, size, held, target, ctx, progress, src):
        have = _utils.RangeSet(held)
        pos = 0
        while size is None or pos < size:
            ctx.cancel.check()
            n = self.chunk_size if size is None else min(self.chunk_size,
                                                         size - pos)
            if have and have.covers(pos, pos + n):
                pos += n
                continue
            data = os.pread(sfd, n, pos)
            if not data:
                break
            if not _utils.is_zero(data):
                os.pwrite(dfd, data, pos)
            target.record(pos, len(data))
            if progress:
                progress(len(data))
            pos += len(data)

    def write(self, location, chunks, ctx, offset=0, size=None):
        path = _path(location)
        tmp = '%s.%d.upload' % (path, os.getpid())
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        if offset:
            raise exceptions.DestinationError(
                'file writes restart from zero (staged and renamed)',
                url=path)
        try:
            fd = os.open(tmp, flags | os.O_TRUNC, 0o600)
        except OSError as exc:
            raise exceptions.DestinationError('%s: %s' % (
                tmp, exc.strerror)) from exc
        writer = _FileWriter(tmp, path)
        try:
            pos = 0
            for chunk in chunks:
                ctx.cancel.check()
                if _utils.is_zero(chunk):
                    pos += len(chunk)
                    continue
                os.pwrite(fd, chunk, pos)
                pos += len(chunk)
            os.ftruncate(fd, pos)
            os.fsync(fd)
            writer.bytes_written = pos
        except BaseException as exc:
            os.close(fd)
            writer.abort()
            if isinstance(exc, OSError):
                raise exceptions.DestinationError('%s: %s' % (
                    path, exc.strerror)) from exc
            raise
        os.close(fd)
        return writer


class _FileWriter(driver.Writer):
    def __init__(self, tmp, path):
        self.tmp = tmp
        self.path = path

    def commit(self, ctx=None):
        os.replace(self.tmp, self.path)

    def abort(self, ctx=None):
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass
