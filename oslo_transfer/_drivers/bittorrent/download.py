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

"""One torrent download into the engine's ``.part`` file.

The life of a download:

1. the pieces the engine already holds (``target.held()``) are handed to
   libtorrent as ``have_pieces`` (an empty set too): libtorrent trusts them
   and checks nothing again (the engine zeroes every range it does not
   hold before the driver runs, so the journal, not libtorrent's own
   resume data, is the record of what is on disk);
2. the torrent is added to the process-wide session with its single file
   renamed to the ``.part`` file, the hinted peers are connected and the
   origin fetcher (``origin``) starts on this host's share;
3. every piece that passes its hash check (``piece_finished_alert``) counts
   as progress at once; about once a second (or each quarter of the
   engine's checkpoint interval) libtorrent flushes its writes
   (``save_resume_data`` with ``flush_disk_cache``), and only then are the
   pieces reported with ``target.record``, which the engine syncs before
   its control file names them
   (:class:`~oslo_transfer._drivers.bittorrent.record.Recorder`) --
   so the journal never claims bytes that a crash could lose; while the
   pieces verified and not yet recorded reach a quarter of the interval,
   libtorrent's download rate is cut to a trickle
   (:class:`~oslo_transfer._drivers.bittorrent.record.Backlog`), so that
   what a crash costs stays bounded however slow a flush or a checkpoint
   is;
4. when every piece is held: final flush, the call returns.  With
   ``seed_time`` the torrent stays in the session, still connected to its
   peers, while the engine verifies and renames the file, and becomes the
   seed of the renamed file (:meth:`~.seed.Seeds.hold`); otherwise it is
   removed (the file is kept; the engine renames it).

A cancel, the deadline, or no piece for ``stall_timeout`` seconds ends the
download early; what was verified is recorded first, so a rerun (or the
engine's HTTP fallback) continues from there.
"""

import errno
import logging
import os
import queue
import shutil
import threading
import time

from oslo_transfer._drivers.bittorrent import origin as origin_mod
from oslo_transfer._drivers.bittorrent import pieces as pieces_mod
from oslo_transfer._drivers.bittorrent import record as record_mod
from oslo_transfer._drivers.bittorrent import session as session_mod
from oslo_transfer import exceptions

LOG = logging.getLogger(__name__)

__all__ = ['TorrentDownload']

_WAKE = object()
#: a piece the origin sent corrupt this many times is left to the peers
_MAX_ORIGIN_FAILURES = 2
#: seconds after which a piece given to add_piece without an answer is
#: fetched again
_ADD_PIECE_TIMEOUT = 30.0


class TorrentDownload:
    """Fill ``target`` with the single file of ``meta``.

    :param sess: the :class:`~.session.Session`.
    :param meta: the :class:`~oslo_transfer.torrent.TorrentMeta` (single file).
    :param target: the engine's ``PartTarget``.
    :param ctx: the transfer's ``Context``.
    :param opts: the ``[oslo_transfer_bittorrent]`` options.
    :param origins: web-seed ``Location`` objects (already allowed).
    :param trackers: tracker URLs (already allowed).
    :param progress: ``progress(nbytes)`` or None.
    :param seeds: the process's seeding registry (to copy locally).
    """

    def __init__(self, sess, meta, target, ctx, opts, origins=(),
                 trackers=(), progress=None, seeds=None):
        self.sess = sess
        self.lt = sess.lt
        self.meta = meta
        self.target = target
        self.ctx = ctx
        self.opts = opts
        self.origins = list(origins)
        self.trackers = list(trackers)
        self.progress = progress
        self.seeds = seeds
        self.key = meta.info_hash
        self.handle = None
        self.events = queue.Queue()
        self._lock = threading.Lock()
        self.have = set()
        self.recorder = None
        ckpt = getattr(target, 'checkpoint_bytes', None)
        self.backlog = record_mod.Backlog(self, ckpt // 4 if ckpt else None)
        self._origin_inflight = set()
        self._origin_added = {}
        self._origin_bad = {}
        self._peer_busy = set()
        self._avail = None
        self.plan = None
        self._done = False
        self._error = None
        self.peers = []
        #: endpoints seen with the whole file while downloading: the seed
        #: that follows starts from them (a complete peer may have left by
        #: the time this host's seed is up)
        self.seen_complete = set()
        self.fetcher = None
        now = time.monotonic()
        self._started = now
        self._last_progress = now
        self._last_peer_piece = now
        self.stats = {'pieces': meta.num_pieces, 'resumed_pieces': 0,
                      'peer_pieces': 0, 'origin_pieces': 0,
                      'origin_bytes': 0, 'peer_bytes': 0,
                      'hash_failures': 0, 'share': None}

    # -- entry point ----------------------------------------------------------

    def run(self) -> dict:
        """Download; return statistics.  Raises ``TransferError``."""
        if self._copy_from_local_seed():
            return self.stats
        held = self.meta.pieces_within(self.target.held())
        self.have = set(held)
        self.backlog.held(held)
        self.stats['resumed_pieces'] = len(held)
        if len(held) == self.meta.num_pieces:
            return self.stats
        self.sess.listen(self.key, self._on_alert)
        cancel_key = self.ctx.cancel.on_cancel(
            lambda: self.events.put(_WAKE))
        fd = None
        completed = False
        try:
            if self.seeds is not None:
                # A torrent of an earlier copy that the engine did not
                # commit (a failed checksum, say) gives way to this one.
                self.seeds.release(self.key, 'downloaded again')
            if self.sess.find(self.key) is not None:
                raise exceptions.ConnectionFailed(
                    'torrent %s is already being downloaded by this process '
                    'into another file' % self.key)
            fd = os.open(self.target.path, os.O_RDWR)
            self.handle = self.sess.add(self._params(held))
            self.recorder = record_mod.Recorder(self, fd, self.backlog)
            LOG.debug('bittorrent: %s added to the session', self.key)
            self._plan_share()
            self._connect_peers()
            if self.origins:
                self.fetcher = origin_mod.OriginFetcher(
                    self, self.origins, self.ctx,
                    self.opts.web_seed_connections)
            elif not self.peers and not self.trackers and \
                    not self.opts.local_peer_discovery:
                raise exceptions.ConnectionFailed(
                    'torrent %s: no web seed, no tracker and no peer '
                    'address: nothing can send the data' % self.key)
            self._loop()
            completed = True
            return self.stats
        finally:
            self._done = True
            t_end = time.monotonic()
            if self.fetcher is not None:
                self.fetcher.stop()
                self.stats['origin_bytes'] = self.fetcher.bytes
                self.stats['fetcher_cpu_s'] = round(self.fetcher.cpu, 3)
            if self.handle is not None:
                try:
                    self._final_flush()
                finally:
                    self._collect_stats()
                    t_rm = time.monotonic()
                    if not (completed and self._hold()):
                        self.sess.remove(self.handle, self.key)
                    LOG.debug('bittorrent: %s: fetcher stop and final flush '
                              '%.3fs, removal %.3fs', self.key,
                              t_rm - t_end, time.monotonic() - t_rm)
            if fd is not None:
                os.close(fd)
            self.ctx.cancel.remove(cancel_key)
            self.sess.unlisten(self.key, self._on_alert)
            LOG.info('bittorrent: %s: %s', self.target.path, self.stats)

    # -- setup ----------------------------------------------------------------

    def _copy_from_local_seed(self) -> bool:
        """Copy the file if this process already seeds the same torrent."""
        src = self.seeds.local_copy(self.key) if self.seeds else None
        if src is None:
            return False
        LOG.info('bittorrent: %s is seeded here from %s: copying it',
                 self.key, src)
        try:
            shutil.copyfile(src, self.target.path)
            with open(self.target.path, 'rb+') as f:
                os.fsync(f.fileno())
        except OSError as exc:
            raise exceptions.DestinationError(
                'cannot copy %s to %s: %s' % (src, self.target.path,
                                              exc)) from exc
        self.target.record(0, self.meta.total_size)
        if self.progress:
            self.progress(self.meta.total_size)
        self.stats['local_copy'] = src
        return True

    def _params(self, held):
        lt = self.lt
        ti = lt.torrent_info(self.meta.torrent_bytes(trackers=self.trackers))
        p = lt.add_torrent_params()
        p.ti = ti
        p.save_path = os.path.dirname(os.path.abspath(self.target.path))
        p.renamed_files = {0: os.path.basename(self.target.path)}
        p.flags = (lt.torrent_flags.apply_ip_filter |
                   lt.torrent_flags.duplicate_is_error)
        # Always resume data, even "no piece yet": without it libtorrent
        # hashes the whole (sparse) .part file before it starts.
        p.have_pieces = [i in self.have for i in range(self.meta.num_pieces)]
        return p

    def _plan_share(self):
        self.plan, self.peers, self.stats['share'] = pieces_mod.plan_for(
            self.ctx.hints, self.sess.listen_port(), self.meta.num_pieces,
            self.have, self.opts.help_slower_peers,
            towards=[o.url for o in self.origins] + list(self.trackers),
            key=self.key)

    def _connect_peers(self):
        if not self.peers:
            return
        connected = set()
        try:
            for p in self.handle.get_peer_info():
                connected.add(tuple(p.ip))
        except RuntimeError:
            return
        for ip, port in self.peers:
            if (ip, port) in connected:
                continue
            try:
                self.handle.connect_peer((ip, port))
            except RuntimeError as exc:
                LOG.debug('bittorrent: connect %s:%d: %s', ip, port, exc)

    # -- alerts (called on the session's alert thread) ------------------------

    def _on_alert(self, alert):
        if alert.kind == 'piece_finished_alert':
            # Counted here, on the alert thread: the loop thread may be
            # waiting in target.record() while libtorrent goes on.
            self.backlog.verified(alert.piece,
                                  self.meta.piece_range(alert.piece)[1])
        self.events.put(alert)

    def _handle(self, event, now):
        kind = event.kind
        if kind == 'piece_finished_alert':
            i = event.piece
            with self._lock:
                if i in self.have:
                    return
                self.have.add(i)
                from_origin = self._origin_added.pop(i, None) is not None
            self.recorder.add(i)
            length = self.meta.piece_range(i)[1]
            if len(self.have) == self.stats['resumed_pieces'] + 1:
                LOG.debug('bittorrent: %s: first piece (%s)', self.key,
                          'web seed' if from_origin else 'peer')
            self._last_progress = now
            if from_origin:
                self.stats['origin_pieces'] += 1
            else:
                self._last_peer_piece = now
                self.stats['peer_pieces'] += 1
            if self.progress:
                self.progress(length)
        elif kind == 'hash_failed_alert':
            i = event.piece
            self.stats['hash_failures'] += 1
            with self._lock:
                from_origin = self._origin_added.pop(i, None) is not None
                if from_origin:
                    self._origin_bad[i] = self._origin_bad.get(i, 0) + 1
            LOG.warning('bittorrent: %s: piece %d failed its hash check '
                        '(from %s); it is fetched again', self.key, i,
                        'the web seed' if from_origin else 'a peer')
        elif kind == 'save_resume_data_alert':
            self.recorder.flushed(True)
        elif kind == 'save_resume_data_failed_alert':
            self.recorder.flushed(False)
        elif kind in ('file_error_alert', 'torrent_error_alert'):
            # Pieces verified around a failed write may not be in the file:
            # from now on a flush checks them on disk before recording.
            if self.recorder is not None:
                self.recorder.storage_failed = True
            if any(os.strerror(e) in event.message
                   for e in (errno.ENOSPC, errno.EDQUOT)):
                text = 'no space left on the device of %s (libtorrent: %s)'
            else:
                text = 'cannot write %s: %s'
            self._error = exceptions.DestinationError(
                text % (self.target.path, event.message))
        elif event.error:
            LOG.debug('bittorrent: %s', event.message)

    # -- the origin fetcher's questions (called on its threads) ---------------

    def _wanted(self, i):
        return (i not in self.have and i not in self._origin_inflight and
                i not in self._origin_added and i not in self._peer_busy and
                self._origin_bad.get(i, 0) < _MAX_ORIGIN_FAILURES)

    def next_origin_piece(self):
        """The next piece to fetch from the origin, or None for now."""
        now = time.monotonic()
        with self._lock:
            if self._done:
                return None
            starving = now - self._last_peer_piece >= self.opts.peer_wait
            found = self.plan.next(self._wanted, self._avail, self.have,
                                   starving)
            if found is None:
                return None
            i, why = found
            self._origin_inflight.add(i)
            if why != 'share':
                self.stats['%s_pieces' % why] = self.stats.get(
                    '%s_pieces' % why, 0) + 1
            return i

    def origin_done(self, index, data, seconds=None):
        """A fetch ended: ``data`` is the piece, or None if it failed."""
        with self._lock:
            self._origin_inflight.discard(index)
            if data is None:
                self.plan.given_back()
            if data is not None and seconds is not None:
                self.plan.fetched(seconds)
            if data is not None and index in self.have:
                self.stats['origin_wasted'] = self.stats.get(
                    'origin_wasted', 0) + 1
            if data is not None and (index in self.have or (
                    self._avail is not None and self._avail[index])):
                self.plan.collided(index)
            if data is None or self._done or index in self.have:
                return
            self._origin_added[index] = time.monotonic()
        try:
            self.handle.add_piece(index, data, 0)
        except RuntimeError as exc:
            with self._lock:
                self._origin_added.pop(index, None)
            LOG.debug('bittorrent: add_piece %d: %s', index, exc)

    # -- the loop -------------------------------------------------------------

    def _loop(self):
        cpu0 = time.thread_time()
        alerts0 = self.sess.alert_cpu
        try:
            self._loop_until_done()
        finally:
            self.stats['loop_cpu_s'] = round(time.thread_time() - cpu0, 3)
            self.stats['alert_cpu_s'] = round(
                self.sess.alert_cpu - alerts0, 3)

    def _loop_until_done(self):
        n = self.meta.num_pieces
        last_busy = last_connect = 0.0
        while True:
            try:
                item = self.events.get(timeout=0.25)
            except queue.Empty:
                item = None
            now = time.monotonic()
            while item is not None:
                if item is not _WAKE:
                    self._handle(item, now)
                try:
                    item = self.events.get_nowait()
                except queue.Empty:
                    item = None
            self.ctx.cancel.check()
            if self._error is not None:
                raise self._error
            left = self.ctx.remaining()
            if left is not None and left <= 0:
                raise exceptions.TransferTimeout(
                    'torrent %s: the transfer ran out of time with %d of %d '
                    'pieces' % (self.key, len(self.have), n))
            self._checkpoint(now)
            with self._lock:
                complete = len(self.have) >= n
            if complete:
                # Until the torrent leaves the session, look at the peers
                # at every turn: one that completes now may stop seeding
                # before this host's seed is up.
                self._note_complete_peers()
            if complete and self.fetcher is not None:
                # Nothing more to fetch: let its threads end during the
                # final flush instead of after it.
                self.fetcher.token.cancel('download complete')
            if complete and self.recorder.idle:
                LOG.debug('bittorrent: %s: every piece is durable', self.key)
                return
            self._start_fetcher()
            if now - last_busy >= 0.25:
                last_busy = now
                self._refresh_busy()
            # Peers start at about the same time: retry the ones not
            # connected yet quickly at first, then every few seconds.
            if self.peers and now - last_connect >= min(
                    3.0, 0.25 + (now - self._started) / 4):
                last_connect = now
                self._note_complete_peers()
                connected = self.handle.status().num_peers
                self.stats['max_peers'] = max(
                    self.stats.get('max_peers', 0), connected)
                if connected < len(self.peers):
                    self._connect_peers()
            self._check_stall(now)

    def _refresh_busy(self):
        try:
            busy = {d['piece_index'] for d in self.handle.get_download_queue()}
            avail = self.handle.piece_availability()
            infos = self.handle.get_peer_info()
            fetching = [p for p in infos if not session_mod.is_seed(p)]
        except RuntimeError:
            return
        fetchers = 1 + len(fetching)
        if len(avail) != self.meta.num_pieces:
            avail = None            # not known yet (torrent starting)
        now = time.monotonic()
        with self._lock:
            self._peer_busy = busy
            self._avail = avail
            if self.plan.meet(p.ip for p in fetching):
                # every receiver met: the slice of its rank, as if told
                # the peers
                self.plan = self.plan.piece_plan(self.have)
                self.stats['share'] = '%d/%d' % (self.plan.index + 1,
                                                 self.plan.count)
            self.plan.observe(now, avail, self.have, fetchers,
                              peers=[p.ip[0] for p in infos])
            if avail is not None:
                # A piece this host is fetching from the origin (or has
                # not yet seen verified) that a peer has: another host
                # fetched it too.
                for i in self._origin_inflight | set(self._origin_added):
                    if avail[i] and i not in self.have:
                        self.plan.collided(i)
            # A piece handed to libtorrent that was neither verified nor
            # failed within a while is given back to the origin fetcher.
            for i, t in list(self._origin_added.items()):
                if now - t > _ADD_PIECE_TIMEOUT:
                    del self._origin_added[i]

    def _start_fetcher(self):
        """Start the origin fetcher once libtorrent takes pieces."""
        f = self.fetcher
        if f is None or f.started:
            return
        try:
            state = self.handle.status().state
        except RuntimeError:
            return
        s = self.lt.torrent_status.states
        if state in (s.downloading, s.finished, s.seeding):
            LOG.debug('bittorrent: %s: web seed fetcher starts', self.key)
            f.start()

    def _check_stall(self, now):
        idle = now - self._last_progress
        fetcher = self.fetcher
        origins_gone = fetcher is None or fetcher.all_dead
        if origins_gone and fetcher is not None and not self.peers and \
                not self.trackers and not self.opts.local_peer_discovery:
            err = fetcher.last_error()
            raise exceptions.ConnectionFailed(
                'torrent %s: the web seed failed (%s) and no peer was '
                'named' % (self.key, err)) from err
        if idle < self.opts.stall_timeout:
            return
        try:
            peers = self.handle.status().num_peers
        except RuntimeError:
            peers = 0
        err = fetcher.last_error() if fetcher is not None else None
        raise exceptions.ConnectionFailed(
            'torrent %s: no piece arrived for %.0fs (%d of %d pieces held, '
            '%d peer(s) connected%s)' % (
                self.key, idle, len(self.have), self.meta.num_pieces, peers,
                ', web seed: %s' % err if err else
                ', no web seed' if fetcher is None else '')) from err

    # -- durability -----------------------------------------------------------

    def _checkpoint(self, now, force=False):
        """Record flushed pieces; start the next flush when it is due."""
        rec = self.recorder
        rec.collect(now)
        with self._lock:
            complete = len(self.have) >= self.meta.num_pieces
        rec.maybe_flush(now, force or complete)

    def _final_flush(self):
        """Record what is verified before the torrent leaves the session."""
        if self.recorder is None:
            return
        deadline = time.monotonic() + min(self.ctx.io_timeout, 30.0)
        while True:
            now = time.monotonic()
            try:
                self._checkpoint(now, force=True)
            except exceptions.TransferError as exc:
                LOG.warning('bittorrent: %s', exc)
                return
            # Usually idle at once: the loop returns once all is durable.
            if self.recorder.idle or now >= deadline:
                return
            self._note_complete_peers()
            try:
                item = self.events.get(timeout=0.1)
                if item is not _WAKE:
                    self._handle(item, time.monotonic())
            except queue.Empty:
                pass

    def _hold(self) -> bool:
        """Leave the complete torrent in the session for the seed.

        Its peers keep this host as a source while the engine verifies and
        renames the file, and the seed that follows is this torrent, still
        connected (:meth:`~.seed.Seeds.hold`).
        """
        if self.seeds is None or self.opts.seed_time <= 0 or \
                not self.recorder.idle:
            return False
        with self._lock:
            if len(self.have) < self.meta.num_pieces:
                return False
        return self.seeds.hold(self.sess, self.meta, self.target.path,
                               self.handle)

    def _note_complete_peers(self):
        if not self.peers:
            return
        try:
            infos = self.handle.get_peer_info()
        except RuntimeError:
            return
        self.seen_complete.update(
            tuple(p.ip) for p in infos if session_mod.is_seed(p))

    def _collect_stats(self):
        self._note_complete_peers()
        try:
            st = self.handle.status()
            self.stats['peers'] = st.num_peers
            self.stats['peer_bytes'] = st.total_payload_download
            self.stats['uploaded_bytes'] = st.total_payload_upload
        except RuntimeError:
            pass
        self.stats['elapsed'] = round(time.monotonic() - self._started, 3)
        self.stats['throttled'] = self.backlog.throttles
