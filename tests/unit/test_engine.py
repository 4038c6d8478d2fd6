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

"""The engine against in-memory drivers: resume, verify, splice, lock."""

import errno
import hashlib
import json
import os
import threading
import time

import futurist
import pytest

import oslo_transfer
from oslo_transfer import checksum as checksum_mod
from oslo_transfer import driver as driver_mod
from oslo_transfer.engine import stream as stream_mod
from oslo_transfer import exceptions
from oslo_transfer import fixture
from oslo_transfer import testing
from oslo_transfer import transfer as transfer_mod
from tests.unit import fakes

MiB = 1024 * 1024


def sha(b):
    return 'sha256:' + hashlib.sha256(b).hexdigest()


@pytest.fixture
def store():
    return fixture.MemoryStore()


make = fakes.make_transfer


def test_copy_segments_and_digest(store, tmp_path):
    payload = fakes.data(5 * MiB + 17)
    store.put('memory://a', payload)
    with make(store, segments=4) as t:
        res = t.copy('memory://a', str(tmp_path / 'out'),
                     checksum=sha(payload))
    assert (tmp_path / 'out').read_bytes() == payload
    assert res.bytes_transferred == len(payload)
    assert res.digest == hashlib.sha256(payload).hexdigest()
    assert len({off for _u, off, _n in store.reads}) == 6  # six 1 MiB pieces
    assert sorted(os.listdir(tmp_path)) == ['out']


def test_glance_hash_pair(store, tmp_path):
    payload = fakes.data(MiB)
    store.put('memory://a', payload)
    with make(store) as t:
        res = t.copy('memory://a', str(tmp_path / 'out'), checksum={
            'os_hash_algo': 'sha512',
            'os_hash_value': hashlib.sha512(payload).hexdigest()})
    assert res.algorithm == 'sha512'


def test_checksum_mismatch_leaves_nothing(store, tmp_path):
    store.put('memory://a', fakes.data(2 * MiB))
    with make(store) as t:
        with pytest.raises(exceptions.ChecksumMismatch) as ei:
            t.copy('memory://a', str(tmp_path / 'out'), checksum=sha(b'other'))
    assert 'expected' in str(ei.value)
    assert os.listdir(tmp_path) == []


def test_resume_after_connection_drop_keeps_bytes(store, tmp_path):
    payload = fakes.data(6 * MiB)
    store.put('memory://a', payload)
    store.fail_after('read', 3 * MiB)
    with make(store, segments=1, retries=0) as t:
        with pytest.raises(exceptions.ConnectionFailed):
            t.copy('memory://a', str(tmp_path / 'out'), checksum=sha(payload))
        assert not (tmp_path / 'out').exists()
        ctl = json.loads((tmp_path / 'out.part.ctl').read_text())
        held = sum(e - s for s, e in ctl['ranges'])
        assert held >= 2 * MiB
        assert 'memory://a' == ctl['source']
        res = t.copy('memory://a', str(tmp_path / 'out'),
                     checksum=sha(payload))
    assert (tmp_path / 'out').read_bytes() == payload
    assert res.bytes_resumed == held
    assert res.bytes_transferred == len(payload) - held


def test_retry_in_place(store, tmp_path):
    payload = fakes.data(4 * MiB)
    store.put('memory://a', payload)
    store.fail_after('read', MiB, times=2)
    with make(store, segments=2, retries=3) as t:
        res = t.copy('memory://a', str(tmp_path / 'out'),
                     checksum=sha(payload))
    assert (tmp_path / 'out').read_bytes() == payload
    assert res.bytes_transferred < 2 * len(payload)


def test_source_changed_restarts_or_errors(store, tmp_path):
    old = fakes.data(4 * MiB, b'old')
    new = fakes.data(4 * MiB, b'new')
    store.put('memory://a', old)
    store.fail_after('read', 2 * MiB)
    out = str(tmp_path / 'out')
    with make(store, segments=1, retries=0) as t:
        with pytest.raises(exceptions.ConnectionFailed):
            t.copy('memory://a', out)
    store.put('memory://a', new)
    with make(store, on_source_change='error') as t:
        with pytest.raises(exceptions.SourceChanged) as ei:
            t.copy('memory://a', out)
        assert 'changed' in str(ei.value)
        assert os.path.exists(out + '.part')
    with make(store) as t:
        res = t.copy('memory://a', out, checksum=sha(new))
    assert open(out, 'rb').read() == new
    assert res.bytes_resumed == 0


def test_server_ignoring_ranges_never_corrupts(store, tmp_path):
    payload = fakes.data(5 * MiB)
    store.put('memory://a', payload)
    store.ranges = False
    with make(store, segments=4) as t:
        t.copy('memory://a', str(tmp_path / 'out'), checksum=sha(payload))
    assert (tmp_path / 'out').read_bytes() == payload


def test_range_ignored_mid_transfer_switches_to_stream(store, tmp_path):
    payload = fakes.data(5 * MiB)
    store.put('memory://a', payload)
    drv = fixture.make_driver_class(store)
    orig = drv.read
    calls = []

    def read(self, loc, off, length, ctx):
        calls.append(off)
        if off and len(calls) > 2:
            raise exceptions.RangeNotSupported('now ignoring Range')
        return orig(self, loc, off, length, ctx)

    drv.read = read
    conf = testing.make_conf({('oslo_transfer', 'segment_threshold'): 0,
                              ('oslo_transfer', 'segment_size'): MiB}, [drv])
    with transfer_mod.Transfer(conf, drivers=[drv]) as t:
        t.copy('memory://a', str(tmp_path / 'out'), checksum=sha(payload),
               segments=1)
    assert (tmp_path / 'out').read_bytes() == payload


def test_truncated_read_is_an_error_not_data(store, tmp_path):
    payload = fakes.data(3 * MiB)
    store.put('memory://a', payload)
    store.truncate_reads(2 * MiB)
    with make(store, segments=1, retries=0) as t:
        with pytest.raises(exceptions.ProtocolError) as ei:
            t.copy('memory://a', str(tmp_path / 'out'))
    assert 'ended after' in str(ei.value)
    assert not (tmp_path / 'out').exists()


def test_fallback_to_next_location_keeps_verified_bytes(tmp_path):
    payload = fakes.data(4 * MiB)
    s1, s2 = fixture.MemoryStore(), fixture.MemoryStore()
    s1.put('one://x', payload)
    s2.put('two://x', payload)
    s1.fail_after('read', 2 * MiB, times=99)
    d1 = fixture.make_driver_class(s1, 'one', schemes=('one',))
    d2 = fixture.make_driver_class(s2, 'two', schemes=('two',))
    conf = testing.make_conf({('oslo_transfer', 'retries'): 0,
                              ('oslo_transfer', 'segment_threshold'): 0,
                              ('oslo_transfer', 'segment_size'): MiB,
                              ('oslo_transfer', 'checkpoint_bytes'): MiB,
                              ('oslo_transfer', 'multi_source'): False},
                             [d1, d2])
    src = oslo_transfer.Source(urls=['one://x', 'two://x'])
    with transfer_mod.Transfer(conf, drivers=[d1, d2]) as t:
        res = t.copy(src, str(tmp_path / 'out'), checksum=sha(payload),
                     segments=1)
    assert res.driver == 'two'
    assert res.attempts and res.attempts[0][1] == 'one'
    assert res.bytes_resumed >= MiB
    assert (tmp_path / 'out').read_bytes() == payload
    # One location at a time: what each one sent, kept or not.
    assert res.bytes_by_location['one://x'] == 2 * MiB
    assert res.bytes_by_location['two://x'] == len(payload) - \
        res.bytes_resumed


def test_stat_timeout_goes_to_next_location_without_retries(tmp_path):
    payload = fakes.data(MiB)
    s1, s2 = fixture.MemoryStore(), fixture.MemoryStore()
    s2.put('two://x', payload)
    calls = []

    d1 = fixture.make_driver_class(s1, 'one', schemes=('one',))

    def stat(self, location, ctx):
        calls.append(location.url)
        raise exceptions.TransferTimeout('no answer from one://x in 60s')

    d1.stat = stat
    d2 = fixture.make_driver_class(s2, 'two', schemes=('two',))
    conf = testing.make_conf({('oslo_transfer', 'retries'): 5,
                              ('oslo_transfer', 'retry_backoff'): 0.0},
                             [d1, d2])
    src = oslo_transfer.Source(urls=['one://x', 'two://x'])
    with transfer_mod.Transfer(conf, drivers=[d1, d2]) as t:
        res = t.copy(src, str(tmp_path / 'out'), checksum=sha(payload))
    assert calls == ['one://x']
    assert res.driver == 'two'
    assert 'no answer' in res.attempts[0][2]
    assert (tmp_path / 'out').read_bytes() == payload


def test_whole_file_driver_failure_keeps_recorded_ranges(tmp_path):
    # A COPY_TO_PATH driver (BitTorrent) records pieces as it verifies them;
    # what it recorded before failing must reach the control file even when
    # the last periodic save was less than a second earlier.
    payload = fakes.data(2 * MiB)
    st = fixture.MemoryStore()
    st.put('whole://x', payload)

    def copy_to_path(self, location, target, ctx, progress=None):
        with open(target.path, 'r+b') as f:
            f.write(payload[:MiB])
        target.record(0, MiB)
        raise exceptions.ConnectionFailed('peer went away')

    caps = fakes.ENGINE_CAPS | driver_mod.Capability.COPY_TO_PATH
    d = fixture.make_driver_class(st, 'whole', schemes=('whole',),
                                  capabilities=caps)
    d.copy_to_path = copy_to_path
    conf = testing.make_conf({('oslo_transfer', 'retries'): 0}, [d])
    out = str(tmp_path / 'out')
    with transfer_mod.Transfer(conf, drivers=[d]) as t:
        with pytest.raises(exceptions.ConnectionFailed):
            t.copy('whole://x', out, checksum=sha(payload))
    with open(out + '.part.ctl') as f:
        assert json.load(f)['ranges'] == [[0, MiB]]
    assert not os.path.exists(out)


def test_whole_file_ranges_are_synced_before_they_are_recorded(
        tmp_path, monkeypatch):
    from oslo_transfer.engine import journal as journal_mod
    from oslo_transfer.engine import partfile as partfile_mod
    events = []
    real_sync, real_save = partfile_mod.PartFile.sync, journal_mod.Journal.save

    def sync(self):
        events.append('sync')
        return real_sync(self)

    def save(self):
        events.append('save %s' % list(self.ranges))
        return real_save(self)

    monkeypatch.setattr(partfile_mod.PartFile, 'sync', sync)
    monkeypatch.setattr(journal_mod.Journal, 'save', save)
    payload = fakes.data(2 * MiB)
    st = fixture.MemoryStore()
    st.put('whole://x', payload)

    def copy_to_path(self, location, target, ctx, progress=None):
        with open(target.path, 'r+b') as f:
            f.write(payload[:MiB])
        target.record(0, MiB)
        raise exceptions.ConnectionFailed('peer went away')

    caps = fakes.ENGINE_CAPS | driver_mod.Capability.COPY_TO_PATH
    d = fixture.make_driver_class(st, 'whole', schemes=('whole',),
                                  capabilities=caps)
    d.copy_to_path = copy_to_path
    conf = testing.make_conf({('oslo_transfer', 'retries'): 0}, [d])
    with transfer_mod.Transfer(conf, drivers=[d]) as t:
        with pytest.raises(exceptions.ConnectionFailed):
            t.copy('whole://x', str(tmp_path / 'out'))
    first = events.index('save [(0, %d)]' % MiB)
    assert 'sync' in events[:first], events


def test_no_splice_without_checksum(tmp_path):
    payload = fakes.data(4 * MiB)
    s1, s2 = fixture.MemoryStore(), fixture.MemoryStore()
    s1.put('one://x', payload)
    s2.put('two://x', payload)
    s1.fail_after('read', 2 * MiB, times=99)
    d1 = fixture.make_driver_class(s1, 'one', schemes=('one',))
    d2 = fixture.make_driver_class(s2, 'two', schemes=('two',))
    conf = testing.make_conf({('oslo_transfer', 'retries'): 0,
                              ('oslo_transfer', 'segment_threshold'): 0,
                              ('oslo_transfer', 'segment_size'): MiB,
                              ('oslo_transfer', 'checkpoint_bytes'): MiB},
                             [d1, d2])
    src = oslo_transfer.Source(urls=['one://x', 'two://x'])
    with transfer_mod.Transfer(conf, drivers=[d1, d2]) as t:
        res = t.copy(src, str(tmp_path / 'out'), segments=1)
    assert res.bytes_resumed == 0
    assert (tmp_path / 'out').read_bytes() == payload


def test_corrupted_part_is_detected_on_resume(store, tmp_path):
    payload = fakes.data(6 * MiB)
    store.put('memory://a', payload)
    store.fail_after('read', 5 * MiB)
    out = str(tmp_path / 'out')
    with make(store, segments=1, retries=0) as t:
        with pytest.raises(exceptions.ConnectionFailed):
            t.copy('memory://a', out, checksum=sha(payload))
    with open(out + '.part', 'r+b') as f:
        f.seek(10)
        f.write(b'CORRUPT')
    with make(store) as t:
        res = t.copy('memory://a', out, checksum=sha(payload))
    assert res.bytes_resumed == 0
    assert open(out, 'rb').read() == payload


def test_existing_destination(store, tmp_path):
    payload = fakes.data(MiB)
    store.put('memory://a', payload)
    out = tmp_path / 'out'
    with make(store) as t:
        t.copy('memory://a', str(out), checksum=sha(payload))
        res = t.copy('memory://a', str(out), checksum=sha(payload))
        assert res.bytes_transferred == 0 and res.driver is None
        out.write_bytes(b'different')
        with pytest.raises(exceptions.DestinationExists):
            t.copy('memory://a', str(out), checksum=sha(payload))
        assert out.read_bytes() == b'different'
        with pytest.raises(exceptions.DestinationExists):
            t.copy('memory://a', str(out), if_exists='error')
        t.copy('memory://a', str(out), checksum=sha(payload),
               if_exists='replace')
        assert out.read_bytes() == payload


def test_mode_and_private_part(store, tmp_path):
    payload = fakes.data(2 * MiB)
    store.put('memory://a', payload)
    store.fail_after('read', MiB)
    out = str(tmp_path / 'out')
    with make(store, segments=1, retries=0) as t:
        with pytest.raises(exceptions.ConnectionFailed):
            t.copy('memory://a', out)
        assert os.stat(out + '.part').st_mode & 0o777 == 0o600
        assert os.stat(out + '.part.ctl').st_mode & 0o777 == 0o600
        t.copy('memory://a', out, mode=0o644)
    assert os.stat(out).st_mode & 0o777 == 0o644


def test_symlinked_part_refused(store, tmp_path):
    store.put('memory://a', fakes.data(MiB))
    victim = tmp_path / 'victim'
    victim.write_bytes(b'precious')
    os.symlink(victim, tmp_path / 'out.part')
    with make(store) as t:
        with pytest.raises(exceptions.DestinationError) as ei:
            t.copy('memory://a', str(tmp_path / 'out'))
    assert 'symlink' in str(ei.value)
    assert victim.read_bytes() == b'precious'


def test_sparse_output(store, tmp_path):
    payload = fakes.data(MiB) + bytes(8 * MiB) + fakes.data(MiB, b'z')
    store.put('memory://a', payload)
    with make(store) as t:
        t.copy('memory://a', str(tmp_path / 'out'), checksum=sha(payload))
    st = os.stat(tmp_path / 'out')
    assert st.st_size == len(payload)
    assert st.st_blocks * 512 < 4 * MiB
    assert (tmp_path / 'out').read_bytes() == payload


def test_sparse_off(store, tmp_path):
    payload = bytes(4 * MiB)
    store.put('memory://a', payload)
    with make(store, sparse=False) as t:
        t.copy('memory://a', str(tmp_path / 'out'))
    assert os.stat(tmp_path / 'out').st_blocks * 512 >= 4 * MiB


class _SlowDriver(fixture.MemoryDriver):
    """64 KiB every 10 ms (about 6 MiB/s)."""

    def chunks(self, data, start, end, ctx):
        for chunk in super().chunks(data, start, end, ctx):
            time.sleep(0.01)
            yield chunk


def test_cancel_leaves_resumable_state(store, tmp_path):
    payload = fakes.data(8 * MiB)
    store.put('memory://a', payload)
    out = str(tmp_path / 'out')
    seen = []
    with make(store, driver_class=_SlowDriver, segments=2) as t:
        h = t.submit('memory://a', out, checksum=sha(payload),
                     progress=lambda d, n: seen.append(d))
        time.sleep(0.3)
        h.cancel()
        with pytest.raises(exceptions.Cancelled):
            h.result(timeout=10)
        assert not os.path.exists(out)
        with open(out + '.part.ctl') as f:
            held = sum(e - s for s, e in json.load(f)['ranges'])
        assert 0 < held < len(payload)
        res = t.copy('memory://a', out, checksum=sha(payload))
    assert open(out, 'rb').read() == payload
    assert res.size == len(payload)
    assert res.bytes_resumed == held


def test_cancel_before_any_byte_leaves_nothing(store, tmp_path):
    store.put('memory://a', fakes.data(MiB))
    store.pause_reads()
    out = str(tmp_path / 'out')
    with make(store, segments=2) as t:
        h = t.submit('memory://a', out)
        time.sleep(0.3)
        h.cancel()
        with pytest.raises(exceptions.Cancelled):
            h.result(timeout=10)
    assert os.listdir(tmp_path) == []


def test_submit_runs_on_the_callers_futurist_executor(store, tmp_path):
    payload = fakes.data(2 * MiB)
    store.put('memory://a', payload)
    pool = futurist.ThreadPoolExecutor(max_workers=2)
    drv = fixture.make_driver_class(store)
    conf = testing.make_conf({('oslo_transfer', 'retry_backoff'): 0.0}, [drv])
    try:
        with transfer_mod.Transfer(conf, drivers=[drv], executor=pool) as t:
            h = t.submit('memory://a', str(tmp_path / 'out'),
                         checksum=sha(payload))
            assert h.result(timeout=30).size == len(payload)
            # futurist counts a task in a done-callback, which runs after
            # result() has woken up: wait for it rather than race it.
            deadline = time.monotonic() + 10
            while (pool.statistics.executed < 1 and
                   time.monotonic() < deadline):
                time.sleep(0.01)
            assert pool.statistics.executed == 1
        # close() left the caller's executor running.
        assert pool.alive
        assert pool.submit(lambda: 42).result(timeout=10) == 42
    finally:
        pool.shutdown()
    assert (tmp_path / 'out').read_bytes() == payload


def test_two_writers_one_destination(store, tmp_path):
    payload = fakes.data(6 * MiB)
    store.put('memory://a', payload)
    out = str(tmp_path / 'out')
    results = []
    with make(store, segments=2) as t:
        threads = [threading.Thread(target=lambda: results.append(
            t.copy('memory://a', out, checksum=sha(payload))))
            for _ in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert sorted(r.bytes_transferred for r in results) == [0, len(payload)]
    assert open(out, 'rb').read() == payload
    assert os.listdir(tmp_path) == ['out']


def test_progress_reports_total(store, tmp_path):
    payload = fakes.data(3 * MiB)
    store.put('memory://a', payload)
    seen = []
    with make(store) as t:
        t.copy('memory://a', str(tmp_path / 'out'),
               progress=lambda d, n: seen.append((d, n)))
    assert seen[-1] == (len(payload), len(payload))


def test_rate_limit(store, tmp_path):
    payload = fakes.data(2 * MiB)
    store.put('memory://a', payload)
    with make(store, segments=1) as t:
        res = t.copy('memory://a', str(tmp_path / 'out'), rate=4 * MiB)
    # 2 MiB at 4 MiB/s minus the burst allowance (1 MiB) takes >= 0.25 s.
    assert res.elapsed >= 0.2


def test_upload_holds_back_last_chunk(store, tmp_path):
    with make(store) as t:
        payload = fakes.data(MiB)
        res = t.upload(payload, 'memory://up', checksum=sha(payload))
        assert store.get('memory://up') == payload
        assert res.bytes_transferred == len(payload)
        with pytest.raises(exceptions.ChecksumMismatch):
            t.upload(iter([payload]), 'memory://bad', checksum=sha(b'x'))
        assert 'memory://bad' not in store


def test_upload_to_local_path(store, tmp_path):
    with make(store) as t:
        payload = fakes.data(MiB)
        t.upload(iter([payload[:1000], payload[1000:]]),
                 str(tmp_path / 'up'), checksum=sha(payload))
    assert (tmp_path / 'up').read_bytes() == payload


def test_open_stream_and_resume(store, tmp_path):
    payload = fakes.data(3 * MiB)
    store.put('memory://a', payload)
    store.fail_after('read', MiB)
    with make(store) as t:
        with t.open('memory://a', checksum=sha(payload)) as r:
            got = b''.join(r)
        assert got == payload
        with t.open('memory://a', offset=100, length=5000) as r:
            assert r.read() == payload[100:5100]
        with pytest.raises(exceptions.ChecksumMismatch):
            with t.open('memory://a', checksum=sha(b'x')) as r:
                while r.read(65536):
                    pass


def test_checksum_conflict_is_value_error(store, tmp_path):
    store.put('memory://a', b'abc')
    src = oslo_transfer.Source(urls=['memory://a'], checksum=sha(b'abc'))
    with make(store) as t:
        with pytest.raises(ValueError):
            t.copy(src, str(tmp_path / 'o'), checksum=sha(b'abd'))
    assert os.listdir(tmp_path) == []


def test_url_policy(store, tmp_path):
    store.put('memory://a', b'abc')
    with make(store, allowed_schemes=['https']) as t:
        with pytest.raises(exceptions.URLNotAllowed):
            t.copy('memory://a', str(tmp_path / 'o'))


def _resumable_store_driver(store, written):
    drv = fixture.make_driver_class(
        store, capabilities=fakes.Cap.READ | fakes.Cap.WRITE |
        fakes.Cap.RESUMABLE_WRITE)
    offsets = []
    orig = drv.write

    def write(self, location, chunks, ctx, offset=0, size=None):
        offsets.append(offset)
        # written_size() below makes the server's bytes up: the store
        # stages what it is given from zero.
        return orig(self, location, chunks, ctx, 0, size)

    drv.write = write
    drv.written_size = lambda self, loc, ctx: written[0]
    return drv, offsets


def test_upload_resumes_across_calls_only_with_a_marker(store, tmp_path):
    payload = fakes.data(2 * MiB)
    src = tmp_path / 'src'
    src.write_bytes(payload)
    written = [MiB]
    drv, offsets = _resumable_store_driver(store, written)
    conf = testing.make_conf({('oslo_transfer', 'state_dir'):
                              str(tmp_path / 'state')}, [drv])
    with transfer_mod.Transfer(conf, drivers=[drv]) as t:
        # No marker: a partial object of unknown origin is not trusted.
        t.upload(str(src), 'memory://up', checksum=sha(payload))
        assert offsets == [0]
        # A marker left by an interrupted call of the same data: continue
        # at the server's size, hashing the skipped bytes locally.
        marker = stream_mod.UploadMarker(conf, oslo_transfer.Location(
            'memory://up'), len(payload), checksum_mod.parse(sha(payload)),
            stream_mod.DataSource(str(src), 1024))
        marker.create()
        res = t.upload(str(src), 'memory://up', checksum=sha(payload))
    assert offsets == [0, MiB]
    assert res.bytes_resumed == MiB
    assert not os.listdir(tmp_path / 'state' / 'uploads')


def test_disk_full_in_the_writer_thread_keeps_what_landed(store, tmp_path,
                                                          monkeypatch):
    # fsync=false: one stream is written by the engine's writer thread.
    # Its ENOSPC at 5 MiB must not cost the 5 MiB before it: no periodic
    # checkpoint runs (checkpoint_bytes is larger than the object), so
    # only the final one can record them.
    payload = fakes.data(8 * MiB)
    store.put('memory://a', payload)
    out = str(tmp_path / 'out')
    real = fakes.fail_writes(monkeypatch, from_offset=5 * MiB,
                             path_suffix='out.part')
    with make(store, segments=1, retries=0, fsync=False,
              checkpoint_bytes=64 * MiB) as t:
        with pytest.raises(exceptions.DestinationError) as ei:
            t.copy('memory://a', out, checksum=sha(payload))
    assert 'no space left on the device of %s.part' % out in str(ei.value)
    monkeypatch.setattr(os, 'pwrite', real)     # room again
    _held_prefix_resumes(store, out, payload, 5 * MiB, fsync=False)


def _held_prefix_resumes(store, out, payload, held, **options):
    """After a failure: no DEST and ``[0, held)`` recorded and on disk.

    A rerun (with ``options``) resumes exactly that.
    """
    assert not os.path.exists(out)
    with open(out + '.part.ctl') as f:
        assert json.load(f)['ranges'] == [[0, held]]
    with open(out + '.part', 'rb') as f:
        assert f.read(held) == payload[:held]
    with make(store, segments=1, **options) as t:
        res = t.copy('memory://a', out, checksum=sha(payload))
    assert res.bytes_resumed == held
    with open(out, 'rb') as f:
        assert f.read() == payload


def test_disk_full_under_zero_copy_writes_keeps_what_landed(
        store, tmp_path, monkeypatch):
    # A durable stream of a driver's aligned blocks, written with one
    # O_DIRECT pwritev per 4 MiB batch: the batch at 4 MiB fails with
    # ENOSPC.  Only the final checkpoint runs (checkpoint_bytes is larger
    # than the object); it must record the first batch, not lose it.
    from oslo_transfer.engine import writers
    payload = fakes.data(8 * MiB)
    store.put('memory://a', payload)
    aligned = fakes.AlignedBlocksDriver
    out = str(tmp_path / 'out')
    real = os.pwritev
    batches = []

    def pwritev(fd, bufs, off):
        if os.readlink('/proc/self/fd/%d' % fd).endswith('out.part'):
            batches.append((off, sum(len(b) for b in bufs)))
            if off >= 4 * MiB:
                raise OSError(errno.ENOSPC, 'No space left on device')
        return real(fd, bufs, off)

    monkeypatch.setattr(os, 'pwritev', pwritev)
    seen = []
    closed = writers.DirectWriter._closed
    monkeypatch.setattr(writers.DirectWriter, '_closed', lambda self: (
        seen.append(self.zero_copy_bytes), closed(self)))
    with make(store, driver_class=aligned, segments=1, retries=0,
              checkpoint_bytes=64 * MiB) as t:
        with pytest.raises(exceptions.DestinationError) as ei:
            t.copy('memory://a', out, checksum=sha(payload))
    assert str(ei.value) == 'no space left on the device of %s.part' % out
    assert batches == [(0, 4 * MiB), (4 * MiB, 4 * MiB)]
    assert seen == [4 * MiB]
    monkeypatch.setattr(os, 'pwritev', real)     # room again
    _held_prefix_resumes(store, out, payload, 4 * MiB, driver_class=aligned)


def test_one_stream_behind_a_slow_hasher_reads_nothing_back(
        store, tmp_path, monkeypatch):
    """A chunk counts as written only once the hasher holds it.

    With the hand-off full, the worker waits for room; had its chunk
    counted as written already, the hasher could catch up meanwhile and
    read it back from the ``.part`` (a read that, beside O_DIRECT writes,
    the page cache does not keep coherent).
    """
    from oslo_transfer.engine import partfile
    from oslo_transfer.engine import segments
    payload = fakes.data(4 * MiB)
    store.put('memory://a', payload)
    monkeypatch.setattr(segments, 'HANDOFF_BYTES', 128 * 1024)

    class SlowToWake(threading.Condition):
        # a worker waiting for room wakes up late: the hasher empties the
        # hand-off meanwhile
        def wait(self, timeout=None):
            woken = super().wait(timeout)
            self.release()
            time.sleep(0.01)
            self.acquire()
            return woken

    init = segments.Fill.__init__

    def fill_init(self, *a, **k):
        init(self, *a, **k)
        self.cond = SlowToWake()

    monkeypatch.setattr(segments.Fill, '__init__', fill_init)
    reads = []
    real = partfile.PartFile.read
    monkeypatch.setattr(partfile.PartFile, 'read',
                        lambda self, o, n: reads.append(n) or
                        real(self, o, n))
    with make(store, segments=1) as t:
        res = t.copy('memory://a', str(tmp_path / 'out'),
                     checksum=sha(payload))
    assert res.digest == hashlib.sha256(payload).hexdigest()
    assert reads == []
    assert (tmp_path / 'out').read_bytes() == payload
