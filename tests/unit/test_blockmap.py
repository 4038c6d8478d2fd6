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

"""Blockmaps: made from a file, parsed with bounds checks (properties)."""

import hashlib
import struct

import hypothesis
import hypothesis.strategies as st
import pytest

from oslo_transfer import blockmap
from oslo_transfer import exceptions

KiB = 1024
BS = blockmap.MIN_BLOCK_SIZE


def _image(tmp_path, blocks, tail=0):
    """An image of ``blocks`` (each b'z' for zeros or a seed byte)."""
    data = b''.join(bytes(BS) if b == 'z' else
                    hashlib.sha512(bytes([b])).digest() * (BS // 64)
                    for b in blocks)
    data += b'\x07' * tail
    path = tmp_path / 'img'
    path.write_bytes(data)
    return str(path), data


def test_make_and_parse_agree_with_the_image(tmp_path):
    path, data = _image(tmp_path, [1, 'z', 2, 'z'], tail=100)
    raw = blockmap.make_blockmap(path, BS)
    bm = blockmap.parse(raw)
    assert (bm.block_size, bm.size, bm.count) == (BS, len(data), 5)
    zeros = [bm.is_zero(i) for i in range(5)]
    assert zeros == [False, True, False, True, False]
    for i in range(5):
        off, n = bm.block_range(i)
        assert bm.verify(i, data[off:off + n])
        assert not bm.verify(i, data[off:off + n - 1] + b'!')
    assert bm.block_range(4) == (4 * BS, 100)
    assert bm.to_bytes() == raw
    assert bm.sha256 == hashlib.sha256(raw).hexdigest()
    # the documented layout, byte for byte
    assert raw[:32] == struct.pack('>8sIIQQ', b'OTBLKMAP', 1, BS, len(data),
                                   5)
    assert len(raw) == 32 + 5 * 32 + 1
    assert raw[-1] == 0b01010


def test_an_empty_image_has_an_empty_blockmap(tmp_path):
    path = tmp_path / 'empty'
    path.write_bytes(b'')
    bm = blockmap.parse(blockmap.make_blockmap(str(path)))
    assert (bm.size, bm.count) == (0, 0)


def test_parse_file_names_an_unreadable_file(tmp_path):
    with pytest.raises(exceptions.InvalidLocation, match='cannot read'):
        blockmap.parse_file(str(tmp_path / 'missing'))


@pytest.mark.parametrize('size', [BS // 2, 3 * BS, 1000 * KiB])
def test_make_refuses_a_bad_block_size(tmp_path, size):
    path, _ = _image(tmp_path, [1])
    with pytest.raises(ValueError, match='power of two'):
        blockmap.make_blockmap(path, size)


def _header(version=1, bs=BS, size=BS, count=1, magic=b'OTBLKMAP'):
    return struct.pack('>8sIIQQ', magic, version, bs, size, count)


@pytest.mark.parametrize('raw, why', [
    (b'', 'shorter than its header'),
    (_header(magic=b'NOTAMAP!') + bytes(33), 'magic'),
    (_header(version=2) + bytes(33), 'version 2'),
    (_header(bs=3000) + bytes(33), 'power of two'),
    (_header(bs=2 ** 27) + bytes(33), 'power of two'),
    (_header(count=2) + bytes(65), '2 blocks'),
    (_header(size=2 ** 63, count=2 ** 51) + bytes(33), 'too large'),
    (_header() + bytes(32), 'where 1 blocks take'),
    (_header() + bytes(34), 'where 1 blocks take'),
    (_header() + bytes(32) + b'\x02', 'padding bits'),
    (_header() + bytes(32) + b'\x01', 'flagged zero'),
])
def test_parse_refuses(raw, why):
    with pytest.raises(exceptions.InvalidLocation, match=why):
        blockmap.parse(raw)


def test_parse_refuses_a_blockmap_too_large_to_read():
    with pytest.raises(exceptions.InvalidLocation, match='larger than'):
        blockmap.parse(bytes(blockmap.MAX_BLOCKMAP + 1))


# -- properties ---------------------------------------------------------------

_blocks = st.lists(st.one_of(st.just('z'), st.integers(0, 255)),
                   min_size=0, max_size=12)


@hypothesis.given(blocks=_blocks, tail=st.integers(0, BS - 1))
@hypothesis.settings(max_examples=50)
def test_property_a_made_blockmap_round_trips(tmp_path_factory, blocks,
                                              tail):
    path, data = _image(tmp_path_factory.mktemp('bm'), blocks, tail)
    raw = blockmap.make_blockmap(path, BS)
    bm = blockmap.parse(raw)
    assert bm.to_bytes() == raw
    assert bm.size == len(data)
    for i in range(bm.count):
        off, n = bm.block_range(i)
        assert bm.verify(i, data[off:off + n])
        assert bm.is_zero(i) == (data[off:off + n] == bytes(n))


def _valid(count, zero_every=3):
    digests = b''.join(
        hashlib.sha256(bytes(BS)).digest() if i % zero_every == 0 else
        hashlib.sha256(b'%d' % i).digest() for i in range(count))
    flags = bytearray((count + 7) // 8)
    for i in range(0, count, zero_every):
        flags[i // 8] |= 1 << (i % 8)
    return _header(size=count * BS, count=count) + digests + bytes(flags)


@hypothesis.given(count=st.integers(0, 20), data=st.data())
def test_property_a_damaged_blockmap_is_refused_or_read_in_bounds(count,
                                                                  data):
    raw = bytearray(_valid(count))
    edits = data.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1),
                                         st.integers(0, 255)),
                               max_size=4))
    for pos, value in edits:
        raw[pos] = value
    cut = data.draw(st.integers(0, len(raw)))
    raw = bytes(raw[:cut])
    try:
        bm = blockmap.parse(raw)
    except exceptions.InvalidLocation:
        return
    # whatever was accepted is self-consistent and in bounds
    assert bm.to_bytes() == raw
    assert bm.count == -(-bm.size // bm.block_size)
    for i in range(bm.count):
        off, n = bm.block_range(i)
        assert 0 < n <= bm.block_size and off + n <= bm.size
        if bm.is_zero(i):
            assert bm.digest(i) == hashlib.sha256(bytes(n)).digest()


@hypothesis.given(raw=st.binary(max_size=300))
def test_property_random_bytes_never_raise_anything_else(raw):
    try:
        blockmap.parse(b'OTBLKMAP' + raw)
    except exceptions.InvalidLocation:
        pass
