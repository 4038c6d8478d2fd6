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

"""Blockmaps: the sha256 of every block of an image, and its zero blocks.

Public: what ``oslo-transfer make-blockmap`` writes and what a lazy image
(:meth:`Transfer.attach <oslo_transfer.transfer.Transfer.attach>`)
verifies each block against before any reader sees it.  Pure Python.

The format, version 1 (all integers big-endian, no padding)::

    offset  size         field
    0       8            magic b"OTBLKMAP"
    8       4            version = 1
    12      4            block size B: a power of two, 4 KiB .. 64 MiB
    16      8            image size S, at most 2**63 - 1
    24      8            block count N = ceil(S / B)
    32      32 * N       sha256 of each block, in order (the last block
                         is S - (N - 1) * B bytes long)
    32+32N  ceil(N / 8)  zero flags: bit i % 8 (least significant first)
                         of byte i // 8 is set when block i is all zeros;
                         the unused bits of the last byte are 0

Nothing follows.  A parser refuses (with
:class:`~oslo_transfer.exceptions.InvalidLocation`) a file of any other
length, another magic or version, a block size or count out of bounds, a
set padding bit, and a zero flag on a block whose digest is not that of
zeros; a blockmap is at most :data:`MAX_BLOCKMAP` bytes.  The file's own
sha256 (:attr:`Blockmap.sha256`) names it: a caller who knows that digest
can trust a blockmap found anywhere.
"""

import concurrent.futures
import dataclasses
import functools
import hashlib
import os
import struct

from oslo_transfer import _utils
from oslo_transfer import exceptions

__all__ = ['Blockmap', 'make_blockmap', 'parse', 'parse_file', 'MAGIC',
           'VERSION', 'DEFAULT_BLOCK_SIZE', 'MIN_BLOCK_SIZE',
           'MAX_BLOCK_SIZE', 'MAX_BLOCKMAP']

KiB = 1024
MiB = 1024 * KiB

#: the first bytes of every blockmap
MAGIC = b'OTBLKMAP'
#: the format version this module writes and reads
VERSION = 1
#: the block size :func:`make_blockmap` uses unless told otherwise
DEFAULT_BLOCK_SIZE = 64 * KiB
#: the smallest block size allowed
MIN_BLOCK_SIZE = 4 * KiB
#: the largest block size allowed
MAX_BLOCK_SIZE = 64 * MiB
#: the largest blockmap accepted (a 1 TiB image at 64 KiB blocks needs
#: 512 MiB: such an image takes larger blocks)
MAX_BLOCKMAP = 256 * MiB

_HEADER = struct.Struct('>8sIIQQ')
_DIGEST = 32
_MAX_SIZE = 2 ** 63 - 1


def _fail(what):
    raise exceptions.InvalidLocation('invalid blockmap: %s' % what)


@functools.lru_cache(maxsize=8)
def _zero_digest(length: int) -> bytes:
    return hashlib.sha256(bytes(length)).digest()


def _flags_length(count: int) -> int:
    return (count + 7) // 8


@dataclasses.dataclass(frozen=True)
class Blockmap:
    """A parsed, checked blockmap.

    :ivar block_size: bytes per block (the last one may be shorter).
    :ivar size: bytes of the image.
    :ivar digests: the concatenated 32-byte sha256 of every block.
    :ivar zero_flags: the zero-flag bitmap (see the module).
    """

    block_size: int
    size: int
    digests: bytes = dataclasses.field(repr=False)
    zero_flags: bytes = dataclasses.field(repr=False)

    @property
    def count(self) -> int:
        """How many blocks the image has."""
        return len(self.digests) // _DIGEST

    def block_range(self, index: int) -> tuple:
        """``(offset, length)`` of block ``index``."""
        start = index * self.block_size
        return start, min(self.block_size, self.size - start)

    def digest(self, index: int) -> bytes:
        """The 32-byte sha256 of block ``index``."""
        return self.digests[index * _DIGEST:(index + 1) * _DIGEST]

    def is_zero(self, index: int) -> bool:
        """True when block ``index`` holds only zeros."""
        return bool(self.zero_flags[index >> 3] >> (index & 7) & 1)

    def verify(self, index: int, data) -> bool:
        """True when ``data`` is block ``index``, whole."""
        return (len(data) == self.block_range(index)[1] and
                hashlib.sha256(data).digest() == self.digest(index))

    def to_bytes(self) -> bytes:
        """The blockmap in the format of this module."""
        return (_HEADER.pack(MAGIC, VERSION, self.block_size, self.size,
                             self.count) + self.digests + self.zero_flags)

    @functools.cached_property
    def sha256(self) -> str:
        """Hex sha256 of :meth:`to_bytes`: the blockmap's name."""
        return hashlib.sha256(self.to_bytes()).hexdigest()


def parse(data: bytes) -> Blockmap:
    """Read and check a blockmap (see the module for what is refused).

    :raises InvalidLocation: not a valid version-1 blockmap.
    """
    data = bytes(data)
    if len(data) > MAX_BLOCKMAP:
        _fail('larger than %d bytes' % MAX_BLOCKMAP)
    if len(data) < _HEADER.size:
        _fail('%d bytes, shorter than its header' % len(data))
    magic, version, block_size, size, count = _HEADER.unpack_from(data)
    if magic != MAGIC:
        _fail('no %r magic' % MAGIC.decode())
    if version != VERSION:
        _fail('version %d (this reader knows %d)' % (version, VERSION))
    if not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE or \
            block_size & (block_size - 1):
        _fail('block size %d is not a power of two from %d to %d'
              % (block_size, MIN_BLOCK_SIZE, MAX_BLOCK_SIZE))
    if size > _MAX_SIZE:
        _fail('image size %d is too large' % size)
    if count != -(-size // block_size):
        _fail('%d blocks for %d bytes of %d-byte blocks'
              % (count, size, block_size))
    want = _HEADER.size + count * _DIGEST + _flags_length(count)
    if len(data) != want:
        _fail('%d bytes where %d blocks take %d' % (len(data), count, want))
    end = _HEADER.size + count * _DIGEST
    bm = Blockmap(block_size, size, data[_HEADER.size:end], data[end:])
    if count % 8 and bm.zero_flags[-1] >> (count % 8):
        _fail('padding bits set in the zero flags')
    for index in _flagged(bm.zero_flags, count):
        if bm.digest(index) != _zero_digest(bm.block_range(index)[1]):
            _fail('block %d is flagged zero but its digest is not that '
                  'of zeros' % index)
    return bm


def _flagged(flags: bytes, count: int):
    """The indexes whose zero flag is set."""
    for byte_index, byte in enumerate(flags):
        while byte:
            low = byte & -byte
            index = byte_index * 8 + low.bit_length() - 1
            if index < count:
                yield index
            byte ^= low


def parse_file(path: str) -> Blockmap:
    """Read and check the blockmap file at ``path``.

    :raises InvalidLocation: the file cannot be read or is not a valid
        blockmap.
    """
    try:
        with open(path, 'rb') as f:
            data = f.read(MAX_BLOCKMAP + 1)
    except OSError as exc:
        raise exceptions.InvalidLocation(
            'cannot read blockmap %s: %s' % (path, exc)) from exc
    return parse(data)


def _hash_span(data: bytes, block_size: int) -> list:
    """``(digest, is_zero)`` of each block of ``data``."""
    view = memoryview(data)
    out = []
    for pos in range(0, len(data), block_size):
        block = view[pos:pos + block_size]
        zero = _utils.is_zero(block)
        out.append((_zero_digest(len(block)) if zero else
                    hashlib.sha256(block).digest(), zero))
    return out


def _read_spans(path: str, size: int, span: int):
    with open(path, 'rb') as f:
        left = size
        while left > 0:
            data = f.read(min(span, left))
            if not data:
                raise exceptions.SizeMismatch(
                    '%s shrank while its blockmap was being made' % path)
            left -= len(data)
            yield data


def make_blockmap(path: str, block_size: int = DEFAULT_BLOCK_SIZE,
                  workers: int = 2) -> bytes:
    """The blockmap of the file (or block device) at ``path``.

    :param block_size: a power of two from :data:`MIN_BLOCK_SIZE` to
        :data:`MAX_BLOCK_SIZE`.
    :param workers: threads hashing at once (hashlib releases the GIL).
    :returns: the blockmap's bytes (see the module).
    :raises ValueError: a block size out of bounds, or an image whose
        blockmap would exceed :data:`MAX_BLOCKMAP`.
    """
    if not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE or \
            block_size & (block_size - 1):
        raise ValueError('the block size must be a power of two from %d to '
                         '%d, not %r' % (MIN_BLOCK_SIZE, MAX_BLOCK_SIZE,
                                         block_size))
    with open(path, 'rb') as f:
        size = f.seek(0, os.SEEK_END)
    count = -(-size // block_size)
    if _HEADER.size + count * _DIGEST + _flags_length(count) > MAX_BLOCKMAP:
        raise ValueError('%d blocks of %d bytes make a blockmap larger than '
                         '%d bytes: use larger blocks'
                         % (count, block_size, MAX_BLOCKMAP))
    span = max(block_size, 4 * MiB)
    results = []
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        window = []
        for data in _read_spans(path, size, span):
            window.append(pool.submit(_hash_span, data, block_size))
            if len(window) >= workers * 2:
                results.extend(window.pop(0).result())
        for fut in window:
            results.extend(fut.result())
    flags = bytearray(_flags_length(count))
    for index, (_digest, zero) in enumerate(results):
        if zero:
            flags[index >> 3] |= 1 << (index & 7)
    digests = b''.join(d for d, _zero in results)
    return Blockmap(block_size, size, digests, bytes(flags)).to_bytes()
