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

"""BitTorrent (libtorrent 2.x) with the HTTP origin as web seed.

The driver for boot storms: when N hosts need the same image, each fetches
its own slice of the pieces from the HTTP origin and the rest from the
other hosts, so the origin sends each byte about once.

* ``accepts()``: ``torrent:`` locations (a ``Source`` with only metadata),
  and ``http(s)`` locations when the ``Source`` carries torrent metadata
  (``Context.torrent``: a path, a URL or the bytes of a ``.torrent``) or,
  with ``lookup_torrent_next_to_origin``, when ``URL.torrent`` exists.
* ``copy_to_path()`` fills the engine's ``.part`` file and reports each
  verified piece (:mod:`.download`); the origin's pieces are fetched by
  :mod:`.origin`.
* ``after_commit()`` seeds the renamed file for ``seed_time`` seconds from
  the process's one session (:mod:`.seed`, :mod:`.session`) and returns
  the handle (``Result.seeding``); ``seed()`` shares local data on demand
  (``Transfer.seed``).
* Metadata is made and parsed by :mod:`oslo_transfer.torrent` (pure
  Python): file names that would escape the destination folder are refused
  before libtorrent sees them.

``read()`` is not implemented: a torrent has no cheap ordered stream, so
``open()`` uses the HTTP origin instead.  Only single-file torrents can be
copied (``seed`` serves directories too).
"""

import dataclasses
import hashlib
import logging
import os
import threading
import time

from oslo_config import cfg

from oslo_transfer._drivers.bittorrent import origin as origin_mod
from oslo_transfer._drivers.bittorrent import seed as seed_mod
from oslo_transfer import _utils
from oslo_transfer import driver
from oslo_transfer import exceptions
from oslo_transfer import locations
from oslo_transfer import torrent as meta_mod

LOG = logging.getLogger(__name__)

__all__ = ['BitTorrentDriver', 'OPTS', 'make_torrent', 'parse_torrent']

make_torrent = meta_mod.make_torrent
parse_torrent = meta_mod.parse

OPTS = [
    cfg.ListOpt('listen_interfaces', default=['0.0.0.0:6881'],
                help='Addresses and ports the BitTorrent session listens '
                     'on for peers, "IP:PORT" (IPv6 as "[IP]:PORT").  Peers '
                     'must reach this address: on a host with several '
                     'networks, name the address of the storage or '
                     'management network instead of 0.0.0.0.  Port 0 picks '
                     'a free port (only useful when peers learn it from '
                     'the hints).\n\nPossible values:\n\n* "10.0.0.5:6881"'
                     '\n* "0.0.0.0:6881,[::]:6881"'),
    cfg.BoolOpt('local_peer_discovery', default=False,
                help='Find peers on the local network by multicast (BEP 14). '
                     'Off by default: peers come from the caller\'s hints '
                     'and from trackers.  DHT, UPnP and NAT-PMP are always '
                     'off.'),
    cfg.BoolOpt('allow_multiple_connections_per_ip', default=False,
                help='Accept several peers with the same IP address.  Only '
                     'needed when several peers run on one host (tests on '
                     '127.0.0.1, containers sharing an address).'),
    _utils.IntOpt('download_rate_limit', default=0, min=0, max=2 ** 31 - 1,
                  help='Bytes per second that this process downloads from '
                       'peers, all torrents together; 0 means no limit.  '
                       'Applies in the data centre too.'),
    _utils.IntOpt('upload_rate_limit', default=0, min=0, max=2 ** 31 - 1,
                  help='Bytes per second that this process uploads to peers, '
                       'all torrents together; 0 means no limit.  Limit it '
                       'so that seeding does not starve running instances.'),
    _utils.FiniteFloatOpt(
        'seed_time', default=120.0, min=0.0, max=_utils.MAX_SECONDS,
        help='Seconds a host seeds a file after it arrived (in the '
             'background of a service; before "oslo-transfer '
             'copy" returns).  0 turns seeding off.\n\nRelated '
             'options:\n\n* seed_ratio'),
    _utils.FiniteFloatOpt(
        'seed_ratio', default=0.0, min=0.0, max=10 ** 6,
        help='Stop seeding a file earlier, once this many times '
             'its size was uploaded; 0 means no ratio limit.\n\n'
             'Related options:\n\n* seed_time'),
    _utils.IntOpt('piece_size', default=0, min=0, max=256 * 1024 * 1024,
                  help='Piece size in bytes of the torrents made by '
                       '"oslo-transfer make-torrent" and the seed command, a '
                       'power of two and a multiple of 16 KiB; 0 chooses one '
                       'from the size (256 KiB to 4 MiB, about 1024 pieces).'),
    _utils.FiniteFloatOpt(
        'stall_timeout', default=60.0, min=1.0, max=_utils.MAX_SECONDS,
        help='Seconds without a verified piece (from peers or the '
             'web seed) after which the download fails with a '
             'retryable ConnectionFailed, so that the engine tries '
             'the next candidate (the HTTP origin) and keeps the '
             'verified pieces.'),
    _utils.FiniteFloatOpt(
        'peer_wait', default=5.0, min=0.0, max=_utils.MAX_SECONDS,
        help='Seconds without a piece from peers after which this '
             'host also fetches pieces outside its own share from '
             'the web seed (a receiver died, or no peer was '
             'named).'),
    cfg.BoolOpt('help_slower_peers', default=True,
                help='Once this host has fetched its own share of the '
                     'pieces from the web seed, also fetch pieces from the '
                     'back of slower receivers\' shares (pieces no peer '
                     'has yet).  Shortens the tail of a boot storm at the '
                     'cost of some pieces sent twice by the origin.  '
                     'Without Hints.peer_addresses (peers met through a '
                     'tracker), it lets this host fetch free pieces '
                     'outside the slice its endpoint hashes to, which '
                     'covers the slices no host drew.\n\n'
                     'Related options:\n\n* peer_wait'),
    _utils.IntOpt('web_seed_connections', default=2, min=1, max=16,
                  help='Concurrent piece requests to the web seed per '
                       'download.'),
    cfg.BoolOpt('use_metadata_web_seeds', default=True,
                help='Also fetch pieces from the web seeds listed in the '
                     'metadata (BEP 19 url-list), after the location\'s own '
                     'URL.  Each must pass [oslo_transfer] allowed_schemes '
                     'and denied_networks.'),
    cfg.BoolOpt('use_metadata_trackers', default=True,
                help='Announce to the trackers listed in the metadata.  '
                     'Each must pass [oslo_transfer] allowed_schemes and '
                     'denied_networks.'),
    cfg.BoolOpt('lookup_torrent_next_to_origin', default=False,
                help='For an http(s) source without metadata, look for '
                     'URL.torrent next to it (one GET, cached), and use '
                     'BitTorrent when it exists.  Off by default: it costs '
                     'a request per new URL.'),
]

_URL_TTL = 300.0
_MISS_TTL = 60.0
_CACHE_MAX = 64


class _MetaCache:
    """Parsed metadata by source: bytes, path (mtime) or URL (TTL)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._items = {}

    def get(self, key):
        with self._lock:
            item = self._items.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and time.monotonic() > expires:
            return None
        return item

    def put(self, key, value, ttl=None):
        with self._lock:
            if len(self._items) >= _CACHE_MAX:
                self._items.pop(next(iter(self._items)))
            self._items[key] = (value, None if ttl is None
                                else time.monotonic() + ttl)


_CACHE = _MetaCache()


class BitTorrentDriver(driver.Driver):
    """BitTorrent, with the HTTP origin as web seed (libtorrent 2.x)."""

    name = 'bittorrent'
    schemes = ('torrent',)
    capabilities = (driver.Capability.READ |
                    driver.Capability.PEER_TO_PEER |
                    driver.Capability.COPY_TO_PATH |
                    driver.Capability.LAZY_READ)

    def __init__(self, conf):
        super().__init__(conf)
        self._lock = threading.Lock()
        #: statistics of the last download (pieces from peers and origin,
        #: hash failures, bytes), for diagnostics and tests
        self.last_stats = None
        #: info-hash -> endpoints a finished download saw complete, for the
        #: seed that ``after_commit`` starts
        self._seen_complete = {}

    @classmethod
    def list_opts(cls):
        return OPTS

    def check_available(self):
        from oslo_transfer._drivers.bittorrent import session as session_mod
        session_mod.find_libtorrent()

    # -- metadata -------------------------------------------------------------

    def _fetch(self, loc, ctx) -> bytes:
        """The metadata at ``loc``, read by the Transfer's own driver.

        The location's credentials and headers go with it; the URL read
        is the one the policy returned.
        """
        loc = dataclasses.replace(loc, url=ctx.check_url(loc.url))
        reader = ctx.driver_for(loc)
        sub = driver.Context(cancel=ctx.cancel, io_timeout=ctx.io_timeout,
                             expires_at=ctx.expires_at,
                             check_url=ctx.check_url,
                             driver_for=ctx.driver_for)
        buf = bytearray()
        for chunk in reader.read(loc, 0, None, sub):
            buf += chunk
            if len(buf) > meta_mod.MAX_METADATA:
                raise exceptions.InvalidLocation(
                    'torrent metadata at %s is larger than %d bytes'
                    % (loc.masked, meta_mod.MAX_METADATA), url=loc.masked)
        return bytes(buf)

    def load_metadata(self, torrent, ctx) -> meta_mod.TorrentMeta:
        """Parse ``torrent``: a path, an http(s) URL, bytes or parsed meta.

        :raises InvalidLocation: unreadable or unsafe metadata.
        """
        if isinstance(torrent, meta_mod.TorrentMeta):
            return torrent
        if isinstance(torrent, (bytes, bytearray, memoryview)):
            data = bytes(torrent)
            key = ('bytes', hashlib.sha1(data).hexdigest())
            hit = _CACHE.get(key)
            if hit:
                return hit[0]
            meta = meta_mod.parse(data)
            _CACHE.put(key, meta)
            return meta
        loc = locations.as_location(torrent)
        if loc.scheme in ('http', 'https'):
            key = ('url', loc.url)
            hit = _CACHE.get(key)
            if hit:
                return hit[0]
            meta = meta_mod.parse(self._fetch(loc, ctx))
            _CACHE.put(key, meta, _URL_TTL)
            return meta
        if loc.scheme != 'file':
            raise exceptions.InvalidLocation(
                'torrent metadata must be a path, an http(s) URL or bytes, '
                'not %s' % loc.masked)
        path = locations.local_path(loc.url)
        try:
            st = os.stat(path)
            key = ('path', os.path.abspath(path), st.st_mtime_ns, st.st_size)
            hit = _CACHE.get(key)
            if hit:
                return hit[0]
            with open(path, 'rb') as f:
                data = f.read(meta_mod.MAX_METADATA + 1)
        except OSError as exc:
            raise exceptions.InvalidLocation(
                'cannot read torrent metadata %s: %s' % (path, exc)) from exc
        meta = meta_mod.parse(data)
        _CACHE.put(key, meta)
        return meta

    def _lookup(self, location, ctx):
        """Metadata published as ``URL.torrent``, or None (cached)."""
        url = location.url + '.torrent'
        key = ('next-to', url)
        hit = _CACHE.get(key)
        if hit:
            return hit[0]
        loc = locations.Location(url, credentials=location.credentials,
                                 headers=location.headers)
        try:
            meta = meta_mod.parse(self._fetch(loc, ctx))
        except (exceptions.SourceNotFound, exceptions.PermissionDenied):
            _CACHE.put(key, None, _MISS_TTL)
            return None
        _CACHE.put(key, meta, _URL_TTL)
        return meta

    def metadata_for(self, location, ctx):
        """The metadata of ``location`` in ``ctx``, or None."""
        if ctx.torrent is not None:
            return self.load_metadata(ctx.torrent, ctx)
        if location.scheme in ('http', 'https') and \
                self.options.lookup_torrent_next_to_origin:
            return self._lookup(location, ctx)
        return None

    # -- the contract ---------------------------------------------------------

    def policy_urls(self, location) -> list:
        """None for ``torrent:`` metadata; the origin URL otherwise.

        Web seeds and trackers named by the metadata are checked one by
        one, through ``ctx.check_url``, when they are contacted.
        """
        if location.scheme == 'torrent':
            return []
        return [location.url]

    def accepts(self, location, ctx) -> bool:
        scheme = location.scheme
        if scheme == 'torrent':
            return ctx.torrent is not None
        if scheme not in ('http', 'https'):
            return False
        if ctx.torrent is not None:
            return True
        if not self.options.lookup_torrent_next_to_origin:
            return False
        try:
            return self._lookup(location, ctx) is not None
        except exceptions.TransferError as exc:
            LOG.debug('no torrent next to %s: %s', location.masked, exc)
            return False

    def _require_meta(self, location, ctx):
        meta = self.metadata_for(location, ctx)
        if meta is None:
            raise exceptions.InvalidLocation(
                'no torrent metadata for %s' % location.masked,
                url=location.masked)
        return meta

    def stat(self, location, ctx) -> driver.Stat:
        meta = self._require_meta(location, ctx)
        return driver.Stat(size=meta.total_size, validator=meta.validator,
                           ranges=False)

    def _allowed(self, urls, ctx, what):
        ok = []
        for url in urls:
            try:
                ok.append(ctx.check_url(url))
            except exceptions.URLNotAllowed as exc:
                LOG.warning('bittorrent: not using %s %s: %s', what,
                            locations.mask_url(url), exc)
        return ok

    def _origins(self, location, meta, ctx):
        origins = []
        if location.scheme in ('http', 'https'):
            origins.append(location)
        if self.options.use_metadata_web_seeds:
            own = {o.without_userinfo() for o in origins}
            for url in self._allowed(meta.web_seeds, ctx, 'web seed'):
                if url not in own:
                    origins.append(locations.Location(url))
        return origins

    def _session(self):
        from oslo_transfer._drivers.bittorrent import session as session_mod
        return session_mod.get_session(self.options)

    def copy_to_path(self, location, target, ctx, progress=None) -> None:
        from oslo_transfer._drivers.bittorrent import download as download_mod
        meta = self._require_meta(location, ctx)
        if not meta.single_file:
            raise exceptions.InvalidLocation(
                'torrent %s holds %d files; only a single-file torrent can '
                'be copied to one destination' % (meta.info_hash,
                                                  len(meta.files)))
        if target.size is not None and target.size != meta.total_size:
            raise exceptions.SizeMismatch(
                'torrent %s has %d bytes, the destination expects %d'
                % (meta.info_hash, meta.total_size, target.size))
        sess = self._session()
        origins = self._origins(location, meta, ctx)
        trackers = self._trackers(meta, ctx)
        job = download_mod.TorrentDownload(
            sess, meta, target, ctx, self.options, origins=origins,
            trackers=trackers,
            progress=progress or target.progress, seeds=seed_mod.SEEDS)
        try:
            job.run()
        finally:
            self.last_stats = job.stats
        if self.options.seed_time > 0:
            with self._lock:
                self._seen_complete[meta.info_hash] = frozenset(
                    job.seen_complete)

    def _trackers(self, meta, ctx):
        if not self.options.use_metadata_trackers:
            return []
        return self._allowed(meta.trackers, ctx, 'tracker')

    def lazy_reader(self, location, path, meta, ctx, held, deliver,
                    prefetch=True):
        """Pieces through the swarm, the origin as web seed (:mod:`.lazy`)."""
        from oslo_transfer._drivers.bittorrent import lazy as lazy_mod
        if not meta.single_file:
            raise exceptions.InvalidLocation(
                'torrent %s holds %d files; a lazy image is one file'
                % (meta.info_hash, len(meta.files)))
        return lazy_mod.SwarmReader(
            self._session(), meta, path, ctx, self.options,
            origins=self._origins(location, meta, ctx),
            trackers=self._trackers(meta, ctx), held=held, deliver=deliver,
            prefetch=prefetch, retries=self.conf.oslo_transfer.retries,
            urgent_connections=max(4, self.conf.oslo_transfer.segments))

    def after_commit(self, location, path, ctx) -> seed_mod.Handle | None:
        seconds = self.options.seed_time
        if seconds <= 0:
            return None
        meta = self._require_meta(location, ctx)
        with self._lock:
            seen = self._seen_complete.pop(meta.info_hash, ())
        entry, port = self._start_seed(
            meta, path, seconds, ctx,
            getattr(ctx.hints, 'peer_addresses', ()), seen_complete=seen)
        return seed_mod.Handle(seed_mod.SEEDS, entry, port) if entry else None

    def _start_seed(self, meta, path, seconds, ctx, named, **options):
        """Seed ``path`` in the process's session: ``(entry, port)``.

        :param named: ``"HOST:PORT"`` peers to connect to (this host's
            own endpoint among them is skipped).
        :param options: ``SEEDS.start``'s (``seen_complete``, ``verify``).
        """
        sess = self._session()
        port = sess.listen_port()
        others = origin_mod.my_share(origin_mod.resolve_peers(named),
                                     port)[2]
        entry = seed_mod.SEEDS.start(sess, meta, path, seconds,
                                     ratio=self.options.seed_ratio,
                                     peers=others,
                                     trackers=self._trackers(meta, ctx),
                                     **options)
        return entry, port

    def seed(self, path, torrent, ctx, seconds=None, peers=(),
             verify=True) -> seed_mod.Handle:
        """Seed ``path`` now (``Transfer.seed``, the ``seed`` command).

        :raises DestinationError: ``path`` does not match ``torrent``, or
            this process downloads that torrent right now.
        """
        if torrent is None:
            torrent = meta_mod.make_torrent(
                path, piece_size=self.options.piece_size or None)
        meta = self.load_metadata(torrent, ctx)
        entry, port = self._start_seed(meta, os.path.abspath(path),
                                       seconds, ctx, peers, verify=verify)
        if entry is None:
            raise exceptions.DestinationError(
                'cannot seed %s: torrent %s is being downloaded by this '
                'process' % (path, meta.info_hash))
        return seed_mod.Handle(seed_mod.SEEDS, entry, port)
