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

"""Zero-copy reads: a driver's aligned blocks written by the O_DIRECT writer.

``_common.BlockPool`` hands out views of page-aligned blocks and refills
one only when no view of it is left; ``writers.DirectWriter`` writes such
views with ``pwritev`` from the driver's memory instead of copying them
into its own buffers.
"""

import ctypes
import errno
import os
import random
import sys
import threading

import pytest

from oslo_transfer._drivers import _common
from oslo_transfer import _utils
from oslo_transfer import driver
from oslo_transfer.engine import partfile
from oslo_transfer.engine import writers
from oslo_transfer import exceptions
from tests.unit import fakes
from tests.unit.test_direct_io import _content
from tests.unit.test_direct_io import _writer

KiB = 1024
PAGE = 4096


def _data(n, seed=3):
    return random.Random(seed).randbytes(n)


def _pool(limit=4, size=16 * KiB):
    return _common.BlockPool(limit, size)


def _fill(pool, payload):
    src = ctypes.create_string_buffer(payload, len(payload))
    return pool.fill(ctypes.addressof(src), len(payload))


# -- the pool -----------------------------------------------------------------

def test_a_dropped_view_gives_its_block_back():
    pool = _pool()
    first = _fill(pool, b'a' * 8192)
    assert _utils.is_aligned_view(first)
    block = id(first.obj)
    del first
    second = _fill(pool, b'b' * 8192)
    assert id(second.obj) == block and pool.made == 1
    assert bytes(second) == b'b' * 8192


def test_a_block_with_any_view_left_is_never_refilled():
    pool = _pool(limit=4)
    kept = [_fill(pool, bytes([65 + i]) * 8192) for i in range(3)]
    tail = kept[2][4096:]               # a slice holds the block too
    del kept[2]
    for _ in range(6):
        _fill(pool, b'!' * 8192)        # the 4th block, refilled each time
    assert pool.made == 4
    assert [bytes(k) for k in kept] == [b'A' * 8192, b'B' * 8192]
    assert bytes(tail) == b'C' * 4096


def test_all_blocks_held_gives_bytes_and_never_waits():
    pool = _pool(limit=2)
    held = [_fill(pool, b'x' * 8192), _fill(pool, b'y' * 8192)]
    more = _fill(pool, b'z' * 8192)
    assert type(more) is bytes and more == b'z' * 8192
    big = _fill(pool, b'w' * (32 * KiB))  # larger than a block
    assert type(big) is bytes and big == b'w' * (32 * KiB)
    assert [bytes(h) for h in held] == [b'x' * 8192, b'y' * 8192]


def test_blocks_are_page_aligned_and_sized_up_to_pages():
    pool = _pool(limit=3, size=5000)
    views = [pool.take(5000)[0] for _ in range(3)]
    assert pool.size == 8192
    for v in views:
        assert len(v) == 5000
        assert _utils.buffer_address(v) % PAGE == 0


def test_take_hands_out_free_blocks_and_none_when_all_are_held():
    pool = _pool(limit=2, size=8192)
    first, at = pool.take(8192)
    assert _utils.buffer_address(first) == at
    first[:] = b'1' * 8192
    second = pool.take(4096)[0]
    assert pool.take(4096) is None              # both held: no third
    assert pool.take(8193) is None              # larger than a block
    del second
    again = pool.take(8192)[0]                  # the second, free again
    assert again.obj is not first.obj and pool.made == 2
    assert bytes(first) == b'1' * 8192


def test_short_answers_are_copied_into_bytes():
    pool = _pool()
    short = _fill(pool, b's' * (_common.MIN_BLOCK_BYTES - 1))
    assert type(short) is bytes and short == b's' * 4095
    assert pool.made == 0


def test_a_consumer_that_takes_no_views_gets_no_pool():
    ctx = driver.Context()
    assert _common.block_pool(ctx, 16, 512 * KiB) is None
    ctx.aligned_views = True
    pool = _common.block_pool(ctx, 16, 512 * KiB)
    # what the consumer holds unknown (0): the READs in flight and a few
    assert isinstance(pool, _common.BlockPool) and pool.limit == 16 + 4
    ctx.held_bytes = 20 * 1024 * KiB
    assert _common.block_pool(ctx, 16, 512 * KiB).limit == 16 + 40 + 4
    assert _common.block_pool(ctx, 0, 1024 * KiB).limit == 20 + 4


def test_views_of_blocks_count_as_unchanging_chunks():
    view = _fill(_pool(), b'q' * 8192)
    assert writers.immutable(view) and writers.immutable(view[100:])
    assert not writers.immutable(memoryview(bytearray(8192)))


# -- the O_DIRECT writer ------------------------------------------------------

def _gate_pwritev(monkeypatch):
    """Each ``os.pwritev`` waits for a release of the returned semaphore."""
    allowed = threading.Semaphore(0)
    real = os.pwritev

    def gated(f, bufs, off):
        assert allowed.acquire(timeout=10)
        return real(f, bufs, off)

    monkeypatch.setattr(os, 'pwritev', gated)
    return allowed


def _views(data, size=16 * KiB, limit=64):
    """``data`` as views of aligned blocks, ``size`` bytes each."""
    pool = _pool(limit=limit, size=size)
    return [_fill(pool, data[i:i + size]) for i in range(0, len(data), size)]


def test_aligned_views_are_written_without_a_copy(tmp_path):
    path = str(tmp_path / 'f')
    fd, w = _writer(path)
    data = _data(320 * KiB + 700)
    views = _views(data)
    assert type(views[-1]) is bytes     # too short to be worth a block
    blocks = [v.obj for v in views[:-1]]
    pos = 0
    for v in views:
        w.write(pos, v)
        pos += len(v)
    del v, views
    w.flush()
    assert _content(path) == data
    assert w.zero_copy_bytes == w.direct_bytes == 320 * KiB
    assert w.buffered_bytes == 700      # the short tail, through the cache
    # written, so given back: only this list (and the call) refer to them
    assert {sys.getrefcount(b) for b in blocks} == {3}
    w.close()
    os.close(fd)


def test_views_that_are_not_aligned_are_copied(tmp_path):
    path = str(tmp_path / 'f')
    fd, w = _writer(path)
    data = _data(256 * KiB)
    # bytes first (the head, through the cache, then the writer's own
    # buffer), then views at an unaligned offset, then one at an
    # unaligned address: all copied
    w.write(0, data[:1000])
    pos = 1000
    for v in _views(data[pos:pos + 64 * KiB]):
        w.write(pos, v)
        pos += len(v)
    shifted = _views(b'\0' * 100 + data[pos:pos + 32 * KiB],
                     size=32 * KiB + 100)[0][100:]
    assert _utils.buffer_address(shifted) % PAGE
    w.write(pos, shifted)
    pos += len(shifted)
    w.flush()
    assert w.zero_copy_bytes == 0
    # up to a page boundary (the flush ends the writer's buffer in
    # progress), then aligned views again: those go as they are
    rest = (-pos) % PAGE
    w.write(pos, data[pos:pos + rest])
    pos += rest
    w.flush()
    zero_copy_from = pos
    for v in _views(data[pos:]):
        w.write(pos, v)
        pos += len(v)
    w.flush()
    assert _content(path) == data
    assert w.zero_copy_bytes == len(data) - zero_copy_from > 0
    w.close()
    os.close(fd)


def test_short_runs_of_views_between_holes_go_through_the_cache(tmp_path):
    path = str(tmp_path / 'f')
    fd, w = _writer(path, buffer_bytes=512 * KiB)
    island, long_run = _data(16 * KiB), _data(512 * KiB, seed=4)
    w.write(0, _views(island)[0])
    w.write(1024 * KiB, _views(island)[0])      # a gap: the first is cut
    w.write(2048 * KiB, b'x')                   # so is the second
    for i, v in enumerate(_views(long_run)):
        w.write(4096 * KiB + i * 16 * KiB, v)
    w.flush()
    assert w.zero_copy_bytes == len(long_run)
    assert w.buffered_bytes == 2 * len(island) + 1
    got = _content(path)
    assert got[:16 * KiB] == got[1024 * KiB:1040 * KiB] == island
    assert got[4096 * KiB:] == long_run
    w.close()
    os.close(fd)


def test_at_most_two_batches_wait_for_the_disk(tmp_path, monkeypatch):
    path = str(tmp_path / 'f')
    fd, w = _writer(path, buffer_bytes=64 * KiB, buffers=3)
    gate = threading.Event()
    real = os.pwritev

    def slow(f, bufs, off):
        gate.wait(10)
        return real(f, bufs, off)

    monkeypatch.setattr(os, 'pwritev', slow)
    views = _views(_data(4 * 64 * KiB))
    done = []

    def writer():
        for i, v in enumerate(views):
            w.write(i * 16 * KiB, v)
            done.append(i)

    t = threading.Thread(target=writer)
    t.start()
    t.join(0.5)
    # one batch in the thread's pwritev, two queued: the 4th waits
    assert t.is_alive() and len(done) <= 3 * 4 + 1
    gate.set()
    t.join(10)
    w.flush()
    assert not t.is_alive() and len(done) == 16
    assert _content(path) == b''.join(bytes(v) for v in views)
    w.close()
    os.close(fd)


def test_a_full_disk_under_a_batch_is_raised_and_located(tmp_path,
                                                         monkeypatch):
    path = str(tmp_path / 'f')
    fd, w = _writer(path, buffer_bytes=64 * KiB)
    fakes.fail_writes(monkeypatch, from_offset=128 * KiB, name='pwritev')
    data = _data(256 * KiB)
    with pytest.raises(OSError) as err:
        for i, v in enumerate(_views(data)):
            w.write(i * 16 * KiB, v)
        w.flush()
    assert err.value.errno == errno.ENOSPC
    assert w.written_below() == 128 * KiB
    assert _content(path)[:128 * KiB] == data[:128 * KiB]
    w.close()
    os.close(fd)


@pytest.mark.parametrize('call', ['pwrite', 'pwritev'])
def test_a_refused_direct_write_falls_back_to_the_page_cache(
        tmp_path, monkeypatch, call):
    # pwrite: a buffered chunk; pwritev: a batch of a driver's blocks.
    path = str(tmp_path / 'f')
    fd, w = _writer(path)
    fakes.fail_writes(monkeypatch, OSError(errno.EINVAL, 'Invalid argument'),
                      fd=w.fd, name=call)
    data = _data(512 * KiB)
    if call == 'pwrite':
        w.write(0, data)
    else:
        for i, v in enumerate(_views(data)):
            w.write(i * 16 * KiB, v)
    w.flush()
    assert _content(path) == data
    assert w.zero_copy_bytes == w.direct_bytes == 0
    assert not w.direct
    w.close()
    os.close(fd)


def test_partfile_writes_views_of_a_sparse_chunk_block_by_block(tmp_path):
    """The sparse path slices a view into its data runs: still no copy."""
    path = str(tmp_path / 'f')
    p = partfile.PartFile(path, durable=True)
    p.open(fresh=True)
    p.prepare(1024 * KiB, None)
    assert p.use_background() == 'direct'
    chunk = bytearray(512 * KiB)
    chunk[256 * KiB:] = _data(256 * KiB)
    view, = _views(bytes(chunk), size=512 * KiB)
    p.write(0, view)
    p.write(512 * KiB, _views(bytes(512 * KiB), size=512 * KiB)[0])
    p.sync()
    assert p.writer.zero_copy_bytes == 256 * KiB
    assert os.stat(path).st_blocks * 512 <= 256 * KiB + 64 * KiB
    with open(path, 'rb') as f:
        assert f.read() == bytes(chunk) + bytes(512 * KiB)
    p.close()


def test_a_full_disk_through_partfile_is_a_destination_error(
        tmp_path, monkeypatch):
    path = str(tmp_path / 'f')
    p = partfile.PartFile(path, durable=True)
    p.open(fresh=True)
    p.prepare(256 * KiB, None)
    assert p.use_background() == 'direct'
    monkeypatch.setattr(os, 'pwritev', lambda *a: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))))
    with pytest.raises(exceptions.DestinationError) as err:
        for i, v in enumerate(_views(_data(256 * KiB), size=64 * KiB)):
            p.write(i * 64 * KiB, v)
        p.sync()
    assert str(err.value) == 'no space left on the device of %s' % path
    p.close()


@pytest.mark.parametrize('kind', ['bytes', 'bytearray', 'view', 'block'])
def test_zero_detection_of_every_kind_of_chunk(kind):
    def make(raw):
        if kind == 'bytes':
            return raw
        if kind == 'bytearray':
            return bytearray(raw)
        if kind == 'view':
            return memoryview(raw)[:]
        return _views(raw, size=len(raw))[0]

    n = 64 * KiB
    assert _utils.is_zero(make(bytes(n)))
    for at in (0, n // 2, n - 1):
        raw = bytearray(n)
        raw[at] = 1
        assert not _utils.is_zero(make(bytes(raw))), at
    assert _utils.is_zero(make(bytes(n))[4096:8192])


def test_a_batch_never_holds_more_views_than_one_pwritev_takes(
        tmp_path, monkeypatch):
    path = str(tmp_path / 'f')
    fd, w = _writer(path, buffer_bytes=256 * KiB)
    monkeypatch.setattr(writers, 'IOV_MAX', 8)
    real, calls = os.pwritev, []

    def counted(f, bufs, off):
        calls.append(len(bufs))
        return real(f, bufs, off)

    monkeypatch.setattr(os, 'pwritev', counted)
    data = _data(64 * PAGE)
    for i, v in enumerate(_views(data, size=PAGE)):
        w.write(i * PAGE, v)
    w.flush()
    assert calls == [8] * 8
    assert _content(path) == data and w.zero_copy_bytes == len(data)
    w.close()
    os.close(fd)


def test_a_flush_while_the_writer_waits_for_room_covers_its_batch(
        tmp_path, monkeypatch):
    """A checkpoint's flush must include the batch a full queue holds back.

    The stream's worker waits for room with a batch in hand; a flush from
    the checkpoint thread meanwhile may only return once every write that
    had returned (that batch's views included) is in the file.
    """
    path = str(tmp_path / 'f')
    fd, w = _writer(path, buffer_bytes=64 * KiB, buffers=2)
    allowed = _gate_pwritev(monkeypatch)
    data = _data(8 * 64 * KiB)
    views = _views(data)
    returned = []

    def worker():
        for i, v in enumerate(views):
            w.write(i * 16 * KiB, v)
            returned.append((i + 1) * 16 * KiB)

    t = threading.Thread(target=worker)
    t.start()
    t.join(0.5)
    # batch 1 in the thread's pwritev, batch 2 in the worker's hand
    assert t.is_alive() and returned[-1] == 7 * 16 * KiB
    held = returned[-1]
    flushed = threading.Event()
    f = threading.Thread(target=lambda: (w.flush(), flushed.set()))
    f.start()
    f.join(0.3)
    allowed.release()           # batch 1 only
    f.join(0.5)
    assert not flushed.is_set(), 'flush returned before batch 2 was written'
    for _ in range(64):
        allowed.release()
    f.join(10)
    assert flushed.is_set()
    with open(path, 'rb') as fh:
        assert fh.read(held) == data[:held]
    t.join(10)
    w.flush()
    assert _content(path) == data
    w.close()
    os.close(fd)


def test_two_flushes_while_the_queue_is_full_both_wait_for_the_batch(
        tmp_path, monkeypatch):
    """The checkpoint thread and the hasher may flush at the same time.

    Neither may return before the batch that waited for room is written:
    a hasher that read the file back then would hash holes instead of the
    stream's bytes.
    """
    path = str(tmp_path / 'f')
    fd, w = _writer(path, buffer_bytes=64 * KiB, buffers=2)
    allowed = _gate_pwritev(monkeypatch)
    data = _data(96 * KiB)
    for i, v in enumerate(_views(data)):
        w.write(i * 16 * KiB, v)    # batch 1 queued, 2 views held back
    flushes = [threading.Event(), threading.Event()]
    threads = [threading.Thread(target=lambda e=e: (w.flush(), e.set()))
               for e in flushes]
    for t in threads:
        t.start()
        t.join(0.2)
    allowed.release()               # batch 1 only
    for t in threads:
        t.join(0.3)
    assert not any(e.is_set() for e in flushes)
    for _ in range(8):
        allowed.release()
    for t in threads:
        t.join(10)
    assert all(e.is_set() for e in flushes)
    assert _content(path) == data
    w.close()
    os.close(fd)
