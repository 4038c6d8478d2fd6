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

"""A ctypes binding of libiscsi 1.19 (Debian ``libiscsi7``), loaded lazily.

Like :mod:`oslo_transfer._drivers.nfs.libnfs`, only the asynchronous API is
used: SCSI tasks are queued on a session and :meth:`Session.wait` runs the
event loop (``poll`` on the session's socket, then ``iscsi_service``) in
the calling thread (:class:`~oslo_transfer._drivers._common.ServiceLoop`),
with our own inactivity timeout and a cancel check at every tick.  ctypes
releases the GIL in every C call.
Several READ(16)s are outstanding at once on one session
(:meth:`Session.read_iter`).  When the consumer takes views of page-aligned
blocks (the download engine, which writes them with ``O_DIRECT`` as they
are), the data lands directly in a free block of the read's
:class:`~oslo_transfer._drivers._common.BlockPool`
(``iscsi_read16_iov_task`` into the block) and the read yields a view of
it: no copy at all.  Otherwise (or while every block is held) it lands in
a ctypes buffer that the session reuses, and is copied once into the
``bytes`` that the read yields.

A session is not thread-safe (the driver pools them).  After any failure a
session is ``broken`` and must be destroyed.  Automatic reconnection is
off: a dropped connection surfaces as an error at once and the caller
decides (the engine retries from the bytes it holds).

Struct layouts used here (checked against the libiscsi 1.19 headers on
x86-64): ``struct scsi_iovec {void *base; size_t len}``, ``struct
scsi_sense`` (16 bytes: sense key at 4, ASCQ at 8) and ``struct
scsi_readcapacity16`` (LBA at 0, block length at 8, LBPME/LBPRZ at 16/17).
"""

import collections
import ctypes
import itertools
import os

from oslo_transfer._drivers import _common
from oslo_transfer import exceptions

#: the shared object and the Debian package that ships it
SONAME = 'libiscsi.so.7'
PACKAGE = 'libiscsi7'

SCSI_STATUS_GOOD = 0
SCSI_STATUS_CHECK_CONDITION = 2
SCSI_STATUS_CANCELLED = 0x0f000000
SCSI_STATUS_ERROR = 0x0f000001
SCSI_STATUS_TIMEOUT = 0x0f000002

#: sense keys
NOT_READY = 0x02
MEDIUM_ERROR = 0x03
ILLEGAL_REQUEST = 0x05
DATA_PROTECT = 0x07

_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                       ctypes.c_void_p)
_VP = ctypes.c_void_p
_U64 = ctypes.c_uint64
_U32 = ctypes.c_uint32
_INT = ctypes.c_int
_STR = ctypes.c_char_p


class _IOVec(ctypes.Structure):
    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]


class _Sense(ctypes.Structure):
    _fields_ = [('error_type', ctypes.c_ubyte), ('key', ctypes.c_int),
                ('ascq', ctypes.c_int), ('rest', ctypes.c_ubyte * 4)]


class _Capacity16(ctypes.Structure):
    _fields_ = [('returned_lba', ctypes.c_uint64),
                ('block_length', ctypes.c_uint32),
                ('p_type', ctypes.c_uint8), ('prot_en', ctypes.c_uint8),
                ('p_i_exp', ctypes.c_uint8), ('lbppbe', ctypes.c_uint8),
                ('lbpme', ctypes.c_uint8), ('lbprz', ctypes.c_uint8),
                ('lalba', ctypes.c_uint16)]


_RW16 = [_INT, _INT, _INT, _INT, _INT]  # rd/wrprotect dpo fua fua_nv group

_PROTOTYPES = {
    'iscsi_create_context': (_VP, [_STR]),
    'iscsi_destroy_context': (_INT, [_VP]),
    'iscsi_get_error': (_STR, [_VP]),
    'iscsi_set_targetname': (_INT, [_VP, _STR]),
    'iscsi_set_session_type': (_INT, [_VP, _INT]),
    'iscsi_set_initiator_username_pwd': (_INT, [_VP, _STR, _STR]),
    'iscsi_set_noautoreconnect': (None, [_VP, _INT]),
    'iscsi_get_fd': (_INT, [_VP]),
    'iscsi_which_events': (_INT, [_VP]),
    'iscsi_service': (_INT, [_VP, _INT]),
    'iscsi_full_connect_async': (_INT, [_VP, _STR, _INT, _CB, _VP]),
    'iscsi_logout_async': (_INT, [_VP, _CB, _VP]),
    'iscsi_readcapacity16_task': (_VP, [_VP, _INT, _CB, _VP]),
    'iscsi_read16_iov_task': (_VP, [_VP, _INT, _U64, _U32, _INT] + _RW16 +
                              [_CB, _VP, ctypes.POINTER(_IOVec), _INT]),
    'iscsi_write16_task': (_VP, [_VP, _INT, _U64, _VP, _U32, _INT] + _RW16 +
                           [_CB, _VP]),
    'iscsi_synchronizecache16_task': (_VP, [_VP, _INT, _U64, _U32, _INT,
                                            _INT, _CB, _VP]),
    'scsi_task_get_status': (_INT, [_VP, ctypes.POINTER(_Sense)]),
    'scsi_datain_unmarshall': (_VP, [_VP]),
    'scsi_free_scsi_task': (None, [_VP]),
    'scsi_sense_key_str': (_STR, [_INT]),
    'scsi_sense_ascq_str': (_STR, [_INT]),
}


def load(soname: str | None = None) -> ctypes.CDLL:
    """Load libiscsi once and declare the prototypes this module uses.

    :raises MissingDependency: the library or a symbol is missing; the
        message names the Debian package.
    """
    return _common.load_library(soname or SONAME, _PROTOTYPES,
                                'the iscsi driver needs libiscsi', PACKAGE)


class ISCSIError(Exception):
    """A libiscsi call or a SCSI command failed.

    :ivar status: the SCSI status (or -1 for a session error).
    :ivar sense_key: the sense key of a CHECK CONDITION, else None.
    :ivar ascq: the additional sense code and qualifier, else None.
    :ivar message: libiscsi's text (never contains the CHAP secret).
    """

    def __init__(self, message, status=-1, sense_key=None, ascq=None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.sense_key = sense_key
        self.ascq = ascq


class ISCSITimeout(ISCSIError):
    """Nothing moved on the socket for a whole I/O timeout."""


_OPS = {}
_keys = itertools.count(1)


class _Op:
    """One queued command and, once its callback ran, its result."""

    __slots__ = ('kind', 'done', 'status', 'value', 'error', 'lba',
                 'nbytes', 'keep', 'key', 'session')

    def __init__(self, session, kind, lba=0, nbytes=0, keep=None):
        self.session = session
        self.kind = kind
        self.done = False
        self.status = 0
        self.value = None
        self.error = None
        self.lba = lba
        self.nbytes = nbytes
        self.keep = keep  # buffers that must live until the callback

    def complete(self, status, data):
        lib = self.session.lib
        self.status = status
        if self.kind == 'connect' or self.kind == 'logout':
            if status != SCSI_STATUS_GOOD:
                self.error = ISCSIError(self.session.error_text() or
                                        'login failed', status)
        else:
            try:
                self._task_done(lib, status, data)
            finally:
                if data:
                    lib.scsi_free_scsi_task(data)
        self.done = True

    def _task_done(self, lib, status, task):
        if status == SCSI_STATUS_CHECK_CONDITION and task:
            sense = _Sense()
            lib.scsi_task_get_status(task, ctypes.byref(sense))
            key = lib.scsi_sense_key_str(sense.key) or b'?'
            ascq = lib.scsi_sense_ascq_str(sense.ascq) or b'?'
            self.error = ISCSIError(
                'SCSI check condition: %s, %s' % (
                    key.decode(), ascq.decode()), status, sense.key,
                sense.ascq)
        elif status != SCSI_STATUS_GOOD:
            what = {SCSI_STATUS_CANCELLED: 'cancelled',
                    SCSI_STATUS_TIMEOUT: 'timed out'}.get(status)
            self.error = ISCSIError(
                'SCSI command %s' % what if what else
                (self.session.error_text() or
                 'SCSI command failed with status 0x%x' % status), status)
        elif self.kind == 'capacity':
            ptr = lib.scsi_datain_unmarshall(task)
            if not ptr:
                self.error = ISCSIError('READ CAPACITY(16) returned no '
                                        'data', status)
            else:
                cap = _Capacity16.from_address(ptr)
                self.value = (cap.returned_lba + 1, cap.block_length,
                              bool(cap.lbpme), bool(cap.lbprz))
        elif self.kind == 'read':
            buf = self.keep[0]
            if type(buf) is memoryview:
                # the data already sits in the block the read yields
                self.value = buf
            else:
                self.value = ctypes.string_at(buf, self.nbytes)

    def result(self):
        if self.error is not None:
            raise self.error
        return self.value


def _dispatch(iscsi, status, data, private):
    op = _OPS.pop(private, None)
    if op is not None:
        op.session._keys.discard(private)
        try:
            op.complete(status, data)
        except Exception as exc:  # noqa: never raise into C
            op.error, op.done = ISCSIError(str(exc), status), True


_dispatch_cb = _CB(_dispatch)


class Session:
    """One iSCSI session (one TCP connection) logged in to one LUN.

    :param initiator: the initiator IQN this session presents.
    :param target: the target IQN.
    :param timeout: seconds without socket activity before a wait raises
        :class:`ISCSITimeout`.
    """

    def __init__(self, initiator: str, target: str, timeout: float,
                 soname: str | None = None):
        self.lib = load(soname)
        self.timeout = timeout
        self.broken = False
        self.lun = None
        self.block_size = None
        self.blocks = None
        self._keys = set()
        self._loop = _common.ServiceLoop(
            lambda: self.lib.iscsi_get_fd(self._ptr),
            lambda: self.lib.iscsi_which_events(self._ptr),
            lambda revents: self.lib.iscsi_service(self._ptr, revents),
            self._loop_error)
        self._ptr = self.lib.iscsi_create_context(initiator.encode())
        if not self._ptr:
            raise ISCSIError('cannot create an iSCSI context')
        lib, ptr = self.lib, self._ptr
        lib.iscsi_set_targetname(ptr, target.encode())
        lib.iscsi_set_session_type(ptr, 2)  # ISCSI_SESSION_NORMAL
        lib.iscsi_set_noautoreconnect(ptr, 1)
        # No libiscsi task timeout: it counts from when a command was
        # queued, so a deep queue on a slow link would expire healthy
        # commands.  :meth:`wait` enforces ``timeout`` as inactivity.

    def error_text(self) -> str:
        if not self._ptr:
            return ''
        text = self.lib.iscsi_get_error(self._ptr)
        return text.decode('utf-8', 'replace') if text else ''

    # -- plumbing --------------------------------------------------------

    def _submit(self, func, args, kind, lba=0, nbytes=0, keep=None,
                task=True):
        if self.broken or not self._ptr:
            raise ISCSIError('the iSCSI session is closed')
        op = _Op(self, kind, lba, nbytes, keep)
        key = next(_keys)
        _OPS[key] = op
        self._keys.add(key)
        rc = func(self._ptr, *args, _dispatch_cb, key, *op_tail(kind, keep))
        if (not rc) if task else (rc != 0):
            _OPS.pop(key, None)
            self._keys.discard(key)
            self.broken = True
            raise ISCSIError(self.error_text() or
                             'libiscsi could not queue the command')
        return op

    def wait(self, op: _Op, cancel=None):
        """Run the event loop until ``op`` completed; return its result.

        :raises ISCSITimeout: no socket activity for ``timeout`` seconds.
        :raises Cancelled: ``cancel`` was set.
        :raises ISCSIError: the command or the session failed.
        """
        try:
            if cancel is not None and cancel.cancelled:
                # Also when the answer is already here: a cancelled read
                # stops at the next chunk, whatever is queued.
                raise exceptions.Cancelled(cancel.reason or 'cancelled')
            self._loop.run(lambda: op.done, cancel, self.timeout)
        except BaseException:
            self.broken = True
            raise
        return op.result()

    def _loop_error(self, kind, reason):
        """The :class:`ISCSIError` for a :class:`ServiceLoop` failure."""
        if kind == 'timeout':
            return ISCSITimeout('no answer from the iSCSI target for '
                                '%.0f seconds' % self.timeout)
        if kind == 'closed':
            return ISCSIError(self.error_text() or
                              'the iSCSI connection is closed')
        if kind == 'socket':
            return ISCSIError('the iSCSI socket was closed')
        text = self.error_text().strip() or 'the connection failed'
        if reason:
            text = '%s (%s)' % (os.strerror(reason), text)
        return ISCSIError(text)

    # -- commands --------------------------------------------------------

    def connect(self, portal: str, lun: int, username=None, password=None,
                cancel=None):
        """Log in to ``portal`` and check that ``lun`` answers."""
        if username or password:
            self.lib.iscsi_set_initiator_username_pwd(
                self._ptr, (username or '').encode(),
                (password or '').encode())
        self.wait(self._submit(self.lib.iscsi_full_connect_async,
                               (portal.encode(), lun), 'connect',
                               task=False), cancel)
        self.lun = lun

    def capacity(self, cancel=None):
        """READ CAPACITY(16): ``(blocks, block_size, lbpme, lbprz)``."""
        blocks, bsize, lbpme, lbprz = self.wait(self._submit(
            self.lib.iscsi_readcapacity16_task, (self.lun,), 'capacity'),
            cancel)
        self.blocks, self.block_size = blocks, bsize
        return blocks, bsize, lbpme, lbprz

    def read_iter(self, lba: int, nblocks: int, request_blocks: int,
                  window: int, cancel=None, blocks=None):
        """Yield the blocks ``[lba, lba + nblocks)`` in order.

        Up to ``window`` READ(16)s of ``request_blocks`` blocks are
        outstanding at once.  Each answer is a ``bytes``, or a view of a
        page-aligned :class:`~oslo_transfer._utils.AlignedBlock` of
        ``blocks`` (a :class:`~oslo_transfer._drivers._common.BlockPool`)
        while one is free.
        """
        bs = self.block_size
        pending = collections.deque()
        pos, end = lba, lba + nblocks
        spare = []  # ctypes buffers of answered READs, for the next ones
        ok = False
        try:
            while pos < end or pending:
                while pos < end and len(pending) < window:
                    n = min(request_blocks, end - pos)
                    cbuf, iov = self._buffer(n * bs, blocks, spare)
                    pending.append(self._submit(
                        self.lib.iscsi_read16_iov_task,
                        (self.lun, pos, n * bs, bs, 0, 0, 0, 0, 0),
                        'read', pos, n * bs, keep=(cbuf, iov)))
                    pos += n
                head = pending.popleft()
                data = self.wait(head, cancel)
                if type(head.keep[0]) is not memoryview:
                    # copied out: the buffer is free for another READ
                    spare.append(head.keep)
                head.keep = None
                yield data
            ok = True
        finally:
            if not ok:
                # answers to the outstanding READs would stay queued
                self.broken = True

    @staticmethod
    def _buffer(size, blocks, spare):
        """A READ buffer and its iovec.

        A view of a free page-aligned block of ``blocks`` (a
        :class:`~oslo_transfer._drivers._common.BlockPool`, or None), that
        the target's data fills in place and that the read then yields as
        it is.  Otherwise a ctypes buffer from ``spare`` (those of READs
        already answered, reused: fresh memory per command costs a page
        fault per 4 KiB) or a new one, copied into ``bytes`` when the READ
        completes.
        """
        got = blocks.take(size) if blocks is not None else None
        if got is not None:
            return got[0], _IOVec(got[1], size)
        while spare:
            cbuf, iov = spare.pop()
            if len(cbuf) == size:
                return cbuf, iov
        cbuf = ctypes.create_string_buffer(size)
        return cbuf, _IOVec(ctypes.addressof(cbuf), size)

    def write_blocks(self, lba: int, data: bytes, cancel=None):
        """Queue a WRITE(16) of ``data`` (whole blocks); return the op."""
        return self._submit(self.lib.iscsi_write16_task,
                            (self.lun, lba, data, len(data),
                             self.block_size, 0, 0, 0, 0, 0),
                            'write', lba, len(data), keep=data)

    def sync_cache(self, cancel=None):
        """SYNCHRONIZE CACHE(16) of the whole LUN."""
        self.wait(self._submit(self.lib.iscsi_synchronizecache16_task,
                               (self.lun, 0, 0, 0, 0), 'sync'), cancel)

    def logout(self, timeout: float = 2.0):
        """Log out politely (best effort), then :meth:`destroy`."""
        if self._ptr and not self.broken:
            saved, self.timeout = self.timeout, timeout
            try:
                self.wait(self._submit(self.lib.iscsi_logout_async, (),
                                       'logout', task=False))
            except (ISCSIError, exceptions.TransferError):
                pass
            self.timeout = saved
        self.destroy()

    def destroy(self):
        """Free the context (closes the socket)."""
        if self._ptr:
            ptr, self._ptr = self._ptr, None
            self.broken = True
            self.lib.iscsi_destroy_context(ptr)
            for key in self._keys:
                _OPS.pop(key, None)
            self._keys.clear()


def op_tail(kind, keep):
    """Trailing arguments of the ``*_iov_task`` calls (after the callback)."""
    if kind == 'read':
        return (ctypes.pointer(keep[1]), 1)
    return ()
