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

"""Page-cache writes of one stream from a thread (engine/writers.py)."""

import errno
import os
import random
import threading

import pytest

from oslo_transfer.engine import partfile
from oslo_transfer.engine import writers
from tests.unit import fakes

KiB = 1024
MiB = 1024 * KiB


def _data(n, seed=1):
    return random.Random(seed).randbytes(n)


def _content(path):
    with open(path, 'rb') as f:
        return f.read()


class _Gate:
    """``os.pwrite`` on one fd that waits, per offset, until opened."""

    def __init__(self, monkeypatch, fd, offsets):
        self.fd = fd
        self.gates = {off: threading.Event() for off in offsets}
        self.entered = {off: threading.Event() for off in offsets}
        real = os.pwrite

        def pwrite(f, buf, off):
            if f == fd and off in self.gates:
                self.entered[off].set()
                assert self.gates[off].wait(10), 'gate never opened'
            return real(f, buf, off)

        monkeypatch.setattr(os, 'pwrite', pwrite)

    def open(self, off):
        self.gates[off].set()


def _queued(path, **kwargs):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    return fd, writers.QueuedWriter(fd, **kwargs)


def test_chunks_land_where_written_once_flushed(tmp_path):
    path = str(tmp_path / 'f')
    fd, w = _queued(path)
    data = _data(3 * MiB + 11)
    pos, sizes = 0, [1, 4095, 64 * KiB + 3, 512 * KiB, 7]
    i = 0
    while pos < len(data):
        n = min(sizes[i % len(sizes)], len(data) - pos)
        # bytes and views of bytes are queued, as they are
        chunk = data[pos:pos + n]
        w.write(pos, chunk if i % 2 else memoryview(chunk))
        pos += n
        i += 1
    w.flush()
    assert os.pread(fd, len(data) + 1, 0) == data
    assert w.buffered_bytes == len(data)
    w.close()
    assert not w.thread.is_alive()
    os.close(fd)


def test_a_chunk_its_caller_may_reuse_is_written_at_once(tmp_path,
                                                         monkeypatch):
    path = str(tmp_path / 'f')
    fd, w = _queued(path)
    gate = _Gate(monkeypatch, fd, [0])
    w.write(0, b'q' * 4096)             # queued; its write waits at the gate
    assert gate.entered[0].wait(10)
    buf = bytearray(b'a' * 4096)
    w.write(4096, buf)                  # written by this thread, now
    view = memoryview(bytearray(b'b' * 4096))
    w.write(8192, view)
    buf[:] = b'x' * 4096                # a driver refilling its buffer
    view[:] = b'y' * 4096
    assert os.pread(fd, 8192, 4096) == b'a' * 4096 + b'b' * 4096
    gate.open(0)
    w.flush()
    assert os.pread(fd, 3 * 4096, 0) == b'q' * 4096 + b'a' * 4096 + \
        b'b' * 4096
    w.close()
    os.close(fd)


def test_the_queue_holds_at_most_its_limit(tmp_path, monkeypatch):
    path = str(tmp_path / 'f')
    fd, w = _queued(path, limit=256 * KiB)
    gate = _Gate(monkeypatch, fd, [0])
    chunks = [(k * 64 * KiB, _data(64 * KiB, k)) for k in range(8)]
    peak = []

    def produce():
        for off, chunk in chunks:
            w.write(off, chunk)
            peak.append(w.held)

    t = threading.Thread(target=produce)
    t.start()
    assert gate.entered[0].wait(10)
    t.join(0.5)
    # the first write is stuck: 256 KiB queued, the fifth write waits
    assert t.is_alive()
    assert len(peak) == 4 and max(peak) == 256 * KiB
    gate.open(0)
    t.join(10)
    assert not t.is_alive()
    assert max(peak) <= 256 * KiB
    w.flush()
    assert os.pread(fd, 8 * 64 * KiB, 0) == b''.join(c for _, c in chunks)
    w.close()
    os.close(fd)


def test_flush_waits_for_what_came_before_it_only(tmp_path, monkeypatch):
    # The checkpointer flushes while the worker goes on writing: it must
    # not wait until the stream pauses.
    path = str(tmp_path / 'f')
    fd, w = _queued(path)
    gate = _Gate(monkeypatch, fd, [0, 4096])
    w.write(0, b'a' * 4096)
    assert gate.entered[0].wait(10)
    flushed = threading.Event()

    def flush():
        w.flush()
        flushed.set()

    t = threading.Thread(target=flush)
    t.start()
    t.join(0.2)
    assert not flushed.is_set()         # the first write is not done
    w.write(4096, b'b' * 4096)          # queued after the flush began
    gate.open(0)
    assert flushed.wait(10), 'flush waited for a later write'
    assert os.pread(fd, 4096, 0) == b'a' * 4096
    gate.open(4096)
    w.close()
    assert os.pread(fd, 8192, 0) == b'a' * 4096 + b'b' * 4096
    os.close(fd)


def test_a_write_error_is_raised_by_the_next_write_and_flush(
        tmp_path, monkeypatch):
    path = str(tmp_path / 'f')
    fd, w = _queued(path)
    fakes.fail_writes(monkeypatch, fd=fd, from_offset=MiB)
    with pytest.raises(OSError) as err:
        for k in range(64):
            w.write(k * 256 * KiB, _data(256 * KiB, k))
        w.flush()
    assert err.value.errno == errno.ENOSPC
    with pytest.raises(OSError):
        w.flush()
    with pytest.raises(OSError):
        w.write(64 * MiB, b'z' * 4096)
    # what was queued before the failed write is in the file: a checkpoint
    # records it (so that a rerun resumes from there)
    assert w.written_below() == MiB
    assert os.pread(fd, MiB, 0) == b''.join(
        _data(256 * KiB, k) for k in range(4))
    w.close()
    os.close(fd)
    assert os.path.getsize(path) <= MiB


def test_an_unexpected_error_in_the_thread_fails_the_stream(
        tmp_path, monkeypatch):
    path = str(tmp_path / 'f')
    fd, w = _queued(path)

    def broken(item):
        raise RuntimeError('a bug')

    monkeypatch.setattr(w, '_perform', broken)
    w.write(0, b'a' * 4096)
    with pytest.raises(OSError) as err:
        w.flush()
    assert err.value.errno == errno.EIO
    assert 'a bug' in str(err.value)
    w.close()
    os.close(fd)


def test_partfile_queued_durable_starts_writeback_from_the_thread(
        tmp_path, monkeypatch):
    # direct_io off (or a destination that is not a local disk): the
    # durable stream still has its writeback started every 8 MiB.
    calls = []
    monkeypatch.setattr(partfile, 'start_writeback',
                        lambda fd, off, n: calls.append(
                            (threading.current_thread().name, off, n)))
    path = str(tmp_path / 'w.part')
    p = partfile.PartFile(path, durable=True, direct_io=False)
    p.open(fresh=True)
    assert p.use_background() == 'queued'
    data = _data(20 * MiB)
    for off in range(0, len(data), MiB):
        p.write(off, data[off:off + MiB])
    p.sync()
    p.close()
    assert [c[1:] for c in calls] == [(0, 8 * MiB), (8 * MiB, 8 * MiB)]
    assert {c[0] for c in calls} == {'oslo-transfer-writer'}
    assert _content(path) == data
