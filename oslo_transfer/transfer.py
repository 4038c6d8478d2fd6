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
from oslo_transfer.engine import digests as digests_mod
from oslo_transfer.engine import download
from oslo_transfer.engine import inplace
from oslo_transfer.engine import progress as progress_mod
from oslo_transfer.engine import retry as retry_mod
from oslo_transfer.engine import scope as scope_mod
from oslo_transfer.engine import stream
from oslo_transfer.engine import throttle
from oslo_transfer import exceptions
from oslo_transfer.lazy import image as lazy_image
from oslo_transfer.lazy import manifest as lazy_manifest
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
        the caller's: :meth:`close` does not shut it down, and a higher
        class waits for one of its ``executor_workers`` like the others.
        Default: a thread pool owned by the ``Transfer``, with room for
        ``[oslo_transfer] executor_workers`` transfers and as many again
        of a higher class while lower classes hold every worker.
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
        # added a second to every command-line copy.  Ours has room for
        # as many transfers again, which a higher class starts on while
        # lower classes hold every worker (the scheduler's extra_workers).
        self._own_executor = executor is None
        self.executor = executor or futures.ThreadPoolExecutor(
            max_workers=2 * g.executor_workers,
            thread_name_prefix='oslo-transfer')
        self.segment_executor = futures.ThreadPoolExecutor(
            max_workers=max(8, g.executor_workers * 4),
            thread_name_prefix='oslo-transfer-segment')
        try:
            weights = throttle.parse_weights(g.class_weights)
        except ValueError as exc:
            raise ValueError('[oslo_transfer] class_weights: %s' % exc) \
                from None
        #: the :class:`~oslo_transfer.engine.throttle.Scheduler` of this
        #: Transfer: its limits, classes and deadlines, and nothing left
        #: in the process when it closes
        self.scheduler = throttle.Scheduler(
            limit=g.max_connections_per_origin, rate=g.process_rate_limit,
            origin_rate=g.origin_rate_limit, weights=weights,
            mode=g.scheduler, admission=g.admission,
            workers=g.executor_workers, bottleneck=g.shared_bottleneck,
            extra_workers=g.executor_workers if self._own_executor else 0)
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

    def _context(self, hints, token=None, source=None, checksum=None,
                 deadline_at=None):
        g = self.conf.oslo_transfer
        expires_at = None
        if g.total_timeout:
            expires_at = time.monotonic() + g.total_timeout
        hints = hints or selector_mod.Hints()
        if deadline_at is None and hints.deadline is not None:
            deadline_at = time.monotonic() + hints.deadline
        return driver_mod.Context(
            cancel=token or driver_mod.CancelToken(),
            io_timeout=g.io_timeout, expires_at=expires_at,
            hints=hints, priority=hints.priority, deadline_at=deadline_at,
            check_url=self.policy.check,
            torrent=getattr(source, 'torrent', None),
            expected_size=getattr(source, 'size', None),
            checksum=checksum, driver_for=self.driver_for,
            scheduler=self.scheduler)

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
        plan.candidates, unfit = self._options_filter(plan.candidates)
        plan.candidates, denied = self._policy_filter(plan.candidates)
        plan.dropped = refused + unfit + denied + list(plan.dropped)
        if not plan.candidates and unfit and not denied:
            raise exceptions.InvalidLocation('; '.join(
                '%s: %s' % (r[0], r[2]) for r in unfit))
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

    @staticmethod
    def _options_filter(candidates):
        """Check each candidate's ``Location.options`` with its driver.

        A value that a driver's option refuses raises ``InvalidLocation``
        at once (the caller's mistake, whichever driver would have run); a
        candidate whose driver does not take one of the names is dropped
        (another driver of the scheme may take it).  Returns ``(kept,
        dropped)``.
        """
        kept, dropped = [], []
        for cand in candidates:
            drv, loc = cand.driver_obj, cand.location
            names = {o.dest for o in drv.location_opts()}
            unknown = sorted(set(loc.options or ()) - names)
            if unknown:
                dropped.append((cand.url, cand.driver,
                                'the %s driver takes no Location option %s '
                                '(it takes: %s)' % (
                                    drv.name, ', '.join(map(repr, unknown)),
                                    ', '.join(sorted(names)) or 'none')))
                continue
            drv.location_options(loc)
            kept.append(cand)
        return kept, dropped

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
             cancel: driver_mod.CancelToken | None = None,
             write_in_place: bool | None = None,
             assume_zeroed: bool = False,
             hash_algos=None, retries: int | None = None,
             retry_backoff: float | None = None, context=None,
             manifest=None):
        """Copy ``source`` to ``dest`` (a local path or a URL).

        :param source: URL, path, :class:`~oslo_transfer.locations.Location`
            or :class:`~oslo_transfer.locations.Source`.
        :param dest: local path (written as ``DEST.part``, renamed when
            verified; a block device is written in place) or a URL
            (uploaded, see :meth:`upload`; ``if_exists`` and ``rate``
            apply, ``mode`` and ``segments`` raise ``ValueError``).
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
        :param write_in_place: write into the existing device or file
            ``dest`` itself: no ``.part``, no rename, the state in
            ``[oslo_transfer] state_dir`` (see the user guide's "Cinder:
            volumes").  None: True when ``dest`` is a block device.
        :param assume_zeroed: in place only: the target reads as zeros, so
            zero runs of the source are skipped rather than written.
            In place, ``mode`` raises ``ValueError``, and ``if_exists=
            "verify"`` overwrites (a device always exists).
        :param hash_algos: hashlib names of the digests to compute while
            the bytes stream, besides the checksum's (None:
            ``([oslo_transfer] default_digest,)``); they are in
            ``Result.digests``.
        :param retries: retries of a failing location, instead of
            ``[oslo_transfer] retries``.  While another candidate is left,
            a failing one gets at most one quick retry; this many apply
            to the last.
        :param retry_backoff: first wait before a retry, in seconds,
            instead of ``[oslo_transfer] retry_backoff``.
        :param context: a request context (``oslo_context``) made current
            around each ``progress`` call, which runs on an engine thread.
        :param manifest: a blockmap or torrent metadata, in any form
            :meth:`attach` takes.  When several locations are read at
            once (a ``Source`` with several URLs that read ranges), each
            piece is verified against it and a location that serves a bad
            one is dropped; a trusted manifest also allows the splice
            without a checksum.  Not used when one location is read.
        :returns: a :class:`~oslo_transfer.result.Result`.
        :raises DeadlineUnreachable: ``hints.deadline`` cannot be met
            (decided after the source's stat; nothing is written).
        :raises DestinationError: in place, the source does not fit the
            device (nothing written).
        """
        return self._copy(source, dest, checksum, hints, progress,
                          if_exists, mode, segments, rate, cancel,
                          write_in_place=write_in_place,
                          assume_zeroed=assume_zeroed,
                          hash_algos=hash_algos, retries=retries,
                          retry_backoff=retry_backoff, context=context,
                          manifest=manifest)

    def _copy(self, source, dest, checksum=None, hints=None, progress=None,
              if_exists='verify', mode=None, segments=None, rate=None,
              cancel=None, deadline_at=None, write_in_place=None,
              assume_zeroed=False, hash_algos=None, verifier=None,
              retries=None, retry_backoff=None, context=None,
              manifest=None):
        policy = retry_mod.RetryPolicy.for_call(self.conf, retries,
                                                retry_backoff)
        progress = progress_mod.in_context(progress, context)
        source = self._source(source)
        ck = self._checksum(checksum, source)
        ctx = self._context(hints, cancel, source, ck, deadline_at)
        if isinstance(dest, locations.Location) or not locations.is_local(
                dest):
            dest_loc = locations.as_location(dest)
            if dest_loc.scheme != 'file':
                _url_dest_args(dest_loc, mode, segments, write_in_place,
                               assume_zeroed)
                with scope_mod.CallScope(ctx):
                    plan = self._plan(self._locations(source), hints,
                                      'read', ctx)
                    return self._copy_to_url(source, plan, dest_loc, ck,
                                             hints, progress, ctx, if_exists,
                                             rate, hash_algos, policy)
            dest = dest_loc.url
        dest = locations.local_path(os.fspath(dest))
        if write_in_place is None:
            write_in_place = inplace.is_block_device(dest)
        if assume_zeroed and not write_in_place:
            raise ValueError('assume_zeroed applies to writes in place '
                             '(write_in_place=True or a block device)')
        if write_in_place and mode is not None:
            raise ValueError('mode applies to a destination renamed into '
                             'place; a write in place keeps the permissions '
                             'of %s' % dest)
        kwargs = dict(progress=progress, if_exists=if_exists, mode=mode,
                      segments=segments, rate=rate,
                      expected_size=source.size, hash_algos=hash_algos,
                      verifier=verifier, retry=policy)
        with scope_mod.CallScope(ctx):
            plan = self._plan(self._locations(source), hints, 'read', ctx)
            if write_in_place:
                job = inplace.InPlaceDownload(self, plan, dest, ck, ctx,
                                              assume_zeroed=assume_zeroed,
                                              **kwargs)
            else:
                if manifest is not None:
                    manifest = lazy_manifest.resolve(self, manifest, source,
                                                     ctx)
                job = download.Download(self, plan, dest, ck, ctx,
                                        manifest=manifest, **kwargs)
            return job.run()

    def _copy_to_url(self, source, plan, dest_loc, ck, hints, progress, ctx,
                     if_exists, rate, hash_algos, policy):
        first = plan.candidates[0]
        if first.location.scheme == 'file':
            data = locations.local_path(first.location.url)
            size = None
        else:
            data = stream.Reader(self, plan, 0, None, None, ctx,
                                 policy=policy)
            size = data.size
        try:
            return self._upload(data, dest_loc, size, ck, hints, progress,
                                ctx.cancel, hash_algos, None, policy,
                                if_exists=if_exists, rate=rate)
        finally:
            if isinstance(data, stream.Reader):
                data.close()

    def open(self, source, offset: int = 0, length: int | None = None,
             checksum=None, hints=None,
             cancel: driver_mod.CancelToken | None = None,
             retries: int | None = None,
             retry_backoff: float | None = None):
        """Open ``source`` for streaming reads; use as a context manager.

        :param offset: first byte; > 0 rules out drivers without ranged
            reads.
        :param length: bytes to read (default: to the end).
        :param checksum: verified only for a whole-object read; a mismatch
            raises from the read that reaches the end.
        :param retries: as for :meth:`copy`: a failing location that is
            not the last gets at most one quick retry.
        :param retry_backoff: as for :meth:`copy`.
        :returns: a :class:`~oslo_transfer.engine.stream.Reader`.
        """
        if offset < 0 or (length is not None and length < 0):
            raise ValueError('offset and length must be >= 0')
        policy = retry_mod.RetryPolicy.for_call(self.conf, retries,
                                                retry_backoff)
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
                                 scope=scope, policy=policy)
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
        # Torrent metadata as the manifest is also the source's: with
        # enough peers the selector ranks BitTorrent first, and the image
        # reads through the swarm.
        manifest = lazy_manifest.resolve(self, manifest, source, ctx)
        if ctx.torrent is None and manifest is not None and \
                manifest.kind == 'torrent':
            ctx.torrent = manifest.meta
        plan = self._plan(self._locations(source), hints, 'read', ctx)
        return lazy_image.attach(self, plan, source, os.fspath(cache), ck,
                                 ctx, manifest=manifest, prefetch=prefetch,
                                 profile=profile, **engine)

    def upload(self, data, dest, size: int | None = None, checksum=None,
               hints=None, progress=None,
               cancel: driver_mod.CancelToken | None = None,
               if_exists: str | None = None, rate: int | None = None,
               hash_algos=None, verifier=None, retries: int | None = None,
               retry_backoff: float | None = None, context=None):
        """Write ``data`` (a path, a file object or an iterable of bytes).

        With a checksum, the last chunk is held back until the digest
        matches, so a corrupt upload never completes.  Uploads retry only
        when ``data`` is a path or a seekable file; FTP and SFTP continue
        at the server's size.  A path may be a block device (sized with
        ``lseek``).

        :param if_exists: what to do with an object already at a URL
            ``dest``, found by a stat before the write: ``"replace"`` (the
            default for a URL) overwrites it; ``"error"`` refuses it;
            ``"verify"`` keeps it when it has the data's size (and digest,
            read back, when a checksum is given) and refuses it otherwise.
            An iSCSI LUN always exists: ``"verify"`` overwrites it.  A
            local ``dest`` follows :meth:`copy` (default ``"verify"`` for
            a path, ``"replace"`` for other data).
        :param rate: bytes per second for this upload (default
            ``[oslo_transfer] rate_limit``; 0: unlimited).

        :param size: bytes of ``data``, when known (sent as
            Content-Length).
        :param checksum: ``"ALGO:HEX"`` or Glance's hash pair; a mismatch
            aborts the upload before its last chunk.
        :param hash_algos: hashlib names of the digests to compute, all in
            the one pass over the data (Glance: ``("md5", "sha512")``).
            None: ``([oslo_transfer] default_digest,)``.  The checksum's
            algorithm is always computed.  ``Result.digests`` holds them.
        :param verifier: an object with ``update(bytes)`` and
            ``verify()``, as cursive's signature verifiers are: fed every
            byte in order, once; when ``verify()`` raises, the upload is
            aborted before its last chunk, nothing is committed, and
            :class:`~oslo_transfer.exceptions.VerificationFailed` is
            raised.
        :param retries: as for :meth:`copy`.
        :param retry_backoff: as for :meth:`copy`.
        :param context: as for :meth:`copy`.
        :returns: a :class:`~oslo_transfer.result.Result` whose ``size``
            is the bytes of the data and ``digests`` every digest.
        :raises ValueError: an unknown algorithm in ``hash_algos``.
        """
        if size is not None and (type(size) is not int or
                                 not 0 <= size <= 2 ** 63 - 1):
            raise ValueError('size must be an integer from 0 to 2**63-1, '
                             'not %.40r' % (size,))
        policy = retry_mod.RetryPolicy.for_call(self.conf, retries,
                                                retry_backoff)
        progress = progress_mod.in_context(progress, context)
        return self._upload(data, dest, size, checksum, hints, progress,
                            cancel, hash_algos, verifier, policy,
                            if_exists=if_exists, rate=rate)

    def _upload(self, data, dest, size, checksum, hints, progress, cancel,
                hash_algos, verifier, policy, if_exists=None, rate=None):
        ck = checksum_mod.parse(checksum)
        algos = digests_mod.algorithms(
            hash_algos, download.default_digest(self.conf))
        dest_loc = locations.as_location(dest)
        if if_exists not in (None, 'verify', 'replace', 'error'):
            raise ValueError('if_exists must be "verify", "replace" or '
                             '"error", not %r' % (if_exists,))
        if rate is not None and (
                isinstance(rate, bool) or
                not isinstance(rate, (int, float)) or
                not 0 <= rate <= download.MAX_RATE):
            raise ValueError('rate must be 0 (unlimited) or a positive '
                             'number of bytes per second, not %r' % (rate,))
        if dest_loc.scheme == 'file':
            src = data
            if not isinstance(data, (str, os.PathLike)):
                src = _DataLocation(data)
                return self._upload_local(src, dest_loc, ck, progress,
                                          cancel, size, algos, verifier,
                                          policy, if_exists, rate)
            return self._copy(src, dest_loc.url, ck, hints, progress,
                              if_exists or 'verify', None, None, rate, cancel,
                              hash_algos=algos, verifier=verifier,
                              retries=policy.retries,
                              retry_backoff=policy.backoff)
        ctx = self._context(hints, cancel, None, ck)
        with scope_mod.CallScope(ctx):
            plan = self._plan([dest_loc], hints, 'write', ctx)
            return stream.upload(self, plan, data, size, ck, ctx,
                                 progress=progress,
                                 if_exists=if_exists or 'replace', rate=rate,
                                 algos=algos, verifier=verifier,
                                 policy=policy)

    def _upload_local(self, data, dest_loc, ck, progress, cancel, size,
                      algos, verifier, policy, if_exists=None, rate=None):
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
                if_exists=if_exists or 'replace', rate=rate,
                expected_size=size, hash_algos=algos, verifier=verifier,
                retry=policy)
            return job.run()

    def submit(self, source, dest, **kwargs) -> TransferHandle:
        """Run :meth:`copy` in the background; returns a handle.

        The transfer queues in the scheduler: it starts when one of
        ``[oslo_transfer] executor_workers`` is free, the classes of
        ``hints.priority`` by weight, then the earliest deadline, then
        first come.  ``hints.deadline`` counts from this call.  While it
        waits, admission counts its bytes if ``source`` is a
        :class:`~oslo_transfer.locations.Source` with a ``size``.
        """
        token = kwargs.pop('cancel', None) or driver_mod.CancelToken()
        hints = kwargs.get('hints') or selector_mod.Hints()
        kwargs['deadline_at'] = None if hints.deadline is None else \
            time.monotonic() + hints.deadline
        user_cb = kwargs.pop('progress', None)
        holder = {}

        def progress(done, total):
            h = holder.get('h')
            if h is not None:
                h.progress = (done, total)
            if user_cb is not None:
                user_cb(done, total)

        fut = futures.Future()

        def run():
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(self._copy(source, dest, cancel=token,
                                          progress=progress, **kwargs))
            except BaseException as exc:  # noqa: handed to the caller
                fut.set_exception(exc)

        h = TransferHandle(fut, token)
        holder['h'] = h
        self.scheduler.queue_job(run, hints.priority, kwargs['deadline_at'],
                                 self.executor.submit,
                                 size=getattr(source, 'size', None))
        return h

    def stats(self) -> dict:
        """What the scheduler sees, per class and per origin.

        ``{"classes": {CLASS: COUNTS}, "origins": {ORIGIN: COUNTS}}`` where
        COUNTS holds ``active`` (running copies of the class; connections
        held to the origin), ``queued`` (submitted copies waiting to
        start; connections waited for), ``bytes_per_second`` (over the
        last 5 s), ``bytes`` (since the Transfer was built),
        ``completed``, ``missed`` (completed after their deadline, counted
        in completed too) and ``refused``
        (:class:`~oslo_transfer.exceptions.DeadlineUnreachable`).
        """
        return self.scheduler.stats()

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
        # Copies submitted and still queued in the scheduler run first, as
        # an executor's shutdown runs its queued work.
        self.scheduler.drain()
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


def _url_dest_args(dest_loc, mode, segments, write_in_place, assume_zeroed):
    """Refuse the arguments of :meth:`Transfer.copy` that no upload honours.

    :raises ValueError: before any I/O.
    """
    refused = [name for name, value in (
        ('mode', mode), ('segments', segments),
        ('write_in_place', write_in_place or None),
        ('assume_zeroed', assume_zeroed or None)) if value is not None]
    if refused:
        raise ValueError(
            '%s: not supported when copying to a URL (%s): no driver writes '
            'ranges in parallel, sets permission bits or writes in place '
            'there' % (', '.join(refused), dest_loc.masked))


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
