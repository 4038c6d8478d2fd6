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

"""BitTorrent metadata: make ``.torrent`` files and read them.

Public: what ``oslo-transfer make-torrent`` does, and what a caller handles
when it publishes metadata next to an image or hands it to
:class:`~oslo_transfer.locations.Source` (``torrent=``).  Pure Python (no
libtorrent), so it works on hosts without the ``bittorrent`` driver.

* :func:`make_torrent` writes BitTorrent v1 metadata (readable by every
  client) for a file or a directory, with HTTP web seeds (BEP 19) and
  trackers; :func:`choose_piece_size` is the piece size it picks.
* :func:`parse` (bytes) and :func:`parse_file` (a path) read metadata into a
  :class:`TorrentMeta` and refuse, with
  :class:`~oslo_transfer.exceptions.InvalidLocation`, anything that could
  make a client write outside its destination folder (absolute paths,
  ``..``, empty components, separators inside a component), before the
  metadata reaches libtorrent.  The info-hash is computed over the exact
  bytes of the ``info`` dictionary as found in the file.
* :func:`bencode` and :func:`bdecode` read and write the encoding itself,
  for fields this module does not interpret.

Everything else here is an implementation detail.
"""

import concurrent.futures
import dataclasses
import hashlib
import logging
import os
import time
import typing
import urllib.parse

from oslo_transfer import exceptions

LOG = logging.getLogger(__name__)

__all__ = ['TorrentMeta', 'TorrentFile', 'make_torrent', 'parse',
           'parse_file', 'choose_piece_size', 'bencode', 'bdecode',
           'MIN_PIECE', 'MAX_PIECE', 'MAX_METADATA']

_KIB = 1024
_MIB = 1024 * _KIB

#: the smallest piece size that :func:`choose_piece_size` picks
MIN_PIECE = 256 * _KIB
#: the largest piece size that :func:`choose_piece_size` picks
MAX_PIECE = 4 * _MIB
#: pieces aimed at by :func:`choose_piece_size` (before clamping)
_TARGET_PIECES = 1024
#: refuse metadata larger than this (a 1 TiB image at 256 KiB pieces has
#: 80 MiB of hashes: such an image gets bigger pieces)
MAX_METADATA = 64 * _MIB
_MAX_DEPTH = 32


# -- bencoding ----------------------------------------------------------------

def bencode(value) -> bytes:
    """Bencode ``value`` (int, bytes, str, list, tuple, dict)."""
    out = []
    _encode(value, out)
    return b''.join(out)


def _encode(value, out):
    if isinstance(value, bool):
        raise TypeError('cannot bencode a bool')
    if isinstance(value, int):
        out.append(b'i%de' % value)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value)
        out.append(b'%d:' % len(value))
        out.append(value)
    elif isinstance(value, str):
        _encode(value.encode('utf-8'), out)
    elif isinstance(value, (list, tuple)):
        out.append(b'l')
        for item in value:
            _encode(item, out)
        out.append(b'e')
    elif isinstance(value, dict):
        out.append(b'd')
        items = [(k.encode('utf-8') if isinstance(k, str) else bytes(k), v)
                 for k, v in value.items()]
        for k, v in sorted(items):
            _encode(k, out)
            _encode(v, out)
        out.append(b'e')
    else:
        raise TypeError('cannot bencode %s' % type(value).__name__)


class _Decoder:
    """A strict bdecoder that remembers where the ``info`` value lies."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0
        self.info_span = None

    def fail(self, what):
        raise exceptions.InvalidLocation(
            'invalid torrent metadata: %s at byte %d' % (what, self.pos))

    def decode(self, depth=0, key=None):
        if depth > _MAX_DEPTH:
            self.fail('nesting too deep')
        data, pos = self.data, self.pos
        if pos >= len(data):
            self.fail('unexpected end')
        c = data[pos:pos + 1]
        if c == b'i':
            end = data.find(b'e', pos)
            if end < 0:
                self.fail('unterminated integer')
            text = data[pos + 1:end]
            if (not text or text == b'-0' or
                    (text.lstrip(b'-').startswith(b'0') and
                     text.lstrip(b'-') != b'0')):
                self.fail('malformed integer')
            try:
                value = int(text)
            except ValueError:
                self.fail('malformed integer')
            self.pos = end + 1
            return value
        if c == b'l':
            self.pos += 1
            items = []
            while self.data[self.pos:self.pos + 1] != b'e':
                items.append(self.decode(depth + 1))
            self.pos += 1
            return items
        if c == b'd':
            self.pos += 1
            result = {}
            while self.data[self.pos:self.pos + 1] != b'e':
                k = self.decode(depth + 1)
                if not isinstance(k, bytes):
                    self.fail('dictionary key is not a string')
                if k in result:
                    self.fail('duplicate dictionary key %r' % k)
                start = self.pos
                result[k] = self.decode(depth + 1, key=k)
                if depth == 0 and k == b'info':
                    self.info_span = (start, self.pos)
            self.pos += 1
            return result
        if c.isdigit():
            colon = data.find(b':', pos)
            if colon < 0 or colon - pos > 12:
                self.fail('malformed string length')
            text = data[pos:colon]
            if text.startswith(b'0') and text != b'0':
                self.fail('malformed string length')
            n = int(text)
            end = colon + 1 + n
            if end > len(data):
                self.fail('string runs past the end')
            self.pos = end
            return data[colon + 1:end]
        self.fail('unexpected byte %r' % c)


def bdecode(data: bytes):
    """Decode one bencoded value; trailing bytes are an error."""
    dec = _Decoder(bytes(data))
    value = dec.decode()
    if dec.pos != len(dec.data):
        dec.fail('trailing data')
    return value


# -- parsing ------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TorrentFile:
    """One file of a torrent.

    :ivar path: path components under the torrent's name (checked: none
        leaves the folder); ``()`` for a single-file torrent.
    :ivar length: bytes.
    :ivar offset: where the file starts in the torrent's data.
    """

    path: tuple
    length: int
    offset: int


@dataclasses.dataclass(frozen=True)
class TorrentMeta:
    """Parsed, checked BitTorrent v1 metadata.

    :ivar info_hash: hex SHA-1 of the ``info`` dictionary's bytes.
    :ivar name: the suggested file (or folder) name, checked.
    :ivar files: :class:`TorrentFile` list; one entry, ``path == ()``, for a
        single-file torrent.
    :ivar piece_length: bytes per piece (the last one may be shorter).
    :ivar pieces: the concatenated 20-byte SHA-1 of every piece.
    :ivar total_size: bytes of all files together.
    :ivar web_seeds: BEP 19 ``url-list`` entries (http and https only).
    :ivar trackers: announce URLs, tiers flattened, in order.
    :ivar raw_info: the exact bytes of the ``info`` dictionary.
    :ivar private: the ``private`` flag (BEP 27): peers from trackers only.
    """

    info_hash: str
    name: str
    files: tuple
    piece_length: int
    pieces: bytes = dataclasses.field(repr=False)
    total_size: int
    web_seeds: tuple = ()
    trackers: tuple = ()
    raw_info: bytes = dataclasses.field(default=b'', repr=False)
    private: bool = False

    @property
    def num_pieces(self) -> int:
        """How many pieces the data has."""
        return len(self.pieces) // 20

    @property
    def single_file(self) -> bool:
        """True for a single file (not a folder)."""
        return len(self.files) == 1 and self.files[0].path == ()

    @property
    def validator(self) -> str:
        """The validator reported by ``stat()``: the info-hash."""
        return 'btih:%s' % self.info_hash

    def piece_range(self, index: int) -> tuple:
        """``(offset, length)`` of piece ``index`` in the whole data."""
        start = index * self.piece_length
        return start, min(self.piece_length, self.total_size - start)

    def piece_hash(self, index: int) -> bytes:
        """The 20-byte SHA-1 of piece ``index``."""
        return self.pieces[index * 20:index * 20 + 20]

    def pieces_within(self, ranges) -> list:
        """Indexes of the pieces wholly inside ``[(start, end), ...]``."""
        have = []
        for start, end in ranges:
            first = -(-start // self.piece_length)
            for i in range(first, self.num_pieces):
                off, length = self.piece_range(i)
                if off + length > end:
                    break
                have.append(i)
        return sorted(set(have))

    def torrent_bytes(self, web_seeds=(), trackers=()) -> bytes:
        """The metadata with only the given web seeds and trackers."""
        head = {}
        if trackers:
            head[b'announce'] = trackers[0]
            if len(trackers) > 1:
                head[b'announce-list'] = [[t] for t in trackers]
        if web_seeds:
            head[b'url-list'] = list(web_seeds)
        # The info dictionary is spliced in as found, so that the info-hash
        # stays the one of the original file.
        items = sorted([(k, bencode(v)) for k, v in head.items()] +
                       [(b'info', self.raw_info)])
        return b'd' + b''.join(bencode(k) + v for k, v in items) + b'e'


def _text(value, what) -> str:
    if not isinstance(value, bytes):
        raise exceptions.InvalidLocation('invalid torrent metadata: %s is '
                                         'not a string' % what)
    try:
        return value.decode('utf-8')
    except UnicodeDecodeError as exc:
        raise exceptions.InvalidLocation(
            'invalid torrent metadata: %s is not UTF-8' % what) from exc


def _check_component(name: str, what: str = 'file name') -> str:
    """Refuse a path component that could leave the destination folder.

    :raises InvalidLocation: empty, ``.``, ``..``, a separator or a NUL.
    """
    if (not name or name in ('.', '..') or '/' in name or '\\' in name or
            '\x00' in name):
        raise exceptions.InvalidLocation(
            'torrent metadata names %s %r, which would escape the '
            'destination folder; refused' % (what, name))
    return name


#: the largest piece length libtorrent 2.x accepts (it refuses 512 MiB)
_MAX_PIECE_LENGTH = 256 * 1024 * 1024
#: the largest size of a file or a torrent: a file's size is an off_t
_MAX_SIZE = 2 ** 63 - 1


def _int(value, what, minimum=0, maximum=_MAX_SIZE) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or \
            not minimum <= value <= maximum:
        raise exceptions.InvalidLocation(
            'invalid torrent metadata: %s must be an integer from %d to %d'
            % (what, minimum, maximum))
    return value


def _urls(value) -> list:
    if isinstance(value, bytes):
        value = [value]
    if not isinstance(value, list):
        return []
    out = []
    for item in value:
        if isinstance(item, list):
            out.extend(_urls(item))
            continue
        try:
            url = _text(item, 'a URL')
        except exceptions.InvalidLocation:
            continue
        if url and url not in out:
            out.append(url)
    return out


def parse(data: bytes) -> TorrentMeta:
    """Parse and check ``.torrent`` bytes.

    :raises InvalidLocation: malformed metadata, a v2-only torrent, or a
        file name that would escape the destination folder.
    """
    if len(data) > MAX_METADATA:
        raise exceptions.InvalidLocation(
            'torrent metadata of %d bytes is larger than the %d bytes '
            'allowed' % (len(data), MAX_METADATA))
    dec = _Decoder(bytes(data))
    top = dec.decode()
    if dec.pos != len(dec.data):
        dec.fail('trailing data')
    if not isinstance(top, dict) or not isinstance(top.get(b'info'), dict):
        raise exceptions.InvalidLocation('invalid torrent metadata: no info '
                                         'dictionary')
    info = top[b'info']
    raw_info = dec.data[dec.info_span[0]:dec.info_span[1]]
    if b'pieces' not in info:
        raise exceptions.InvalidLocation(
            'a BitTorrent v2-only torrent (no v1 piece hashes) is not '
            'supported; make hybrid or v1 metadata')
    name = _check_component(
        _text(info.get(b'name.utf-8', info.get(b'name')), 'the name'),
        'the name')
    piece_length = _int(info.get(b'piece length'), 'piece length', 1,
                        _MAX_PIECE_LENGTH)
    if piece_length % (16 * _KIB):
        raise exceptions.InvalidLocation(
            'invalid torrent metadata: piece length %d is not a multiple '
            'of 16 KiB' % piece_length)
    pieces = info[b'pieces']
    if not isinstance(pieces, bytes) or len(pieces) % 20:
        raise exceptions.InvalidLocation('invalid torrent metadata: pieces '
                                         'is not a list of SHA-1 hashes')
    files = []
    if b'files' in info:
        entries = info[b'files']
        if not isinstance(entries, list) or not entries:
            raise exceptions.InvalidLocation('invalid torrent metadata: '
                                             'empty file list')
        offset = 0
        seen = set()
        for entry in entries:
            if not isinstance(entry, dict):
                raise exceptions.InvalidLocation('invalid torrent metadata: '
                                                 'a file entry is not a '
                                                 'dictionary')
            comps = entry.get(b'path.utf-8', entry.get(b'path'))
            if not isinstance(comps, list) or not comps:
                raise exceptions.InvalidLocation(
                    'torrent metadata has a file with an empty path; '
                    'refused')
            path = tuple(_check_component(_text(c, 'a path component'))
                         for c in comps)
            if path in seen:
                raise exceptions.InvalidLocation(
                    'torrent metadata names %s twice' % '/'.join(path))
            seen.add(path)
            length = _int(entry.get(b'length'), 'file length')
            files.append(TorrentFile(path, length, offset))
            offset = _int(offset + length, 'the total length')
        total = offset
    else:
        total = _int(info.get(b'length'), 'length')
        files.append(TorrentFile((), total, 0))
    want = -(-total // piece_length)    # exact for any size (no float)
    if len(pieces) // 20 != want:
        raise exceptions.InvalidLocation(
            'invalid torrent metadata: %d piece hashes for %d bytes in '
            'pieces of %d (expected %d)' % (len(pieces) // 20, total,
                                            piece_length, want))
    trackers = _urls(top.get(b'announce-list', []))
    for t in _urls(top.get(b'announce', b'')):
        if t not in trackers:
            trackers.insert(0, t)
    web_seeds = [u for u in _urls(top.get(b'url-list', []))
                 if urllib.parse.urlsplit(u).scheme in ('http', 'https')]
    return TorrentMeta(info_hash=hashlib.sha1(raw_info).hexdigest(),
                       name=name, files=tuple(files),
                       piece_length=piece_length, pieces=pieces,
                       total_size=total, web_seeds=tuple(web_seeds),
                       trackers=tuple(trackers), raw_info=raw_info,
                       private=info.get(b'private') == 1)


def parse_file(path: str) -> TorrentMeta:
    """Read and check the ``.torrent`` file at ``path``.

    :raises InvalidLocation: the file cannot be read, is larger than
        :data:`MAX_METADATA`, or holds metadata that :func:`parse` refuses.
    """
    try:
        with open(path, 'rb') as f:
            data = f.read(MAX_METADATA + 1)
    except OSError as exc:
        raise exceptions.InvalidLocation(
            'cannot read torrent metadata %s: %s' % (path, exc)) from exc
    return parse(data)


# -- making ------------------------------------------------------------------

def choose_piece_size(size: int) -> int:
    """A power of two between 256 KiB and 4 MiB, ~1024 pieces for ``size``."""
    piece = MIN_PIECE
    while piece < MAX_PIECE and size > piece * _TARGET_PIECES:
        piece *= 2
    return piece


def _walk(path):
    """``[(abs_path, components, size)]`` of the regular files in a tree."""
    found = []
    for root, dirs, names in os.walk(path):
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(root, name)
            if os.path.islink(full) or not os.path.isfile(full):
                LOG.warning('make_torrent: skipping %s (not a regular '
                            'file)', full)
                continue
            rel = os.path.relpath(full, path)
            found.append((full, tuple(rel.split(os.sep)),
                          os.path.getsize(full)))
    if not found:
        raise exceptions.InvalidLocation('%s holds no regular file' % path)
    return found


def _read_pieces(files, piece_length):
    """Yield the data of each piece, across file boundaries."""
    buf = bytearray()
    for full, _, size in files:
        with open(full, 'rb') as f:
            left = size
            while left > 0:
                chunk = f.read(min(piece_length - len(buf), left))
                if not chunk:
                    raise exceptions.SizeMismatch(
                        '%s shrank while its torrent was being made' % full)
                left -= len(chunk)
                buf += chunk
                if len(buf) == piece_length:
                    yield bytes(buf)
                    buf.clear()
    if buf:
        yield bytes(buf)


def _hash_pieces(files, piece_length, workers=4) -> bytes:
    # hashlib releases the GIL on large buffers: hash a few pieces at once
    # while the next ones are read.
    digests = []
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        window = []
        for data in _read_pieces(files, piece_length):
            window.append(pool.submit(lambda d: hashlib.sha1(d).digest(),
                                      data))
            if len(window) >= workers * 2:
                digests.append(window.pop(0).result())
        digests.extend(f.result() for f in window)
    return b''.join(digests)


def make_torrent(path: str, web_seeds: typing.Sequence[str] = (),
                 piece_size: int | None = None,
                 trackers: typing.Sequence[str] = (),
                 name: str | None = None,
                 comment: str | None = None,
                 private: bool = False) -> bytes:
    """Make BitTorrent v1 metadata for a file or a directory.

    The info-hash depends only on the data, the name and the piece size, so
    two hosts that make metadata for the same image get the same swarm.

    :param path: a regular file or a directory (its regular files, sorted;
        symbolic links are skipped).
    :param web_seeds: HTTP(S) URLs that serve the same data (BEP 19): for a
        file, the URL of the file; for a directory, the URL of the folder
        that holds it, ending in ``/``.
    :param piece_size: bytes per piece, a multiple of 16 KiB; None chooses
        one from the size (:func:`choose_piece_size`).
    :param trackers: announce URLs, one tier each.
    :param name: the name in the metadata (default: the base name of
        ``path``).
    :returns: the bencoded ``.torrent`` bytes.
    :raises InvalidLocation: ``path`` is neither a file nor a directory, or
        ``piece_size`` is not a multiple of 16 KiB.
    """
    path = os.path.abspath(path)
    name = _check_component(name or os.path.basename(path.rstrip('/')),
                            'the name')
    if os.path.isdir(path):
        files = _walk(path)
    elif os.path.isfile(path):
        files = [(path, (), os.path.getsize(path))]
    else:
        raise exceptions.InvalidLocation('%s is neither a file nor a '
                                         'directory' % path)
    total = sum(f[2] for f in files)
    piece_size = piece_size or choose_piece_size(total)
    if piece_size <= 0 or piece_size % (16 * _KIB):
        raise exceptions.InvalidLocation('piece size %d is not a positive '
                                         'multiple of 16 KiB' % piece_size)
    for url in web_seeds:
        if urllib.parse.urlsplit(url).scheme not in ('http', 'https'):
            raise exceptions.InvalidLocation(
                'web seed %s is not an http(s) URL' % url)
    info = {'name': name, 'piece length': piece_size,
            'pieces': _hash_pieces(files, piece_size)}
    if files[0][1]:
        info['files'] = [{'length': size, 'path': list(comps)}
                         for _, comps, size in files]
    else:
        info['length'] = total
    if private:
        info['private'] = 1
    top = {'info': info, 'created by': 'oslo.transfer',
           'creation date': int(time.time())}
    if comment:
        top['comment'] = comment
    if trackers:
        top['announce'] = trackers[0]
        top['announce-list'] = [[t] for t in trackers]
    if web_seeds:
        top['url-list'] = list(web_seeds)
    return bencode(top)
