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

"""Damaged present-maps and headers: truncated, bit-flipped, foreign.

(The blockmap's own properties are in ``tests/unit/test_blockmap.py``.)
"""

import json

import hypothesis
import hypothesis.strategies as st

from oslo_transfer import exceptions
from oslo_transfer.lazy import presentmap
from tests.unit.lazy import test_durability as dur

COUNT = dur.COUNT


@hypothesis.given(count=st.integers(0, 100), raw=st.binary(max_size=20),
                  fresh=st.booleans())
@hypothesis.settings(max_examples=100)
def test_property_any_map_file_is_read_in_bounds(tmp_path_factory, count,
                                                 raw, fresh):
    path = str(tmp_path_factory.mktemp('map') / 'img.part.map')
    with open(path, 'wb') as f:
        f.write(raw)
    size = (count + 7) // 8
    m = presentmap.PresentMap(path, count)
    assert m.peek() == (len(raw) == size)
    m.open(fresh=fresh)
    got = set(m.indexes())
    assert all(0 <= i < count for i in got)
    if fresh or len(raw) != size:
        # a map of another length (truncated, grown) is not believed
        assert got == set()
        with open(path, 'rb') as f:
            assert f.read() == bytes(size)
    else:
        # every bit within the image is read as written, none beyond it
        assert got == {i for i in range(count)
                       if raw[i >> 3] >> (i & 7) & 1}
    m.close()


def _filled(dest):
    c, _ = dur._open(dest)
    for i in (1, 4, 7):
        c.write(i, dur._blocks()[i])
    assert not c.flush()
    c.close()


_values = st.one_of(st.none(), st.booleans(), st.integers(-2, 2 ** 40),
                    st.text(max_size=8), st.lists(st.integers(), max_size=2))


@hypothesis.given(key=st.sampled_from(['version', 'size', 'block_size',
                                       'blocks', 'manifest']),
                  value=_values)
@hypothesis.settings(max_examples=60, deadline=None)
def test_property_a_foreign_header_drops_the_map(tmp_path_factory, key,
                                                 value):
    """Another version (or image) in the header: the bits are not kept.

    The blocks the control file's ranges hold are only candidates, each
    verified on its first read; the map is rebuilt from them.
    """
    dest = tmp_path_factory.mktemp('hdr') / 'img'
    _filled(dest)
    ctl_path = str(dest) + '.part.ctl'
    with open(ctl_path) as f:
        ctl = json.load(f)
    hypothesis.assume(ctl['lazy'].get(key) != value)
    held, bits = _after_reopen(dest, key, value)
    # the ranges' blocks are kept (a header of the wrong shape is damage:
    # the control file is started again), the map's own bit never is
    assert held in ({1, 4, 7}, set())
    assert bits == held


def test_a_matching_header_keeps_the_map(tmp_path):
    """The control of the property above: the same header keeps bit 10."""
    dest = tmp_path / 'img'
    _filled(dest)
    assert _after_reopen(dest, None, None) == ({1, 4, 7, 10},
                                               {1, 4, 7, 10})


def _after_reopen(dest, key, value):
    """``(held, map bits)`` once reopened."""
    ctl_path = str(dest) + '.part.ctl'
    if key is not None:
        with open(ctl_path) as f:
            ctl = json.load(f)
        ctl['lazy'][key] = value
        with open(ctl_path, 'w') as f:
            json.dump(ctl, f)
    # a map bit that only the map holds: block 10 (never written)
    with open(str(dest) + '.part.map', 'r+b') as f:
        f.seek(1)
        f.write(b'\x04')
    c, held = dur._open(dest)
    c.close()
    return set(held), dur._durable(dest)[0]


@hypothesis.given(cut=st.integers(0, 400), flip=st.integers(0, 3200))
@hypothesis.settings(max_examples=60, deadline=None)
def test_property_a_damaged_control_file_never_misleads(tmp_path_factory,
                                                        cut, flip):
    """A truncated or bit-flipped header: a clear error or a clean start.

    Never another exception, and never a bit over a block whose bytes are
    not there.
    """
    dest = tmp_path_factory.mktemp('ctl') / 'img'
    _filled(dest)
    ctl_path = str(dest) + '.part.ctl'
    with open(ctl_path, 'rb') as f:
        raw = bytearray(f.read())
    if flip < len(raw) * 8:
        raw[flip >> 3] ^= 1 << (flip & 7)
    raw = raw[:max(cut, 1)] if cut < len(raw) else raw
    with open(ctl_path, 'wb') as f:
        f.write(bytes(raw))
    try:
        c, held = dur._open(dest)
    except exceptions.TransferError:
        return
    assert set(held) <= {1, 4, 7}
    c.close()
    dur._assert_no_hole_is_present(dest)
