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

"""Bencoding, making and parsing torrents, and the path-escape checks."""

import hashlib
import os

import hypothesis
import hypothesis.strategies
import pytest

from oslo_transfer import exceptions
from oslo_transfer import torrent as meta

KiB = 1024
MiB = 1024 * KiB
PIECE = 256 * KiB


def _write(path, data):
    with open(path, 'wb') as f:
        f.write(data)
    return str(path)


# -- bencoding ---------------------------------------------------------------

def test_bencode_round_trip():
    value = {b'a': [1, -2, b'x', {b'k': b''}], b'b': 0, b'c': b'\x00\xff'}
    assert meta.bdecode(meta.bencode(value)) == value


def test_bencode_sorts_keys_and_encodes_text():
    assert meta.bencode({'b': 1, 'a': 'é'}) == b'd1:a2:\xc3\xa91:bi1ee'


def test_bencode_refuses_bool_and_float():
    with pytest.raises(TypeError):
        meta.bencode(True)
    with pytest.raises(TypeError):
        meta.bencode(1.5)


@pytest.mark.parametrize('data,why', [
    (b'i1ee', 'trailing data'),
    (b'i03e', 'malformed integer'),
    (b'i-0e', 'malformed integer'),
    (b'ie', 'malformed integer'),
    (b'5:abc', 'past the end'),
    (b'05:abcde', 'malformed string length'),
    (b'di1e1:ae', 'key is not a string'),
    (b'd1:ai1e1:ai2ee', 'duplicate'),
    (b'l' * 40 + b'e' * 40, 'nesting too deep'),
    (b'x', 'unexpected byte'),
    (b'l1:a', 'unexpected end'),
])
def test_bdecode_is_strict(data, why):
    with pytest.raises(exceptions.InvalidLocation) as ei:
        meta.bdecode(data)
    assert why in str(ei.value)


# -- piece size ---------------------------------------------------------------

@pytest.mark.parametrize('size,piece', [
    (0, 256 * KiB), (1 * MiB, 256 * KiB), (256 * MiB, 256 * KiB),
    (256 * MiB + 1, 512 * KiB), (1024 * MiB, 1 * MiB),
    (4096 * MiB, 4 * MiB), (100 * 1024 * MiB, 4 * MiB),
])
def test_choose_piece_size(size, piece):
    assert meta.choose_piece_size(size) == piece


# -- making -------------------------------------------------------------------

def test_make_single_file(tmp_path):
    data = os.urandom(3 * PIECE + 1234)
    path = _write(tmp_path / 'image.raw', data)
    raw = meta.make_torrent(path, web_seeds=['http://h/image.raw'],
                            trackers=['http://t/announce'])
    m = meta.parse(raw)
    assert m.name == 'image.raw'
    assert m.single_file and m.total_size == len(data)
    assert m.piece_length == PIECE and m.num_pieces == 4
    for i in range(4):
        off, length = m.piece_range(i)
        assert m.piece_hash(i) == hashlib.sha1(
            data[off:off + length]).digest()
    assert m.web_seeds == ('http://h/image.raw',)
    assert m.trackers == ('http://t/announce',)
    assert m.validator == 'btih:' + m.info_hash


def test_info_hash_depends_on_data_only(tmp_path):
    path = _write(tmp_path / 'a.raw', os.urandom(PIECE))
    one = meta.parse(meta.make_torrent(path, web_seeds=['http://x/a']))
    two = meta.parse(meta.make_torrent(path, trackers=['http://t/a']))
    assert one.info_hash == two.info_hash


def test_info_hash_matches_libtorrent(tmp_path):
    import libtorrent as lt  # a requirement: missing must fail
    path = _write(tmp_path / 'a.raw', os.urandom(PIECE + 7))
    raw = meta.make_torrent(path)
    assert str(lt.torrent_info(raw).info_hashes().v1) == \
        meta.parse(raw).info_hash


def test_make_directory(tmp_path):
    root = tmp_path / 'tree'
    (root / 'sub').mkdir(parents=True)
    a = os.urandom(PIECE // 2)
    b = os.urandom(PIECE)
    _write(root / 'sub' / 'b.bin', b)
    _write(root / 'a.bin', a)
    os.symlink('/etc/passwd', root / 'link')
    m = meta.parse(meta.make_torrent(str(root)))
    assert m.name == 'tree' and not m.single_file
    assert [f.path for f in m.files] == [('a.bin',), ('sub', 'b.bin')]
    assert [f.offset for f in m.files] == [0, len(a)]
    whole = a + b
    assert m.piece_hash(0) == hashlib.sha1(whole[:PIECE]).digest()
    assert m.piece_hash(1) == hashlib.sha1(whole[PIECE:]).digest()


@pytest.mark.parametrize('kwargs,why', [
    ({'piece_size': 1000}, 'multiple of 16 KiB'),
    ({'web_seeds': ['ftp://h/x']}, 'not an http'),
    ({'name': '..'}, 'escape'),
])
def test_make_refuses(tmp_path, kwargs, why):
    path = _write(tmp_path / 'x', b'x')
    with pytest.raises(exceptions.InvalidLocation) as ei:
        meta.make_torrent(path, **kwargs)
    assert why in str(ei.value)


def test_make_refuses_missing_path(tmp_path):
    with pytest.raises(exceptions.InvalidLocation):
        meta.make_torrent(str(tmp_path / 'nothing'))


# -- parsing ------------------------------------------------------------------

def _torrent(name=b'x.img', files=None, length=100, extra=None, top=None):
    info = {b'name': name, b'piece length': PIECE, b'pieces': b'\x00' * 20}
    if files is None:
        info[b'length'] = length
    else:
        info[b'files'] = files
    info.update(extra or {})
    t = {b'info': info}
    t.update(top or {})
    return meta.bencode(t)


@pytest.mark.parametrize('name', [b'..', b'.', b'', b'/etc/passwd',
                                  b'../../x', b'a/b', b'a\\b', b'a\x00b'])
def test_unsafe_names_refused(name):
    with pytest.raises(exceptions.InvalidLocation) as ei:
        meta.parse(_torrent(name=name))
    assert 'escape' in str(ei.value)


@pytest.mark.parametrize('path', [[b'..', b'x'], [b'a', b'..'], [b'/abs'],
                                  [b'a', b'', b'b'], [b'a/../../b'], []])
def test_unsafe_file_paths_refused(path):
    files = [{b'length': 100, b'path': path}]
    with pytest.raises(exceptions.InvalidLocation) as ei:
        meta.parse(_torrent(name=b'dir', files=files))
    assert 'refused' in str(ei.value)


def test_utf8_name_field_is_checked_too():
    with pytest.raises(exceptions.InvalidLocation):
        meta.parse(_torrent(extra={b'name.utf-8': b'..'}))


@pytest.mark.parametrize('data,why', [
    (meta.bencode({b'x': 1}), 'no info dictionary'),
    (meta.bencode({b'info': {b'name': b'a', b'meta version': 2,
                             b'piece length': PIECE}}), 'v2-only'),
    (_torrent(length=PIECE * 3), 'piece hashes'),
    (_torrent(extra={b'piece length': 1000}), 'multiple of 16 KiB'),
    (_torrent(files=[]), 'empty file list'),
    (_torrent(length=-1), 'length'),
    (_torrent(files=[{b'length': 1, b'path': [b'a']},
                     {b'length': 1, b'path': [b'a']}]), 'twice'),
])
def test_malformed_refused(data, why):
    with pytest.raises(exceptions.InvalidLocation) as ei:
        meta.parse(data)
    assert why in str(ei.value)


def test_info_hash_is_over_the_raw_bytes():
    """Keys out of order (other clients write such files).

    The info-hash is the SHA-1 of the info dictionary exactly as found.
    """
    info = (b'd6:lengthi100e4:name5:x.img12:piece lengthi262144e'
            b'6:pieces20:' + b'\x00' * 20 + b'e')
    unsorted = b'd4:info' + info[:-1].replace(b'd6:length', b'd4:name5:x.img'
                                              b'6:length', 1)
    unsorted = unsorted.replace(b'i100e4:name5:x.img', b'i100e', 1) + b'ee'
    m = meta.parse(unsorted)
    raw = unsorted[len(b'd4:info'):-1]
    assert m.info_hash == hashlib.sha1(raw).hexdigest()
    assert meta.parse(m.torrent_bytes()).info_hash == m.info_hash


def test_urls_are_collected():
    data = _torrent(top={
        b'announce': b'http://t1/a',
        b'announce-list': [[b'http://t1/a', b'udp://t2:80'], [b'http://t3']],
        b'url-list': [b'http://w1/x', b'ftp://w2/x', b'https://w3/x']})
    m = meta.parse(data)
    assert m.trackers == ('http://t1/a', 'udp://t2:80', 'http://t3')
    assert m.web_seeds == ('http://w1/x', 'https://w3/x')
    assert meta.parse(_torrent(top={b'url-list': b'http://one/x'})
                      ).web_seeds == ('http://one/x',)


def test_torrent_bytes_replaces_urls():
    m = meta.parse(_torrent(top={b'url-list': b'http://w/x',
                                 b'announce': b'http://t/a'}))
    bare = meta.parse(m.torrent_bytes())
    assert bare.web_seeds == () and bare.trackers == ()
    assert bare.info_hash == m.info_hash
    again = meta.parse(m.torrent_bytes(web_seeds=['http://o/x'],
                                       trackers=['http://t/1', 'http://t/2']))
    assert again.web_seeds == ('http://o/x',)
    assert again.trackers == ('http://t/1', 'http://t/2')


def test_pieces_within():
    m = meta.parse(_torrent(length=4 * PIECE - 10,
                            extra={b'pieces': b'\x00' * 80}))
    assert m.pieces_within([]) == []
    assert m.pieces_within([(0, PIECE)]) == [0]
    assert m.pieces_within([(0, PIECE - 1)]) == []
    assert m.pieces_within([(1, 3 * PIECE)]) == [1, 2]
    assert m.pieces_within([(3 * PIECE, 4 * PIECE - 10)]) == [3]
    assert m.pieces_within([(0, PIECE), (2 * PIECE, 4 * PIECE)]) == [0, 2, 3]


def test_metadata_size_limit():
    with pytest.raises(exceptions.InvalidLocation) as ei:
        meta.parse(b'x' * (meta.MAX_METADATA + 1))
    assert 'larger than' in str(ei.value)


# -- the public module -------------------------------------------------------

def test_public_names():
    # what make-torrent and callers use; the helpers stay private
    assert sorted(meta.__all__) == sorted([
        'TorrentMeta', 'TorrentFile', 'make_torrent', 'parse', 'parse_file',
        'choose_piece_size', 'bencode', 'bdecode', 'MIN_PIECE', 'MAX_PIECE',
        'MAX_METADATA'])
    for name in meta.__all__:
        value = getattr(meta, name)
        assert isinstance(value, int) or value.__doc__, name
    # anything else the module defines is underscored
    defined = {n for n, v in vars(meta).items() if not n.startswith('_') and
               (isinstance(v, int) or
                getattr(v, '__module__', None) == meta.__name__)}
    assert defined == set(meta.__all__)


def test_parse_file(tmp_path):
    data = _write(tmp_path / 'image.raw', os.urandom(PIECE + 3))
    raw = meta.make_torrent(data, web_seeds=['http://o/image.raw'])
    path = _write(tmp_path / 'image.torrent', raw)
    m = meta.parse_file(path)
    assert m == meta.parse(raw)
    assert (m.name, m.total_size, m.num_pieces) == ('image.raw',
                                                    PIECE + 3, 2)
    assert m.files == (meta.TorrentFile(path=(), length=PIECE + 3,
                                        offset=0),)


def test_parse_file_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(exceptions.InvalidLocation) as ei:
        meta.parse_file(str(tmp_path / 'missing.torrent'))
    assert 'cannot read torrent metadata' in str(ei.value)
    big = tmp_path / 'big.torrent'
    with open(big, 'wb') as f:
        f.truncate(meta.MAX_METADATA + 1)
    with pytest.raises(exceptions.InvalidLocation) as ei:
        meta.parse_file(str(big))
    assert 'larger than' in str(ei.value)


# -- hostile metadata ------------------------------------------------------

@pytest.mark.parametrize('extra,why', [
    # float division: 10**400 / PIECE overflowed (OverflowError), 2**62 / ...
    # lost precision and counted the wrong number of pieces
    ({b'length': 10 ** 400}, 'length must be an integer'),
    ({b'length': 2 ** 64}, 'length must be an integer'),
    # libtorrent refuses pieces of 512 MiB and more (RuntimeError)
    ({b'piece length': 512 * MiB}, 'piece length must be'),
    ({b'piece length': 2 ** 40}, 'piece length must be'),
])
def test_lengths_a_peer_may_claim_are_bounded(extra, why):
    with pytest.raises(exceptions.InvalidLocation) as ei:
        meta.parse(_torrent(extra=extra))
    assert why in str(ei.value)


def test_file_lengths_cannot_add_up_past_the_largest_size():
    files = [{b'length': 2 ** 62, b'path': [b'a']},
             {b'length': 2 ** 62, b'path': [b'b']}]
    with pytest.raises(exceptions.InvalidLocation) as ei:
        meta.parse(_torrent(files=files))
    assert 'total length' in str(ei.value)


_VALUES = hypothesis.strategies.recursive(
    hypothesis.strategies.one_of(
        hypothesis.strategies.integers(-2 ** 70, 2 ** 70),
        hypothesis.strategies.binary(max_size=40),
        hypothesis.strategies.sampled_from([
            b'..', b'/etc', b'a\x00b', b'x', b'http://h/x', b'\xff\xfe'])),
    lambda inner: hypothesis.strategies.one_of(
        hypothesis.strategies.lists(inner, max_size=4),
        hypothesis.strategies.dictionaries(
            hypothesis.strategies.sampled_from([
                b'name', b'length', b'piece length', b'pieces', b'files',
                b'path', b'info', b'announce', b'url-list', b'private',
                b'announce-list', b'name.utf-8', b'path.utf-8']),
            inner, max_size=6)),
    max_leaves=20)


@hypothesis.given(_VALUES)
def test_parse_takes_any_structure(value):
    try:
        data = meta.bencode({b'info': value} if not isinstance(value, dict)
                            or b'info' not in value else value)
    except TypeError:
        return
    try:
        t = meta.parse(data)
    except exceptions.InvalidLocation:
        return
    assert 0 <= t.total_size <= 2 ** 63 - 1
    assert 0 < t.piece_length <= 256 * MiB
    for f in t.files:
        assert '..' not in f.path and all(f.path)


@hypothesis.given(hypothesis.strategies.binary(max_size=200))
def test_bdecode_takes_any_bytes(data):
    try:
        meta.bdecode(data)
    except exceptions.InvalidLocation:
        pass


@hypothesis.given(hypothesis.strategies.binary(max_size=64))
def test_parse_takes_any_bytes_after_a_valid_prefix(tail):
    try:
        meta.parse(_torrent()[:-1] + tail)
    except exceptions.InvalidLocation:
        pass
