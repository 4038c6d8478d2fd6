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

"""Several locations read at once (engine/mirrors.py), on the memory driver.

The split itself is tested on a fake clock in test_split.py; here, the
engine around it: bytes per location, a bad mirror dropped by the
manifest, a failing one by its retries, one validator per location in the
control file and on resume.
"""

import hashlib
import itertools
import json
import os
import re
import threading
import time

import pytest

from oslo_transfer import blockmap
from oslo_transfer import driver as driver_mod
from oslo_transfer import exceptions
from oslo_transfer import fixture
from oslo_transfer import locations
from tests.unit import fakes

MiB = 1024 * 1024
A, B = 'memory://a/img', 'memory://b/img'

make = fakes.make_transfer


def sha(b):
    return 'sha256:' + hashlib.sha256(b).hexdigest()


@pytest.fixture
def store():
    return fixture.MemoryStore()


def _blockmap(tmp_path, payload, block=64 * 1024):
    path = tmp_path / 'orig'
    path.write_bytes(payload)
    return blockmap.make_blockmap(str(path), block)


def test_both_locations_deliver_and_the_result_says_how_much(store,
                                                             tmp_path):
    payload = fakes.data(12 * MiB)
    store.put(A, payload)
    store.put(B, payload)
    with make(store, segments=2) as t:
        res = t.copy(locations.Source(urls=[A, B]), str(tmp_path / 'out'),
                     checksum=sha(payload))
    assert (tmp_path / 'out').read_bytes() == payload
    assert set(res.bytes_by_location) == {A, B}
    assert sum(res.bytes_by_location.values()) == len(payload)
    assert res.bytes_by_location[A] > 0 and res.bytes_by_location[B] > 0
    assert res.to_dict()['bytes_by_location'] == res.bytes_by_location
    assert res.attempts == []


def test_one_location_without_checksum_or_manifest_is_read_alone(store,
                                                                 tmp_path):
    # The splicing rule: nothing to check two locations' bytes against.
    payload = fakes.data(4 * MiB)
    store.put(A, payload)
    store.put(B, payload)
    with make(store) as t:
        res = t.copy(locations.Source(urls=[A, B]), str(tmp_path / 'out'))
    assert res.bytes_by_location == {A: len(payload)}


class _BAfterA(fixture.MemoryDriver):
    """B's reads wait until A has sent a chunk: A is surely read."""

    a_sent = None

    def read(self, location, offset, length, ctx):
        chunks = super().read(location, offset, length, ctx)
        if location.url == A:
            return self._tell(chunks)
        self.a_sent.wait(30)
        return chunks

    def _tell(self, chunks):
        for chunk in chunks:
            yield chunk
            self.a_sent.set()


def test_a_mirror_serving_a_bad_block_is_dropped(store, tmp_path, caplog):
    payload = fakes.data(8 * MiB)
    store.put(A, fakes.data(8 * MiB, b'corrupt'))
    store.put(B, payload)
    manifest = _blockmap(tmp_path, payload)
    drv = type('BAfterA', (_BAfterA,), {'a_sent': threading.Event()})
    with make(store, driver_class=drv, segments=2) as t:
        res = t.copy(locations.Source(urls=[A, B]), str(tmp_path / 'out'),
                     manifest=manifest)
    assert (tmp_path / 'out').read_bytes() == payload
    # A's blocks failed the manifest: none of its bytes was kept.
    assert res.bytes_by_location == {A: 0, B: len(payload)}
    assert res.url == B
    [(url, driver, why)] = res.attempts
    assert url == A
    assert re.search(r'dropped: %s served bytes \[\d+, \d+\) that do not '
                     r'match block \d+ of the manifest' % A, why), why
    assert 'dropped, reading from %s' % B in caplog.text


def test_every_mirror_bad_is_a_checksum_mismatch(store, tmp_path):
    payload = fakes.data(4 * MiB)
    manifest = _blockmap(tmp_path, payload)
    store.put(A, fakes.data(4 * MiB, b'other'))
    store.put(B, fakes.data(4 * MiB, b'another'))
    out = tmp_path / 'out'
    with make(store, segments=2) as t:
        with pytest.raises(exceptions.ChecksumMismatch) as ei:
            t.copy(locations.Source(urls=[A, B]), str(out),
                   manifest=manifest)
    assert 'of the manifest' in str(ei.value)
    # Nothing verified: nothing left behind.
    assert sorted(os.listdir(tmp_path)) == ['orig']


def test_a_failing_mirror_is_dropped_and_the_other_finishes(store,
                                                            tmp_path):
    payload = fakes.data(8 * MiB)
    store.put(A, payload)
    store.put(B, payload)
    store.fail('read', times=100, url=A)
    with make(store, segments=2, retries=3) as t:
        res = t.copy(locations.Source(urls=[A, B]), str(tmp_path / 'out'),
                     checksum=sha(payload))
    assert (tmp_path / 'out').read_bytes() == payload
    assert res.bytes_by_location == {A: 0, B: len(payload)}
    [(url, _, why)] = res.attempts
    assert url == A and 'injected' in why


def _interrupted(store, tmp_path, payload):
    """A copy from A and B cut after 3 MiB: the control file it left."""
    store.put(A, payload)
    store.put(B, payload)
    store.fail_after('read', 3 * MiB, times=1000)
    out = str(tmp_path / 'out')
    with make(store, segments=1, retries=0) as t:
        with pytest.raises(exceptions.ConnectionFailed):
            t.copy(locations.Source(urls=[A, B]), out,
                   checksum=sha(payload))
    store.clear_faults()
    return out, json.loads((tmp_path / 'out.part.ctl').read_text())


def test_resume_checks_one_validator_per_location(store, tmp_path):
    payload = fakes.data(8 * MiB)
    out, ctl = _interrupted(store, tmp_path, payload)
    assert ctl['sources'] == {A: store.validator(A), B: store.validator(B)}
    held = sum(e - s for s, e in ctl['ranges'])
    assert held >= MiB
    with make(store, segments=2) as t:
        res = t.copy(locations.Source(urls=[A, B]), out,
                     checksum=sha(payload))
    assert open(out, 'rb').read() == payload
    assert res.bytes_resumed == held
    assert sum(res.bytes_by_location.values()) == len(payload) - held


def test_a_location_that_changed_restarts_or_raises(store, tmp_path):
    payload = fakes.data(8 * MiB)
    out, ctl = _interrupted(store, tmp_path, payload)
    old = store.validator(B)
    store.put(B, payload)   # the same bytes, another version
    with make(store, on_source_change='error') as t:
        with pytest.raises(exceptions.SourceChanged) as ei:
            t.copy(locations.Source(urls=[A, B]), out,
                   checksum=sha(payload))
    assert str(ei.value) == (
        '%s changed since the partial copy was made (validator %s, now %s);'
        ' %s.part is kept' % (B, old, store.validator(B), out))
    assert os.path.getsize(out + '.part') == len(payload)
    with make(store, segments=2) as t:
        res = t.copy(locations.Source(urls=[A, B]), out,
                     checksum=sha(payload))
    assert open(out, 'rb').read() == payload
    assert res.bytes_resumed == 0


class _OwnValidator(fixture.MemoryDriver):
    """Refuses a read whose context carries another location's validator.

    As an HTTP server answers 200 (not 206) to an ``If-Range`` that is
    not its own ETag.
    """

    def read(self, location, offset, length, ctx):
        if ctx.validator != self.store.validator(location.url):
            raise exceptions.RangeNotSupported(
                '%s: If-Range %s is not mine' % (location.url,
                                                 ctx.validator),
                url=location.url)
        return super().read(location, offset, length, ctx)


def test_each_location_is_read_with_its_own_validator(store, tmp_path):
    payload = fakes.data(8 * MiB)
    store.put(A, b'an older version')
    store.put(A, payload)
    store.put(B, payload)
    assert store.validator(A) != store.validator(B)
    with make(store, driver_class=_OwnValidator, segments=2) as t:
        res = t.copy(locations.Source(urls=[A, B]), str(tmp_path / 'out'),
                     checksum=sha(payload))
    assert (tmp_path / 'out').read_bytes() == payload
    assert res.attempts == []
    assert res.bytes_by_location[A] > 0 and res.bytes_by_location[B] > 0


class _Counting(fixture.MemoryDriver):
    """Counts the reads open at once, per host."""

    lock = threading.Lock()
    open_now = {}
    most = {}

    def read(self, location, offset, length, ctx):
        return self._counted(location.parts().netloc,
                             super().read(location, offset, length, ctx))

    def _counted(self, host, chunks):
        cls = type(self)
        with cls.lock:
            cls.open_now[host] = cls.open_now.get(host, 0) + 1
            cls.most[host] = max(cls.most.get(host, 0), cls.open_now[host])
        try:
            yield from chunks
        finally:
            with cls.lock:
                cls.open_now[host] -= 1


def test_per_origin_caps_and_accounting_hold(store, tmp_path):
    # Two locations on origin "a", one on "b"; two connections per origin.
    a2 = 'memory://a/copy'
    payload = fakes.data(16 * MiB)
    for url in (A, a2, B):
        store.put(url, payload)
    drv = type('Counting', (_Counting,), {'open_now': {}, 'most': {}})
    with make(store, driver_class=drv, segments=4,
              max_connections_per_origin=2) as t:
        res = t.copy(locations.Source(urls=[A, a2, B]),
                     str(tmp_path / 'out'), checksum=sha(payload))
        origins = t.stats()['origins']
    assert (tmp_path / 'out').read_bytes() == payload
    assert set(res.bytes_by_location) == {A, a2, B}
    assert set(drv.most) == {'a', 'b'}
    assert max(drv.most.values()) <= 2, drv.most
    # The scheduler saw each origin's bytes (origin_rate_limit applies to
    # them): a's two locations together, b's alone.
    assert origins['memory://b']['bytes'] == res.bytes_by_location[B]
    assert origins['memory://a']['bytes'] == (res.bytes_by_location[A] +
                                              res.bytes_by_location[a2])


class _CancelAfterPiece(fixture.MemoryDriver):
    """B fails at once; A cancels the copy once its first piece is read."""

    token = None
    b_failed = None

    def read(self, location, offset, length, ctx):
        if location.url == B:
            self.b_failed.set()
            raise exceptions.ConnectionFailed('B is down', url=B)
        self.b_failed.wait(30)
        time.sleep(0.3)     # B is dropped meanwhile: A's worker is alone
        return self._then_cancel(super().read(location, offset, length,
                                              ctx))

    def _then_cancel(self, chunks):
        try:
            yield from chunks
        finally:
            # When the engine closes the read: between two pieces.
            self.token.cancel('enough')


def test_a_cancel_between_two_pieces_stops_the_copy(store, tmp_path):
    payload = fakes.data(8 * MiB)
    store.put(A, payload)
    store.put(B, payload)
    token = driver_mod.CancelToken()
    drv = type('Cancel', (_CancelAfterPiece,),
               {'token': token, 'b_failed': threading.Event()})
    out = str(tmp_path / 'out')
    with make(store, driver_class=drv, segments=1, retries=0) as t:
        with pytest.raises(exceptions.Cancelled):
            t.copy(locations.Source(urls=[A, B]), out,
                   checksum=sha(payload), cancel=token)
    # Resumable: what A delivered is held, nothing renamed.
    assert not os.path.exists(out)
    ctl = json.loads((tmp_path / 'out.part.ctl').read_text())
    assert sum(e - s for s, e in ctl['ranges']) >= MiB


class _AStallsAfterItsFirstRead(fixture.MemoryDriver):
    """A serves its first read, then half of each read and nothing more.

    It then waits until cancelled, as a driver blocked in ``recv`` does
    whose cancel callback shuts the socket down.  ``aborted`` collects
    the cancel reasons.
    """

    served = None
    aborted = None

    def read(self, location, offset, length, ctx):
        if location.url == A and next(self.served):
            return self._stall(location, offset, length // 2, ctx)
        return super().read(location, offset, length, ctx)

    def _stall(self, location, offset, half, ctx):
        yield from super().read(location, offset, half, ctx)
        ctx.cancel.wait(60)
        self.aborted.append(ctx.cancel.reason)
        raise exceptions.ConnectionFailed('the socket was shut down')


@pytest.mark.parametrize('check', ['checksum', 'manifest'])
def test_a_read_taken_over_whole_ends_at_once(store, tmp_path, check):
    # A stalls in the middle of its second piece: B takes the rest of it
    # over, and A's read, which would wait for its chunk until an I/O
    # timeout, is cancelled.  What A wrote before counts (verified first
    # against a manifest); its piece is not given back, nor A retried or
    # dropped.
    payload = fakes.data(8 * MiB)
    store.put(A, payload)
    store.put(B, payload)
    drv = type('Stall', (_AStallsAfterItsFirstRead,),
               {'served': itertools.count(), 'aborted': []})
    if check == 'checksum':
        how = {'checksum': sha(payload)}
    else:
        how = {'manifest': _blockmap(tmp_path, payload)}
    with make(store, driver_class=drv, segments=1, retries=0,
              chunk_size=64 * 1024) as t:
        res = t.copy(locations.Source(urls=[A, B]), str(tmp_path / 'out'),
                     **how)
    assert (tmp_path / 'out').read_bytes() == payload
    assert drv.aborted == ['taken over by another location']
    assert res.bytes_by_location[A] == MiB + MiB // 2
    assert res.bytes_by_location[B] == len(payload) - MiB - MiB // 2
    assert res.attempts == []


def test_a_small_object_is_read_from_one_location_asked_alone(store,
                                                              tmp_path):
    # Below segment_threshold nothing is read at once: the other
    # locations are not even asked for their size.
    payload = fakes.data(MiB)
    store.put(A, payload)
    store.put(B, payload)
    with make(store, segment_threshold=4 * MiB) as t:
        res = t.copy(locations.Source(urls=[A, B]), str(tmp_path / 'out'),
                     checksum=sha(payload))
    assert res.bytes_by_location == {A: len(payload)}
    # One stat in all: A's, used by the copy itself.
    assert store.calls['stat'] == 1
