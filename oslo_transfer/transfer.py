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

"""The configured object that services use: :class:`Transfer`."""

from concurrent import futures
import logging
import os
import sys
import threading
import time

from oslo_config import cfg
from stevedore import driver as stevedore_driver
from stevedore import extension

from oslo_transfer import checksum as checksum_mod
from oslo_transfer import driver as driver_mod
from oslo_transfer.engine import download
from oslo_transfer.engine import scope as scope_mod
from oslo_transfer.engine import stream
from oslo_transfer.engine import throttle
from oslo_transfer import exceptions
from oslo_transfer.lazy import image as lazy_image
from oslo_transfer import locations
from oslo_transfer import opts
from oslo_transfer import selector as selector_mod

LOG = logging.getLogger(__name__)

DRIVER_NAMESPACE = 'oslo_transfer.drivers'
SELECTOR_NAMESPACE = 'oslo_transfer.selectors'

__all__ = ['Transfer', 'TransferHandle']


class TransferHandle:
    """A transfer running in the background (:meth:`Transfer.submit`).

    :ivar progress: ``(done_bytes, total_bytes_or_None)``, updated live.
    """

    def __init__(self, future, token):
        self._future = future
        self._token = token
        self.progress = (0, None)

    def result(self, timeout: float | None = None):
        """Wait for the :class:`~oslo_transfer.result.Result`.

        Re-raises the transfer's exception; a transfer cancelled before it
        started raises :class:`~oslo_transfer.exceptions.Cancelled` too.
        """
        try:
            return self._future.result(timeout=timeout)
        except futures.CancelledError as exc:
            raise exceptions.Cancelled(self._token.reason or
                                       'cancelled before it started') from exc

    def cancel(self, reason: str = 'cancelled by the caller'):
        """Stop the transfer within the I/O timeout; resumable state stays."""
        self._future.cancel()
        self._token.cancel(reason)

    def done(self) -> bool:
        """True when the transfer ended (success, error or cancel)."""
        return self._future.done()

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` was called."""
        return self._token.cancelled


class Transfer:
    """Drivers, selector, executors and options for one service.

    :param conf: an ``oslo_config.cfg.ConfigOpts``; the options of
        ``[oslo_transfer]`` and of each loaded driver are registered on it.
        None builds a private one with the defaults (scripts).
    :param drivers: entry-point names to load (default: every installed
        driver), or driver classes (tests, embedding).
    :param executor: where :meth:`submit` runs transfers: a futurist
        executor (``futurist.ThreadPoolExecutor``,
        ``futurist.GreenThreadPoolExecutor`` under eventlet) or any
        ``concurrent.futures.Executor`` the service already has.  It stays
        the caller's: :meth:`close` does not shut it down.  Default: a
        thread pool of ``[oslo_transfer] executor_workers`` owned by the
        ``Transfer``.
    """

    def __init__(self, conf: cfg.ConfigOpts | None = None, drivers=None,
                 executor=None):
        if conf is None:
            conf = cfg.ConfigOpts()
            conf([], project='oslo_transfer', default_config_files=[],
                 default_config_dirs=[])
        self.conf = conf
        opts.register_opts(conf)
        if conf.oslo_transfer.switch_interval is not None:
            sys.setswitchinterval(conf.oslo_transfer.switch_interval)
        self.load_failures = {}
        self.unavailable = {}
        self._checked = set()
        self._check_lock = threading.Lock()
        self.drivers = self._load_drivers(drivers)
        g = conf.oslo_transfer
        self.selector = self._load_selector(g.selector)
        self.policy = locations.URLPolicy.from_conf(conf)
        # The standard library's executors: their idle workers stop at
        # once on shutdown, where futurist's poll once a second, which
        # added a second to every command-line copy.
        self._own_executor = executor is None
        self.executor = executor or futures.ThreadPoolExecutor(
            max_workers=g.executor_workers,
            thread_name_prefix='oslo-transfer')
        self.segment_executor = futures.ThreadPoolExecutor(
            max_workers=max(8, g.executor_workers * 4),
            thread_name_prefix='oslo-transfer-segment')
        if g.process_rate_limit:
            throttle.PROCESS_BUCKET.set_rate(g.process_rate_limit)
        throttle.SCHEDULER.limit = g.max_connections_per_origin
        self._closed = False

    # -- loading ------------------------------------------------------------

    def _load_drivers(self, wanted):
        classes = []
        if wanted is not None and all(isinstance(w, type) for w in wanted):
            classes = [(w.name, w) for w in wanted]
        else:
            def failed(_mgr, ep, exc):
                self.load_failures[ep.name] = exc
                LOG.warning('cannot load transfer driver %s: %s', ep.name,
                            exc)

            mgr = extension.ExtensionManager(
                DRIVER_NAMESPACE, invoke_on_load=False,
                on_load_failure_callback=failed)
            for ext in mgr:
                if wanted is not None and ext.name not in wanted:
                    continue
                classes.append((ext.name, ext.plugin))
            if wanted is not None:
                for name in wanted:
                    if name not in [n for n, _ in classes]:
                        self.load_failures.setdefault(
                            name, 'not installed')
        loaded = []
        for name, cls in classes:
            if cls.name != name:
                LOG.warning('driver class %s calls itself %r but is '
                            'registered as %r', cls, cls.name, name)
            opts.register_opts(self.conf, [cls])
            loaded.append(cls(self.conf))
        return loaded

    def check_drivers(self, drivers=None):
        """Run ``check_available()`` once per driver; drop those that fail.

        Checks are lazy (a driver's library is imported when a plan first
        considers it) so that building a Transfer stays cheap.
        """
        with self._check_lock:
            for drv in list(drivers if drivers is not None
                            else self.drivers):
                if drv.name in self._checked:
                    continue
                self._checked.add(drv.name)
                try:
                    drv.check_available()
                except exceptions.MissingDependency as exc:
                    self.unavailable[drv.name] = str(exc)
                    LOG.info('transfer driver %s unavailable: %s', drv.name,
                             exc)
                    self.drivers.remove(drv)

    def _load_selector(self, name):
        try:
            mgr = stevedore_driver.DriverManager(
                SELECTOR_NAMESPACE, name, invoke_on_load=True,
                invoke_args=(self.conf,))
        except Exception as exc:
            raise exceptions.NoDriverFound(
                'cannot load selector %r ([oslo_transfer] selector): %s'
                % (name, exc)) from exc
        return mgr.driver

    def driver(self, name: str) -> driver_mod.Driver:
        for d in self.drivers:
            if d.name == name:
                return d
        raise exceptions.NoDriverFound('no driver named %r' % name)

    def driver_for(self, location) -> driver_mod.Driver:
        """The loaded, available driver that serves ``location``'s scheme.

        What :attr:`oslo_transfer.driver.Context.driver_for` gives a
        driver that needs another protocol on the way (the BitTorrent
        driver fetches metadata and web-seed pieces with the ``http``
        driver).  The first driver in load order whose ``schemes`` hold
        the scheme wins.  ``[oslo_transfer] disabled_drivers`` does not
        apply here: it tells the selector what not to choose for a
        transfer, not what another driver may use on its way.

        :param location: a URL, a path or a
            :class:`~oslo_transfer.locations.Location`.
        :raises NoDriverFound: no loaded driver serves the scheme, or the
            one that does is unavailable here (its library is missing).
        """
        loc = locations.as_location(location)
        serving = [d for d in self.drivers if loc.scheme in d.schemes]
        self.check_drivers(serving)
        for d in serving:
            if d in self.drivers:
                return d
        why = '; '.join('%s: %s' % (d.name, self.unavailable[d.name])
                        for d in serving if d.name in self.unavailable)
        raise exceptions.NoDriverFound(
            'no loaded driver serves %s (scheme %r)%s' % (
                loc.masked, loc.scheme, (': %s' % why) if why else ''),
            url=loc.masked)

    # -- helpers ------------------------------------------------------------

    def _context(self, hints, token=None, source=None, checksum=None):
        g = self.conf.oslo_transfer
        expires_at = None
        if g.total_timeout:
            expires_at = time.monotonic() + g.total_timeout
        return driver_mod.Context(
            cancel=token or driver_mod.CancelToken(),
            io_timeout=g.io_timeout, expires_at=expires_at,
            hints=hints or selector_mod.Hints(),
            check_url=self.policy.check,
            torrent=getattr(source, 'torrent', None),
            expected_size=getattr(source, 'size', None),
            checksum=checksum, driver_for=self.driver_for,
            scheduler=throttle.SCHEDULER)

    @staticmethod
    def _source(source) -> locations.Source:
        if isinstance(source, locations.Source):
            return source
        return locations.Source(urls=[source])

    @staticmethod
    def _checksum(value, source):
        ck = checksum_mod.parse(value)
        sck = checksum_mod.parse(source.checksum) if source.checksum else None
        if ck and sck and ck != sck:
            raise ValueError('checksum %s disagrees with the Source\'s %s'
                             % (ck, sck))
        return ck or sck

    def _locations(self, source):
        locs = list(source.urls)
        if not locs and source.torrent is not None:
            locs = [locations.Location('torrent://metadata')]
        return locs

    def _plan(self, locs, hints, direction, ctx):
        allowed, refused = [], []
        for loc in locs:
            try:
                self.policy.check_scheme(loc.url)
                allowed.append(loc)
            except exceptions.URLNotAllowed as exc:
                refused.append((loc.masked, '-', str(exc)))
        if not allowed:
            raise exceptions.URLNotAllowed(
                '; '.join(r[2] for r in refused) or 'no location given')
        wanted = {loc.scheme for loc in allowed}
        self.check_drivers([d for d in self.drivers
                            if wanted & set(d.schemes) or
                            driver_mod.Capability.PEER_TO_PEER in
                            d.capabilities])
        plan = self.selector.plan(allowed, self.drivers, hints, direction,
                                  ctx)
        plan.candidates, denied = self._policy_filter(plan.candidates)
        plan.dropped = refused + denied + list(plan.dropped)
        if not plan.candidates and denied:
            raise exceptions.URLNotAllowed(
                '; '.join(r[2] for r in refused + denied))
        for name, why in sorted(self.unavailable.items()):
            plan.dropped.append(('*', name, 'unavailable: %s' % why))
        if not plan.candidates:
            why = '; '.join('%s via %s: %s' % d for d in plan.dropped)
            schemes = ', '.join(sorted({loc.scheme for loc in allowed}))
            raise exceptions.NoDriverFound(
                'no installed driver can %s %s%s' % (
                    direction, schemes, (' (%s)' % why) if why else ''))
        LOG.debug('%s', plan.explain())
        return plan

    def _policy_filter(self, candidates):
        """Keep the candidates whose servers the URL policy allows.

        Each driver names the servers it contacts for its location
        (:meth:`~oslo_transfer.driver.Driver.policy_urls`); all of them
        must pass, before any connection.  Returns ``(kept, dropped)``.
        """
        kept, dropped, verdicts = [], [], {}
        for cand in candidates:
            why = None
            try:
                urls = cand.driver_obj.policy_urls(cand.location)
            except exceptions.TransferError as exc:
                why = str(exc)
                urls = ()
            for url in urls:
                if url not in verdicts:
                    try:
                        self.policy.check(url)
                        verdicts[url] = None
                    except exceptions.URLNotAllowed as exc:
                        verdicts[url] = str(exc)
                why = why or verdicts[url]
            if why is None:
                kept.append(cand)
            else:
                dropped.append((cand.url, cand.driver, why))
        for i, cand in enumerate(kept):
            cand.rank = i
        return kept, dropped

    # -- the API ------------------------------------------------------------

    def plan(self, source, dest=None, hints=None):
        """Rank the ways to read ``source`` (and write ``dest``).

        Moves no bytes.  Returns the read plan (a
        :class:`~oslo_transfer.selector.Plan`); when ``dest`` is a URL the
        write plan is attached as ``plan.write_plan``.
        """
        source = self._source(source)
        ctx = self._context(hints, source=source)
        plan = self._plan(self._locations(source), hints, 'read', ctx)
        plan.write_plan = None
        if dest is not None and not locations.is_local(dest):
            plan.write_plan = self._plan([locations.as_location(dest)],
                                         hints, 'write', ctx)
        return plan

    def copy(self, source, dest, checksum=None, hints=None, progress=None,
             if_exists: str = 'verify', mode: int | None = None,
             segments: int | None = None, rate: int | None = None,
             cancel: driver_mod.CancelToken | None = None):
        """Copy ``source`` to ``dest`` (a local path or a URL).

        :param source: URL, path, :class:`~oslo_transfer.locations.Location`
            or :class:`~oslo_transfer.locations.Source`.
        :param dest: local path (written as ``DEST.part``, renamed when
            verified) or a URL (uploaded, see :meth:`upload`).
        :param checksum: ``"ALGO:HEX"`` or Glance's hash pair (a dict with
            ``os_hash_algo``/``os_hash_value``).
        :param hints: a :class:`~oslo_transfer.selector.Hints`.
        :param progress: ``callback(done_bytes, total_or_None)``.
        :param if_exists: ``"verify"`` (keep a matching destination, refuse
            a different one), ``"replace"`` or ``"error"``.
        :param mode: permission bits of the destination (default: umask).
        :param segments: parallel ranged segments (default ``[oslo_transfer]
            segments``).
        :param rate: bytes per second for this transfer (0: unlimited).
        :returns: a :class:`~oslo_transfer.result.Result`.
        """
        source = self._source(source)
        ck = self._checksum(checksum, source)
        ctx = self._context(hints, cancel, source, ck)
        if isinstance(dest, locations.Location) or not locations.is_local(
                dest):
            dest_loc = locations.as_location(dest)
            if dest_loc.scheme != 'file':
                with scope_mod.CallScope(ctx):
                    plan = self._plan(self._locations(source), hints,
                                      'read', ctx)
                    return self._copy_to_url(source, plan, dest_loc, ck,
                                             hints, progress, ctx)
            dest = dest_loc.url
        dest = locations.local_path(os.fspath(dest))
        with scope_mod.CallScope(ctx):
            plan = self._plan(self._locations(source), hints, 'read', ctx)
            job = download.Download(self, plan, dest, ck, ctx,
                                    progress=progress, if_exists=if_exists,
                                    mode=mode, segments=segments, rate=rate,
                                    expected_size=source.size)
            return job.run()

    def _copy_to_url(self, source, plan, dest_loc, ck, hints, progress, ctx):
        first = plan.candidates[0]
        if first.location.scheme == 'file':
            data = locations.local_path(first.location.url)
            size = None
        else:
            data = stream.Reader(self, plan, 0, None, None, ctx)
            size = data.size
        return self.upload(data, dest_loc, size=size, checksum=ck,
                           hints=hints, progress=progress,
                           cancel=ctx.cancel)

    def open(self, source, offset: int = 0, length: int | None = None,
             checksum=None, hints=None,
             cancel: driver_mod.CancelToken | None = None):
        """Open ``source`` for streaming reads; use as a context manager.

        :param offset: first byte; > 0 rules out drivers without ranged
            reads.
        :param length: bytes to read (default: to the end).
        :param checksum: verified only for a whole-object read; a mismatch
            raises from the read that reaches the end.
        :returns: a :class:`~oslo_transfer.engine.stream.Reader`.
        """
        if offset < 0 or (length is not None and length < 0):
            raise ValueError('offset and length must be >= 0')
        source = self._source(source)
        ck = self._checksum(checksum, source)
        ctx = self._context(hints, cancel, source, ck)
        # The reader's calls run on this scope until it is closed.
        scope = scope_mod.CallScope(ctx)
        try:
            plan = self._plan(self._locations(source), hints, 'read', ctx)
            if offset:
                plan.candidates = [c for c in plan.candidates
                                   if driver_mod.Capability.RANGED_READ in
                                   c.driver_obj.capabilities]
                if not plan.candidates:
                    raise exceptions.NoDriverFound(
                        'no driver can read %s from offset %d'
                        % (source.urls[0].masked, offset))
            return stream.Reader(self, plan, offset, length, ck, ctx,
                                 scope=scope)
        except BaseException as exc:
            scope.close()
            err = scope.error(exc)
            if err is not exc:
                raise err from exc
            raise

    def attach(self, source, cache, checksum=None, hints=None,
               manifest=None, prefetch: bool = True,
               profile=None) -> lazy_image.LazyImage:
        """Serve ``source`` before it has arrived: a lazy image.

        Reads of the :class:`~oslo_transfer.lazy.image.LazyImage` fetch
        missing blocks on demand (ranged reads of the selected driver),
        verify them against the manifest, and keep them in the cache
        ``CACHE.part`` (with its present-map ``CACHE.part.map``); the rest
        is prefetched in the background.  Once every block is present and
        verified the cache is renamed to ``cache``, as a ``copy()`` would
        leave it.  See the user guide's "Lazy images".

        :param source: URL, path, Location or Source; its drivers must
            read ranges.
        :param cache: the local path the image ends up at.
        :param checksum: ``"ALGO:HEX"`` of the whole image, checked before
            the rename.
        :param hints: a :class:`~oslo_transfer.selector.Hints`.
        :param manifest: what blocks are verified against, trusted when
            the caller supplies it: a local path or the bytes of a
            blockmap or ``.torrent`` file, a parsed
            :class:`~oslo_transfer.blockmap.Blockmap` or
            :class:`~oslo_transfer.torrent.TorrentMeta`, a ``(location,
            "sha256:HEX")`` pair, or ``"sha256:HEX"`` alone (the
            ``URL.blockmap`` next to a location with that digest).  A URL
            alone is read but not trusted.  None: ``Source.torrent`` if
            any.
        :param prefetch: fetch the rest in the background.
        :param profile: path of an access profile: recorded during the
            first 60 s, or, when it matches the image, fetched first.
        :raises ManifestNotTrusted: no trusted manifest, and
            ``[oslo_transfer] lazy_unverified_reads`` is off.
        :raises DestinationError: another process has the cache.
        """
        return self._attach(source, cache, checksum, hints, manifest,
                            prefetch, profile)

    def _attach(self, source, cache, checksum=None, hints=None,
                manifest=None, prefetch=True, profile=None, **engine):
        """:meth:`attach`, with the engine's knobs (the NBD plugin's)."""
        source = self._source(source)
        ck = self._checksum(checksum, source)
        ctx = self._context(hints, None, source, ck)
        plan = self._plan(self._locations(source), hints, 'read', ctx)
        return lazy_image.attach(self, plan, source, os.fspath(cache), ck,
                                 ctx, manifest=manifest, prefetch=prefetch,
                                 profile=profile, **engine)

    def upload(self, data, dest, size: int | None = None, checksum=None,
               hints=None, progress=None,
               cancel: driver_mod.CancelToken | None = None):
        """Write ``data`` (a path, a file object or an iterable of bytes).

        With a checksum, the last chunk is held back until the digest
        matches, so a corrupt upload never completes.  Uploads retry only
        when ``data`` is a path or a seekable file; FTP and SFTP continue
        at the server's size.
        """
        if size is not None and (type(size) is not int or
                                 not 0 <= size <= 2 ** 63 - 1):
            raise ValueError('size must be an integer from 0 to 2**63-1, '
                             'not %.40r' % (size,))
        ck = checksum_mod.parse(checksum)
        dest_loc = locations.as_location(dest)
        if dest_loc.scheme == 'file':
            src = data
            if not isinstance(data, (str, os.PathLike)):
                src = _DataLocation(data)
                return self._upload_local(src, dest_loc, ck, progress,
                                          cancel, size)
            return self.copy(src, dest_loc.url, checksum=ck, hints=hints,
                             progress=progress, cancel=cancel)
        ctx = self._context(hints, cancel, None, ck)
        with scope_mod.CallScope(ctx):
            plan = self._plan([dest_loc], hints, 'write', ctx)
            return stream.upload(self, plan, data, size, ck, ctx,
                                 progress=progress)

    def _upload_local(self, data, dest_loc, ck, progress, cancel, size):
        ctx = self._context(None, cancel, None, ck)
        drv = _DataDriver(self.conf, data)
        loc = locations.Location('data://upload')
        plan = selector_mod.Plan(candidates=[selector_mod.Candidate(
            url='<data>', driver='data', rank=0,
            reason='caller-supplied data', location=loc, driver_obj=drv)],
            hints=selector_mod.Hints(), direction='write')
        with scope_mod.CallScope(ctx):
            job = download.Download(self, plan, locations.local_path(
                dest_loc.url), ck, ctx, progress=progress,
                if_exists='replace', expected_size=size)
            return job.run()

    def submit(self, source, dest, **kwargs) -> TransferHandle:
        """Run :meth:`copy` in the background; returns a handle."""
        token = kwargs.pop('cancel', None) or driver_mod.CancelToken()
        user_cb = kwargs.pop('progress', None)
        holder = {}

        def progress(done, total):
            h = holder.get('h')
            if h is not None:
                h.progress = (done, total)
            if user_cb is not None:
                user_cb(done, total)

        fut = self.executor.submit(self.copy, source, dest, cancel=token,
                                   progress=progress, **kwargs)
        h = TransferHandle(fut, token)
        holder['h'] = h
        return h

    def seed(self, path, torrent=None, seconds: float | None = None,
             peers=(), verify: bool = True,
             cancel: driver_mod.CancelToken | None = None
             ) -> driver_mod.Seeding:
        """Share the complete local data at ``path`` with peers.

        What ``oslo-transfer seed`` does: the first installed driver with
        ``PEER_TO_PEER`` (``bittorrent``) seeds ``path`` in the background
        of this process, from the same session as the copies it makes.

        :param path: a file, or a directory for metadata that lists
            several files.
        :param torrent: the metadata of ``path``: a path or an http(s) URL
            of a ``.torrent`` file, its bytes, or a
            :class:`~oslo_transfer.torrent.TorrentMeta`.  None: the driver
            makes it now (no web seed; ``[oslo_transfer_bittorrent]
            piece_size``).
        :param seconds: how long; None seeds until
            :meth:`Seeding.stop() <oslo_transfer.driver.Seeding.stop>`.
        :param peers: ``"HOST:PORT"`` of peers to connect to; seeding also
            ends early once each of them has the whole data.
        :param verify: check the data against the metadata first (refused
            with ``DestinationError`` when it does not match); False trusts
            it.
        :param cancel: a :class:`~oslo_transfer.driver.CancelToken` for
            fetching the metadata.
        :returns: the :class:`~oslo_transfer.driver.Seeding`.
        :raises NoDriverFound: no peer-to-peer driver is available.
        """
        drv = self._seeding_driver()
        ctx = self._context(None, cancel)
        return drv.seed(os.fspath(path), torrent, ctx, seconds=seconds,
                        peers=tuple(peers), verify=verify)

    def _seeding_driver(self) -> driver_mod.Driver:
        """The first available driver with ``PEER_TO_PEER``."""
        p2p = [d for d in self.drivers
               if driver_mod.Capability.PEER_TO_PEER in d.capabilities]
        self.check_drivers(p2p)
        for d in p2p:
            if d in self.drivers:
                return d
        why = '; '.join('%s unavailable: %s' % item
                        for item in sorted(self.unavailable.items()))
        raise exceptions.NoDriverFound(
            'no installed peer-to-peer driver can seed%s'
            % (' (%s)' % why if why else ''))

    def close(self):
        """Shut the executors down and release the drivers' connections."""
        if self._closed:
            return
        self._closed = True
        if self._own_executor:
            self.executor.shutdown(wait=True)
        self.segment_executor.shutdown(wait=True)
        for d in self.drivers:
            try:
                d.close()
            except Exception:  # noqa: closing is best effort
                LOG.exception('closing driver %s', d.name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _DataLocation:
    def __init__(self, data):
        self.data = data


class _DataDriver(driver_mod.Driver):
    """Caller-supplied bytes as a one-shot, non-ranged source."""

    name = 'data'
    schemes = ('data',)
    capabilities = driver_mod.Capability.READ

    def __init__(self, conf, data):
        super().__init__(conf)
        self._src = stream.DataSource(data.data,
                                      conf.oslo_transfer.chunk_size)
        self._used = False
        self._lock = threading.Lock()

    def stat(self, location, ctx):
        return driver_mod.Stat(size=self._src.size(), validator=None)

    def read(self, location, offset, length, ctx):
        with self._lock:
            if self._used and not self._src.rewindable:
                raise exceptions.TransferError(
                    'the data was consumed by a failed attempt and cannot '
                    'be read again')
            self._used = True
        return self._src.chunks(offset)
