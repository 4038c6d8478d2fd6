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

"""What the engine tells a driver through its Context.

``driver_for``: a driver reaches the Transfer's own driver of another
scheme (never builds one); ``held_bytes``: how much of a read the consumer
holds besides the driver's reads in flight.
"""

import pytest

from oslo_transfer import driver
from oslo_transfer.engine import segments
from oslo_transfer.engine import writers
from oslo_transfer import exceptions
from oslo_transfer import fixture
from tests.unit import fakes

KiB = 1024


class _Recording(fixture.MemoryDriver):
    """Records the context of each ``read`` call (class attribute)."""

    seen = None

    def read(self, location, offset, length, ctx):
        type(self).seen.append(ctx)
        return super().read(location, offset, length, ctx)


def _recording():
    """A fresh store and a recording driver class; ``cls.seen``."""
    cls = type('Recording', (_Recording,), {'seen': []})
    return fixture.MemoryStore(), cls


# -- driver_for ---------------------------------------------------------------

def test_a_context_no_transfer_made_reaches_no_driver():
    with pytest.raises(exceptions.NoDriverFound) as ei:
        driver.Context().driver_for('http://user:secret@origin/image')
    assert 'secret' not in str(ei.value)
    assert str(ei.value) == (
        'no driver for http://user:***@origin/image: this context was not '
        'made by a Transfer, so it reaches no other driver '
        '(Context.driver_for)')


def test_a_driver_reaches_the_transfers_own_driver_of_another_scheme(
        tmp_path):
    store, recording = _recording()
    store.put('memory://h/a', fakes.data(3 * 64 * KiB))
    other = fixture.make_driver_class(name='other', schemes=('other',))
    with fakes.make_transfer(store, recording, segments=1) as t:
        t.drivers.append(other(t.conf))
        t.copy('memory://h/a', str(tmp_path / 'a'))
        # every read, in the engine's segment workers too, gets the very
        # objects the Transfer loaded
        assert recording.seen
        for ctx in recording.seen:
            assert ctx.driver_for('other://x/y') is t.driver('other')
            assert ctx.driver_for('memory://h/b') is t.driver('memory')


def test_a_scheme_no_loaded_driver_serves_is_no_driver_found():
    with fakes.make_transfer(fixture.MemoryStore()) as t:
        ctx = t._context(None)
        with pytest.raises(exceptions.NoDriverFound) as ei:
            ctx.driver_for('https://u:pw@origin/x')
    assert str(ei.value) == ("no loaded driver serves https://u:***@origin/x "
                             "(scheme 'https')")


def test_an_unavailable_driver_is_not_handed_out():
    class Missing(fixture.MemoryDriver):
        name = 'missing'
        schemes = ('gone',)
        store = fixture.MemoryStore()

        def check_available(self):
            raise exceptions.MissingDependency('libgone is not installed')

    with fakes.make_transfer(fixture.MemoryStore()) as t:
        t.drivers.append(Missing(t.conf))
        with pytest.raises(exceptions.NoDriverFound) as ei:
            t._context(None).driver_for('gone://x')
        assert 'missing' not in [d.name for d in t.drivers]
    assert str(ei.value) == ("no loaded driver serves gone://x (scheme "
                             "'gone'): missing: libgone is not installed")


def test_disabled_drivers_still_serve_other_drivers():
    # [oslo_transfer] disabled_drivers is the selector's business: a
    # driver that needs HTTP on its way still gets the http driver
    with fakes.make_transfer(fixture.MemoryStore(),
                             disabled_drivers=['memory']) as t:
        assert t._context(None).driver_for('memory://h/x') is \
            t.driver('memory')


# -- held_bytes ---------------------------------------------------------------

def test_the_download_engine_says_what_it_holds_besides_the_reads(tmp_path):
    """``held_bytes``: the hasher's hand-off and the writer's batches."""
    store, recording = _recording()
    payload = fakes.data(256 * KiB)
    store.put('memory://h/x', payload)
    with fakes.make_transfer(store, recording) as t:
        t.copy('memory://h/x', str(tmp_path / 'x'),
               checksum=fakes.sha(payload))
    assert recording.seen
    assert {(c.aligned_views, c.held_bytes) for c in recording.seen} == {
        (True, segments.HELD_BYTES)}
    assert segments.HELD_BYTES == segments.HANDOFF_BYTES + max(
        writers.BUFFERS * writers.BUFFER_BYTES, writers.QUEUE_BYTES)
    assert segments.HELD_BYTES == 20 * 1024 * KiB


def test_a_reader_of_open_takes_bytes_and_holds_nothing():
    store, recording = _recording()
    store.put('memory://h/x', fakes.data(128 * KiB))
    with fakes.make_transfer(store, recording) as t:
        with t.open('memory://h/x') as reader:
            assert reader.read(-1) == store.get('memory://h/x')
    assert recording.seen
    assert {(c.aligned_views, c.held_bytes)
            for c in recording.seen} == {(False, 0)}
    assert driver.Context().held_bytes == 0
