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

"""Servers that ignore ranges: one stream from the start, never a range.

A copy or an ``open()`` reader falls back to one stream when a ranged
read is refused (``RangeNotSupported``); that stream must ask no range at
all (not even ``bytes=0-(size-1)``), skip what is held or was read, and
nothing internal may reach the caller.
"""

import json
import os

import pytest

from oslo_transfer import driver as driver_mod
from oslo_transfer import exceptions
from oslo_transfer import fixture
from tests.unit import fakes

MiB = 1024 * 1024
URL = 'memory://user:s3cret-pw@store/img'


class _NoRangesDriver(fixture.MemoryDriver):
    """A server that answers every ranged request with its whole body.

    As an HTTP server does whose answer has no ``Content-Length``: even a
    request for ``[0, size)`` is refused (``RangeNotSupported``).  Its
    ``stat`` may still claim ranges (``claims_ranges``), as a HEAD with
    ``Accept-Ranges: bytes`` does.
    """

    claims_ranges = True
    refuse_all = False

    def stat(self, location, ctx):
        st = super().stat(location, ctx)
        return driver_mod.Stat(size=st.size, validator=st.validator,
                               ranges=self.claims_ranges)

    def read(self, location, offset, length, ctx):
        if offset or length is not None or self.refuse_all:
            self.store._called('read', location)
            raise exceptions.RangeNotSupported(
                '%s answered 200 to a ranged request' % location.masked,
                url=location.masked)
        return super().read(location, offset, length, ctx)


def _driver(store, claims_ranges=True, refuse_all=False):
    return fixture.make_driver_class(
        store, base=_NoRangesDriver, claims_ranges=claims_ranges,
        refuse_all=refuse_all)


def _partial(store, out, payload, held, segments=1):
    """A first copy that dies after ``held`` bytes: .part and .ctl left."""
    store.fail_after('read', held)
    with fakes.make_transfer(store, segments=segments, retries=0) as t:
        with pytest.raises(exceptions.ConnectionFailed):
            t.copy(URL, out, checksum=fakes.sha(payload))
    store.clear_faults()
    with open(out + '.part.ctl') as f:
        return json.load(f)['ranges']


@pytest.mark.parametrize('claims_ranges', [True, False],
                         ids=['ranges-claimed', 'no-ranges'])
@pytest.mark.parametrize('held', [0, 3 * MiB], ids=['fresh', 'resumed'])
@pytest.mark.parametrize('segments', [1, 4])
def test_one_stream_never_asks_a_range(tmp_path, claims_ranges, held,
                                       segments):
    store = fixture.MemoryStore()
    payload = fakes.data(6 * MiB + 5)
    store.put(URL, payload)
    out = str(tmp_path / 'out')
    if held:
        ranges = _partial(store, out, payload, held)
        assert ranges[0][0] == 0
        held = ranges[0][1]
    del store.reads[:]
    with fakes.make_transfer(store, driver_class=_driver(
            store, claims_ranges), segments=segments) as t:
        res = t.copy(URL, out, checksum=fakes.sha(payload))
    assert open(out, 'rb').read() == payload
    assert sorted(os.listdir(tmp_path)) == ['out']
    # Whatever was tried first, the bytes came from one whole stream.
    assert store.reads[-1] == (fixture._key(URL), 0, None)
    assert res.bytes_resumed == held
    assert res.bytes_transferred == len(payload)


def test_a_stream_resume_counts_only_the_prefix_as_resumed(tmp_path):
    """Held bytes past the prefix cross the wire again: not "resumed"."""
    store = fixture.MemoryStore()
    payload = fakes.data(6 * MiB)
    validator = store.put(URL, payload)
    out = str(tmp_path / 'out')
    # Held: [0, 1 MiB) and [2 MiB, 3 MiB), as parallel segments leave.
    part = bytearray(len(payload))
    part[:MiB] = payload[:MiB]
    part[2 * MiB:3 * MiB] = payload[2 * MiB:3 * MiB]
    with open(out + '.part', 'wb') as f:
        f.write(part)
    with open(out + '.part.ctl', 'w') as f:
        json.dump({'version': 1, 'source': 'memory://store/img',
                   'validator': validator, 'size': len(payload),
                   'checksum': None, 'algorithm': None,
                   'ranges': [[0, MiB], [2 * MiB, 3 * MiB]]}, f)
    store.ranges = False
    with fakes.make_transfer(store, segments=4) as t:
        res = t.copy(URL, out, checksum=fakes.sha(payload))
    assert open(out, 'rb').read() == payload
    assert res.bytes_resumed == MiB
    assert res.bytes_transferred == len(payload)


@pytest.mark.parametrize('held', [0, 3 * MiB], ids=['fresh', 'resumed'])
def test_a_source_that_refuses_even_one_stream(tmp_path, held):
    store = fixture.MemoryStore()
    payload = fakes.data(6 * MiB)
    store.put(URL, payload)
    out = str(tmp_path / 'out')
    if held:
        _partial(store, out, payload, held)
    with fakes.make_transfer(store, driver_class=_driver(
            store, refuse_all=True), retries=3) as t:
        with pytest.raises(exceptions.ProtocolError) as ei:
            t.copy(URL, out, checksum=fakes.sha(payload))
    e = ei.value
    assert type(e) is exceptions.ProtocolError
    assert not e.retryable
    assert 'refused to be read as one stream' in str(e)
    assert 'memory://user:***@store/img' in str(e)
    assert 's3cret' not in str(e)
    assert not os.path.exists(out)
    if held:
        # What was held stays for a later attempt.
        assert os.path.exists(out + '.part')
        assert os.path.exists(out + '.part.ctl')
    else:
        assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('offset,length', [
    (0, None), (1, None), (MiB + 7, None), (MiB + 7, 1000), (5, 2 * MiB),
    (3 * MiB + 4, 1)])
def test_open_reads_a_server_that_ignores_ranges(offset, length):
    store = fixture.MemoryStore()
    payload = fakes.data(3 * MiB + 5)
    store.put(URL, payload)
    store.ranges = False
    with fakes.make_transfer(store) as t:
        with t.open(URL, offset=offset, length=length) as reader:
            got = reader.read()
    end = None if length is None else offset + length
    assert got == payload[offset:end]


def test_open_resumes_a_cut_stream_from_a_server_that_ignores_ranges():
    store = fixture.MemoryStore()
    payload = fakes.data(3 * MiB)
    store.put(URL, payload)
    store.ranges = False
    store.fail_after('read', MiB + 3)
    with fakes.make_transfer(store, retries=2) as t:
        with t.open(URL, checksum=fakes.sha(payload)) as reader:
            got = b''.join(reader)
    assert got == payload


def test_open_never_splices_a_source_that_changed():
    store = fixture.MemoryStore()
    old, new = fakes.data(3 * MiB, b'old'), fakes.data(3 * MiB, b'new')
    store.put(URL, old)
    store.ranges = False
    store.change_after(URL, new, MiB)
    got = b''
    with fakes.make_transfer(store, retries=2) as t:
        with pytest.raises(exceptions.SourceChanged) as ei:
            with t.open(URL) as reader:
                for chunk in reader:
                    got += chunk
    assert got == old[:len(got)]
    assert 'changed during the read' in str(ei.value)
    assert 's3cret' not in str(ei.value)
