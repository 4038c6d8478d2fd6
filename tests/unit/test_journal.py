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

"""The control file ``DEST.part.ctl`` against anything a disk may hold.

A control file that is not exactly what ``Journal.save`` writes is
ignored with a WARNING naming it, and the copy starts again: never an
exception, never a resume that joins bytes the file did not vouch for.
"""

import json
import logging
import os
import tracemalloc

import hypothesis
from hypothesis import strategies as st
import pytest

from oslo_transfer import _utils
from oslo_transfer.engine import journal as journal_mod
from oslo_transfer import fixture
from tests.unit import fakes

MiB = 1024 * 1024

GOOD = {'version': 1, 'source': 'memory://a', 'validator': 'memory-v1',
        'size': 4 * MiB, 'checksum': None,
        'ranges': [[0, MiB], [2 * MiB, 3 * MiB]], 'algorithm': 'sha256',
        'prefix_len': MiB, 'prefix_digest': 'ab' * 32, 'updated': 1.5}


def _load(tmp_path, blob):
    path = tmp_path / 'x.part.ctl'
    path.write_bytes(blob)
    j = journal_mod.Journal(str(path))
    return j, j.load()


def _check_invariants(j):
    """What the engine may rely on after a successful load."""
    assert isinstance(j.source, str)
    assert j.validator is None or isinstance(j.validator, str)
    assert j.size is None or (type(j.size) is int and
                              0 <= j.size <= journal_mod.MAX_SIZE)
    last = -1
    for s, e in j.ranges:
        assert type(s) is int and type(e) is int
        assert last < s < e <= (journal_mod.MAX_SIZE if j.size is None
                                else j.size)
        last = e
    assert j.lazy is None or (type(j.lazy) is dict and len(j.lazy) <= 16)
    assert type(j.prefix_len) is int
    assert 0 <= j.prefix_len <= j.ranges.prefix()


def _cleared(j):
    return (j.source, j.validator, j.size, j.ranges.to_list(),
            j.prefix_len, j.prefix_digest) == (None, None, None, [], 0, None)


# -- plain regressions: each of these escaped or was trusted before --------

@pytest.mark.parametrize('blob', [
    b'[]',                                      # AttributeError before
    b'"text"',
    b'null',
    b'[' * 100000 + b']' * 100000,              # RecursionError before
    b'{"version": 1, "source": "memory://a", "ranges": ' +
    b'[' * 100000 + b']' * 100000 + b'}',
], ids=['list', 'string', 'null', 'deep-list', 'deep-ranges'])
def test_a_control_file_of_another_shape_is_ignored(tmp_path, caplog, blob):
    with caplog.at_level(logging.WARNING):
        j, ok = _load(tmp_path, blob)
    assert ok is False
    assert _cleared(j)
    assert str(tmp_path / 'x.part.ctl') in caplog.text
    assert 'damaged control file' in caplog.text


@pytest.mark.parametrize('field,value', [
    ('ranges', [[0, True]]),                    # a bool is an int
    ('ranges', [[0, 1.5]]),
    ('ranges', [[0, 1e3]]),
    ('ranges', [['0', '10']]),
    ('ranges', [[-10, 10]]),
    ('ranges', [[10, 10]]),                     # start >= end
    ('ranges', [[20, 10]]),
    ('ranges', [[0, 5 * MiB]]),                 # past the recorded size
    ('ranges', [[0, 10], [5, 20]]),             # overlapping
    ('ranges', [[20, 30], [0, 10]]),            # out of order
    ('ranges', [[0, 10], [10, 20]]),            # touching: save() merges
    ('ranges', [[0, 10, 20]]),
    ('ranges', {'0': 10}),
    ('size', -1),
    ('size', 2 ** 63),
    ('size', 2 ** 64),
    ('size', 4.0 * MiB),
    ('size', '4194304'),
    ('validator', 5),
    ('validator', ['etag']),
    ('source', None),
    ('source', 42),
    ('source', ''),
    ('checksum', {'sha256': 'x'}),
    ('prefix_len', 2 * MiB),                    # more than the held prefix
    ('prefix_len', -1),
    ('prefix_len', True),
    ('prefix_digest', None),
    ('prefix_digest', 'not hex'),
    ('algorithm', None),
    ('version', 2),
    ('version', '1'),
    ('version', True),
])
def test_a_mistyped_or_impossible_field_is_damage(tmp_path, caplog, field,
                                                  value):
    blob = json.dumps(dict(GOOD, **{field: value})).encode()
    with caplog.at_level(logging.WARNING):
        j, ok = _load(tmp_path, blob)
    assert ok is False
    assert _cleared(j)
    assert 'ignoring damaged control file %s' % (
        tmp_path / 'x.part.ctl') in caplog.text


def test_more_ranges_than_save_writes_are_damage(tmp_path, caplog):
    ranges = [[i * 2, i * 2 + 1]
              for i in range(journal_mod.MAX_RANGES + 1)]
    blob = json.dumps(dict(GOOD, ranges=ranges, prefix_len=1)).encode()
    assert len(blob) < journal_mod.MAX_BYTES
    with caplog.at_level(logging.WARNING):
        j, ok = _load(tmp_path, blob)
    assert ok is False
    assert _cleared(j)
    assert '%d ranges, more than' % len(ranges) in caplog.text


@pytest.mark.parametrize('lazy', [
    [1, 2], 'header', 7, {'k': [1]}, {'k': {'n': 1}}, {'k': 2 ** 64},
    {'k': 1.5}, {'n%d' % i: i for i in range(17)}, {'x' * 65: 1}])
def test_a_lazy_entry_of_another_shape_is_damage(tmp_path, caplog, lazy):
    j, ok = _load(tmp_path, json.dumps(dict(GOOD, lazy=lazy)).encode())
    assert not ok
    assert j.lazy is None
    assert 'damaged control file' in caplog.text


def test_a_lazy_header_loads_back(tmp_path):
    header = {'version': 1, 'size': 4 * MiB, 'block_size': 65536,
              'blocks': 64, 'manifest': 'sha256:' + 'cd' * 32}
    j, ok = _load(tmp_path, json.dumps(dict(GOOD, lazy=header)).encode())
    assert ok
    assert j.lazy == header


def test_nan_and_infinity_are_not_json(tmp_path):
    blob = json.dumps(GOOD).replace('1.5', 'NaN').encode()
    assert _load(tmp_path, blob)[1] is False
    blob = json.dumps(GOOD).replace('4194304', 'Infinity').encode()
    assert _load(tmp_path, blob)[1] is False


def test_what_save_writes_loads_back(tmp_path):
    path = str(tmp_path / 'x.part.ctl')
    j = journal_mod.Journal(path)
    j.source, j.validator, j.size = 'memory://a', 'v1', 10 * MiB
    j.ranges = _utils.RangeSet([(0, MiB), (2 * MiB, 5 * MiB)])
    j.algorithm, j.prefix_len, j.prefix_digest = 'sha256', MiB, 'cd' * 32
    j.save()
    k = journal_mod.Journal(path)
    assert k.load() is True
    assert (k.source, k.validator, k.size, k.ranges.to_list(),
            k.algorithm, k.prefix_len, k.prefix_digest) == (
        'memory://a', 'v1', 10 * MiB, [[0, MiB], [2 * MiB, 5 * MiB]],
        'sha256', MiB, 'cd' * 32)


def test_save_records_at_most_max_ranges(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_mod, 'MAX_RANGES', 3)
    path = str(tmp_path / 'x.part.ctl')
    j = journal_mod.Journal(path)
    j.source, j.size = 'memory://a', 100
    j.ranges = _utils.RangeSet([(i * 10, i * 10 + 5) for i in range(6)])
    j.save()
    k = journal_mod.Journal(path)
    assert k.load() is True
    assert k.ranges.to_list() == [[0, 5], [10, 15], [20, 25]]


@pytest.mark.parametrize('kind', ['fifo', 'directory', 'huge'])
def test_a_control_file_that_is_no_small_regular_file(tmp_path, kind):
    path = tmp_path / 'x.part.ctl'
    if kind == 'fifo':
        os.mkfifo(path)         # open() blocked for ever before
    elif kind == 'directory':
        path.mkdir()            # IsADirectoryError escaped before
    else:
        with open(path, 'wb') as f:
            f.truncate(journal_mod.MAX_BYTES + 1)
    assert journal_mod.Journal(str(path)).load() is False


def test_loading_does_not_merge_range_by_range(tmp_path, monkeypatch):
    """The ranges are checked in one pass, never merged one at a time.

    Merging a reversed list one range at a time is quadratic in its
    length; a valid list is taken as it is.
    """
    def add(*_a):
        raise AssertionError('RangeSet.add called while loading')

    ranges = [[i * 4, i * 4 + 2] for i in range(journal_mod.MAX_RANGES)]
    blob = json.dumps(dict(GOOD, size=None, prefix_len=0,
                           ranges=ranges)).encode()
    monkeypatch.setattr(_utils.RangeSet, 'add', add)
    j, ok = _load(tmp_path, blob)
    assert ok is True
    assert len(j.ranges) == journal_mod.MAX_RANGES
    j, ok = _load(tmp_path, json.dumps(dict(GOOD, size=None, prefix_len=0,
                                            ranges=ranges[::-1])).encode())
    assert ok is False


# -- the engine: a damaged control file means "start again" -----------------

@pytest.mark.parametrize('blob', [
    b'[]', b'[' * 50000, json.dumps(dict(
        GOOD, ranges=[[0, 4 * MiB]], prefix_len=0, validator=5)).encode(),
    json.dumps(dict(GOOD, source='memory://a', validator='memory-v1',
                    size=4 * MiB, ranges=[[0, True]])).encode()])
def test_a_copy_over_a_damaged_control_file_starts_again(tmp_path, caplog,
                                                         blob):
    store = fixture.MemoryStore()
    payload = fakes.data(4 * MiB)
    store.put('memory://a', payload)
    out = tmp_path / 'out'
    # Garbage in .part that a trusting resume would splice in.
    (tmp_path / 'out.part').write_bytes(b'\xff' * (4 * MiB))
    (tmp_path / 'out.part.ctl').write_bytes(blob)
    with caplog.at_level(logging.WARNING):
        with fakes.make_transfer(store, segments=1) as t:
            res = t.copy('memory://a', str(out), checksum=fakes.sha(payload))
    assert out.read_bytes() == payload
    assert res.bytes_resumed == 0
    assert res.bytes_transferred == len(payload)
    assert 'ignoring damaged control file %s' % (
        tmp_path / 'out.part.ctl') in caplog.text
    assert sorted(os.listdir(tmp_path)) == ['out']


# -- properties ---------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() |
    st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) |
    st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=30)
_field_names = st.sampled_from(sorted(GOOD) + ['extra'])


@hypothesis.given(data=_json)
def test_any_json_value_loads_or_is_ignored(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp('j')
    j, ok = _load(tmp, json.dumps(data).encode())
    assert ok is False
    assert _cleared(j)


@hypothesis.given(fields=st.dictionaries(_field_names, _json, max_size=4))
def test_any_field_values_load_consistently_or_are_ignored(
        tmp_path_factory, fields):
    tmp = tmp_path_factory.mktemp('j')
    j, ok = _load(tmp, json.dumps(dict(GOOD, **fields)).encode())
    assert ok in (True, False)
    if ok:
        _check_invariants(j)
    else:
        assert _cleared(j)


@hypothesis.given(cut=st.integers(min_value=0))
def test_a_truncated_control_file_is_ignored(tmp_path_factory, cut):
    blob = json.dumps(GOOD).encode()
    tmp = tmp_path_factory.mktemp('j')
    j, ok = _load(tmp, blob[:cut % len(blob)])
    assert ok is False
    assert _cleared(j)


@hypothesis.given(bit=st.integers(min_value=0))
def test_a_bit_flipped_control_file_loads_consistently_or_is_ignored(
        tmp_path_factory, bit):
    blob = bytearray(json.dumps(GOOD).encode())
    bit %= len(blob) * 8
    blob[bit // 8] ^= 1 << (bit % 8)
    tmp = tmp_path_factory.mktemp('j')
    j, ok = _load(tmp, bytes(blob))
    if ok:
        _check_invariants(j)
    else:
        assert _cleared(j)


@hypothesis.given(version=_json.filter(lambda v: not (
    type(v) is int and v == journal_mod.VERSION)))
def test_a_foreign_version_is_ignored(tmp_path_factory, version):
    tmp = tmp_path_factory.mktemp('j')
    j, ok = _load(tmp, json.dumps(dict(GOOD, version=version)).encode())
    assert ok is False


@hypothesis.given(size=st.integers(min_value=0, max_value=2 ** 64),
                  ends=st.lists(st.integers(min_value=1, max_value=2 ** 64),
                                max_size=8))
def test_loading_allocates_nothing_for_a_claimed_length(tmp_path_factory,
                                                        size, ends):
    """Claimed sizes and offsets are numbers, never allocations."""
    ranges = [[e - 1, e] for e in sorted(set(ends))]
    blob = json.dumps(dict(GOOD, size=size, ranges=ranges, prefix_len=0,
                           prefix_digest=None)).encode()
    tmp = tmp_path_factory.mktemp('j')
    tracemalloc.start()
    try:
        j, ok = _load(tmp, blob)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 + 64 * len(blob)
    if ok:
        _check_invariants(j)
