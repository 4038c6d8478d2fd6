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

"""oslo_transfer.fixture: the memory driver, its faults, the fixture."""

import hashlib
import io
import os
import sys
import threading
import time

import pytest
from stevedore import extension

import oslo_transfer
from oslo_transfer import api
from oslo_transfer import driver
from oslo_transfer.engine import throttle
from oslo_transfer import exceptions
from oslo_transfer import fixture
from oslo_transfer import transfer as transfer_mod

MiB = 1024 * 1024
URL = 'memory://glance/images/1'


def _data(size, seed=b'fixture'):
    out = bytearray()
    i = 0
    while len(out) < size:
        out += hashlib.sha512(seed + i.to_bytes(8, 'big')).digest()
        i += 1
    return bytes(out[:size])


def _sha(data):
    return 'sha256:' + hashlib.sha256(data).hexdigest()


PAYLOAD = _data(3 * MiB + 5)


@pytest.fixture
def fix():
    with fixture.TransferFixture(segments=1) as f:
        f.store.put(URL, PAYLOAD)
        yield f


def _copy(fix, out, url=URL, checksum=_sha(PAYLOAD), **kwargs):
    return fix.transfer.copy(url, str(out), checksum=checksum, **kwargs)


# -- process-wide state ------------------------------------------------------

def test_limits_are_the_transfers_and_cleanup_puts_the_interval_back():
    before = set(vars(throttle))
    interval = sys.getswitchinterval()
    f = fixture.TransferFixture(process_rate_limit=3 * MiB,
                                max_connections_per_origin=2,
                                switch_interval=interval * 3)
    with f:
        # The fixture's Transfer holds its limits in its own scheduler ...
        assert f.transfer.scheduler.rate == 3 * MiB
        assert f.transfer.scheduler.limit == 2
        assert sys.getswitchinterval() == pytest.approx(interval * 3)
        # ... which no other Transfer shares.
        with transfer_mod.Transfer(drivers=[]) as other:
            assert other.scheduler.rate == 0
            assert other.scheduler is not f.transfer.scheduler
    # nothing left behind in the module
    assert set(vars(throttle)) == before
    assert not any(isinstance(v, (throttle.Scheduler, throttle.TokenBucket))
                   for v in vars(throttle).values())
    assert sys.getswitchinterval() == pytest.approx(interval)
    assert f.transfer._closed


def test_module_api_uses_the_fixture_and_is_put_back(tmp_path):
    before = api._default
    with fixture.TransferFixture(module_api=True) as f:
        f.store.put(URL, PAYLOAD)
        res = oslo_transfer.copy(URL, str(tmp_path / 'out'),
                                 checksum=_sha(PAYLOAD))
        assert res.driver == 'memory'
        assert oslo_transfer.plan(URL).candidates[0].driver == 'memory'
    assert api._default is before
    assert (tmp_path / 'out').read_bytes() == PAYLOAD


def test_a_default_transfer_made_during_the_fixture_is_closed(
        tmp_path, monkeypatch):
    monkeypatch.setattr(api, '_default', None)
    src = tmp_path / 'src'
    src.write_bytes(b'local bytes')
    with fixture.TransferFixture():
        # Code under test that calls the module-level API without the
        # fixture's help gets the process's default Transfer.
        oslo_transfer.copy(str(src), str(tmp_path / 'dst'))
        made = api._default
        assert made is not None
    assert api._default is None
    assert made._closed
    assert (tmp_path / 'dst').read_bytes() == b'local bytes'


def test_state_path_is_a_temporary_directory_removed_on_cleanup():
    with fixture.TransferFixture() as f:
        path = f.conf.oslo_transfer.state_path
        assert os.path.isdir(path)
        assert f.conf.oslo_transfer.state_dir.startswith(path)
    assert not os.path.exists(path)


# -- how it is built ---------------------------------------------------------

def test_memory_driver_has_no_entry_point():
    mgr = extension.ExtensionManager(transfer_mod.DRIVER_NAMESPACE,
                                     invoke_on_load=False)
    assert mgr.names(), 'no driver entry points: is the package installed?'
    assert 'memory' not in mgr.names()
    assert not [e.name for e in mgr
                if issubclass(e.plugin, fixture.MemoryDriver)]
    setup_cfg = os.path.join(os.path.dirname(__file__), '..', '..',
                             'setup.cfg')
    with open(setup_cfg) as f:
        assert 'fixture' not in f.read()
    # and a production Transfer does not load it
    with oslo_transfer.Transfer() as t:
        assert 'memory' not in [d.name for d in t.drivers]


def test_options_of_any_group_and_extra_drivers_by_name():
    with fixture.TransferFixture(
            drivers=['http'], retries=0,
            overrides={('oslo_transfer_http', 'max_redirects'): 1}) as f:
        assert f.conf.oslo_transfer.retries == 0
        assert f.conf.oslo_transfer.retry_backoff == 0.0
        assert f.conf.oslo_transfer_http.max_redirects == 1
        assert [d.name for d in f.transfer.drivers] == ['memory', 'http']


def test_an_unknown_option_fails_the_setup():
    with pytest.raises(Exception) as ei:
        with fixture.TransferFixture(no_such_option=1):
            pass
    assert 'no_such_option' in str(ei.value)


def test_schemes_let_code_that_builds_https_urls_read_the_store(tmp_path):
    url = 'https://glance.example.com:9292/v2/images/1/file'
    with fixture.TransferFixture(schemes=('memory', 'https')) as f:
        f.store.put(url, PAYLOAD)
        res = f.transfer.copy(url, str(tmp_path / 'out'),
                              checksum=_sha(PAYLOAD))
    assert res.driver == 'memory'
    assert (tmp_path / 'out').read_bytes() == PAYLOAD


def test_capabilities_without_ranges_rule_out_offsets(fix):
    with fixture.TransferFixture(
            store=fix.store, capabilities=driver.Capability.READ) as f:
        with pytest.raises(exceptions.NoDriverFound):
            f.transfer.open(URL, offset=10)
        with f.transfer.open(URL) as r:
            assert r.read() == PAYLOAD


def test_an_unbound_driver_class_is_refused():
    with pytest.raises(TypeError):
        fixture.MemoryDriver(None)
    with pytest.raises(TypeError):
        fixture.make_driver_class(base=driver.Driver)


def test_one_store_serves_two_fixtures(fix, tmp_path):
    with fixture.TransferFixture(store=fix.store) as other:
        assert other.store is fix.store
        _copy(other, tmp_path / 'out')
    assert fix.store.calls['read'] == 1


# -- objects, reads and writes ----------------------------------------------

def test_put_get_delete_and_validators():
    store = fixture.MemoryStore()
    v1 = store.put('memory://h/a', b'one')
    # the same object however the URL spells its host or credentials
    assert store.get('memory://user:pw@H/a') == b'one'
    assert store.validator('memory://h/a') == v1
    v2 = store.put('memory://h/a', b'one')
    assert v2 != v1, 'every put makes a new version'
    assert 'memory://h/a' in store and store.urls() == ['memory://h/a']
    store.delete('memory://h/a')
    assert 'memory://h/a' not in store
    with pytest.raises(KeyError):
        store.get('memory://h/a')


def test_stat_and_ranged_reads_through_the_driver(fix):
    drv = fix.transfer.driver('memory')
    ctx = driver.Context()
    loc = oslo_transfer.Location(URL)
    st = drv.stat(loc, ctx)
    assert (st.size, st.ranges) == (len(PAYLOAD), True)
    assert st.validator == fix.store.validator(URL)
    for off, n in ((0, 1), (5, 100000), (MiB, None), (len(PAYLOAD) - 3, 3)):
        want = PAYLOAD[off:] if n is None else PAYLOAD[off:off + n]
        assert b''.join(drv.read(loc, off, n, ctx)) == want
    assert fix.store.reads[-1] == (URL, len(PAYLOAD) - 3, 3)
    with pytest.raises(exceptions.ProtocolError):
        drv.read(loc, len(PAYLOAD) - 3, 4, ctx)
    with pytest.raises(exceptions.SourceNotFound) as ei:
        drv.stat(oslo_transfer.Location('memory://glance/none'), ctx)
    assert 'memory://glance/none' in str(ei.value)


def test_open_reads_a_range(fix):
    with fix.transfer.open(URL, offset=1000, length=MiB) as r:
        assert r.read() == PAYLOAD[1000:1000 + MiB]
    assert fix.store.reads == [(URL, 1000, MiB)]


def test_copy_counts_calls_and_bytes(fix, tmp_path):
    res = _copy(fix, tmp_path / 'out')
    assert (tmp_path / 'out').read_bytes() == PAYLOAD
    assert res.driver == 'memory' and res.size == len(PAYLOAD)
    assert fix.store.calls == {'stat': 1, 'read': 1}
    assert fix.store.bytes_served == len(PAYLOAD)


def test_upload_commits_an_object(fix):
    res = fix.transfer.upload(PAYLOAD, 'memory://swift/up',
                              checksum=_sha(PAYLOAD))
    assert fix.store.get('memory://swift/up') == PAYLOAD
    assert res.bytes_transferred == fix.store.bytes_written == len(PAYLOAD)
    assert fix.store.calls['write'] == fix.store.calls['commit'] == 1


def test_resumable_write_through_the_driver(fix):
    drv = fix.transfer.driver('memory')
    ctx = driver.Context()
    loc = oslo_transfer.Location('memory://swift/obj')
    fix.store.fail_after('write', 10)
    with pytest.raises(exceptions.ConnectionFailed):
        drv.write(loc, iter([b'a' * 30]), ctx)
    assert drv.written_size(loc, ctx) == 10
    writer = drv.write(loc, iter([b'b' * 5]), ctx, offset=10)
    assert writer.bytes_written == 5
    assert 'memory://swift/obj' not in fix.store, 'visible before commit'
    writer.commit()
    assert fix.store.get('memory://swift/obj') == b'a' * 10 + b'b' * 5
    assert drv.written_size(loc, ctx) == 0
    with pytest.raises(exceptions.ProtocolError):
        drv.write(loc, iter([b'c']), ctx, offset=3)


def test_a_write_aborted_by_a_mismatch_leaves_no_object(fix):
    with pytest.raises(exceptions.ChecksumMismatch):
        fix.transfer.upload(iter([PAYLOAD]), 'memory://swift/bad',
                            checksum=_sha(b'other'))
    assert 'memory://swift/bad' not in fix.store
    assert fix.store.calls['commit'] == 0


def test_ranges_off_answers_like_a_server_that_ignores_range(fix, tmp_path):
    fix.store.ranges = False
    drv = fix.transfer.driver('memory')
    loc = oslo_transfer.Location(URL)
    assert not drv.stat(loc, driver.Context()).ranges
    with pytest.raises(exceptions.RangeNotSupported):
        drv.read(loc, 10, None, driver.Context())
    _copy(fix, tmp_path / 'out', segments=4)
    assert (tmp_path / 'out').read_bytes() == PAYLOAD


# -- faults ------------------------------------------------------------------

def test_fail_stat_is_retried(fix, tmp_path):
    fix.store.fail('stat', times=2)
    _copy(fix, tmp_path / 'out')
    assert fix.store.calls['stat'] == 3
    assert (tmp_path / 'out').read_bytes() == PAYLOAD


def test_fail_stat_without_retries_raises_the_retryable_default(tmp_path):
    with fixture.TransferFixture(retries=0) as f:
        f.store.put(URL, PAYLOAD)
        f.store.fail('stat')
        with pytest.raises(exceptions.ConnectionFailed) as ei:
            _copy(f, tmp_path / 'out')
    assert ei.value.retryable
    assert 'injected' in str(ei.value) and URL in str(ei.value)


def test_fail_with_a_given_exception_class(fix, tmp_path):
    fix.store.fail('stat', exc=exceptions.AuthenticationFailed)
    with pytest.raises(exceptions.AuthenticationFailed) as ei:
        _copy(fix, tmp_path / 'out')
    assert ei.value.url == URL
    assert fix.store.calls['stat'] == 1, 'not retryable: tried once'
    assert os.listdir(tmp_path) == []


def test_fail_with_a_given_exception_instance_each_time(fix, tmp_path):
    exc = exceptions.ProtocolError('HTTP 503 (test)', url=URL)
    fix.store.fail('read', times=2, exc=exc)
    with fixture.TransferFixture(store=fix.store, retries=0) as f:
        for _ in range(2):
            with pytest.raises(exceptions.ProtocolError) as ei:
                _copy(f, tmp_path / 'out')
            assert str(ei.value) == 'HTTP 503 (test)'
            assert ei.value is not exc
        _copy(f, tmp_path / 'out')
    assert (tmp_path / 'out').read_bytes() == PAYLOAD


def test_fail_only_one_url(fix, tmp_path):
    fix.store.put('memory://glance/images/2', b'two')
    fix.store.fail('read', times=99, exc=exceptions.SourceNotFound,
                   url='memory://glance/images/2')
    _copy(fix, tmp_path / 'one')
    with pytest.raises(exceptions.SourceNotFound):
        _copy(fix, tmp_path / 'two', url='memory://glance/images/2',
              checksum=None)


def test_fail_after_drops_a_read_and_the_copy_resumes(fix, tmp_path):
    fix.store.fail_after('read', MiB + 7)
    res = _copy(fix, tmp_path / 'out')
    assert (tmp_path / 'out').read_bytes() == PAYLOAD
    # The second read continues where the first one broke.
    assert fix.store.reads == [(URL, 0, len(PAYLOAD)),
                               (URL, MiB + 7, len(PAYLOAD) - MiB - 7)]
    assert fix.store.bytes_served == len(PAYLOAD)
    assert res.bytes_transferred == len(PAYLOAD)


def test_fail_after_times_outlasts_the_retries(tmp_path):
    with fixture.TransferFixture(retries=2, segments=1) as f:
        f.store.put(URL, PAYLOAD)
        f.store.fail_after('read', MiB, times=3)
        with pytest.raises(exceptions.ConnectionFailed):
            _copy(f, tmp_path / 'out')
        assert f.store.calls['read'] == 3
        assert f.store.bytes_served == MiB
        assert not (tmp_path / 'out').exists()
        # the fault is spent: the next copy resumes from the held MiB
        res = _copy(f, tmp_path / 'out')
    assert res.bytes_resumed == MiB
    assert (tmp_path / 'out').read_bytes() == PAYLOAD


def test_fail_after_a_write_resumes_the_upload(fix):
    fix.store.fail_after('write', MiB)
    res = fix.transfer.upload(io.BytesIO(PAYLOAD), 'memory://swift/up',
                              checksum=_sha(PAYLOAD))
    assert fix.store.get('memory://swift/up') == PAYLOAD
    assert res.bytes_resumed == MiB
    assert res.bytes_transferred == len(PAYLOAD) - MiB
    assert fix.store.calls['write'] == 2


def test_a_failed_commit_aborts_and_stores_nothing(fix):
    fix.store.fail('commit', exc=exceptions.PermissionDenied)
    with pytest.raises(exceptions.PermissionDenied):
        fix.transfer.upload(PAYLOAD, 'memory://swift/up')
    assert 'memory://swift/up' not in fix.store
    assert fix.store.calls['abort'] == 1


def test_fail_write_of_an_iterable_is_not_retried(fix):
    fix.store.fail('write')
    with pytest.raises(exceptions.ConnectionFailed):
        fix.transfer.upload(iter([PAYLOAD]), 'memory://swift/up')
    assert fix.store.calls['write'] == 1
    assert 'memory://swift/up' not in fix.store


def test_truncated_reads_are_failures(tmp_path):
    with fixture.TransferFixture(retries=0, segments=1) as f:
        f.store.put(URL, PAYLOAD)
        f.store.truncate_reads(2 * MiB)
        with pytest.raises(exceptions.ProtocolError) as ei:
            _copy(f, tmp_path / 'out')
        assert 'ended after' in str(ei.value)
        assert not (tmp_path / 'out').exists()
        assert f.store.bytes_served == 2 * MiB
        f.store.truncate_reads(MiB)
        with pytest.raises(exceptions.ProtocolError):
            _copy(f, tmp_path / 'out')
    with fixture.TransferFixture(store=f.store, segments=1) as f:
        f.store.truncate_reads(MiB, times=2)
        _copy(f, tmp_path / 'out')
    assert (tmp_path / 'out').read_bytes() == PAYLOAD


def test_change_after_restarts_the_copy(fix, tmp_path):
    new = _data(len(PAYLOAD) + 10, b'new')
    fix.store.change_after(URL, new, MiB)
    res = _copy(fix, tmp_path / 'out', checksum=_sha(new))
    assert (tmp_path / 'out').read_bytes() == new
    assert res.bytes_resumed == 0
    assert fix.store.get(URL) == new


def test_change_after_with_the_old_checksum_leaves_nothing(fix, tmp_path):
    fix.store.change_after(URL, _data(len(PAYLOAD), b'new'), MiB)
    with pytest.raises(exceptions.ChecksumMismatch):
        _copy(fix, tmp_path / 'out')
    assert os.listdir(tmp_path) == []


def test_change_after_raises_source_changed_when_configured(fix, tmp_path):
    fix.store.change_after(URL, _data(len(PAYLOAD), b'new'), MiB)
    with fixture.TransferFixture(store=fix.store, segments=1,
                                 on_source_change='error') as f:
        with pytest.raises(exceptions.SourceChanged) as ei:
            _copy(f, tmp_path / 'out')
    assert 'changed' in str(ei.value)
    assert os.path.exists(str(tmp_path / 'out') + '.part')


def test_paused_reads_wait_and_honour_cancel(fix, tmp_path):
    fix.store.pause_reads()
    out = str(tmp_path / 'out')
    h = fix.transfer.submit(URL, out, checksum=_sha(PAYLOAD))
    deadline = time.monotonic() + 10
    while not fix.store.calls['read'] and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert not h.done() and fix.store.bytes_served == 0
    h.cancel()
    with pytest.raises(exceptions.Cancelled):
        h.result(timeout=10)
    fix.store.resume_reads()
    _copy(fix, out)
    assert open(out, 'rb').read() == PAYLOAD


def test_clear_faults(fix, tmp_path):
    fix.store.fail('stat', times=50)
    fix.store.fail_after('read', 0, times=50)
    fix.store.truncate_reads(10, times=50)
    fix.store.pause_reads()
    fix.store.clear_faults()
    _copy(fix, tmp_path / 'out')
    assert (tmp_path / 'out').read_bytes() == PAYLOAD


def test_faults_refuse_an_operation_they_cannot_apply_to(fix):
    with pytest.raises(ValueError):
        fix.store.fail('open')
    with pytest.raises(ValueError):
        fix.store.fail_after('stat', 10)


def test_faults_are_thread_safe_under_parallel_segments(tmp_path, caplog):
    with fixture.TransferFixture(segments=4, segment_threshold=0,
                                 segment_size=MiB) as f:
        payload = _data(6 * MiB)
        f.store.put(URL, payload)
        f.store.fail_after('read', 2 * MiB, times=3)
        _copy(f, tmp_path / 'out', checksum=_sha(payload))
        served = f.store.bytes_served
    assert (tmp_path / 'out').read_bytes() == payload
    # three reads broke, each where the byte count crossed the mark, and
    # their segments went on from there: no byte was served twice
    assert len([r for r in caplog.records
                if 'injected into the read' in r.getMessage()]) == 3
    assert served == len(payload)


def test_a_subclass_shapes_the_chunks(tmp_path):
    seen = []

    class Small(fixture.MemoryDriver):
        def chunks(self, data, start, end, ctx):
            for pos in range(start, end, 1000):
                seen.append(pos)
                yield data[pos:min(pos + 1000, end)]

    with fixture.TransferFixture(driver_class=Small, segments=1) as f:
        f.store.put(URL, b'x' * 4500)
        f.store.fail_after('read', 2500)
        _copy(f, tmp_path / 'out', checksum=None)
    assert (tmp_path / 'out').read_bytes() == b'x' * 4500
    assert seen == [0, 1000, 2000, 2500, 3500]


def test_concurrent_puts_and_reads_do_not_tear(fix):
    drv = fix.transfer.driver('memory')
    loc = oslo_transfer.Location(URL)
    stop = threading.Event()

    def writer():
        while not stop.is_set():
            fix.store.put(URL, PAYLOAD)

    th = threading.Thread(target=writer)
    th.start()
    try:
        for _ in range(5):
            assert b''.join(drv.read(loc, 0, None, driver.Context())) == \
                PAYLOAD
    finally:
        stop.set()
        th.join()
