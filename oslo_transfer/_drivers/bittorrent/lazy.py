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

"""A lazy image read through the swarm (``Driver.lazy_reader``).

The torrent is added to the process's session with its single file renamed
to the image's ``.part`` (the pieces the image holds are given as
``have_pieces``), so libtorrent shares from the cache what the image
fetched.  Pieces reach the image (``deliver(index, data)``) three ways:

* from a peer: libtorrent verified it (``piece_finished_alert``), its bytes
  are read back through libtorrent (``read_piece``: they may not be in the
  file yet) and checked against the metadata again;
* from the origin (the web seed): fetched by an
  :class:`~.origin.OriginFetcher`, checked against the piece hash,
  delivered at once and handed to libtorrent with ``add_piece`` so that
  peers get it from this host;
* not at all when the image holds it already.

An *urgent* piece (a reader waits) gets a libtorrent deadline; when no
connected peer has it -- or one has it and it has not come within
:data:`PEER_GRACE` seconds -- the origin is asked for it at once, at the
``interactive`` class, on ``urgent_connections`` of its own (a want
wakes the fetcher's threads; they also look for work every 0.1 s, for a
peer's grace that ran out).  A non-urgent want (a profile, an explicit
prefetch) raises the pieces' priority.

Prefetch is libtorrent's own piece picking from peers, plus this host's
share of the origin's pieces (the same plans as a copy:
:func:`~.pieces.plan_for`) at the ``background`` class.  Without prefetch
the pieces start at priority 0 and only those wanted are fetched.

Once the image is complete and renamed, the torrent leaves the session
and the renamed file is seeded as after a copy (``seed_time``).
"""

import hashlib
import logging
import os
import queue
import threading
import time

from oslo_transfer._drivers.bittorrent import origin as origin_mod
from oslo_transfer._drivers.bittorrent import pieces as pieces_mod
from oslo_transfer._drivers.bittorrent import seed as seed_mod
from oslo_transfer._drivers.bittorrent import session as session_mod
from oslo_transfer import driver as driver_mod
from oslo_transfer import exceptions

LOG = logging.getLogger(__name__)

__all__ = ['SwarmReader', 'PEER_GRACE']

#: seconds an urgent piece that a peer has may take before the origin is
#: asked for it too
PEER_GRACE = 1.0
#: libtorrent's deadline of an urgent piece, in milliseconds
_DEADLINE_MS = 0
#: libtorrent piece priorities
_TOP, _DEFAULT, _SKIP = 7, 4, 0
#: a piece the origin sent corrupt this many times is left to the peers
_MAX_ORIGIN_FAILURES = 2
_WAKE = object()


class _Feed:
    """What one :class:`~.origin.OriginFetcher` asks the reader."""

    def __init__(self, reader, urgent):
        self.reader = reader
        self.urgent = urgent
        self.meta = reader.meta

    def next_origin_piece(self):
        return self.reader.next_origin_piece(self.urgent)

    def origin_done(self, index, data, seconds=None):
        self.reader.origin_done(index, data, seconds)


class SwarmReader(driver_mod.LazyReader):
    """The pieces of one torrent for a lazy image.

    :param sess: the process's :class:`~.session.Session`.
    :param meta: the single-file :class:`~oslo_transfer.torrent.
        TorrentMeta`.
    :param path: the image's ``.part`` file.
    :param ctx: the image's ``Context``.
    :param opts: the ``[oslo_transfer_bittorrent]`` options.
    :param origins: web-seed ``Location`` objects (already allowed).
    :param trackers: tracker URLs (already allowed).
    :param held: pieces the image holds.
    :param deliver: ``deliver(index, data)``.
    :param prefetch: fetch every piece, not only those wanted.
    :param retries: failed origin fetches of an urgent piece that no peer
        has before :meth:`failed` reports it.
    :param urgent_connections: connections to the origin for urgent
        pieces (the image's reads; the prefetch has one of its own).
    """

    def __init__(self, sess, meta, path, ctx, opts, origins, trackers,
                 held, deliver, prefetch=True, retries=3,
                 urgent_connections=4):
        self.sess = sess
        self.lt = sess.lt
        self.meta = meta
        self.path = os.path.abspath(path)
        self.ctx = ctx
        self.opts = opts
        self.origins = list(origins)
        self.trackers = list(trackers)
        self.deliver = deliver
        self.prefetch = prefetch
        self.retries = max(0, retries)
        self.urgent_connections = max(1, urgent_connections)
        self.key = meta.info_hash
        self.handle = None
        self.have = set(held)
        self.events = queue.Queue()
        self._lock = threading.Lock()
        self._urgent = {}           # piece -> when it was wanted
        self._asked = set()         # wanted, not urgent
        self._reading = set()       # read_piece asked, no answer yet
        self._inflight = set()      # at the origin
        self._bad = {}              # piece -> corrupt origin answers
        self._fails = {}            # urgent piece -> failed origin fetches
        self._reported = set()      # urgent pieces failed() gave up on
        self._avail = None
        self._met = False
        self._peer_busy = set()
        self._closed = False
        self._thread = None
        self.fetchers = []
        self.plan = None
        self.peers = []
        self._last_peer_piece = time.monotonic()
        self._stats = {'pieces': meta.num_pieces, 'held': len(self.have),
                       'peer_pieces': 0, 'origin_pieces': 0,
                       'urgent_origin_pieces': 0, 'hash_failures': 0,
                       'share': None}

    # -- life -----------------------------------------------------------------

    def start(self) -> None:
        # A copy's torrent waiting for its commit gives way.
        seed_mod.SEEDS.release(self.key, 'read lazily')
        if self.sess.find(self.key) is not None:
            raise exceptions.ConnectionFailed(
                'torrent %s is already in this process\'s session (a copy '
                'or a seed of it): it cannot also be read lazily' % self.key)
        if not self.origins and not self.trackers and \
                not self.opts.local_peer_discovery and \
                not getattr(self.ctx.hints, 'peer_addresses', ()):
            raise exceptions.ConnectionFailed(
                'torrent %s: no web seed, no tracker and no peer address: '
                'nothing can send the data' % self.key)
        self.sess.listen(self.key, self._on_alert)
        try:
            self.handle = self.sess.add(self._params())
        except BaseException:
            self.sess.unlisten(self.key, self._on_alert)
            raise
        self.plan, self.peers, self._stats['share'] = pieces_mod.plan_for(
            self.ctx.hints, self.sess.listen_port(), self.meta.num_pieces,
            self.have, self.opts.help_slower_peers,
            towards=[o.url for o in self.origins] + self.trackers,
            key=self.key)
        self._connect_peers()
        for urgent, n in ((True, self.urgent_connections), (False, 1)):
            if urgent or self.prefetch:
                self.fetchers.append(self._fetcher(urgent, n))
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name='oslo-lazy-swarm')
        self._thread.start()

    def _fetcher(self, urgent, connections):
        ctx = driver_mod.Context(
            cancel=self.ctx.cancel, io_timeout=self.ctx.io_timeout,
            hints=self.ctx.hints, check_url=self.ctx.check_url,
            driver_for=self.ctx.driver_for, scheduler=self.ctx.scheduler,
            priority='interactive' if urgent else 'background')
        f = origin_mod.OriginFetcher(_Feed(self, urgent), self.origins, ctx,
                                     connections)
        if self.origins:
            f.start()
        return f

    def _params(self):
        lt = self.lt
        p = lt.add_torrent_params()
        p.ti = lt.torrent_info(self.meta.torrent_bytes(trackers=self.trackers))
        p.save_path = os.path.dirname(self.path)
        p.renamed_files = {0: os.path.basename(self.path)}
        p.flags = (lt.torrent_flags.apply_ip_filter |
                   lt.torrent_flags.duplicate_is_error)
        n = self.meta.num_pieces
        p.have_pieces = [i in self.have for i in range(n)]
        if not self.prefetch:
            p.piece_priorities = [_SKIP] * n
        return p

    def _connect_peers(self):
        for ip, port in self.peers:
            try:
                self.handle.connect_peer((ip, port))
            except RuntimeError as exc:
                LOG.debug('bittorrent: connect %s:%d: %s', ip, port, exc)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.events.put(_WAKE)
        for f in self.fetchers:
            f.stop()
        if self._thread is not None:
            self._thread.join(10.0)
        if self.handle is not None:
            self.sess.remove(self.handle, self.key)
            self.handle = None
        self.sess.unlisten(self.key, self._on_alert)
        LOG.info('bittorrent: lazy %s: %s', self.path, self.stats)

    def completed(self, path: str) -> None:
        """Leave the session; seed the renamed file for ``seed_time``."""
        self.close()
        seconds = self.opts.seed_time
        if seconds <= 0:
            return
        try:
            seed_mod.SEEDS.start(self.sess, self.meta, path, seconds,
                                 ratio=self.opts.seed_ratio,
                                 peers=self.peers, trackers=self.trackers)
        except exceptions.TransferError as exc:
            LOG.warning('bittorrent: not seeding %s: %s', path, exc)

    @property
    def stats(self) -> dict:
        with self._lock:
            out = dict(self._stats)
        out['origin_bytes'] = sum(f.bytes for f in self.fetchers)
        return out

    # -- what the image asks --------------------------------------------------

    def want(self, offset: int, length: int, urgent: bool = False) -> None:
        if length <= 0:
            return
        pl = self.meta.piece_length
        first, last = offset // pl, (offset + length - 1) // pl
        now = time.monotonic()
        todo = []
        with self._lock:
            for i in range(first, last + 1):
                if i in self.have:
                    continue
                if urgent:
                    self._urgent.setdefault(i, now)
                    if i in self._reported:
                        # a read failed on it: this one tries again
                        self._reported.discard(i)
                        self._fails.pop(i, None)
                        self._bad.pop(i, None)
                else:
                    self._asked.add(i)
                todo.append(i)
        if urgent and todo and self.fetchers:
            self.fetchers[0].wake()
        if self.handle is None:
            return
        for i in todo:
            try:
                self.handle.piece_priority(i, _TOP)
                if urgent:
                    self.handle.set_piece_deadline(i, _DEADLINE_MS)
            except RuntimeError as exc:
                LOG.debug('bittorrent: piece %d: %s', i, exc)

    def failed(self, index: int):
        with self._lock:
            if index in self.have or index not in self._urgent:
                return None
            avail = self._avail
            if avail is not None and avail[index]:
                return None         # a peer has it
            bad = self._bad.get(index, 0)
            fails = self._fails.get(index, 0)
            fetcher = self.fetchers[0] if self.fetchers else None
            if bad >= _MAX_ORIGIN_FAILURES:
                exc = exceptions.ChecksumMismatch(
                    'piece %d of torrent %s: no peer has it and the web '
                    'seed sent it corrupt %d times' % (index, self.key, bad))
            elif fetcher is None or not self.origins or \
                    fetcher.all_dead or fails > self.retries:
                err = fetcher.last_error() if fetcher is not None else None
                exc = exceptions.ConnectionFailed(
                    'piece %d of torrent %s: no peer has it and the web '
                    'seed failed (%s)' % (index, self.key,
                                          err or 'no web seed'))
                exc.__cause__ = err
            else:
                return None
            self._reported.add(index)
        return exc

    # -- the origin fetchers' questions ---------------------------------------

    def _free(self, i):
        return (i not in self.have and i not in self._inflight and
                self._bad.get(i, 0) < _MAX_ORIGIN_FAILURES)

    def next_origin_piece(self, urgent: bool):
        now = time.monotonic()
        with self._lock:
            if self._closed:
                return None
            if urgent:
                return self._next_urgent(now)
            for i in sorted(self._asked):
                if self._free(i) and (self._avail is None or
                                      not self._avail[i]):
                    self._inflight.add(i)
                    return i
            starving = now - self._last_peer_piece >= self.opts.peer_wait
            found = self.plan.next(
                lambda i: self._free(i) and i not in self._peer_busy,
                self._avail, self.have, starving)
            if found is None:
                return None
            self._inflight.add(found[0])
            return found[0]

    def _next_urgent(self, now):
        avail = self._avail
        for i, since in sorted(self._urgent.items(), key=lambda kv: kv[1]):
            if not self._free(i):
                continue
            if avail is not None and avail[i] and now - since < PEER_GRACE:
                continue            # a peer has it: give it a moment
            self._inflight.add(i)
            return i
        return None

    def origin_done(self, index, data, seconds=None):
        """An origin fetch ended: ``data`` is the piece, or None."""
        if data is not None and \
                hashlib.sha1(data).digest() != self.meta.piece_hash(index):
            LOG.warning('bittorrent: piece %d from the web seed does not '
                        'match its hash', index)
            with self._lock:
                self._bad[index] = self._bad.get(index, 0) + 1
                self._stats['hash_failures'] += 1
            data = None
        with self._lock:
            self._inflight.discard(index)
            if data is None:
                self.plan.given_back()
                if index in self._urgent:
                    self._fails[index] = self._fails.get(index, 0) + 1
                return
            if seconds is not None:
                self.plan.fetched(seconds)
            if index in self.have:
                return
            urgent = index in self._urgent
            self._stats['origin_pieces'] += 1
            if urgent:
                self._stats['urgent_origin_pieces'] += 1
        if self._hand_over(index, data) and self.handle is not None:
            try:
                self.handle.add_piece(index, data, 0)
            except RuntimeError as exc:
                LOG.debug('bittorrent: add_piece %d: %s', index, exc)

    def _hand_over(self, index, data) -> bool:
        """Deliver a verified piece once; False if it was delivered."""
        with self._lock:
            if index in self.have:
                return False
            self.have.add(index)
            self._urgent.pop(index, None)
            self._asked.discard(index)
            self._fails.pop(index, None)
            self._reported.discard(index)
        try:
            self.deliver(index, data)
        except Exception:  # noqa: the reader's threads must go on
            LOG.exception('bittorrent: delivering piece %d failed', index)
        return True

    # -- the loop -------------------------------------------------------------

    def _on_alert(self, event):
        self.events.put(event)

    def _run(self):
        last_refresh = 0.0
        try:
            while not self._closed:
                try:
                    item = self.events.get(timeout=0.1)
                except queue.Empty:
                    item = None
                while item is not None:
                    if item is not _WAKE:
                        self._handle(item)
                    try:
                        item = self.events.get_nowait()
                    except queue.Empty:
                        item = None
                now = time.monotonic()
                if now - last_refresh >= 0.25:
                    last_refresh = now
                    self._refresh(now)
        except Exception:  # noqa: a thread must not die in silence
            LOG.exception('bittorrent: lazy reader of %s failed', self.path)

    def _handle(self, event):
        kind = event.kind
        if kind == 'piece_finished_alert':
            i = event.piece
            with self._lock:
                if i in self.have or i in self._reading:
                    return
                self._reading.add(i)
            try:
                self.handle.read_piece(i)
            except RuntimeError as exc:
                LOG.debug('bittorrent: read_piece %d: %s', i, exc)
        elif kind == 'read_piece_alert':
            i = event.piece
            with self._lock:
                self._reading.discard(i)
            data = event.data
            if data is None or hashlib.sha1(data).digest() != \
                    self.meta.piece_hash(i):
                LOG.warning('bittorrent: piece %d could not be read back '
                            '(%s)', i, event.message)
                return
            if self._hand_over(i, data):
                with self._lock:
                    self._stats['peer_pieces'] += 1
                self._last_peer_piece = time.monotonic()
        elif kind == 'hash_failed_alert':
            with self._lock:
                self._stats['hash_failures'] += 1
        elif event.error:
            LOG.debug('bittorrent: %s', event.message)

    def _refresh(self, now):
        h = self.handle
        try:
            busy = {d['piece_index'] for d in h.get_download_queue()}
            avail = h.piece_availability()
            infos = h.get_peer_info()
        except RuntimeError:
            return
        if len(avail) != self.meta.num_pieces:
            avail = None
        fetching = [p for p in infos if not session_mod.is_seed(p)]
        fetchers = 1 + len(fetching)
        with self._lock:
            first = not self._met and avail is not None and any(avail)
            self._met = self._met or first
            self._avail = avail
            self._peer_busy = busy
            if self.plan.meet(p.ip for p in fetching):
                # every receiver met: the slice of its rank, as if told
                # the peers
                self.plan = self.plan.piece_plan(self.have)
                self._stats['share'] = '%d/%d' % (self.plan.index + 1,
                                                  self.plan.count)
            self.plan.observe(now, avail, self.have, fetchers,
                              peers=[p.ip[0] for p in infos])
        if first:
            LOG.info('bittorrent: lazy %s: the peers have %d of %d pieces',
                     self.path, sum(1 for a in avail if a), len(avail))
        if self.peers and len(infos) < len(self.peers):
            self._connect_peers()
