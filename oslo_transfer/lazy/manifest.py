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

"""What a lazy image's blocks are verified against, and whether to trust it.

A manifest is a sha256 blockmap (:mod:`oslo_transfer.blockmap`) or
BitTorrent metadata (:mod:`oslo_transfer.torrent`: its piece hashes).  Its
granularity is the block of the lazy image: a block can only be verified
whole.  A manifest is *trusted* when the caller supplied it (a local
path, its bytes, a parsed object) or its sha256; then it verifies every
block before a reader sees it, its zero flags spare the fetch of zero
blocks, and its digest is the cache's identity.  One read from a URL
without a digest, or found next to the origin, proves nothing about the
origin: its block digests are still checked, but it names nothing and
its zero flags are not believed (:func:`resolve`).
"""

import hashlib
import logging
import re

from oslo_transfer import blockmap as blockmap_mod
from oslo_transfer import exceptions
from oslo_transfer import locations
from oslo_transfer import torrent as torrent_mod

LOG = logging.getLogger(__name__)

__all__ = ['Manifest', 'resolve', 'DEFAULT_BLOCK_SIZE']

#: the block of a lazy image without a manifest
DEFAULT_BLOCK_SIZE = blockmap_mod.DEFAULT_BLOCK_SIZE

_DIGEST = re.compile(r'sha256:([0-9a-fA-F]{64})\Z')


class Manifest:
    """The blocks of one image and how to verify each.

    :param kind: ``"blockmap"``, ``"torrent"`` or ``"none"`` (no checks:
        unverified reads).
    :param size: bytes of the image.
    :param block_size: bytes per block (the last one may be shorter).
    :param trusted: the caller supplied it, or its digest.
    :param raw: the manifest's bytes as supplied (for the NBD export's
        spec file), ``b""`` for ``"none"``.
    :param meta: the parsed :class:`~oslo_transfer.blockmap.Blockmap` or
        :class:`~oslo_transfer.torrent.TorrentMeta`.
    """

    def __init__(self, kind: str, size: int, block_size: int,
                 trusted: bool = False, raw: bytes = b'', meta=None):
        self.kind = kind
        self.size = size
        self.block_size = block_size
        self.trusted = trusted
        self.raw = raw
        self.meta = meta

    # -- construction -------------------------------------------------------

    @classmethod
    def none(cls, size: int,
             block_size: int = DEFAULT_BLOCK_SIZE) -> 'Manifest':
        """No manifest: blocks of ``block_size``, nothing verified."""
        return cls('none', size, block_size)

    @classmethod
    def from_blockmap(cls, bm: blockmap_mod.Blockmap,
                      trusted: bool = True) -> 'Manifest':
        return cls('blockmap', bm.size, bm.block_size, trusted,
                   bm.to_bytes(), bm)

    @classmethod
    def from_torrent(cls, meta: torrent_mod.TorrentMeta,
                     trusted: bool = True, raw: bytes | None = None
                     ) -> 'Manifest':
        if not meta.single_file:
            raise exceptions.InvalidLocation(
                'the torrent %s holds several files; a lazy image is one '
                'file' % meta.name)
        return cls('torrent', meta.total_size, meta.piece_length, trusted,
                   raw if raw is not None else meta.torrent_bytes(), meta)

    @classmethod
    def from_bytes(cls, raw: bytes, trusted: bool) -> 'Manifest':
        """A blockmap (by its magic) or a ``.torrent`` file's bytes."""
        raw = bytes(raw)
        if raw.startswith(blockmap_mod.MAGIC):
            return cls.from_blockmap(blockmap_mod.parse(raw), trusted)
        try:
            meta = torrent_mod.parse(raw)
        except exceptions.InvalidLocation as exc:
            raise exceptions.InvalidLocation(
                'the manifest is neither a blockmap nor torrent metadata: '
                '%s' % exc) from exc
        return cls.from_torrent(meta, trusted, raw)

    # -- blocks ------------------------------------------------------------

    @property
    def count(self) -> int:
        """How many blocks the image has."""
        return -(-self.size // self.block_size)

    def block(self, index: int) -> tuple:
        """``(offset, length)`` of block ``index``."""
        start = index * self.block_size
        return start, min(self.block_size, self.size - start)

    def verify(self, index: int, data) -> bool:
        """True when ``data`` is block ``index`` (always, for ``none``)."""
        if len(data) != self.block(index)[1]:
            return False
        if self.kind == 'blockmap':
            return self.meta.verify(index, data)
        if self.kind == 'torrent':
            return hashlib.sha1(data).digest() == self.meta.piece_hash(index)
        return True

    @property
    def has_zero_flags(self) -> bool:
        """True when :meth:`is_zero` may say True (a trusted blockmap)."""
        return self.trusted and self.kind == 'blockmap'

    def is_zero(self, index: int) -> bool:
        """True when block ``index`` is all zeros and need not be fetched."""
        return self.has_zero_flags and self.meta.is_zero(index)

    @property
    def identity(self) -> str | None:
        """The name of the image this manifest trusts, or None.

        ``blockmap-sha256:HEX`` (the blockmap file's digest) or
        ``btih:HEX`` (the torrent's info-hash); None when not trusted.
        """
        if not self.trusted:
            return None
        if self.kind == 'blockmap':
            return 'blockmap-sha256:%s' % self.meta.sha256
        if self.kind == 'torrent':
            return 'btih:%s' % self.meta.info_hash
        return None

    def describe(self) -> str:
        what = {'blockmap': 'blockmap', 'torrent': 'torrent pieces',
                'none': 'no manifest'}[self.kind]
        return '%s (%d blocks of %d bytes%s)' % (
            what, self.count, self.block_size,
            '' if self.trusted or self.kind == 'none' else ', not trusted')


# -- resolving what the caller gave ------------------------------------------

#: the most bytes read for a manifest
_LIMIT = max(blockmap_mod.MAX_BLOCKMAP, torrent_mod.MAX_METADATA)


def _read(transfer, what, ctx) -> bytes:
    """The bytes of a path, URL or Location (bounded)."""
    limit = _LIMIT
    loc = locations.as_location(what)
    if loc.scheme == 'file':
        path = locations.local_path(loc.url)
        try:
            with open(path, 'rb') as f:
                data = f.read(limit + 1)
        except OSError as exc:
            raise exceptions.InvalidLocation(
                'cannot read the manifest %s: %s' % (path, exc)) from exc
    else:
        with transfer.open(loc, cancel=ctx.cancel) as reader:
            data = reader.read(limit + 1)
    if len(data) > limit:
        raise exceptions.InvalidLocation(
            'the manifest %s is larger than %d bytes' % (loc.masked, limit))
    return data


def _beside(loc: locations.Location) -> locations.Location:
    """``URL.blockmap`` next to ``loc``, with its credentials."""
    url = loc.url
    if loc.scheme != 'file':
        parts = loc.parts()
        url = parts._replace(path=parts.path + '.blockmap').geturl()
    else:
        url = locations.local_path(url) + '.blockmap'
    return locations.Location(url, credentials=loc.credentials,
                              headers=loc.headers, options=loc.options)


def _find_beside(transfer, source, ctx, digest=None):
    """The first ``URL.blockmap`` found (and matching ``digest``)."""
    mismatch = None
    for loc in source.urls:
        near = _beside(loc)
        try:
            raw = _read(transfer, near, ctx)
        except (exceptions.SourceNotFound, exceptions.InvalidLocation,
                exceptions.ConnectionFailed, exceptions.NoDriverFound) as exc:
            LOG.debug('no blockmap at %s: %s', near.masked, exc)
            continue
        if digest is not None and \
                hashlib.sha256(raw).hexdigest() != digest:
            mismatch = near.masked
            LOG.warning('%s does not have the sha256 the caller gave; '
                        'ignored', near.masked)
            continue
        LOG.info('using the blockmap found at %s', near.masked)
        return Manifest.from_bytes(raw, trusted=digest is not None)
    if digest is not None:
        if mismatch:
            raise exceptions.ChecksumMismatch(
                'the blockmap at %s does not have sha256 %s'
                % (mismatch, digest), url=mismatch, expected=digest)
        raise exceptions.SourceNotFound(
            'no blockmap next to %s (looked for URL.blockmap) to match '
            'sha256 %s' % (', '.join(u.masked for u in source.urls),
                           digest))
    return None


def resolve(transfer, manifest, source, ctx) -> Manifest | None:
    """The :class:`Manifest` of ``attach(..., manifest=...)``, or None.

    Trusted: a :class:`Manifest` as given, a parsed
    :class:`~oslo_transfer.blockmap.Blockmap` or
    :class:`~oslo_transfer.torrent.TorrentMeta`, bytes, a local path, a
    ``(path_or_url, "sha256:HEX")`` pair whose bytes have that digest,
    ``"sha256:HEX"`` alone (the ``URL.blockmap`` next to a location that
    has that digest) and ``Source.torrent`` when it is a path, bytes or
    parsed metadata.  Not trusted: a URL alone, ``Source.torrent`` given
    as a URL, and a blockmap found next to the origin because
    ``[oslo_transfer] lazy_find_blockmap`` is on.

    :raises ChecksumMismatch: the bytes do not have the digest given.
    :raises InvalidLocation: the manifest cannot be read or parsed.
    """
    if isinstance(manifest, Manifest):
        return manifest
    if isinstance(manifest, blockmap_mod.Blockmap):
        return Manifest.from_blockmap(manifest)
    if isinstance(manifest, torrent_mod.TorrentMeta):
        return Manifest.from_torrent(manifest)
    if isinstance(manifest, (bytes, bytearray, memoryview)):
        return Manifest.from_bytes(bytes(manifest), trusted=True)
    if isinstance(manifest, tuple):
        return _with_digest(transfer, manifest, ctx)
    if isinstance(manifest, str):
        m = _DIGEST.match(manifest)
        if m:
            return _find_beside(transfer, source, ctx, m.group(1).lower())
        return _from_location(transfer, manifest, ctx)
    if manifest is not None:
        raise ValueError('manifest must be a path, a URL, bytes, a '
                         'Blockmap, a TorrentMeta, "sha256:HEX" or a '
                         '(location, "sha256:HEX") pair, not %r'
                         % (manifest,))
    if source.torrent is not None:
        return _from_torrent_source(transfer, source.torrent, ctx)
    if transfer.conf.oslo_transfer.lazy_find_blockmap:
        return _find_beside(transfer, source, ctx)
    return None


def _with_digest(transfer, pair, ctx):
    if len(pair) != 2:
        raise ValueError('a manifest pair is (location, "sha256:HEX")')
    what, digest = pair
    m = _DIGEST.match(digest or '')
    if not m:
        raise ValueError('the digest of a manifest is "sha256:HEX", not %r'
                         % (digest,))
    raw = what if isinstance(what, bytes) else _read(transfer, what, ctx)
    actual = hashlib.sha256(raw).hexdigest()
    if actual != m.group(1).lower():
        name = locations.as_location(what).masked if not isinstance(
            what, bytes) else 'the manifest'
        raise exceptions.ChecksumMismatch(
            '%s has sha256 %s, not %s' % (name, actual, m.group(1).lower()),
            expected=m.group(1).lower(), actual=actual)
    return Manifest.from_bytes(raw, trusted=True)


def _from_location(transfer, what, ctx):
    loc = locations.as_location(what)
    raw = _read(transfer, loc, ctx)
    trusted = loc.scheme == 'file'
    if not trusted:
        LOG.warning('the manifest %s came from the network without a '
                    'digest: it is not trusted', loc.masked)
    return Manifest.from_bytes(raw, trusted=trusted)


def _from_torrent_source(transfer, torrent, ctx):
    if isinstance(torrent, torrent_mod.TorrentMeta):
        return Manifest.from_torrent(torrent)
    if isinstance(torrent, (bytes, bytearray)):
        return Manifest.from_bytes(bytes(torrent), trusted=True)
    return _from_location(transfer, torrent, ctx)
