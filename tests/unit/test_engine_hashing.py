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

"""How the engine hashes and how many segments it opens."""

import hashlib

import pytest

from oslo_transfer import driver as driver_mod
from oslo_transfer.engine import partfile
from oslo_transfer.engine import segments as seg_mod
from oslo_transfer import exceptions
from oslo_transfer import fixture
from tests.unit import fakes

MiB = 1024 * 1024

sha = fakes.sha
make = fakes.make_transfer


@pytest.fixture
def read_back(monkeypatch):
    """Count the bytes the engine reads back from ``.part`` files."""
    counted = {'bytes': 0}
    real = partfile.PartFile.read

    def read(self, offset, length):
        data = real(self, offset, length)
        counted['bytes'] += len(data)
        return data

    monkeypatch.setattr(partfile.PartFile, 'read', read)
    return counted


@pytest.mark.parametrize('segments', [1, 4])
def test_hasher_takes_written_chunks_from_memory(tmp_path, read_back,
                                                 segments):
    store = fixture.MemoryStore()
    payload = fakes.data(8 * MiB + 5)
    store.put('memory://a', payload)
    with make(store, segments=segments) as t:
        res = t.copy('memory://a', str(tmp_path / 'out'),
                     checksum=sha(payload))
    assert res.digest == hashlib.sha256(payload).hexdigest()
    assert (tmp_path / 'out').read_bytes() == payload
    # One stream is hashed from memory as it arrives (the worker waits for
    # the hasher when 8 MiB are pending); with segments, pieces that land
    # far ahead of the hasher are read back, however fast it is.
    if segments == 1:
        assert read_back['bytes'] == 0


class _ReusingDriver(fixture.MemoryDriver):
    """Yields one buffer, overwritten after each chunk (C drivers do)."""

    def chunks(self, data, pos, end, ctx):
        buf = bytearray(self.chunk_size)
        while pos < end:
            n = min(self.chunk_size, end - pos)
            view = memoryview(buf)[:n]
            view[:] = data[pos:pos + n]
            yield view
            view[:] = b'\xff' * n
            pos += n


def _copy_one_stream(tmp_path, driver_class, store, size):
    """Copy ``size`` bytes as one verified stream; return the payload."""
    payload = fakes.data(size)
    store.put('memory://a', payload)
    with make(store, driver_class=driver_class, segments=1) as t:
        res = t.copy('memory://a', str(tmp_path / 'out'),
                     checksum=sha(payload))
    assert res.digest == hashlib.sha256(payload).hexdigest()
    assert (tmp_path / 'out').read_bytes() == payload
    return payload


def test_reused_driver_buffers_are_not_hashed_late(tmp_path):
    store = fixture.MemoryStore()
    _copy_one_stream(tmp_path, _ReusingDriver, store, 3 * MiB + 11)


class _CappedDriver(fixture.MemoryDriver):
    """Says in ``stat()`` how many segments are worth opening."""

    cap = None

    def stat(self, location, ctx):
        st = super().stat(location, ctx)
        return driver_mod.Stat(size=st.size, validator=st.validator,
                               ranges=st.ranges, max_segments=self.cap)


def _capped_driver(cap):
    return type('CappedDriver', (_CappedDriver,), {'cap': cap})


@pytest.mark.parametrize('cap, expected', [(None, 4), (1, 1), (2, 2),
                                           (16, 4)])
def test_stat_max_segments_caps_the_workers(tmp_path, monkeypatch, cap,
                                            expected):
    from oslo_transfer.engine import segments as seg_mod
    seen = []
    real = seg_mod.Fill.__init__

    def init(self, job, drv, loc, size, ranged, segments, *a):
        seen.append(segments)
        real(self, job, drv, loc, size, ranged, segments, *a)

    monkeypatch.setattr(seg_mod.Fill, '__init__', init)
    store = fixture.MemoryStore()
    payload = fakes.data(6 * MiB)
    store.put('memory://a', payload)
    with make(store, driver_class=_capped_driver(cap), segments=4) as t:
        t.copy('memory://a', str(tmp_path / 'out'), checksum=sha(payload))
    assert seen == [expected]
    assert (tmp_path / 'out').read_bytes() == payload


def test_corrupt_part_under_a_resumed_prefix_is_caught(tmp_path):
    # The in-memory hand-off must not hide bytes that differ on disk from
    # what a resumed prefix recorded: the prefix is re-hashed from .part.
    store = fixture.MemoryStore()
    payload = fakes.data(12 * MiB)
    store.put('memory://a', payload)
    store.fail_after('read', 9 * MiB)
    out = tmp_path / 'out'
    with make(store, segments=1, retries=0) as t:
        with pytest.raises(exceptions.ConnectionFailed):
            t.copy('memory://a', str(out), checksum=sha(payload))
        # Held: at least the 8 MiB whose digest the control file records.
        with open(str(out) + '.part', 'r+b') as f:
            f.seek(100)
            f.write(b'\0corrupt')
        res = t.copy('memory://a', str(out), checksum=sha(payload))
    assert out.read_bytes() == payload
    assert res.bytes_resumed == 0


@pytest.mark.parametrize('durable', [True, False])
def test_fsync_option_covers_data_and_control_file(tmp_path, monkeypatch,
                                                   durable):
    import os
    calls = []
    for name in ('fsync', 'fdatasync'):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda fd, _r=real, _n=name:
                            calls.append(_n) or _r(fd))
    store = fixture.MemoryStore()
    payload = fakes.data(4 * MiB)
    store.put('memory://a', payload)
    with make(store, segments=2, fsync=durable) as t:
        t.copy('memory://a', str(tmp_path / 'out'), checksum=sha(payload))
    assert (tmp_path / 'out').read_bytes() == payload
    if durable:
        # Data checkpoints, control-file rewrites, the file and its
        # directory before and after the rename.
        assert calls.count('fdatasync') >= 1 and calls.count('fsync') >= 3
    else:
        assert calls == []


def test_one_stream_reads_each_hole_with_one_request(tmp_path):
    store = fixture.MemoryStore()
    payload = fakes.data(5 * MiB + 3)
    store.put('memory://a', payload)
    store.fail_after('read', 2 * MiB)
    out = str(tmp_path / 'out')
    with make(store, segments=1, retries=0) as t:
        with pytest.raises(exceptions.ConnectionFailed):
            t.copy('memory://a', out, checksum=sha(payload))
        assert store.reads == [('memory://a', 0, len(payload))]
        del store.reads[:]
        res = t.copy('memory://a', out, checksum=sha(payload))
    # The rest in one ranged read from where the held bytes end.
    assert len(store.reads) == 1
    _url, start, length = store.reads[0]
    assert start == res.bytes_resumed and start + length == len(payload)
    assert open(out, 'rb').read() == payload


@pytest.fixture
def inline_hits(monkeypatch):
    """Count the chunks a worker hashed itself (``background_reads``)."""
    counted = {'inline': 0, 'handed': 0}
    real = seg_mod.Fill._hash_inline

    def hash_inline(self, pos, chunk, n):
        done = real(self, pos, chunk, n)
        counted['inline' if done else 'handed'] += 1
        return done

    monkeypatch.setattr(seg_mod.Fill, '_hash_inline', hash_inline)
    return counted


class _BackgroundDriver(fixture.MemoryDriver):
    """Its chunks arrive on a thread of its own (``background_reads``)."""

    background_reads = True


@pytest.mark.parametrize('background', [False, True])
def test_background_reads_hash_one_stream_in_the_reading_thread(
        tmp_path, read_back, inline_hits, background):
    store = fixture.MemoryStore()
    drv = _BackgroundDriver if background else fixture.MemoryDriver
    payload = _copy_one_stream(tmp_path, drv, store, 9 * MiB + 7)
    assert read_back['bytes'] == 0
    chunks = -(-len(payload) // drv.chunk_size)
    if background:
        assert inline_hits == {'inline': chunks, 'handed': 0}
    else:
        assert inline_hits['inline'] == 0


def test_background_reads_resume_around_held_ranges(tmp_path, inline_hits):
    # Four segments fail part-way: the .part holds ranges with holes
    # between them.  One stream then fills the holes; chunks that follow
    # the digest are hashed by the worker, the held ranges by the hash
    # loop (read back), and the digest is that of the whole object.
    store = fixture.MemoryStore()
    drv = _BackgroundDriver
    payload = fakes.data(8 * MiB + 3)
    store.put('memory://a', payload)
    out = str(tmp_path / 'out')
    store.fail_after('read', 5 * MiB, times=4)
    with make(store, driver_class=drv, segments=4, retries=0) as t:
        with pytest.raises(exceptions.ConnectionFailed):
            t.copy('memory://a', out, checksum=sha(payload))
    store.clear_faults()
    with make(store, driver_class=drv, segments=1) as t:
        res = t.copy('memory://a', out, checksum=sha(payload))
    assert res.bytes_resumed > 0
    assert res.digest == hashlib.sha256(payload).hexdigest()
    assert open(out, 'rb').read() == payload
    assert inline_hits['inline'] > 0 and inline_hits['handed'] > 0


def test_background_reads_still_catch_a_wrong_checksum(tmp_path):
    store = fixture.MemoryStore()
    payload = fakes.data(3 * MiB)
    store.put('memory://a', payload)
    out = tmp_path / 'out'
    with make(store, driver_class=_BackgroundDriver, segments=1) as t:
        with pytest.raises(exceptions.ChecksumMismatch) as err:
            t.copy('memory://a', str(out), checksum=sha(payload + b'x'))
    assert err.value.actual == hashlib.sha256(payload).hexdigest()
    assert err.value.actual in str(err.value)
    # Known bad bytes: nothing is kept to resume from.
    assert sorted(p.name for p in tmp_path.iterdir()) == []
