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

"""The SFTP request pipeline against an in-memory SFTP server."""

import os
import struct

import pytest

from oslo_transfer._drivers.sftp import pipeline as pipe
from oslo_transfer._drivers.sftp import session as sftp_session
from oslo_transfer import _utils

HANDLE = b'h-1'


class FakeChannel:
    """Answers SFTP READ/WRITE packets like sftp-server would.

    :param data: the file.
    :param max_read: reads are answered with at most this many bytes.
    :param recv_piece: recv() returns at most this many bytes (framing).
    :param fail_at: offset whose request gets ``fail_status``.
    """

    def __init__(self, data=b'', max_read=1 << 30, recv_piece=1 << 30,
                 fail_at=None, fail_status=(4, 'Failure'), wrong_id=False):
        self.file = bytearray(data)
        self.max_read = max_read
        self.recv_piece = recv_piece
        self.fail_at = fail_at
        self.fail_status = fail_status
        self.wrong_id = wrong_id
        self.out = bytearray()
        self.produced = 0          # bytes of answers written so far
        self.consumed = 0          # bytes of answers the client received
        self.answer_ends = []      # where each answer ends in the stream
        self.max_in_flight = 0
        self.requests = []
        self.writes = 0            # sendall() calls

    # -- the client's side ---------------------------------------------------

    def sendall(self, data):
        # SFTP packets are a byte stream: one write may carry several.
        data = bytes(data)
        self.writes += 1
        while data:
            length = struct.unpack_from('>I', data)[0]
            assert len(data) >= 4 + length
            self._packet(data[:4 + length])
            data = data[4 + length:]

    def _packet(self, packet):
        length, ptype, rid = struct.unpack_from('>IBI', packet)
        assert length == len(packet) - 4
        hlen = struct.unpack_from('>I', packet, 9)[0]
        assert packet[13:13 + hlen] == HANDLE
        pos = 13 + hlen
        offset, n = struct.unpack_from('>QI', packet, pos)
        self.requests.append((ptype, offset, n))
        answered = sum(1 for e in self.answer_ends if e <= self.consumed)
        self.max_in_flight = max(self.max_in_flight,
                                 len(self.requests) - answered)
        if self.wrong_id:
            rid += 7
        if self.fail_at is not None and offset <= self.fail_at < offset + n:
            self._status(rid, *self.fail_status)
        elif ptype == pipe.FXP_READ:
            if offset >= len(self.file):
                self._status(rid, pipe.FX_EOF, 'End of file')
            else:
                chunk = bytes(self.file[offset:offset + min(n,
                                                            self.max_read)])
                body = struct.pack('>BII', pipe.FXP_DATA, rid, len(chunk))
                self._answer(struct.pack('>I', len(body) + len(chunk)) +
                             body + chunk)
        elif ptype == pipe.FXP_WRITE:
            data = packet[pos + 12:pos + 12 + n]
            assert len(data) == n
            end = offset + n
            if len(self.file) < end:
                self.file.extend(b'\0' * (end - len(self.file)))
            self.file[offset:end] = data
            self._status(rid, pipe.FX_OK, 'Success')
        else:
            raise AssertionError('unexpected packet type %d' % ptype)

    def _status(self, rid, code, text):
        t = text.encode()
        body = struct.pack('>BII', pipe.FXP_STATUS, rid, code)
        body += struct.pack('>I', len(t)) + t + struct.pack('>I', 2) + b'en'
        self._answer(struct.pack('>I', len(body)) + body)

    def _answer(self, packet):
        self.out += packet
        self.produced += len(packet)
        self.answer_ends.append(self.produced)

    def recv(self, n):
        n = min(n, self.recv_piece, len(self.out))
        data = bytes(self.out[:n])
        del self.out[:n]
        self.consumed += len(data)
        return data


def _read(chan, offset=0, length=None, request_size=4096, depth=4,
          chunk_size=10000):
    return b''.join(pipe.read(chan, HANDLE, offset, length, request_size,
                              depth, chunk_size))


DATA = os.urandom(100000)


@pytest.mark.parametrize('piece', [1 << 30, 7, 4096])
def test_read_whole_file(piece):
    chan = FakeChannel(DATA, recv_piece=piece)
    assert _read(chan) == DATA


def test_read_chunks_are_joined():
    chan = FakeChannel(DATA)
    sizes = [len(c) for c in pipe.read(chan, HANDLE, 0, None, 4096, 4,
                                       10000)]
    assert sum(sizes) == len(DATA)
    assert all(s >= 10000 for s in sizes[:-1])


@pytest.mark.parametrize('offset,length', [(0, 1), (5, 4096), (4095, 2),
                                           (99999, 1), (12345, 50000)])
def test_ranged_reads(offset, length):
    chan = FakeChannel(DATA)
    assert _read(chan, offset, length) == DATA[offset:offset + length]
    # Nothing beyond the range was asked for.
    assert max(o + n for _t, o, n in chan.requests) == offset + length


def test_depth_bounds_requests_in_flight():
    chan = FakeChannel(DATA)
    _read(chan, depth=3)
    assert chan.max_in_flight <= 3


def test_requests_go_out_a_batch_per_channel_write():
    # A window of 32: after the first 32 requests (one write), the window
    # is refilled 8 requests at a time, each batch in one channel write.
    data = bytes(range(256)) * 4096              # 1 MiB
    chan = FakeChannel(data)
    assert _read(chan, 0, len(data), request_size=4096, depth=32) == data
    reads = len([r for r in chan.requests if r[0] == pipe.FXP_READ])
    assert reads == 256
    assert chan.max_in_flight <= 32
    assert chan.writes <= 1 + -(-(reads - 32) // 8) + 1
    assert chan.writes < reads / 4


def test_capped_reads_are_completed():
    # A server that answers at most 1000 bytes per read (like OpenSSH's
    # 255 KiB cap): the rest is asked for and the request size shrinks.
    chan = FakeChannel(DATA, max_read=1000)
    assert _read(chan, 10, 50000, request_size=4096) == DATA[10:50010]
    later = [n for _t, _o, n in chan.requests[-10:]]
    assert max(later) <= 1000


def test_read_past_the_end_is_short_file():
    chan = FakeChannel(DATA)
    with pytest.raises(pipe.ShortFile):
        _read(chan, 90000, 20000)


def test_read_to_end_of_empty_file():
    assert _read(FakeChannel(b'')) == b''


def test_status_error_on_read():
    chan = FakeChannel(DATA, fail_at=50000, fail_status=(3, 'Permission '
                                                            'denied'))
    with pytest.raises(pipe.StatusError) as ei:
        _read(chan)
    assert ei.value.code == 3
    assert 'Permission denied' in str(ei.value)


def test_wrong_answer_id():
    with pytest.raises(pipe.PipelineError):
        _read(FakeChannel(DATA, wrong_id=True))


def _chunks(data, size):
    for i in range(0, len(data), size):
        yield data[i:i + size]


def test_write_at_offset():
    chan = FakeChannel(b'x' * 100)
    n = pipe.write(chan, HANDLE, 100, _chunks(DATA, 30000), 4096, 4,
                   on_data_error=None)
    assert n == len(DATA)
    assert bytes(chan.file) == b'x' * 100 + DATA
    assert all(t == pipe.FXP_WRITE and m <= 4096
               for t, _o, m in chan.requests)
    assert chan.max_in_flight <= 4


def _sparse_data():
    z = bytes(3 * 4096)
    return z + DATA[:5000] + z + bytes(100) + DATA[:4096] + z


@pytest.mark.parametrize('sparse', [True, False])
def test_sparse_write_skips_zero_pieces(sparse):
    data = _sparse_data()
    chan = FakeChannel(b'')
    n = pipe.write(chan, HANDLE, 0, _chunks(data, 10000), 4096, 4, None,
                   sparse=sparse)
    assert n == len(data)
    sent = sum(m for _t, _o, m in chan.requests)
    if not sparse:
        assert sent == len(data)
        assert bytes(chan.file) == data
        return
    # Only the pieces holding data went out; the file ends at the last
    # data written (the caller sets the final size), and reads the same.
    assert 0 < sent < len(data) - 3 * 4096
    assert all(not _utils.is_zero(chan.file[o:o + m])
               for _t, o, m in chan.requests)
    end = max(o + m for _t, o, m in chan.requests)
    assert len(chan.file) == end < len(data)
    assert bytes(chan.file) == data[:end]
    assert _utils.is_zero(data[end:])


def test_sparse_write_resumes_at_the_server_size():
    # Interrupted after some pieces: resuming at the server's size (the
    # end of the last data written) gives the same bytes.
    data = _sparse_data()
    chan = FakeChannel(b'')

    def first():
        yield data[:8 * 4096]
        raise ConnectionError('gone')

    def on_data_error(exc):
        raise exc

    with pytest.raises(ConnectionError):
        pipe.write(chan, HANDLE, 0, first(), 4096, 4, on_data_error,
                   sparse=True)
    have = len(chan.file)
    assert 0 < have <= 8 * 4096
    assert bytes(chan.file) == data[:have]
    pipe.write(chan, HANDLE, have, _chunks(data[have:], 10000), 4096, 4,
               None, sparse=True)
    got = bytes(chan.file)
    assert got + bytes(len(data) - len(got)) == data


def test_write_failure_status():
    chan = FakeChannel(b'', fail_at=20000, fail_status=(4, 'Failure'))
    with pytest.raises(pipe.StatusError) as ei:
        pipe.write(chan, HANDLE, 0, _chunks(DATA, 30000), 4096, 4, None)
    assert ei.value.code == 4


def test_write_data_error_settles_first():
    # An exception from the chunks reaches on_data_error once every
    # request in flight was answered, then propagates.
    chan = FakeChannel(b'')
    seen = []

    def chunks():
        yield DATA[:20000]
        raise ValueError('bad data')

    def on_data_error(exc):
        seen.append((exc, len(chan.out)))
        raise exc

    with pytest.raises(ValueError):
        pipe.write(chan, HANDLE, 0, chunks(), 4096, 4, on_data_error)
    assert len(seen) == 1
    assert isinstance(seen[0][0], ValueError)
    assert seen[0][1] == 0, 'answers were still unread'
    assert bytes(chan.file) == DATA[:20000]


def _ranges(reader, ranges, request_size=4096):
    out = []
    for off, n in ranges:
        out.append(b''.join(reader.read(off, n, 10000, lookahead=True)))
    return out


def test_lookahead_continues_into_the_next_range():
    # Contiguous ranges on one reader: the next range's first requests
    # were sent before it was asked for, and nothing was asked twice.
    chan = FakeChannel(DATA)
    reader = pipe.Reader(chan, HANDLE, 4096, 4, 16384)
    first = b''.join(reader.read(0, 30000, 10000, lookahead=True))
    assert first == DATA[:30000]
    assert reader.pending and reader.continues_at(30000)
    sent_before = len(chan.requests)
    assert max(o + n for _t, o, n in chan.requests) > 30000
    assert _ranges(reader, [(30000, 1), (30001, 5000), (35001, 64999)]) == [
        DATA[30000:30001], DATA[30001:35001], DATA[35001:]]
    offsets = [o for _t, o, _n in chan.requests]
    assert len(offsets) == len(set(offsets))
    assert len(chan.requests) > sent_before
    assert chan.max_in_flight <= 4
    reader.drain()
    assert not reader.pending and chan.out == b''


def test_lookahead_dropped_for_another_offset():
    chan = FakeChannel(DATA)
    reader = pipe.Reader(chan, HANDLE, 4096, 4, 16384)
    assert _ranges(reader, [(0, 5000), (50000, 7000), (1, 2)]) == [
        DATA[:5000], DATA[50000:57000], DATA[1:3]]
    reader.drain()
    assert chan.out == b''


def test_lookahead_past_the_end_of_the_file():
    chan = FakeChannel(DATA, max_read=3000)
    reader = pipe.Reader(chan, HANDLE, 4096, 4, 16384)
    assert _ranges(reader, [(90000, 9000), (99000, 1000)]) == [
        DATA[90000:99000], DATA[99000:]]
    reader.drain()
    assert not reader.pending and chan.out == b''


def test_no_lookahead_leaves_nothing_in_flight():
    chan = FakeChannel(DATA)
    reader = pipe.Reader(chan, HANDLE, 4096, 4, 16384)
    assert b''.join(reader.read(0, 30000, 10000)) == DATA[:30000]
    assert not reader.pending
    assert max(o + n for _t, o, n in chan.requests) == 30000


class _PipeFlags:
    want = 1
    as_pieces = False


class PiecesChannel(FakeChannel):
    """recv() hands out small bytes objects, as _ChunkPipe does."""

    def __init__(self, *args, piece=7, **kwargs):
        super().__init__(*args, **kwargs)
        self.in_buffer = _PipeFlags()
        self.piece = piece
        self.wants = []

    def recv(self, n):
        if not self.in_buffer.as_pieces:
            return super().recv(n)
        self.wants.append(self.in_buffer.want)
        data = super().recv(n)
        return sftp_session.Pieces([data[i:i + self.piece]
                                    for i in range(0, len(data),
                                                   self.piece)])


@pytest.mark.parametrize('piece', [1, 7, 4096, 5000])
def test_read_from_pieces(piece):
    chan = PiecesChannel(DATA, piece=piece, max_read=3000)
    reader = pipe.Reader(chan, HANDLE, 4096, 4, 16384)
    assert _ranges(reader, [(0, 30000), (30000, 12345), (50000, 50000)]) \
        == [DATA[:30000], DATA[30000:42345], DATA[50000:]]
    reader.drain()
    assert not reader.pending and chan.out == b''
    # The pipeline said how much it waited for, and reset it after.
    assert chan.wants and min(chan.wants) >= 1
    assert chan.in_buffer.want == 1 and not chan.in_buffer.as_pieces


def test_write_with_pieces():
    chan = PiecesChannel(b'', piece=3)
    n = pipe.write(chan, HANDLE, 0, [DATA[:50000], DATA[50000:]], 4096, 4,
                   lambda exc: None)
    assert n == len(DATA) and bytes(chan.file) == DATA
