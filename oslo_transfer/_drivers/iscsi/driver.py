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

"""iSCSI LUNs read and written in user space with libiscsi (no attach).

URL: ``iscsi://[USER[:PASSWORD]@]HOST[:PORT]/TARGET-IQN/LUN``.

* The size comes from READ CAPACITY(16).  A LUN has no version: ``stat()``
  returns no validator, so the engine joins bytes from two attempts only
  when the size and a checksum are known.
* Reads are READ(16)s of whole blocks, ``outstanding_requests`` of them in
  flight per session; an offset or length that is not block-aligned is
  trimmed from the blocks around it.  ``stat()`` caps the engine's
  parallel segments at ``max_segments`` (default 1: one session with a
  deep queue rather than one login per segment).
* Writes are WRITE(16)s in place; a partial first or last block is read,
  merged and written back.  ``commit()`` sends SYNCHRONIZE CACHE;
  ``abort()`` cannot restore what the LUN held before: the blocks written
  so far stay.  A LUN cannot tell how much of a write arrived, so
  ``written_size()`` is 0 (a retry rewrites from the start unless the
  engine's own journal says otherwise).
* CHAP: the Location's credentials, then the URL's user info, then
  ``[oslo_transfer_iscsi] username/password``.  The secret never reaches a
  message or a log line.
"""

import hashlib
import logging
import re
import socket
import urllib.parse

from oslo_config import cfg

from oslo_transfer._drivers import _common
from oslo_transfer import _utils
from oslo_transfer import driver
from oslo_transfer import exceptions
from oslo_transfer import locations

LOG = logging.getLogger(__name__)

Cap = driver.Capability

DEFAULT_PORT = 3260
_MiB = 1024 * 1024

OPTS = [
    cfg.StrOpt('initiator_name',
               help='Initiator IQN presented to targets (their ACLs may '
                    'list it).  Default: the InitiatorName of '
                    '/etc/iscsi/initiatorname.iscsi when that file exists '
                    '(the host\'s open-iscsi identity, which os-brick '
                    'registers with Cinder), else '
                    '"iqn.2010-10.org.openstack:oslo-transfer:HOSTNAME".'),
    cfg.StrOpt('username',
               help='CHAP user name, used when neither the Location nor '
                    'the URL carries credentials.\n\nRelated options:\n\n'
                    '* password'),
    cfg.StrOpt('password', secret=True,
               help='CHAP secret for "username".  Never logged.\n\n'
                    'Related options:\n\n* username'),
    _utils.IntOpt('outstanding_requests', default=16, min=1, max=64,
                  help='READ(16)/WRITE(16) commands kept in flight on one '
                       'session.  A deep queue on one session keeps the '
                       'target as busy as several sessions would, without '
                       'their logins.\n\nRelated options:\n\n'
                       '* request_size\n* max_segments'),
    _common.max_segments_opt(
        'Most parallel ranged segments for one read of a LUN; each '
        'segment is a session of its own (a TCP connection and a login).  '
        'One session with outstanding_requests commands in flight keeps '
        'tgtd as busy as several, and on loopback 1 segment used less CPU '
        'than 2 or 4 (no extra logins, one writer of the destination, no '
        'reading it back to hash it).  Raise it for a portal that serves '
        'each session slower than several together.',
        'session', ('outstanding_requests',)),
    _utils.IntOpt('request_size', default=512 * 1024, min=4096,
                  max=16 * _MiB,
                  help='Bytes per READ(16)/WRITE(16) command (rounded down to '
                       'whole blocks).  Memory per read is about '
                       'outstanding_requests x request_size.\n\n'
                       'Related options:\n\n* outstanding_requests'),
    _utils.IntOpt('idle_sessions', default=4, min=0, max=4096,
                  help='Logged-in sessions kept open per LUN between calls '
                       '(0 logs out after each call).'),
    _utils.FiniteFloatOpt(
        'idle_seconds', default=60.0, min=0.0, max=_utils.MAX_SECONDS,
        help='Idle sessions older than this are closed instead of '
             'reused.'),
]

_LOGIN_STATUS = re.compile(r'Status: *([^(]*)\((\d+)\)')
_INITIATOR_FILE = '/etc/iscsi/initiatorname.iscsi'


def _lib():
    from oslo_transfer._drivers.iscsi import libiscsi
    return libiscsi


def default_initiator() -> str:
    """The host's open-iscsi initiator name, or one made from the hostname."""
    try:
        with open(_INITIATOR_FILE) as f:
            for line in f:
                key, _, value = line.strip().partition('=')
                if key == 'InitiatorName' and value:
                    return value
    except OSError:
        pass
    return 'iqn.2010-10.org.openstack:oslo-transfer:%s' % (
        socket.gethostname() or 'localhost')


class _Target:
    """What an ``iscsi://`` URL names, plus the credentials to use."""

    def __init__(self, location, options):
        p = location.parts()
        masked = location.masked
        if not p.hostname:
            raise exceptions.InvalidLocation(
                '%s: no portal host in the URL (expected '
                'iscsi://HOST[:PORT]/TARGET-IQN/LUN)' % masked, url=masked)
        parts = urllib.parse.unquote(p.path).strip('/').split('/')
        if len(parts) != 2 or not parts[0] or not parts[1].isdigit():
            raise exceptions.InvalidLocation(
                '%s: expected iscsi://HOST[:PORT]/TARGET-IQN/LUN' % masked,
                url=masked)
        host = p.hostname
        if ':' in host:
            host = '[%s]' % host
        self.portal = '%s:%d' % (host, p.port or DEFAULT_PORT)
        self.iqn = parts[0]
        self.lun = int(parts[1])
        creds = location.effective_credentials(options.username,
                                               options.password)
        self.username = creds.username
        self.password = creds.password
        secret = hashlib.sha256((self.password or '').encode()).hexdigest()
        self.key = (self.portal, self.iqn, self.lun, self.username, secret)

    def mask(self, text: str) -> str:
        return locations.mask_text(text, [self.password])


def _translate(exc, loc, target, what):
    """An :class:`libiscsi.ISCSIError` as an oslo_transfer exception."""
    lib = _lib()
    masked = loc.masked
    text = target.mask(exc.message)
    if (isinstance(exc, lib.ISCSITimeout) or
            exc.status == lib.SCSI_STATUS_TIMEOUT):
        return exceptions.TransferTimeout('%s: %s: %s' % (masked, what, text),
                                          url=masked)
    if exc.sense_key == lib.DATA_PROTECT:
        return exceptions.PermissionDenied('%s: %s: the LUN is write '
                                           'protected (%s)'
                                           % (masked, what, text), url=masked)
    if exc.sense_key is not None:
        return exceptions.ProtocolError('%s: %s: %s' % (masked, what, text),
                                        url=masked, retryable=False)
    return exceptions.ConnectionFailed(
        '%s: %s failed, the iSCSI session was lost: %s'
        % (masked, what, text), url=masked)


def _login_error(exc, loc, target, initiator):
    masked = loc.masked
    text = target.mask(exc.message)
    m = _LOGIN_STATUS.search(text)
    code = int(m.group(2)) if m else None
    if code in (0x0203, 0x0204):
        return exceptions.SourceNotFound(
            '%s: the portal %s has no target %s (%s)' % (
                masked, target.portal, target.iqn, text), url=masked)
    if code == 0x0201:
        return exceptions.AuthenticationFailed(
            '%s: CHAP authentication failed for user %r (%s)' % (
                masked, target.username, text) if target.username else
            '%s: the target requires CHAP credentials and none were given '
            '(%s)' % (masked, text), url=masked)
    if code == 0x0202:
        return exceptions.PermissionDenied(
            '%s: the target does not allow the initiator %s (%s)' % (
                masked, initiator, text), url=masked)
    if 'LOGICAL_UNIT_NOT_SUPPORTED' in text:
        return exceptions.SourceNotFound(
            '%s: the target %s has no LUN %d'
            % (masked, target.iqn, target.lun), url=masked)
    if (isinstance(exc, _lib().ISCSITimeout) or
            exc.status == _lib().SCSI_STATUS_TIMEOUT):
        return exceptions.TransferTimeout(
            '%s: no answer from the portal %s: %s' % (masked, target.portal,
                                                      text), url=masked)
    return exceptions.ConnectionFailed(
        '%s: cannot log in to the portal %s: %s' % (masked, target.portal,
                                                    text), url=masked)


class ISCSIDriver(driver.Driver):
    """``iscsi://`` LUNs through libiscsi."""

    name = 'iscsi'
    schemes = ('iscsi',)
    capabilities = (Cap.READ | Cap.WRITE | Cap.RANGED_READ |
                    Cap.RESUMABLE_WRITE | Cap.BLOCK_ACCESS |
                    Cap.SAME_NETWORK_ONLY)
    chunk_size = 512 * 1024
    volume_targets = True

    #: the shared object to load (tests point it elsewhere)
    soname = None

    def __init__(self, conf):
        super().__init__(conf)
        self._pool = _common.SessionPool(
            close=lambda s: s.logout(), destroy=lambda s: s.destroy(),
            max_idle=self.options.idle_sessions,
            max_idle_seconds=self.options.idle_seconds)
        self._initiator = None

    @classmethod
    def list_opts(cls):
        return OPTS

    def check_available(self):
        _lib().load(self.soname)

    @property
    def initiator(self) -> str:
        if self._initiator is None:
            self._initiator = (self.options.initiator_name or
                               default_initiator())
        return self._initiator

    # -- sessions ----------------------------------------------------------

    def _lease(self, location, ctx, reuse=True):
        """A logged-in session: ``(_Target, Lease, reused)``."""
        lib = _lib()
        target = _Target(location, self.options)
        timeout = ctx.timeout()
        s = self._pool.take(target.key) if reuse else None
        if s is not None:
            s.timeout = timeout
            return target, _common.Lease(self._pool, target.key, s), True
        try:
            s = lib.Session(self.initiator, target.iqn, timeout,
                            self.soname)
        except lib.ISCSIError as exc:
            raise exceptions.TransferError('%s: %s' % (
                location.masked, exc.message), url=location.masked) from exc
        try:
            s.connect(target.portal, target.lun, target.username,
                      target.password, ctx.cancel)
            s.capacity(ctx.cancel)
        except lib.ISCSIError as exc:
            s.destroy()
            raise _login_error(exc, location, target, self.initiator) \
                from exc
        except BaseException:
            s.destroy()
            raise
        LOG.debug('logged in to %s LUN %d at %s as %s', target.iqn,
                  target.lun, target.portal, self.initiator)
        return target, _common.Lease(self._pool, target.key, s), False

    def _session(self, location, ctx):
        """A logged-in session whose LUN answers.

        A pooled session is checked with READ CAPACITY(16) first (which
        also notices a resized LUN) and replaced when the target dropped
        it meanwhile.

        :returns: ``(target, lease)``; the caller releases the lease.
        """
        lib = _lib()
        target, lease, reused = self._lease(location, ctx)
        if reused:
            try:
                lease.session.capacity(ctx.cancel)
            except lib.ISCSIError as exc:
                LOG.debug('%s: pooled session is dead (%s); logging in '
                          'again', location.masked, target.mask(exc.message))
                lease.release()
                target, lease, _ = self._lease(location, ctx, reuse=False)
            except BaseException:
                lease.release()
                raise
        return target, lease

    # -- Driver API --------------------------------------------------------

    def stat(self, location, ctx):
        target, lease = self._session(location, ctx)
        s = lease.session
        size = s.blocks * s.block_size
        lease.release()
        # A LUN has no version that would tell two contents apart: no
        # validator, so resumed bytes are joined only with size+checksum.
        return driver.Stat(size=size, validator=None, ranges=True,
                           max_segments=self.options.max_segments or None)

    def read(self, location, offset, length, ctx):
        target, lease = self._session(location, ctx)
        s = lease.session
        size = s.blocks * s.block_size
        if length is None:
            length = max(0, size - offset)
        if offset < 0 or offset + length > size:
            lease.release()
            raise exceptions.SizeMismatch(
                '%s: bytes %d-%d are beyond the end of the LUN (%d bytes)'
                % (location.masked, offset, offset + length, size),
                url=location.masked)
        return self._read(location, target, lease, offset, length, ctx)

    def _read(self, location, target, lease, offset, length, ctx):
        lib = _lib()
        s = lease.session
        bs = s.block_size
        first = offset // bs
        skip = offset - first * bs
        nblocks = -(-(offset + length) // bs) - first
        per = max(1, self.options.request_size // bs)
        window = self.options.outstanding_requests
        reads = s.read_iter(first, nblocks, per, window, ctx.cancel,
                            blocks=_common.block_pool(ctx, window, per * bs))
        left = length
        try:
            for data in reads:
                if skip:
                    data = data[skip:]
                    skip = 0
                if len(data) > left:
                    data = data[:left]
                left -= len(data)
                if data:
                    yield data
        except lib.ISCSIError as exc:
            raise _translate(exc, location, target, 'read at byte %d' % (
                offset + length - left)) from exc
        finally:
            # a reader that stops early leaves READs in flight: closing
            # the inner generator marks the session broken before it
            # goes back to the pool
            reads.close()
            lease.release()

    def written_size(self, location, ctx):
        # A LUN always has its full size; nothing tells how much of an
        # earlier write arrived.  0 makes a retry start again.
        return 0

    def write(self, location, chunks, ctx, offset=0, size=None):
        lib = _lib()
        target, lease = self._session(location, ctx)
        s = lease.session
        capacity = s.blocks * s.block_size
        if size is not None and size > capacity:
            lease.release()
            raise exceptions.DestinationError(
                '%s: %d bytes do not fit the LUN (%d bytes)' % (
                    location.masked, size, capacity), url=location.masked)
        w = _BlockWriter(s, offset, capacity,
                         max(1, self.options.request_size // s.block_size),
                         self.options.outstanding_requests, ctx.cancel)
        try:
            for chunk in chunks:
                w.add(chunk)
            w.finish()
        except lib.ISCSIError as exc:
            lease.release()
            raise _translate(exc, location, target, 'write at byte %d' % (
                offset + w.acked)) from exc
        except _TooLarge:
            lease.release()
            raise exceptions.DestinationError(
                '%s: the data does not fit the LUN (%d bytes)' % (
                    location.masked, capacity), url=location.masked)
        except BaseException:
            # the chunk iterator failed (a checksum mismatch, a cancel):
            # what the target acknowledged stays on the LUN
            s.broken = True
            lease.release()
            raise
        if size is not None and offset + w.total != size:
            lease.release()
            raise exceptions.SizeMismatch(
                '%s: wrote %d bytes up to byte %d, expected %d' % (
                    location.masked, w.total, offset + w.total, size),
                url=location.masked)
        return _ISCSIWriter(location, target, lease, w.total, ctx)

    def close(self):
        self._pool.close_all()


class _TooLarge(Exception):
    pass


class _BlockWriter:
    """Turns a byte stream at any offset into whole-block WRITE(16)s.

    A partial first or last block is completed with the bytes the LUN
    already holds (read, merge, write).
    """

    def __init__(self, session, offset, capacity, per, window, cancel):
        self.s = session
        self.bs = session.block_size
        self.capacity = capacity
        self.per = per
        self.window = window
        self.cancel = cancel
        self.lba = offset // self.bs
        self.buf = bytearray()
        self.pending = []
        self.total = 0
        self.acked = 0
        head = offset - self.lba * self.bs
        if head:
            self.buf += self._block(self.lba)[:head]
        self._head = head

    def _block(self, lba):
        return b''.join(self.s.read_iter(lba, 1, 1, 1, self.cancel))

    def add(self, chunk):
        self.buf += chunk
        self.total += len(chunk)
        if self.lba * self.bs + len(self.buf) > self.capacity:
            raise _TooLarge()
        step = self.per * self.bs
        while len(self.buf) >= step:
            self._send(bytes(self.buf[:step]))
            del self.buf[:step]

    def _send(self, data):
        self.pending.append(self.s.write_blocks(self.lba, data, self.cancel))
        self.lba += len(data) // self.bs
        while len(self.pending) >= self.window:
            self._reap()

    def _reap(self):
        op = self.pending.pop(0)
        self.s.wait(op, self.cancel)
        self.acked += op.nbytes

    def finish(self):
        tail = len(self.buf) % self.bs
        if tail:
            last = self.lba + len(self.buf) // self.bs
            self.buf += self._block(last)[tail:]
        if self.buf:
            self._send(bytes(self.buf))
            self.buf = bytearray()
        while self.pending:
            self._reap()
        self.acked = self.total


class _ISCSIWriter(driver.Writer):
    """In place, so ``abort()`` cannot undo the blocks already written.

    ``commit()`` flushes the target's cache (SYNCHRONIZE CACHE(16));
    ``abort()`` only gives the session back: the blocks the target
    acknowledged stay on the LUN.
    """

    def __init__(self, location, target, lease, nbytes, ctx):
        self.location = location
        self.target = target
        self.lease = lease
        self.bytes_written = nbytes
        self.ctx = ctx

    def commit(self, ctx=None):
        lib = _lib()
        s = self.lease.session
        if s is None:
            return
        try:
            s.sync_cache(self.ctx.cancel)
        except lib.ISCSIError as exc:
            raise _translate(exc, self.location, self.target,
                             'SYNCHRONIZE CACHE') from exc
        finally:
            self.lease.release()

    def abort(self, ctx=None):
        self.lease.release()
