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

"""The present-map never marks a hole present, whatever a crash drops.

A SIGKILL cannot show a missing fsync (the page cache survives it), so
these tests run the cache over a ``.part`` file that forgets every write
it was not asked to sync (:class:`~tests.unit.lazy.helpers.VolatilePart`),
and crash it at every point.
"""

import hashlib
import json

import hypothesis
import hypothesis.strategies as st

from oslo_transfer import blockmap
from oslo_transfer import driver
from oslo_transfer import exceptions
from oslo_transfer.lazy import cache as cache_mod
from oslo_transfer.lazy import manifest as manifest_mod
from oslo_transfer.lazy import presentmap
from tests.unit import fakes
from tests.unit.lazy import helpers

BS = 4096
COUNT = 12


def _blocks():
    return [bytes([i + 1]) * BS for i in range(COUNT)]


def _manifest():
    data = b''.join(_blocks())
    digests = b''.join(hashlib.sha256(b).digest()
                       for b in _blocks())
    bm = blockmap.Blockmap(BS, len(data), digests,
                           bytes((COUNT + 7) // 8))
    return manifest_mod.Manifest.from_blockmap(bm)


def _open(dest, part_factory=helpers.VolatilePart):
    c = cache_mod.Cache(str(dest), _manifest(), part_factory=part_factory)
    c.acquire(driver.CancelToken())
    held = c.load('memory://origin/image', 'v1', None)
    return c, held


def _crash(c):
    """Die without a flush: unsynced writes are lost, files closed."""
    c.part.crash()
    c.map.close()
    c.part.close()
    c.lock.release()


def _durable(dest):
    """The blocks whose bit is in the map file, and the file's bytes."""
    m = presentmap.PresentMap(str(dest) + '.part.map', COUNT)
    m.peek()
    with open(str(dest) + '.part', 'rb') as f:
        data = f.read()
    return set(m.indexes()), data


def _assert_no_hole_is_present(dest):
    bits, data = _durable(dest)
    for i in bits:
        assert data[i * BS:(i + 1) * BS] == _blocks()[i], (
            'block %d is in the map but not on the disk' % i)
    return bits


def test_a_crash_before_the_flush_loses_the_blocks_and_no_bit(tmp_path):
    dest = tmp_path / 'img'
    c, held = _open(dest)
    assert held == []
    for i in (0, 1, 5):
        assert c.write(i, _blocks()[i])
    _crash(c)
    assert _assert_no_hole_is_present(dest) == set()
    c, held = _open(dest)
    assert held == []
    c.close()


def test_flushed_blocks_survive_a_crash_and_later_ones_do_not(tmp_path):
    dest = tmp_path / 'img'
    c, _ = _open(dest)
    for i in (0, 1, 5):
        c.write(i, _blocks()[i])
    assert c.flush() == []
    c.write(7, _blocks()[7])
    _crash(c)
    assert _assert_no_hole_is_present(dest) == {0, 1, 5}
    c, held = _open(dest)
    assert held == [0, 1, 5]
    # the control file mirrors the map for a copy() that resumes
    ctl = json.loads((tmp_path / 'img.part.ctl').read_text())
    assert ctl['ranges'] == [[0, 2 * BS], [5 * BS, 6 * BS]]
    assert ctl['lazy']['version'] == presentmap.VERSION
    assert ctl['lazy']['blocks'] == COUNT
    c.close()


def test_bits_are_written_only_after_the_data_was_synced(
        tmp_path, monkeypatch):
    dest = tmp_path / 'img'
    c, _ = _open(dest)
    seen = []
    real = presentmap.PresentMap.commit

    def commit(self, indexes):
        # the data of every block about to be marked is durable already
        seen.append((sorted(indexes), dict(c.part.volatile)))
        return real(self, indexes)

    monkeypatch.setattr(presentmap.PresentMap, 'commit', commit)
    c.write(3, _blocks()[3])
    c.write(4, _blocks()[4])
    c.flush()
    assert seen == [([3, 4], {})]
    assert c.part.events[-1] == ('sync',)
    c.close()


def test_a_failed_sync_sets_no_bit_and_stops_the_caching(tmp_path):
    dest = tmp_path / 'img'
    c, _ = _open(dest)
    c.write(0, _blocks()[0])
    c.flush()
    c.write(1, _blocks()[1])
    c.part.fail_sync = exceptions.DestinationError(
        'no space left on the device of %s' % c.part.path)
    assert c.flush() == [1]             # its data may be lost
    assert isinstance(c.failed, exceptions.DestinationError)
    assert not c.write(2, _blocks()[2])  # caching stopped
    _crash(c)
    assert _assert_no_hole_is_present(dest) == {0}


def test_a_full_disk_on_a_write_keeps_the_map_consistent(tmp_path,
                                                         monkeypatch):
    dest = tmp_path / 'img'
    c, _ = _open(dest, part_factory=cache_mod.partfile.PartFile)
    c.write(0, _blocks()[0])
    c.flush()
    fakes.fail_writes(monkeypatch, path_suffix='img.part')
    assert not c.write(1, _blocks()[1])
    assert 'no space left' in str(c.failed)
    monkeypatch.undo()
    c.close()
    assert _assert_no_hole_is_present(dest) == {0}


def test_a_map_of_another_image_is_not_believed(tmp_path):
    dest = tmp_path / 'img'
    c, _ = _open(dest)
    c.write(2, _blocks()[2])
    c.flush()
    c.close()
    ctl_path = tmp_path / 'img.part.ctl'
    ctl = json.loads(ctl_path.read_text())
    ctl['lazy']['manifest'] = 'blockmap-sha256:' + '0' * 64
    ctl['ranges'] = []
    ctl_path.write_text(json.dumps(ctl))
    c, held = _open(dest)
    assert held == []
    c.close()
    assert _durable(dest)[0] == set()


_ops = st.lists(st.one_of(
    st.tuples(st.just('write'), st.integers(0, COUNT - 1)),
    st.just(('flush',)), st.just(('crash',)), st.just(('fail',))),
    max_size=30)


@hypothesis.given(ops=_ops)
@hypothesis.settings(max_examples=60)
def test_property_no_crash_ever_leaves_a_bit_over_a_hole(tmp_path_factory,
                                                         ops):
    dest = tmp_path_factory.mktemp('crash') / 'img'
    c, _ = _open(dest)
    synced = set()
    for op in ops + [('crash',)]:
        if op[0] == 'write':
            c.write(op[1], _blocks()[op[1]])
        elif op[0] == 'flush':
            before = set(c._pending)
            if not c.flush() and c.failed is None:
                synced |= before
        elif op[0] == 'fail':
            c.part.fail_sync = exceptions.DestinationError('EIO')
        else:
            _crash(c)
            bits = _assert_no_hole_is_present(dest)
            assert synced <= bits
            c, held = _open(dest)
            assert set(held) == bits
            synced = set(bits)
    c.close()


def test_the_map_file_is_allocated_when_made(tmp_path):
    m = presentmap.PresentMap(str(tmp_path / 'x.map'), 100)
    m.open(fresh=True)
    st_ = (tmp_path / 'x.map').stat()
    assert st_.st_size == 13 and st_.st_blocks > 0
    assert oct(st_.st_mode & 0o777) == oct(0o600)
    m.commit([0, 99])
    m.close()
    again = presentmap.PresentMap(str(tmp_path / 'x.map'), 100)
    assert again.peek()
    assert list(again.indexes()) == [0, 99]
    # a map of another length is not believed
    assert not presentmap.PresentMap(str(tmp_path / 'x.map'), 200).peek()
