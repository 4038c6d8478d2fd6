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

"""Pipelined SFTP reads and writes: a window of requests in flight.

paramiko's ``SFTPFile.read`` waits for each 32 KiB answer before asking
for the next one (a round trip per 32 KiB), and its ``prefetch`` keeps every
answer in a dict that it scans on each read (slow, and unbounded memory on
large files).  Here a window of ``depth`` READ (or WRITE) requests of
``request_size`` bytes stays in flight; answers are consumed in order, so
memory stays near ``depth * request_size`` and the link stays busy.

The requests and answers are SFTP version 3 packets (draft-ietf-secsh-
filexfer-02) written to and parsed from the session's channel
(``SFTPClient.get_channel()``) directly, with the file handle of a
``paramiko.SFTPFile`` opened the usual way.  Parsing here rather than in
paramiko's ``Message`` saves several copies of every byte, which is most of
the CPU time on a fast link.  The channel must not be used by anything else
while a pipeline runs, and every request must be answered before paramiko
uses the channel again: on any error the caller drops the connection.
Request ids start at 2**30, far above paramiko's own counter.
"""

import collections
import struct

from oslo_transfer import _utils

__all__ = ['Reader', 'read', 'write', 'StatusError', 'ShortFile',
           'PipelineError']

# SFTP v3 packet types and status codes
FXP_READ = 5
FXP_WRITE = 6
FXP_STATUS = 101
FXP_DATA = 103
FX_OK = 0
FX_EOF = 1

_HEAD = struct.Struct('>IBI')         # length, type, request id
_U32 = struct.Struct('>I')
#: the longest answer taken: a DATA answer to the largest READ request
#: (``request_size`` is at most 255 KiB) with its header, with room to
#: spare for a server that answers a little more than asked
MAX_ANSWER = 1024 * 1024
_READ_TAIL = struct.Struct('>QI')     # offset, length
_WRITE_TAIL = struct.Struct('>QI')    # offset, data length

_FIRST_ID = 1 << 30
_LAST_ID = (1 << 31) - 1


class PipelineError(Exception):
    """The server answered something SFTP does not allow here."""


class StatusError(Exception):
    """An SFTP status answer other than OK (or EOF where allowed)."""

    def __init__(self, code, text):
        super().__init__('%s (SFTP status %d)' % (text or 'error', code))
        self.code = code
        self.text = text


class ShortFile(Exception):
    """The file ended before the end of the range asked for."""


class _Channel:
    """Framing of SFTP packets over a paramiko channel."""

    def __init__(self, chan, handle, bulk):
        self.chan = chan
        self.handle = _U32.pack(len(handle)) + handle
        self.bulk = bulk
        # Received bytes objects, as they came; ``head`` bytes of the
        # first are consumed, ``have`` bytes are unread in all.
        self.parts = collections.deque()
        self.head = 0
        self.have = 0
        self.next_id = _FIRST_ID
        self.pending = collections.deque()
        # The channel's buffer, if it can wait for a number of bytes and
        # hand out what it holds without joining it
        # (session._ChunkPipe): fewer wake-ups and copies per answer.
        pipe = getattr(chan, 'in_buffer', None)
        self.pipe = pipe if hasattr(pipe, 'want') else None

    def send(self, ptype, tail, data=b'', meta=None, outbox=None):
        """Send one request, or add it to ``outbox`` (see :meth:`flush`)."""
        rid = self.next_id
        self.next_id = rid + 1 if rid < _LAST_ID else _FIRST_ID
        length = 5 + len(self.handle) + len(tail) + len(data)
        msg = (_HEAD.pack(length, ptype, rid), self.handle, tail, data)
        if outbox is None:
            self.chan.sendall(b''.join(msg))
        else:
            outbox.extend(msg)
        self.pending.append((rid, meta))

    def flush(self, outbox):
        """Send the requests gathered in ``outbox`` in one channel write.

        SFTP requests are a byte stream on the channel, so several go in
        one SSH packet: one pass through paramiko's send path (a lock, an
        encryption, a socket write, all under the GIL that its receiving
        thread needs) instead of one per request.
        """
        if outbox:
            self.chan.sendall(b''.join(outbox))
            del outbox[:]

    def _fill(self, n):
        """Receive until ``n`` unread bytes are held."""
        while self.have < n:
            want = max(self.bulk, n - self.have)
            if self.pipe is None:
                got = self.chan.recv(want)
            else:
                self.pipe.want = n - self.have
                self.pipe.as_pieces = True
                try:
                    got = self.chan.recv(want)
                finally:
                    self.pipe.want = 1
                    self.pipe.as_pieces = False
            size = len(got)
            if not size:
                raise EOFError('the server closed the SFTP channel')
            pieces = getattr(got, 'pieces', None)
            if pieces is None:
                self.parts.append(got)
            else:
                self.parts.extend(pieces)
            self.have += size

    def take(self, n):
        """The next ``n`` bytes (one copy at most; none for a whole part)."""
        self._fill(n)
        self.have -= n
        parts = self.parts
        first = parts[0]
        left = len(first) - self.head
        if left >= n:
            if self.head == 0 and left == n:
                parts.popleft()
                return first
            out = first[self.head:self.head + n]
            self.head += n
            if self.head == len(first):
                parts.popleft()
                self.head = 0
            return out
        views = []
        while n:
            first = parts[0]
            left = len(first) - self.head
            if left <= n:
                views.append(memoryview(first)[self.head:])
                parts.popleft()
                self.head = 0
                n -= left
            else:
                views.append(memoryview(first)[self.head:self.head + n])
                self.head += n
                n = 0
        return b''.join(views)

    def skip(self, n):
        """Drop the next ``n`` bytes without copying them."""
        self._fill(n)
        self.have -= n
        parts = self.parts
        while n:
            left = len(parts[0]) - self.head
            if left <= n:
                parts.popleft()
                self.head = 0
                n -= left
            else:
                self.head += n
                n = 0

    def answer(self):
        """``(type, body length, meta)`` of the oldest pending request.

        The body (after the request id) is the next ``body length``
        bytes: :meth:`take` or :meth:`skip` them.
        """
        rid, meta = self.pending.popleft()
        length, ptype, got_id = _HEAD.unpack(self.take(9))
        if got_id != rid:
            raise PipelineError('answer to request %d where %d was '
                                'expected' % (got_id, rid))
        if not 5 <= length <= MAX_ANSWER:
            # (A claimed length is never waited for nor allocated: the
            # largest answer is a DATA of one request.)
            raise PipelineError('an SFTP packet of %d bytes' % length)
        return ptype, length - 5, meta

    def status(self, size):
        """``(code, text)`` from a STATUS body of ``size`` bytes."""
        body = self.take(size)
        if size < 4:
            raise PipelineError('a status answer of %d bytes' % size)
        code = _U32.unpack_from(body, 0)[0]
        text = ''
        if size >= 8:
            n = _U32.unpack_from(body, 4)[0]
            text = body[8:8 + n].decode('utf-8', 'replace')
        return code, text

    def drop(self):
        """Read the oldest pending answer and drop it; returns its meta."""
        _ptype, size, meta = self.answer()
        self.skip(size)
        return meta

    def drain(self):
        while self.pending:
            self.drop()


class Reader:
    """READ requests in flight on one open file, kept between ranges.

    :meth:`read` yields one range.  With ``lookahead`` it keeps the window
    of requests full past the end of the range, so that a read of the next
    range (the engine's next piece of the same stream) finds its first
    answers already on the way instead of starting an empty pipeline: the
    server never waits while we consume the tail of a range.  Requests in
    flight that the next read does not continue (another offset) are
    drained first; call :meth:`drain` before anything else uses the
    channel.

    :param chan: the SFTP channel (``SFTPClient.get_channel()``).
    :param handle: the SFTP handle (``SFTPFile.handle``).
    :param request_size: bytes per READ request.
    :param depth: requests in flight (may change between reads).
    """

    def __init__(self, chan, handle, request_size, depth, bulk):
        self.ch = _Channel(chan, handle, bulk)
        self.request_size = request_size
        self.depth = depth
        self.next_off = 0           # where the next request starts
        # (offset, bytes) answered past the end of the last range.
        self.spare = None

    @property
    def pending(self) -> bool:
        """Requests in flight or bytes kept for the next range."""
        return bool(self.ch.pending) or self.spare is not None

    def continues_at(self, offset) -> bool:
        """True when what is in flight (or kept) starts at ``offset``."""
        if self.spare is not None:
            return self.spare[0] == offset
        return bool(self.ch.pending) and self.ch.pending[0][1][0] == offset

    def drain(self):
        """Read and drop every answer still due (the channel is then free)."""
        self.spare = None
        self.ch.drain()

    def read(self, offset, length, chunk_size, check=None, lookahead=False):
        """Yield ``[offset, offset+length)`` in order (see :func:`read`).

        :param lookahead: keep requesting past the end of the range (at
            most ``depth`` requests in flight); they stay in flight for
            the next call.
        """
        ch = self.ch
        if self.pending and not self.continues_at(offset):
            self.drain()
        if not ch.pending:
            self.next_off = offset
        end = None if length is None else offset + length
        pos = offset
        eof = False
        parts, held = [], 0
        if self.spare is not None:
            data, self.spare = self.spare[1], None
            if end is not None and len(data) > length:
                self.spare = (end, data[length:])
                data = data[:length]
            parts.append(data)
            held = len(data)
            pos += held
        # Refill the window a batch at a time (a quarter of it, once the
        # pipeline runs): one channel write per batch, see _Channel.flush.
        batch = max(1, self.depth // 4)
        outbox = []
        while end is None or pos < end:
            if not ch.pending or self.depth - len(ch.pending) >= batch:
                while (not eof and len(ch.pending) < self.depth and
                       (end is None or lookahead or self.next_off < end)):
                    n = self.request_size
                    if end is not None and self.next_off < end:
                        n = min(n, end - self.next_off)
                    ch.send(FXP_READ, _READ_TAIL.pack(self.next_off, n),
                            meta=(self.next_off, n), outbox=outbox)
                    self.next_off += n
                ch.flush(outbox)
            if not ch.pending:
                break
            ptype, size, (off, n) = ch.answer()
            if ptype == FXP_DATA:
                got = _U32.unpack(ch.take(4))[0] if size >= 4 else 0
                if got > n or got == 0 or 4 + got > size:
                    raise PipelineError('%d bytes answered a read of %d '
                                        'at %d' % (got, n, off))
                data = ch.take(got)
                ch.skip(size - 4 - got)
                take = got
                if end is not None and off + got > end:
                    # Asked for before this range was known (lookahead):
                    # keep the rest for the next range.
                    take = end - off
                    self.spare = (end, data[take:])
                    data = data[:take]
                parts.append(data)
                held += take
                pos = off + take
                if got < n:
                    # A capped read (OpenSSH answers at most 255 KiB):
                    # ask for the rest at once; it is answered after the
                    # others.
                    _reinsert_rest(ch, off + got, n - got)
                    self.request_size = min(self.request_size, got)
                if held >= chunk_size:
                    yield b''.join(parts)
                    parts, held = [], 0
            elif ptype == FXP_STATUS:
                code, text = ch.status(size)
                if code != FX_EOF:
                    raise StatusError(code, text)
                if end is not None:
                    raise ShortFile('the file ended at %d, before %d'
                                    % (off, end))
                eof = True      # every later request is past the end too
                ch.drain()
            else:
                raise PipelineError('unexpected answer type %d to a read'
                                    % ptype)
            if check is not None:
                check()
        if parts:
            yield b''.join(parts)


def read(chan, handle, offset, length, request_size, depth, chunk_size,
         check=None):
    """Yield ``[offset, offset+length)`` of an open file, in order.

    ``length=None`` reads to the end of the file.  Pieces are joined into
    chunks of about ``chunk_size`` bytes.  Nothing stays in flight.

    :param chan: the SFTP channel (``SFTPClient.get_channel()``).
    :param handle: the SFTP handle (``SFTPFile.handle``).
    :param check: called after each answer (cancel checks).
    :raises ShortFile: the file ended before ``offset + length``.
    :raises StatusError: the server answered a read with an error.
    """
    reader = Reader(chan, handle, request_size, depth,
                    max(chunk_size, 4 * request_size))
    return reader.read(offset, length, chunk_size, check)


def _reinsert_rest(ch, off, n):
    """Request ``[off, off+n)`` so that its answer is the next one used.

    Answers come in request order, so the requests already in flight are
    answered first: their answers are dropped and their ranges requested
    again after the rest.  This happens at most once per read (the
    request size then shrinks to what the server answers).
    """
    again = []
    while ch.pending:
        again.append(ch.drop())
    ch.send(FXP_READ, _READ_TAIL.pack(off, n), meta=(off, n))
    for o, m in again:
        ch.send(FXP_READ, _READ_TAIL.pack(o, m), meta=(o, m))


def write(chan, handle, offset, chunks, request_size, depth, on_data_error,
          sparse=False):
    """Write ``chunks`` at ``offset`` with ``depth`` requests in flight.

    An exception raised by ``chunks`` itself is passed to
    ``on_data_error(exc)`` (which must raise) once every request in flight
    was answered.

    :param sparse: send no request for a piece that holds only zeros (it
        stays a hole, or reads as zeros once data follows it).  A zero run
        at the end leaves the file short: the caller sets its size.  The
        server's size is then always the end of the last data written, so
        an upload resumed at that size is right.
    :returns: the number of bytes written (skipped zeros included).
    :raises StatusError: the server refused a write (disk full, ...).
    """
    ch = _Channel(chan, handle, 64 * 1024)
    pos = offset

    def settle(limit):
        while len(ch.pending) > limit:
            ptype, size, _meta = ch.answer()
            if ptype != FXP_STATUS:
                raise PipelineError('unexpected answer type %d to a write'
                                    % ptype)
            code, text = ch.status(size)
            if code != FX_OK:
                ch.drain()
                raise StatusError(code, text)

    it = iter(chunks)
    while True:
        try:
            chunk = next(it)
        except StopIteration:
            break
        except BaseException as exc:
            settle(0)
            on_data_error(exc)
            raise
        view = memoryview(chunk)
        for i in range(0, len(view), request_size):
            piece = view[i:i + request_size]
            if sparse and _utils.is_zero(piece):
                pos += len(piece)
                continue
            settle(depth - 1)
            ch.send(FXP_WRITE, _WRITE_TAIL.pack(pos, len(piece)), piece)
            pos += len(piece)
    settle(0)
    return pos - offset
