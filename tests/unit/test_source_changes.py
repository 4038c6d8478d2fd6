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

"""A source that keeps changing: bounded restarts, then SourceChanged.

Each restart of a copy whose source changed under it was a recursive
call: a validator that changes on every request recursed until
``RecursionError``.
"""

import json
import os

import pytest

from oslo_transfer.engine import download
from oslo_transfer import exceptions
from oslo_transfer import fixture
from tests.unit import fakes

MiB = 1024 * 1024
URL = 'memory://user:s3cret-pw@store/img'
MASKED = 'memory://user:***@store/img'


class _NewVersionEveryRequest(fixture.MemoryDriver):
    """Every stat and every read finds another version of the object."""

    def _bump(self, location):
        self.store.put(location.url, self.store.get(location.url))

    def stat(self, location, ctx):
        self._bump(location)
        return super().stat(location, ctx)

    def read(self, location, offset, length, ctx):
        self._bump(location)
        return super().read(location, offset, length, ctx)


class _ReplacedWhileRead(fixture.MemoryDriver):
    """Each read serves 1 MiB, then the object is replaced (same bytes)."""

    def read(self, location, offset, length, ctx):
        self.store.change_after(location.url, self.store.get(location.url),
                                MiB)
        return super().read(location, offset, length, ctx)


def _driver(store, base):
    return fixture.make_driver_class(store, base=base)


@pytest.mark.parametrize('segments', [1, 4])
def test_a_validator_that_changes_on_every_request(tmp_path, segments):
    store = fixture.MemoryStore()
    payload = fakes.data(4 * MiB)
    store.put(URL, payload)
    out = str(tmp_path / 'out')
    with fakes.make_transfer(store, driver_class=_driver(
            store, _NewVersionEveryRequest), segments=segments,
            retries=2) as t:
        with pytest.raises(exceptions.SourceChanged) as ei:
            t.copy(URL, out)
    e = ei.value
    assert type(e) is exceptions.SourceChanged
    assert 'changed %d times during the copy' % (
        download.MAX_RESTARTS + 1) in str(e)
    assert MASKED in str(e) and 's3cret' not in str(e)
    assert e.url == MASKED
    assert not e.retryable
    # A few requests per restart, not thousands.
    assert store.calls['stat'] + store.calls['read'] < 40
    # Nothing was ever held: nothing is left.
    assert os.listdir(tmp_path) == []


def test_a_source_replaced_during_every_read_keeps_the_last_bytes(tmp_path):
    store = fixture.MemoryStore()
    payload = fakes.data(6 * MiB)
    store.put(URL, payload)
    out = str(tmp_path / 'out')
    with fakes.make_transfer(store, driver_class=_driver(
            store, _ReplacedWhileRead), segments=1, retries=2) as t:
        with pytest.raises(exceptions.SourceChanged) as ei:
            t.copy(URL, out)
    assert 'changed %d times during the copy' % (
        download.MAX_RESTARTS + 1) in str(ei.value)
    assert out + '.part is kept' in str(ei.value)
    assert not os.path.exists(out)
    # The last version's bytes stay, recorded with that version.
    with open(out + '.part.ctl') as f:
        ctl = json.load(f)
    assert '(validator %s, now' % ctl['validator'] in str(ei.value)
    assert ctl['ranges'] and ctl['ranges'][0][0] == 0
    # The next call, on a source that holds still, finishes the copy.
    store.clear_faults()
    with fakes.make_transfer(store) as t:
        res = t.copy(URL, out, checksum=fakes.sha(payload))
    assert open(out, 'rb').read() == payload
    assert res.bytes_transferred == len(payload)


def test_a_few_changes_restart_and_complete(tmp_path):
    store = fixture.MemoryStore()
    payload = fakes.data(6 * MiB)
    store.put(URL, payload)
    out = str(tmp_path / 'out')
    changes = [download.MAX_RESTARTS]

    class _ChangesThrice(fixture.MemoryDriver):
        def read(self, location, offset, length, ctx):
            if changes[0]:
                changes[0] -= 1
                self.store.change_after(location.url, payload, MiB)
            return super().read(location, offset, length, ctx)

    with fakes.make_transfer(store, driver_class=_driver(
            store, _ChangesThrice), segments=1, retries=2) as t:
        res = t.copy(URL, out, checksum=fakes.sha(payload))
    assert open(out, 'rb').read() == payload
    assert res.bytes_resumed == 0
    assert sorted(os.listdir(tmp_path)) == ['out']


def test_on_source_change_error_raises_at_the_first_change(tmp_path):
    store = fixture.MemoryStore()
    store.put(URL, fakes.data(4 * MiB))
    out = str(tmp_path / 'out')
    with fakes.make_transfer(store, driver_class=_driver(
            store, _ReplacedWhileRead), segments=1, retries=2,
            on_source_change='error') as t:
        with pytest.raises(exceptions.SourceChanged) as ei:
            t.copy(URL, out)
    assert 'changed since the partial copy was made' in str(ei.value)
    assert os.path.exists(out + '.part')
