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

"""NFS exports read and written in user space with libnfs (no mount).

URL: ``nfs://HOST[:PORT]/EXPORT/.../FILE[?version=3|4&ARG=VALUE...]``.
The directory part of the path is what gets mounted (as libnfs does);
``PORT`` is the NFS port (libnfs' ``nfsport=``).  Other query arguments go
to libnfs unchanged (``nfsport``, ``mountport``, ``uid``, ``gid``,
``tcp-syncnt``, ...).  NFSv4 URLs use the server's pseudo path.

* Each ``read()`` borrows a mounted libnfs context from a small pool
  (one context per thread at a time: libnfs is not thread-safe) and keeps
  ``outstanding_requests`` READs in flight on it.  ``stat()`` caps the
  engine's parallel segments at ``max_segments`` (default 1: one
  connection with READs in flight rather than one per segment).
* Writes are in place (no staging and rename): a resumed write continues
  at ``written_size()``, the size of the remote file.  ``abort()`` leaves
  the bytes written so far for the next attempt.
* libnfs 4.0 cannot encode an NFSv4 WRITE of more than about 3.9 KiB, so
  NFSv4 writes go out in :data:`V4_WRITE_SIZE` pieces (slow); write over
  NFSv3 where you can.
"""

import errno
import logging
import os
import stat as stat_mod
import threading
import urllib.parse

from oslo_config import cfg

from oslo_transfer._drivers import _common
from oslo_transfer import _utils
from oslo_transfer import driver
from oslo_transfer import exceptions

LOG = logging.getLogger(__name__)

Cap = driver.Capability

#: bytes per NFSv4 WRITE: libnfs 4.0 fails to encode a COMPOUND4 with more
#: than ~3944 bytes of data (the limit shrinks with the file handle size)
V4_WRITE_SIZE = 3072

#: libnfs 4.0 refuses replies larger than 1 MiB + 4 KiB
_MAX_REQUEST = 1024 * 1024

OPTS = [
    _utils.IntOpt('outstanding_requests', default=4, min=1, max=64,
                  help='READ (or WRITE) requests kept in flight on one NFS '
                       'connection.  More hide the round trip of a distant '
                       'server; 4 already reaches loopback speed.\n\n'
                       'Related options:\n\n* request_size\n'
                       '* [oslo_transfer] segments (each segment has its own '
                       'connection)'),
    _utils.IntOpt('request_size', default=512 * 1024, min=4096,
                  max=_MAX_REQUEST,
                  help='Bytes per READ or NFSv3 WRITE request; also capped by '
                       'what the server announces (rtmax/wtmax).  Memory per '
                       'read is about outstanding_requests x request_size.'
                       '\n\nPossible values:\n\n* 4096 to 1048576 (libnfs '
                       '4.0 refuses larger replies)\n\nRelated options:\n\n'
                       '* outstanding_requests'),
    _common.max_segments_opt(
        'Most parallel ranged segments for one read of a file; each '
        'segment is a connection of its own.  One connection with '
        'outstanding_requests READs in flight keeps a nearby server as '
        'busy as several, and on loopback 1 segment took as long as 4 '
        'with less CPU and memory (one writer of the destination, no '
        'reading it back to hash it).  Raise it for a server that serves '
        'each connection slower than several together.',
        'connection', ('outstanding_requests',)),
    _utils.IntOpt('idle_connections', default=4, min=0, max=4096,
                  help='Mounted connections kept open per export between '
                       'calls (0 closes each one after use).'),
    _utils.FiniteFloatOpt(
        'idle_seconds', default=60.0, min=0.0, max=_utils.MAX_SECONDS,
        help='Idle connections older than this are closed instead '
             'of reused.'),
    cfg.StrOpt('file_mode', default='0644',
               help='Permission bits (octal) of files that a write '
                    'creates.'),
]


def _lib():
    from oslo_transfer._drivers.nfs import libnfs
    return libnfs


def _translate(exc, loc, what):
    """An :class:`libnfs.NFSError` as an :mod:`oslo_transfer` exception."""
    lib = _lib()
    msg = '%s: %s failed: %s' % (loc.masked, what, exc.message)
    err = exc.errno
    if isinstance(exc, lib.NFSTimeout) or err == errno.ETIMEDOUT:
        return exceptions.TransferTimeout(msg, url=loc.masked)
    if err == errno.ENOENT:
        return exceptions.SourceNotFound(
            '%s: no such export or file (%s)' % (loc.masked, exc.message),
            url=loc.masked)
    if err in (errno.EACCES, errno.EPERM):
        return exceptions.PermissionDenied(msg, url=loc.masked)
    if err in (errno.EISDIR, errno.ENOTDIR, errno.EINVAL):
        return exceptions.InvalidLocation(msg, url=loc.masked)
    if err in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS):
        return exceptions.DestinationError(msg, url=loc.masked)
    if 'COMPOUND4args' in exc.message:
        return exceptions.DestinationError(
            '%s: libnfs could not encode an NFSv4 WRITE (%s); write over '
            'NFSv3 (version=3) instead' % (loc.masked, exc.message),
            url=loc.masked)
    if err == errno.ENODATA:
        return exceptions.SizeMismatch(msg + ' (the file shrank?)',
                                       url=loc.masked)
    if err in (errno.ECONNREFUSED, errno.ECONNRESET, errno.ENOTCONN,
               errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EPIPE,
               errno.EBADF, errno.EIO):
        return exceptions.ConnectionFailed(
            '%s: %s failed, the NFS server is unreachable or dropped the '
            'connection: %s' % (loc.masked, what, exc.message),
            url=loc.masked)
    return exceptions.ProtocolError(msg, url=loc.masked, retryable=False)


class _Target:
    """What an ``nfs://`` URL names, split for libnfs."""

    def __init__(self, location):
        p = location.parts()
        if p.password or p.username:
            raise exceptions.InvalidLocation(
                '%s: nfs:// URLs carry no user or password (NFS uses '
                'AUTH_SYS); use the uid= and gid= arguments'
                % location.masked, url=location.masked)
        if not p.hostname:
            raise exceptions.InvalidLocation('%s: no NFS server in the URL'
                                             % location.masked,
                                             url=location.masked)
        path = p.path
        if not path or path.endswith('/') or path.count('/') < 2:
            raise exceptions.InvalidLocation(
                '%s: the URL must name a file below an export '
                '(nfs://HOST/EXPORT/FILE)' % location.masked,
                url=location.masked)
        args = urllib.parse.parse_qsl(p.query, keep_blank_values=True)
        if p.port:
            args = [(k, v) for k, v in args if k != 'nfsport']
            args.append(('nfsport', str(p.port)))
        self.version = 3
        for k, v in args:
            if k == 'version':
                if v not in ('3', '4'):
                    raise exceptions.InvalidLocation(
                        '%s: version must be 3 or 4' % location.masked,
                        url=location.masked)
                self.version = int(v)
        query = urllib.parse.urlencode(args, safe='/')
        host = p.hostname
        self.url = 'nfs://%s%s%s' % (host, path,
                                     '?' + query if query else '')
        # libnfs mounts the directory and opens the last component; a
        # pooled context serves every file of that directory
        export, name = path.rsplit('/', 1)
        self.file = '/' + name
        self.key = (host, export, query)


class NFSDriver(driver.Driver):
    """``nfs://`` URLs through libnfs (NFSv3 and NFSv4)."""

    name = 'nfs'
    schemes = ('nfs',)
    capabilities = (Cap.READ | Cap.WRITE | Cap.RANGED_READ |
                    Cap.RESUMABLE_WRITE | Cap.BLOCK_ACCESS |
                    Cap.SAME_NETWORK_ONLY)
    chunk_size = 512 * 1024

    #: the shared object to load (tests point it elsewhere)
    soname = None

    def __init__(self, conf):
        super().__init__(conf)
        self._pool = _common.SessionPool(
            close=lambda c: c.destroy(),
            max_idle=self.options.idle_connections,
            max_idle_seconds=self.options.idle_seconds)
        self._lock = threading.Lock()
        #: URL -> the end of the bytes acknowledged in order by a write
        #: that failed with WRITEs in flight (see written_size)
        self._trims = {}

    @classmethod
    def list_opts(cls):
        return OPTS

    def check_available(self):
        _lib().load(self.soname)

    # -- connections -------------------------------------------------------

    def _lease(self, location, ctx, reuse=True):
        """A mounted context: ``(_Target, Lease, reused)``."""
        lib = _lib()
        target = _Target(location)
        timeout = ctx.timeout()
        c = self._pool.take(target.key) if reuse else None
        if c is not None:
            c.set_timeout(timeout)
            return target, _common.Lease(self._pool, target.key, c), True
        try:
            c = lib.Context(target.url, timeout, self.soname)
        except lib.NFSError as exc:
            raise exceptions.InvalidLocation(
                '%s: libnfs cannot use this URL: %s'
                % (location.masked, exc.message),
                url=location.masked) from exc
        try:
            c.mount(ctx.cancel)
        except lib.NFSError as exc:
            c.destroy()
            if exc.errno == errno.EACCES and 'MNT3ERR' in exc.message:
                # MOUNT answers "access denied" for paths it does not
                # export, existing or not
                raise exceptions.SourceNotFound(
                    '%s: the server does not let this host mount %s: no '
                    'such export or directory, or the export does not '
                    'list this host (%s)' % (location.masked, c.export,
                                             exc.message),
                    url=location.masked) from exc
            raise _translate(exc, location, 'mount of %s' % c.export) \
                from exc
        except BaseException:
            c.destroy()
            raise
        LOG.debug('mounted %s:%s (NFSv%d)', c.server, c.export,
                  target.version)
        return target, _common.Lease(self._pool, target.key, c), False

    def _call(self, location, ctx, what, func, keep=False):
        """Run ``func(context, path)`` on a leased context, translating errors.

        A pooled connection that the server closed meanwhile fails on first
        use: that case is retried once on a fresh connection.

        :param keep: return ``(target, lease, result)`` and leave the lease
            to the caller, instead of releasing it and returning ``result``.
        """
        lib = _lib()
        reuse = True
        while True:
            target, lease, reused = self._lease(location, ctx, reuse)
            try:
                result = func(lease.session, target.file)
            except lib.NFSError as exc:
                lease.release()
                if reused and _is_connection_error(exc):
                    LOG.debug('%s: pooled connection is dead (%s); '
                              'reconnecting', location.masked, exc.message)
                    reuse = False
                    continue
                raise _translate(exc, location, what) from exc
            except BaseException:
                lease.release()
                raise
            if keep:
                return target, lease, result
            lease.release()
            return result

    # -- Driver API --------------------------------------------------------

    def stat(self, location, ctx):
        st = self._call(location, ctx, 'stat',
                        lambda c, path: c.stat(path, ctx.cancel))
        if stat_mod.S_ISDIR(st.mode):
            raise exceptions.InvalidLocation('%s is a directory'
                                             % location.masked,
                                             url=location.masked)
        return driver.Stat(size=st.size, validator=_validator(st),
                           ranges=True,
                           mtime=st.mtime + st.mtime_nsec / 1e9,
                           max_segments=self.options.max_segments or None)

    def read(self, location, offset, length, ctx):
        def open_(c, path):
            fh = c.open(path, os.O_RDONLY, cancel=ctx.cancel)
            try:
                return fh, c.fstat(fh, ctx.cancel)
            except BaseException:
                c.broken = True  # the open file handle goes with it
                raise

        _, lease, (fh, st) = self._call(location, ctx, 'open', open_,
                                        keep=True)
        expected = getattr(ctx, 'validator', None)
        if expected and expected.startswith('nfs:') and \
                expected != _validator(st):
            # what HTTP's If-Range does: the engine re-stats and restarts
            # (or raises SourceChanged) instead of joining two versions
            lease.session.broken = True
            lease.release()
            raise exceptions.RangeNotSupported(
                '%s changed since it was first read (validator %s, now %s)'
                % (location.masked, expected, _validator(st)),
                url=location.masked)
        if length is None:
            length = max(0, st.size - offset)
        request = self._request_size(lease.session.readmax)
        return self._read(location, lease, fh, offset, length, request, ctx)

    def _read(self, location, lease, fh, offset, length, request, ctx):
        lib = _lib()
        c = lease.session
        window = self.options.outstanding_requests
        reads = c.pread_iter(fh, offset, length, request, window, ctx.cancel,
                             blocks=_common.block_pool(ctx, window, request))
        pos = offset
        try:
            for data in reads:
                pos += len(data)
                yield data
            c.close(fh, ctx.cancel)
        except lib.NFSError as exc:
            raise _translate(exc, location, 'read at byte %d' % pos) \
                from exc
        finally:
            # a reader that stops early leaves READs in flight: closing
            # the inner generator marks the context broken before it
            # goes back to the pool
            reads.close()
            lease.release()

    def _request_size(self, server_max):
        size = self.options.request_size
        if server_max:
            size = min(size, server_max)
        return max(4096, size)

    def written_size(self, location, ctx):
        """The size of the remote file (0 if it does not exist).

        After a write that failed with WRITEs in flight, the server may
        have carried out a later WRITE and not an earlier one: the file
        can be longer than the bytes it holds without a gap.  The first
        call after such a failure cuts the file back to the end of what
        the server acknowledged in order.
        """
        key = _Target(location).url
        with self._lock:
            trim = self._trims.get(key)

        def size_of(c, path):
            if trim is None:
                return c.stat(path, ctx.cancel).size
            fh = c.open(path, os.O_WRONLY, cancel=ctx.cancel)
            have = c.fstat(fh, ctx.cancel).size
            if have > trim:
                LOG.info('%s: cutting the file back from %d to %d bytes, '
                         'the end of what the server acknowledged in order',
                         location.masked, have, trim)
                c.ftruncate(fh, trim, ctx.cancel)
                have = trim
            c.close(fh, ctx.cancel)
            return have

        try:
            size = self._call(location, ctx, 'stat', size_of)
        except exceptions.SourceNotFound:
            size = 0
        with self._lock:
            if self._trims.get(key) == trim:
                self._trims.pop(key, None)
        return size

    def write(self, location, chunks, ctx, offset=0, size=None):
        lib = _lib()
        target, lease, fh = self._call(
            location, ctx, 'open for writing',
            lambda c, path: self._open_for_write(c, path, offset, ctx),
            keep=True)
        c = lease.session
        if target.version == 4:
            # tiny requests (see V4_WRITE_SIZE): keep more of them in flight
            request = V4_WRITE_SIZE
            window = max(self.options.outstanding_requests, 32)
        else:
            request = self._request_size(c.writemax)
            window = self.options.outstanding_requests
        acked = [0]

        def ack(n):
            acked[0] += n

        try:
            written = c.pwrite_all(fh, offset, chunks, request, window,
                                   ctx.cancel, ack)
        except BaseException as exc:
            if c.broken:
                # WRITEs were in flight: the server may hold a later one
                # and not an earlier one (see written_size)
                with self._lock:
                    self._trims[target.url] = offset + acked[0]
            lease.release()
            if isinstance(exc, lib.NFSError):
                raise _translate(exc, location, 'write at byte %d'
                                 % (offset + acked[0])) from exc
            # the chunk iterator failed (a checksum mismatch, a cancel):
            # the bytes acknowledged so far stay for a resumed write
            raise
        if size is not None and offset + written != size:
            lease.release()
            raise exceptions.SizeMismatch(
                '%s: wrote %d bytes up to byte %d, expected %d' % (
                    location.masked, written, offset + written, size),
                url=location.masked)
        return _NFSWriter(location, lease, fh, written, ctx)

    def _open_for_write(self, c, path, offset, ctx):
        lib = _lib()
        mode = int(self.options.file_mode, 8)
        try:
            fh = c.open(path, os.O_WRONLY, cancel=ctx.cancel)
            created = False
        except lib.NFSError as exc:
            if exc.errno != errno.ENOENT:
                raise
            # libnfs' NFSv4 create is exclusive: open first, create after
            fh = c.open(path, os.O_WRONLY | os.O_CREAT, mode, ctx.cancel)
            created = True
        if created:
            c.fchmod(fh, mode, ctx.cancel)
        have = c.fstat(fh, ctx.cancel).size
        if offset > have:
            raise lib.NFSError(errno.EINVAL, 'cannot continue a write at '
                               'byte %d: the file has %d bytes'
                               % (offset, have))
        if have > offset:
            c.ftruncate(fh, offset, ctx.cancel)
        return fh

    def close(self):
        self._pool.close_all()


def _validator(st) -> str:
    """Inode, size, mtime and ctime (ns): changes when the file does."""
    return 'nfs:%d:%d:%d.%09d:%d.%09d' % (st.ino, st.size, st.mtime,
                                          st.mtime_nsec, st.ctime,
                                          st.ctime_nsec)


def _is_connection_error(exc):
    return exc.errno in (errno.ECONNRESET, errno.ENOTCONN, errno.EPIPE,
                         errno.EBADF, errno.ECONNREFUSED)


class _NFSWriter(driver.Writer):
    """In place: ``commit()`` sends COMMIT; ``abort()`` keeps the bytes."""

    def __init__(self, location, lease, fh, nbytes, ctx):
        self.location = location
        self.lease = lease
        self.fh = fh
        self.bytes_written = nbytes
        self.ctx = ctx

    def commit(self, ctx=None):
        lib = _lib()
        c = self.lease.session
        if c is None:
            return
        try:
            c.fsync(self.fh, self.ctx.cancel)
            c.close(self.fh, self.ctx.cancel)
        except lib.NFSError as exc:
            raise _translate(exc, self.location, 'commit') from exc
        finally:
            self.lease.release()

    def abort(self, ctx=None):
        lib = _lib()
        c = self.lease.session
        if c is None:
            return
        try:
            c.close(self.fh, self.ctx.cancel)
        except (lib.NFSError, exceptions.TransferError) as exc:
            LOG.debug('%s: close after abort failed: %s',
                      self.location.masked, exc)
        finally:
            self.lease.release()
