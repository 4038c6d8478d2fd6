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
from tests.unit import fakes

KiB = 1024


def _seen_by_reads(drv_cls):
    """Make ``drv_cls.read`` record the context of each call."""
    seen = []
    real = drv_cls.read

    def read(self, location, offset, length, ctx):
        seen.append(ctx)
        return real(self, location, offset, length, ctx)

    drv_cls.read = read
    return seen


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
    store = fakes.MemoryStore()
    store.put('mem://a', fakes.data(3 * 64 * KiB))
    mem = fakes.make_driver_class(store=store)
    other = fakes.make_driver_class(name='other', schemes=('other',))
    seen = _seen_by_reads(mem)
    with fakes.make_transfer(mem, segments=1) as t:
        t.drivers.append(other(t.conf))
        t.copy('mem://a', str(tmp_path / 'a'))
        # every read, in the engine's segment workers too, gets the very
        # objects the Transfer loaded
        assert seen
        for ctx in seen:
            assert ctx.driver_for('other://x/y') is t.driver('other')
            assert ctx.driver_for('mem://b') is t.driver('mem')


def test_a_scheme_no_loaded_driver_serves_is_no_driver_found():
    with fakes.make_transfer(fakes.make_driver_class()) as t:
        ctx = t._context(None)
        with pytest.raises(exceptions.NoDriverFound) as ei:
            ctx.driver_for('https://u:pw@origin/x')
    assert str(ei.value) == ("no loaded driver serves https://u:***@origin/x "
                             "(scheme 'https')")


def test_an_unavailable_driver_is_not_handed_out():
    class Missing(fakes.MemoryDriver):
        name = 'missing'
        schemes = ('gone',)

        def check_available(self):
            raise exceptions.MissingDependency('libgone is not installed')

    with fakes.make_transfer(fakes.make_driver_class()) as t:
        t.drivers.append(Missing(t.conf))
        with pytest.raises(exceptions.NoDriverFound) as ei:
            t._context(None).driver_for('gone://x')
        assert 'missing' not in [d.name for d in t.drivers]
    assert str(ei.value) == ("no loaded driver serves gone://x (scheme "
                             "'gone'): missing: libgone is not installed")


def test_disabled_drivers_still_serve_other_drivers():
    # [oslo_transfer] disabled_drivers is the selector's business: a
    # driver that needs HTTP on its way still gets the http driver
    store = fakes.MemoryStore()
    mem = fakes.make_driver_class(store=store)
    with fakes.make_transfer(mem, disabled_drivers=['mem']) as t:
        assert t._context(None).driver_for('mem://x') is t.driver('mem')


# -- held_bytes ---------------------------------------------------------------

def test_the_download_engine_says_what_it_holds_besides_the_reads(tmp_path):
    """``held_bytes``: the hasher's hand-off and the writer's batches."""
    store = fakes.MemoryStore()
    payload = fakes.data(256 * KiB)
    store.put('mem://x', payload)
    mem = fakes.make_driver_class(store=store)
    seen = _seen_by_reads(mem)
    with fakes.make_transfer(mem) as t:
        t.copy('mem://x', str(tmp_path / 'x'), checksum=fakes.sha(payload))
    assert seen
    assert {(c.aligned_views, c.held_bytes) for c in seen} == {
        (True, segments.HELD_BYTES)}
    assert segments.HELD_BYTES == segments.HANDOFF_BYTES + max(
        writers.BUFFERS * writers.BUFFER_BYTES, writers.QUEUE_BYTES)
    assert segments.HELD_BYTES == 20 * 1024 * KiB


def test_a_reader_of_open_takes_bytes_and_holds_nothing():
    store = fakes.MemoryStore()
    store.put('mem://x', fakes.data(128 * KiB))
    mem = fakes.make_driver_class(store=store)
    seen = _seen_by_reads(mem)
    with fakes.make_transfer(mem) as t:
        with t.open('mem://x') as reader:
            assert reader.read(-1) == store.objects['mem://x']
    assert seen
    assert {(c.aligned_views, c.held_bytes) for c in seen} == {(False, 0)}
    assert driver.Context().held_bytes == 0
