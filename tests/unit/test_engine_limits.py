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

"""The engine's limits: total deadline, arguments, versions, permissions."""

import json
import os
import time

import pytest

from oslo_transfer.engine import partfile
from oslo_transfer import exceptions
from oslo_transfer import fixture
from tests.unit import fakes

MiB = 1024 * 1024

sha = fakes.sha
make = fakes.make_transfer


class _SlowDriver(fixture.MemoryDriver):
    """64 KiB every 10 ms: a slow but live server (about 6 MiB/s)."""

    def chunks(self, data, start, end, ctx):
        for chunk in super().chunks(data, start, end, ctx):
            time.sleep(0.01)
            yield chunk


@pytest.mark.parametrize('segments', [1, 4])
def test_total_timeout_stops_a_live_stream_without_retries(tmp_path,
                                                           segments):
    store = fixture.MemoryStore()
    payload = fakes.data(64 * MiB)
    store.put('memory://a', payload)
    out = str(tmp_path / 'out')
    with make(store, driver_class=_SlowDriver, segments=segments,
              retries=5, retry_backoff=1.0, total_timeout=0.5) as t:
        with pytest.raises(exceptions.TransferTimeout) as ei:
            t.copy('memory://a', out, checksum=sha(payload))
    assert 'total_timeout' in str(ei.value)
    assert not ei.value.retryable
    # It stopped long before the end, and did not retry a piece ...
    assert store.bytes_served < len(payload) // 2
    offsets = [off for _url, off, _n in store.reads]
    assert len(offsets) == len(set(offsets)), offsets
    # ... and left resumable state, never a destination.
    assert not os.path.exists(out)
    ctl = json.loads(open(out + '.part.ctl').read())
    assert ctl['ranges']


@pytest.mark.parametrize('bad', [0, -1, 2.5])
def test_bad_segments_are_refused_before_any_io(tmp_path, bad):
    store = fixture.MemoryStore()
    store.put('memory://a', b'x' * 10)
    with make(store) as t:
        with pytest.raises(ValueError) as ei:
            t.copy('memory://a', str(tmp_path / 'out'), segments=bad)
    assert 'segments' in str(ei.value)
    assert store.reads == []
    assert os.listdir(tmp_path) == []


def test_negative_rate_is_refused(tmp_path):
    store = fixture.MemoryStore()
    store.put('memory://a', b'x' * 10)
    with make(store) as t:
        with pytest.raises(ValueError):
            t.copy('memory://a', str(tmp_path / 'out'), rate=-5)


def test_changed_version_is_not_spliced_even_with_a_checksum(tmp_path):
    # A checksum would catch the mix at the end, but only after moving
    # the rest: a changed validator restarts (or raises) at once.
    store = fixture.MemoryStore()
    old = fakes.data(4 * MiB, b'old')
    new = fakes.data(4 * MiB, b'new')
    store.put('memory://a', old)
    store.fail_after('read', 2 * MiB)
    out = str(tmp_path / 'out')
    with make(store, segments=1, retries=0) as t:
        with pytest.raises(exceptions.ConnectionFailed):
            t.copy('memory://a', out, checksum=sha(new))
    held = sum(e - s for s, e in json.loads(
        open(out + '.part.ctl').read())['ranges'])
    assert held > 0
    store.put('memory://a', new)
    with make(store, on_source_change='error') as t:
        with pytest.raises(exceptions.SourceChanged):
            t.copy('memory://a', out, checksum=sha(new))
    assert os.path.exists(out + '.part')
    served = store.bytes_served
    with make(store) as t:
        res = t.copy('memory://a', out, checksum=sha(new))
    assert res.bytes_resumed == 0
    assert store.bytes_served - served == len(new)
    assert open(out, 'rb').read() == new


def test_commit_reads_the_umask_without_changing_it(tmp_path, monkeypatch):
    def no_umask(mask):
        raise AssertionError('os.umask(%o) called: other threads would '
                             'create files with it' % mask)

    old = os.umask(0o027)
    try:
        monkeypatch.setattr(os, 'umask', no_umask)
        assert partfile._umask() == 0o027
        store = fixture.MemoryStore()
        payload = fakes.data(MiB)
        store.put('memory://a', payload)
        with make(store) as t:
            t.copy('memory://a', str(tmp_path / 'out'), checksum=sha(payload))
    finally:
        monkeypatch.undo()
        os.umask(old)
    assert os.stat(tmp_path / 'out').st_mode & 0o777 == 0o640


def test_rate_limit_holds_for_a_local_copy_without_checksum(tmp_path,
                                                            monkeypatch):
    # Without a checksum a local copy would go through copy_file_range in
    # 64 MiB steps that no rate limit sees; with a rate it is streamed.
    import oslo_transfer
    from oslo_transfer.engine import throttle
    consumed = []
    real = throttle.TokenBucket.consume

    def consume(self, nbytes, cancel=None):
        if self.rate:
            consumed.append(nbytes)
        return real(self, nbytes, cancel)

    monkeypatch.setattr(throttle.TokenBucket, 'consume', consume)
    src = tmp_path / 'src'
    payload = os.urandom(3 * MiB)
    src.write_bytes(payload)
    res = oslo_transfer.copy(str(src), str(tmp_path / 'dst'),
                             rate=64 * MiB)
    assert (tmp_path / 'dst').read_bytes() == payload
    assert res.driver == 'file'
    assert sum(consumed) == len(payload)
