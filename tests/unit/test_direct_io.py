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

"""O_DIRECT writes of a durable stream (engine/writers.py, PartFile)."""

import errno
import os
import random

import pytest

from oslo_transfer.engine import partfile
from oslo_transfer.engine import writers
from oslo_transfer import exceptions
from tests.unit import fakes

KiB = 1024
MiB = 1024 * KiB


def _data(n, seed=1):
    return random.Random(seed).randbytes(n)


def _writer(path, buffer_bytes=64 * KiB, buffers=3):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    w = writers.open_direct(path, fd, buffer_bytes, buffers)
    # /tmp is ext4 here and in CI: a writer that silently fell back would
    # make every test below pass without testing O_DIRECT.
    assert w is not None, 'no O_DIRECT on %s' % path
    return fd, w


def _content(path):
    with open(path, 'rb') as f:
        return f.read()


def _direct_part(path, size):
    """A durable PartFile of ``size`` bytes (holes), writing O_DIRECT."""
    p = partfile.PartFile(path, durable=True)
    p.open(fresh=True)
    p.prepare(size, None)
    assert p.use_background() == 'direct'
    return p


@pytest.mark.parametrize('start', [0, 1, 4095, 4096, 12345])
def test_odd_chunks_from_any_offset_land_where_written(tmp_path, start):
    path = str(tmp_path / 'f')
    fd, w = _writer(path)
    data = _data(300 * KiB + 17)
    pos = 0
    sizes = [1, 4095, 7, 64 * KiB, 100 * KiB + 3, 5000]
    i = 0
    while pos < len(data):
        n = min(sizes[i % len(sizes)], len(data) - pos)
        w.write(start + pos, data[pos:pos + n])
        pos += n
        i += 1
    w.flush()
    assert _content(path) == bytes(start) + data
    # Most of it went around the page cache, what could not went through
    # the buffered fd; nothing was written twice.
    assert w.direct_bytes >= len(data) - 2 * 64 * KiB
    assert w.direct_bytes + w.buffered_bytes == len(data)
    w.close()
    os.close(fd)


def test_gaps_and_two_interleaved_streams(tmp_path):
    path = str(tmp_path / 'f')
    fd, w = _writer(path)
    a, b = _data(200 * KiB, 2), _data(200 * KiB, 3)
    for i in range(0, 200 * KiB, 50 * KiB):
        w.write(i, a[i:i + 50 * KiB])
        w.write(1 * MiB + i, b[i:i + 50 * KiB])
    w.flush()
    got = _content(path)
    assert got[:200 * KiB] == a
    assert got[200 * KiB:1 * MiB] == bytes(1 * MiB - 200 * KiB)
    assert got[1 * MiB:] == b
    w.close()
    os.close(fd)


def test_flush_makes_a_partly_filled_buffer_visible(tmp_path):
    path = str(tmp_path / 'f')
    fd, w = _writer(path, buffer_bytes=1 * MiB)
    data = _data(100 * KiB)
    w.write(0, data)
    assert _content(path) == b''        # still in our buffer
    w.flush()
    assert _content(path) == data
    # and writing on after the flush continues the stream
    more = _data(8 * KiB, 5)
    w.write(len(data), more)
    w.close()
    assert _content(path) == data + more
    os.close(fd)


def test_a_disk_error_is_raised_by_the_next_call_and_stops_writing(
        tmp_path, monkeypatch):
    path = str(tmp_path / 'f')
    fd, w = _writer(path, buffer_bytes=64 * KiB, buffers=2)
    fakes.fail_writes(monkeypatch, fd=w.fd, from_offset=128 * KiB)
    with pytest.raises(OSError) as err:
        for i in range(0, 4 * MiB, 64 * KiB):
            w.write(i, _data(64 * KiB, i))
        w.flush()
    assert err.value.errno == errno.ENOSPC
    # The first error stops the stream: later calls raise it again.
    with pytest.raises(OSError):
        w.flush()
    w.close()
    os.close(fd)
    assert os.path.getsize(path) <= 128 * KiB


def test_partfile_uses_direct_io_only_when_durable(tmp_path):
    p = partfile.PartFile(str(tmp_path / 'a.part'), durable=False)
    assert p.use_background() is None       # not open yet
    p.open(fresh=True)
    assert p.use_background() == 'queued'
    p.close()
    p = partfile.PartFile(str(tmp_path / 'b.part'), durable=True,
                          direct_io=False)
    p.open(fresh=True)
    assert p.use_background() == 'queued'
    p.close()
    p = partfile.PartFile(str(tmp_path / 'c.part'), durable=True)
    p.open(fresh=True)
    assert p.use_background() == 'direct'
    data = _data(3 * MiB + 5)
    p.write(0, data)
    # reads, sizes and syncs see what is still in the writer's buffers
    assert p.read(3 * MiB, 5) == data[3 * MiB:]
    assert p.size() == len(data)
    p.sync()
    p.close()
    assert _content(str(tmp_path / 'c.part')) == data


@pytest.mark.parametrize('durable,kind',
                         [(True, 'direct'), (False, 'queued')])
def test_partfile_background_writes_keep_sparse_holes(tmp_path, durable,
                                                      kind):
    path = str(tmp_path / 'd.part')
    p = partfile.PartFile(path, durable=durable)
    p.open(fresh=True)
    p.prepare(16 * MiB, None)
    assert p.use_background() == kind
    island = bytes(1 * MiB) + _data(1 * MiB) + bytes(2 * MiB)
    for off in range(0, 16 * MiB, 4 * MiB):
        p.write(off, island if off == 8 * MiB else bytes(4 * MiB))
    p.sync()
    p.close()
    st = os.stat(path)
    assert st.st_size == 16 * MiB
    assert st.st_blocks * 512 <= 1 * MiB + 64 * KiB
    got = _content(path)
    assert got[8 * MiB:12 * MiB] == island
    assert got[:8 * MiB] == bytes(8 * MiB)
    assert got[12 * MiB:] == bytes(4 * MiB)


@pytest.mark.parametrize('durable,kind',
                         [(True, 'direct'), (False, 'queued')])
def test_partfile_background_disk_full_is_a_destination_error(
        tmp_path, monkeypatch, durable, kind):
    path = str(tmp_path / 'e.part')
    p = partfile.PartFile(path, durable=durable)
    p.open(fresh=True)
    assert p.use_background() == kind
    # the writer thread writes through its own fd (direct) or the file's
    fakes.fail_writes(monkeypatch, fd=p.writer.fd)
    with pytest.raises(exceptions.DestinationError) as err:
        for off in range(0, 64 * MiB, MiB):
            p.write(off, _data(MiB, off))
        p.sync()
    assert 'no space left on the device of %s' % path in str(err.value)
    p.close()


def test_partfile_back_to_buffered_keeps_what_was_written(tmp_path):
    # A one-stream candidate wrote with O_DIRECT, the next one runs
    # parallel segments through the page cache: nothing staged is lost.
    path = str(tmp_path / 'f.part')
    p = partfile.PartFile(path, durable=True)
    p.open(fresh=True)
    assert p.use_background() == 'direct'
    first = _data(1 * MiB + 100, 7)
    p.write(0, first)                   # still staged in memory
    p.use_buffered()
    assert p.writer is None
    rest = _data(1 * MiB, 8)
    p.write(len(first), rest)
    p.sync()
    p.close()
    assert _content(path) == first + rest


def test_only_local_disk_file_systems_are_written_direct(tmp_path,
                                                         monkeypatch):
    path = str(tmp_path / 'g')
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        assert writers.fs_type(fd) in writers.LOCAL_DISK_FS  # /tmp: ext4
        if os.path.ismount('/dev/shm'):
            shm = os.open('/dev/shm', os.O_RDONLY)
            try:
                assert writers.fs_type(shm) == 0x01021994     # tmpfs
            finally:
                os.close(shm)
        # NFS, SMB, CephFS, FUSE...: through the page cache
        for kind in (0x6969, 0xFF534D42, 0x00C36400, 0x65735546, None):
            monkeypatch.setattr(writers, 'fs_type', lambda _fd, k=kind: k)
            assert writers.open_direct(path, fd) is None
    finally:
        os.close(fd)


def test_short_runs_of_a_fragmented_image_go_through_the_cache(tmp_path):
    # 4 KiB of data, 4 KiB of zeros, ...: one direct write per run would
    # be a synchronous disk write per 4 KiB; they are buffered instead.
    path = str(tmp_path / 'h.part')
    p = _direct_part(path, 8 * MiB)
    block = _data(4096, 9)
    chunk = (block + bytes(4096)) * (MiB // 8192)
    p.write(0, chunk)                       # fragmented: all buffered
    dense = _data(4 * MiB, 10)
    p.write(4 * MiB, dense)                 # dense: direct
    p.sync()
    assert p.writer.direct_bytes == 4 * MiB
    assert p.writer.buffered_bytes == MiB // 2
    p.close()
    got = _content(path)
    assert got[:MiB] == chunk
    assert got[MiB:4 * MiB] == bytes(3 * MiB)
    assert got[4 * MiB:] == dense


def test_a_bug_in_the_writer_thread_fails_the_copy_instead_of_hanging(
        tmp_path, monkeypatch):
    path = str(tmp_path / 'k')
    fd, w = _writer(path)
    fakes.fail_writes(monkeypatch, RuntimeError('boom'), fd=w.fd)
    with pytest.raises(OSError) as err:
        for i in range(0, 1 * MiB, 64 * KiB):
            w.write(i, _data(64 * KiB, i))
        w.flush()
    assert err.value.errno == errno.EIO and 'boom' in str(err.value)
    w.close()
    os.close(fd)


def test_no_readahead_on_the_buffered_fd_while_written_direct(
        tmp_path, monkeypatch):
    # a read back must not pull into the cache pages that an O_DIRECT
    # write is about to fill (stale pages: not coherent)
    advice = []
    real = os.posix_fadvise
    monkeypatch.setattr(os, 'posix_fadvise',
                        lambda fd, o, n, a: advice.append(a) or
                        real(fd, o, n, a))
    p = _direct_part(str(tmp_path / 'f'), 1 * MiB)
    assert advice == [os.POSIX_FADV_RANDOM]
    p.use_buffered()
    assert advice == [os.POSIX_FADV_RANDOM, os.POSIX_FADV_NORMAL]
    p.close()
    q = partfile.PartFile(str(tmp_path / 'g'), durable=False)
    q.open(fresh=True)
    assert q.use_background() == 'queued'
    assert advice == [os.POSIX_FADV_RANDOM, os.POSIX_FADV_NORMAL]
    q.close()
