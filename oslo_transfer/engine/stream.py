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

"""Streams without a local destination: ``open()`` readers and uploads."""

import dataclasses
import hashlib
import io
import json
import logging
import os
import threading
import time

from oslo_transfer import _utils
from oslo_transfer import driver as driver_mod
from oslo_transfer.engine import commit as commit_mod
from oslo_transfer.engine import digests as digests_mod
from oslo_transfer.engine import retry as retry_mod
from oslo_transfer.engine import sizes
from oslo_transfer.engine import throttle
from oslo_transfer import exceptions
from oslo_transfer import locations
from oslo_transfer import result as result_mod

LOG = logging.getLogger(__name__)

Cap = driver_mod.Capability


class Reader(io.RawIOBase):
    """What :meth:`Transfer.open` returns: ``read(n)``, iteration, close.

    A checksum applies to a whole-object read only; a mismatch raises
    ``ChecksumMismatch`` from the read that reaches the end.  A retryable
    failure in the middle continues by range where the driver can.  A
    server that ignores the range (``RangeNotSupported``) is read as one
    stream from the start instead, the bytes before the position dropped,
    unless the source changed meanwhile (``SourceChanged``).
    """

    def __init__(self, transfer, plan, offset, length, checksum, ctx,
                 scope=None, policy=None):
        super().__init__()
        # The call's scope (:class:`~oslo_transfer.engine.scope.CallScope`)
        # when the reader owns it: closed with the reader, and the
        # reader's errors pass through it.
        self._scope = scope
        self._transfer = transfer
        self._plan = plan
        self._ctx = ctx
        self._offset = offset
        self._length = length
        self._checksum = checksum
        g = transfer.conf.oslo_transfer
        self._base_retry = policy or retry_mod.RetryPolicy.from_conf(
            transfer.conf)
        self._retry = self._base_retry
        self._bucket = throttle.TokenBucket(g.rate_limit)
        self.owner = None
        self._pos = 0
        self._buf = b''
        self._it = None
        self._cand_index = -1
        self._size = None
        self._hasher = None
        self._done = False
        # One stream from the start (the server ignored a range): bytes
        # still to drop before the position, and whether we are in it.
        self._skip = 0
        self._stream = False
        self.url = None
        self._origin = None
        self.driver = None
        self._next_candidate()

    # -- candidates ---------------------------------------------------------

    def _next_candidate(self, error=None):
        while True:
            self._cand_index += 1
            if self._cand_index >= len(self._plan.candidates):
                raise error or exceptions.NoDriverFound('nothing to read')
            cand = self._plan.candidates[self._cand_index]
            drv = cand.driver_obj
            if self._pos and Cap.RANGED_READ not in drv.capabilities:
                continue
            if Cap.READ not in drv.capabilities:
                continue
            last = self._cand_index == len(self._plan.candidates) - 1
            self._retry = self._base_retry.for_candidate(last)
            try:
                st = self._stat(cand)
                if self._size is not None and st.size not in (None,
                                                              self._size):
                    raise exceptions.SourceChanged(
                        '%s has another size than the previous location'
                        % cand.url, url=cand.url)
                self._size = st.size if st.size is not None else self._size
                self._ctx.validator = st.validator
                self._start(cand)
                self._origin = throttle.origin_key(cand.location,
                                                   cand.driver_obj)
                self.url, self.driver = cand.url, cand.driver
                if self._pos == 0 and self._checksum is not None and \
                        self._offset == 0 and self._length is None:
                    self._hasher = self._checksum.new()
                return
            except exceptions.TransferError as exc:
                if isinstance(exc, exceptions.Cancelled):
                    raise
                # The last one's error goes to the caller, who logs it.
                LOG.log(logging.INFO if last else logging.WARNING,
                        '%s via %s: %s', cand.url, cand.driver, exc)
                error = exc

    def _stat(self, cand):
        """``stat`` with the candidate's retries (one quick one if not last).

        A stat that timed out is not retried: a host that does not answer
        is better left for the next candidate.
        """
        return retry_mod.stat(self._retry, cand.driver_obj, cand.location,
                              self._ctx)

    def _start(self, cand):
        length = None
        if self._length is not None:
            length = self._length - self._pos
        self._cand = cand
        self._stream = False
        self._skip = 0
        try:
            self._it = iter(cand.driver_obj.read(cand.location,
                                                 self._offset + self._pos,
                                                 length, self._ctx))
        except exceptions.RangeNotSupported as exc:
            self._stream_from_start(exc)

    def _stream_from_start(self, exc):
        """The server ignored a range: read it all, drop what came before.

        :raises SourceChanged: the object is not the one being read.
        :raises ProtocolError: even one stream from the start was refused.
        """
        cand = self._cand
        drv = cand.driver_obj
        self._close_it()
        if self._stream:
            raise exceptions.ProtocolError(
                '%s refused to be read as one stream from the start: %s'
                % (cand.url, exc), url=cand.url, retryable=False) from exc
        st = sizes.checked_stat(drv.stat(cand.location, self._ctx),
                                cand.location)
        if st.validator != self._ctx.validator or (
                self._size is not None and st.size not in (None,
                                                           self._size)):
            raise exceptions.SourceChanged(
                '%s changed during the read (validator %s, now %s) after '
                '%d bytes were read' % (cand.url, self._ctx.validator,
                                        st.validator, self._pos),
                url=cand.url) from exc
        LOG.info('%s ignored a ranged read (%s); reading it as one stream '
                 'from the start', cand.url, exc)
        self._stream = True
        self._skip = self._offset + self._pos
        self._it = iter(drv.read(cand.location, 0, None, self._ctx))

    def _next_from_stream(self):
        """The next chunk at the position; b'' at the end of the range."""
        while True:
            data = next(self._it, b'')
            if not data:
                return b''
            if self._skip:
                if len(data) <= self._skip:
                    self._skip -= len(data)
                    continue
                data = data[self._skip:]
                self._skip = 0
            if self._length is not None:
                left = self._length - self._pos
                if len(data) >= left:
                    # The range ends here; the stream goes on.
                    self._close_it()
                    self._it = iter(())
                    data = data[:left]
            return data

    # -- io.RawIOBase ---------------------------------------------------------

    def readable(self):
        return True

    @property
    def size(self):
        """Size of the object (None if unknown)."""
        return self._size

    def _fill(self):
        attempts = 0
        while True:
            try:
                _utils.cooperate()
                if self._stream:
                    return self._next_from_stream()
                return next(self._it)
            except StopIteration:
                return b''
            except exceptions.RangeNotSupported as exc:
                self._stream_from_start(exc)
                continue
            except exceptions.TransferError as exc:
                self._close_it()
                drv = self._cand.driver_obj
                delay = self._retry.next_delay(exc, attempts, self._ctx)
                if delay is not None and \
                        Cap.RANGED_READ in drv.capabilities:
                    attempts += 1
                    LOG.warning('%s: %s; resuming at %d in %.1fs',
                                self._cand.url, exc,
                                self._offset + self._pos, delay)
                    if self._ctx.cancel.wait(delay):
                        self._ctx.cancel.check()
                    try:
                        self._start(self._cand)
                    except exceptions.TransferError as exc2:
                        if not exc2.retryable:
                            self._next_candidate(exc2)
                    continue
                self._next_candidate(exc)

    def read(self, n=-1):
        if self.closed:
            raise ValueError('read from a closed reader')
        if n is None or n < 0:
            parts = [self._buf]
            self._buf = b''
            while True:
                b = self._read_chunk()
                if not b:
                    break
                parts.append(b)
            return b''.join(parts)
        while len(self._buf) < n:
            b = self._read_chunk()
            if not b:
                break
            self._buf += b
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def readinto(self, b):
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def _read_chunk(self):
        if self._scope is None:
            return self._next_chunk()
        try:
            return self._next_chunk()
        except BaseException as exc:
            err = self._scope.error(exc)
            if err is exc:
                raise
            raise err from exc

    def _next_chunk(self):
        if self._done:
            return b''
        self._ctx.cancel.check()
        data = self._fill()
        if data:
            self._bucket.consume(len(data), self._ctx.cancel)
            self._ctx.consume(len(data), self._origin)
            self._pos += len(data)
            if self._hasher is not None:
                self._hasher.update(data)
            return data
        self._done = True
        self._finish()
        return b''

    def _finish(self):
        want = self._length
        if want is None and self._size is not None:
            want = self._size - self._offset
        if want is not None and self._pos != want:
            raise exceptions.SizeMismatch(
                '%s: read %d bytes, expected %d' % (self.url, self._pos,
                                                    want), url=self.url)
        if self._hasher is not None:
            digest = self._hasher.hexdigest()
            if digest != self._checksum.hexdigest:
                raise exceptions.ChecksumMismatch(
                    '%s: %s digest is %s, expected %s' % (
                        self.url, self._checksum.algorithm, digest,
                        self._checksum.hexdigest), url=self.url,
                    expected=self._checksum.hexdigest, actual=digest)

    def __iter__(self):
        while True:
            if self._buf:
                b, self._buf = self._buf, b''
                yield b
                continue
            b = self._read_chunk()
            if not b:
                return
            yield b

    def _close_it(self):
        close = getattr(self._it, 'close', None)
        if close is not None:
            try:
                close()
            except Exception:  # noqa: closing a broken stream
                pass

    def close(self):
        if not self.closed:
            self._close_it()
            if self._scope is not None:
                self._scope.close()
            if self.owner is not None:
                self.owner.close()
                self.owner = None
        super().close()


# -- uploads ---------------------------------------------------------------

class DataSource:
    """Normalises ``data`` of :meth:`Transfer.upload`.

    A path or a seekable file can be read again, so uploads from them
    retry; a plain iterable cannot.
    """

    def __init__(self, data, chunk_size):
        self.data = data
        self.chunk_size = chunk_size
        self.path = None
        self.fileobj = None
        self.start = 0
        if isinstance(data, (str, os.PathLike)):
            self.path = os.fspath(data)
        elif isinstance(data, (bytes, bytearray, memoryview)):
            self.fileobj = io.BytesIO(bytes(data))
        elif hasattr(data, 'read'):
            self.fileobj = data
            try:
                self.start = data.tell()
            except (OSError, AttributeError, ValueError):
                self.start = None

    @property
    def rewindable(self) -> bool:
        if self.path is not None:
            return True
        if self.fileobj is None or self.start is None:
            return False
        try:
            return self.fileobj.seekable()
        except (AttributeError, ValueError):
            return False

    def size(self):
        if self.path is not None:
            try:
                # (A block device's st_size is 0: lseek to its end.)
                return _utils.path_size(self.path)
            except OSError as exc:
                raise exceptions.SourceNotFound(
                    '%s: %s' % (self.path, exc.strerror),
                    url=self.path) from exc
        if self.rewindable:
            cur = self.fileobj.tell()
            end = self.fileobj.seek(0, io.SEEK_END)
            self.fileobj.seek(cur)
            return end - self.start
        return None

    def chunks(self, offset=0):
        if self.path is not None:
            with open(self.path, 'rb') as f:
                f.seek(offset)
                yield from iter(lambda: f.read(self.chunk_size), b'')
            return
        if self.fileobj is not None:
            if self.rewindable:
                self.fileobj.seek(self.start + offset)
            elif offset:
                raise exceptions.TransferError('cannot rewind the data')
            yield from iter(lambda: self.fileobj.read(self.chunk_size), b'')
            return
        if offset:
            raise exceptions.TransferError('cannot rewind an iterable')
        for c in self.data:
            if c:
                yield bytes(c)


def held_back(chunks, digests, checksum, size, url, skip=0):
    """Yield ``chunks`` but hold the last one back until the data is checked.

    ``digests`` (a :class:`~oslo_transfer.engine.digests.Digests`) takes
    every byte; at the end, the size, the checksum and the verifier are
    checked before the last chunk goes out, so a failed check aborts the
    write before it can complete.  The first ``skip`` bytes are hashed but
    not yielded (a resumed upload whose first bytes the server already
    has).
    """
    prev = None
    total = 0
    for c in chunks:
        total += len(c)
        if size is not None and total > size:
            # Before the previous chunk goes out: with a Content-Length,
            # the bytes up to the announced size would make a complete
            # (and wrong) object on the server.
            raise exceptions.SizeMismatch(
                'upload to %s: the data has more than the %d bytes '
                'announced' % (url, size), url=url)
        digests.update(c)
        if skip:
            if len(c) <= skip:
                skip -= len(c)
                continue
            c = c[skip:]
            skip = 0
        if prev is not None:
            yield prev
        prev = c
    if size is not None and total != size:
        raise exceptions.SizeMismatch(
            'upload to %s: the data has %d bytes, %d were announced'
            % (url, total, size), url=url)
    if checksum is not None:
        digest = digests.hexdigest()
        if digest != checksum.hexdigest:
            raise exceptions.ChecksumMismatch(
                'upload to %s aborted: the data\'s %s digest is %s, '
                'expected %s' % (url, checksum.algorithm, digest,
                                 checksum.hexdigest), url=url,
                expected=checksum.hexdigest, actual=digest)
    digests.verify(url)
    if prev is not None:
        yield prev


#: state dirs that could not be created, warned about once per process
_warned = set()
_warned_lock = threading.Lock()


class UploadMarker:
    """``state_dir/uploads/KEY``: an upload of this data to that URL began.

    Drivers with resumable writes (FTP, SFTP, NFS) write in place; after a
    crash, a new call may continue at the server's size only if this
    process family wrote those bytes from the same data.  The key hashes
    the destination (no secrets), the size and the data's identity (the
    checksum, or the local path with its mtime); without a strong identity
    nothing is resumed across calls.
    """

    def __init__(self, conf, loc, size, checksum, src):
        self.path = None
        ident = str(checksum) if checksum else None
        if ident is None and src.path is not None:
            try:
                st = os.stat(src.path)
                ident = '%s:%d:%d' % (os.path.abspath(src.path), st.st_ino,
                                      st.st_mtime_ns)
            except OSError:
                ident = None
        if not size or ident is None:
            return
        key = hashlib.sha256('\0'.join([
            locations.mask_url(loc.without_userinfo()), str(size),
            ident]).encode()).hexdigest()[:40]
        self.path = os.path.join(conf.oslo_transfer.state_dir, 'uploads',
                                 key)

    def exists(self) -> bool:
        return self.path is not None and os.path.exists(self.path)

    def create(self):
        if self.path is None:
            return
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700,
                        exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT |
                         os.O_NOFOLLOW, 0o600)
            os.close(fd)
        except OSError as exc:
            state_dir = os.path.dirname(os.path.dirname(self.path))
            with _warned_lock:
                first = state_dir not in _warned
                _warned.add(state_dir)
            LOG.log(logging.WARNING if first else logging.DEBUG,
                    'cannot keep upload markers in %s (%s): an interrupted '
                    'upload restarts from zero on the next call; set '
                    '[oslo_transfer] state_dir to a writable directory',
                    state_dir, exc.strerror)
            self.path = None

    def load_state(self) -> dict:
        """The driver's ``ctx.upload_state`` kept here ({} if none)."""
        if self.path is None:
            return {}
        try:
            with open(self.path, 'rb') as f:
                raw = f.read(1 << 20)
            state = json.loads(raw) if raw.strip() else {}
        except (OSError, ValueError) as exc:
            LOG.debug('upload record %s unreadable (%s): starting afresh',
                      self.path, exc)
            return {}
        state = state.get('upload_state') if isinstance(state, dict) else {}
        return state if isinstance(state, dict) else {}

    def save_state(self, state: dict) -> None:
        """Keep ``state`` durably (write, fsync, rename)."""
        if self.path is None:
            return
        tmp = self.path + '.tmp'
        data = json.dumps({'upload_state': state}).encode()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC |
                         os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as exc:
            raise exceptions.DestinationError(
                'cannot keep the upload state in %s: %s'
                % (self.path, exc.strerror)) from exc

    def remove(self):
        if self.path is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


def _existing(drv, loc, ctx, if_exists, size, checksum, marker, started,
              plan, cand):
    """Apply ``if_exists`` to what is at ``loc``; a Result to keep it.

    None means: write.  Our own interrupted upload (its marker exists) is
    continued, not judged.  A LUN (``volume_targets``) always exists, and
    only ``"error"`` refuses it.
    """
    if if_exists == 'replace' or marker.exists():
        return None
    try:
        st = drv.stat(loc, ctx)
    except exceptions.SourceNotFound:
        return None
    if if_exists == 'error':
        raise exceptions.DestinationExists(
            '%s exists (if_exists="error")' % loc.masked, url=loc.masked)
    if drv.volume_targets:
        return None
    if size is not None and st.size is not None and st.size != size:
        raise exceptions.DestinationExists(
            '%s exists with %d bytes, the data has %d; pass '
            'if_exists="replace" to overwrite it' % (loc.masked, st.size,
                                                     size), url=loc.masked)
    digest = None
    if checksum is not None:
        h = checksum.new()
        for chunk in drv.read(loc, 0, None, ctx):
            ctx.cancel.check()
            h.update(chunk)
        digest = h.hexdigest()
        if digest != checksum.hexdigest:
            raise exceptions.DestinationExists(
                '%s exists and its %s digest %s differs from %s; pass '
                'if_exists="replace" to overwrite it' % (
                    loc.masked, checksum.algorithm, digest,
                    checksum.hexdigest), url=loc.masked)
    elif size is None or st.size is None:
        raise exceptions.DestinationExists(
            '%s exists and neither a checksum nor the sizes can tell '
            'whether it holds the same data' % loc.masked, url=loc.masked)
    LOG.info('%s already holds the data; nothing to upload', loc.masked)
    return result_mod.Result(
        bytes_transferred=0, bytes_resumed=0, driver=None, url=None,
        digest=digest, algorithm=checksum.algorithm if checksum else None,
        size=st.size, elapsed=time.monotonic() - started, plan=plan,
        dest=cand.url)


def upload(transfer, plan, data, size, checksum, ctx, progress=None,
           if_exists='replace', rate=None, algos=(), verifier=None,
           policy=None):
    """Upload ``data`` to the first candidate that takes it.

    :param if_exists: see :meth:`~oslo_transfer.transfer.Transfer.upload`.
    :param rate: bytes per second (None: ``[oslo_transfer] rate_limit``).
    :param algos: hashlib names of the digests to compute besides the
        checksum's, all in the one pass over the data.
    :param verifier: the caller's verifier (``update()``, ``verify()``);
        a failed ``verify()`` aborts the write before its last chunk.
    :param policy: the call's
        :class:`~oslo_transfer.engine.retry.RetryPolicy`.
    """
    started = time.monotonic()
    src = DataSource(data, transfer.conf.oslo_transfer.chunk_size)
    if size is None:
        size = src.size()
    g = transfer.conf.oslo_transfer
    policy = policy or retry_mod.RetryPolicy.from_conf(transfer.conf)
    feed = digests_mod.Feed(verifier) if verifier is not None else None
    bucket = throttle.TokenBucket(g.rate_limit if rate is None else rate)
    last = None
    attempts = []
    for cand in plan.candidates:
        drv, loc = cand.driver_obj, cand.location
        cand_policy = policy.for_candidate(cand is plan.candidates[-1])
        tries = 0
        resumable = (Cap.RESUMABLE_WRITE in drv.capabilities and
                     src.rewindable)
        stateful = Cap.UPLOAD_STATE in drv.capabilities and src.rewindable
        marker = UploadMarker(transfer.conf, loc, size, checksum, src)
        origin = throttle.origin_key(loc, drv)
        kept = _existing(drv, loc, ctx, if_exists, size, checksum, marker,
                         started, plan, cand)
        if kept is not None:
            return kept
        while True:
            ctx.cancel.check()
            offset = 0
            if resumable and (tries or marker.exists()):
                try:
                    offset = sizes.checked_written_size(
                        drv.written_size(loc, ctx), size, loc)
                except exceptions.TransferError:
                    offset = 0
                if offset:
                    LOG.info('upload to %s continues at byte %d', cand.url,
                             offset)
            if resumable or stateful:
                marker.create()
            wctx = dataclasses.replace(
                ctx, upload_state=marker.load_state() if stateful else {},
                upload_state_saver=marker.save_state if stateful else None)
            hasher = digests_mod.Digests(algos, checksum, feed)
            moved = [0]

            def counted(it):
                for c in it:
                    _utils.cooperate()
                    bucket.consume(len(c), ctx.cancel)
                    ctx.consume(len(c), origin)
                    moved[0] += len(c)
                    if progress is not None:
                        progress(offset + moved[0], size)
                    yield c

            stream = counted(held_back(src.chunks(), hasher, checksum, size,
                                       cand.url, skip=offset))
            try:
                writer = drv.write(loc, stream, wctx, offset=offset,
                                   size=size)
            except exceptions.TransferError as exc:
                if isinstance(exc, (exceptions.ChecksumMismatch,
                                    exceptions.SizeMismatch)):
                    # (VerificationFailed too: a ChecksumMismatch.)
                    marker.remove()
                    raise
                if isinstance(exc, exceptions.Cancelled):
                    raise
                last = exc
                delay = cand_policy.next_delay(exc, tries, ctx)
                if delay is not None and src.rewindable:
                    tries += 1
                    LOG.warning('upload to %s: %s; retry %d in %.1fs',
                                cand.url, exc, tries, delay)
                    if ctx.cancel.wait(delay):
                        ctx.cancel.check()
                    continue
                attempts.append((cand.url, cand.driver, str(exc)))
                break
            try:
                commit_mod.commit(writer, wctx, policy, cand.url)
            except (exceptions.ChecksumMismatch, exceptions.SizeMismatch):
                marker.remove()
                raise
            marker.remove()
            sent, resumed = moved[0], offset
            if stateful and 0 <= writer.bytes_written < sent:
                # Parts the server already had were read and hashed here,
                # not sent.
                sent, resumed = writer.bytes_written, sent - \
                    writer.bytes_written
            return result_mod.Result(
                bytes_transferred=sent, bytes_resumed=resumed,
                driver=cand.driver, url=cand.url,
                digest=hasher.hexdigest(), algorithm=hasher.algorithm,
                digests=hasher.hexdigests(), size=hasher.pos,
                elapsed=time.monotonic() - started, plan=plan,
                dest=cand.url, attempts=attempts)
        if not src.rewindable:
            break
    raise last or exceptions.NoDriverFound('no driver can write there')
