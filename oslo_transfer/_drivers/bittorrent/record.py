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

"""What a torrent download records in the engine's control file, and when.

A piece counts as held only once libtorrent flushed it into the ``.part``
file (the engine syncs the file before its control file names the piece)
and, after a write error, its bytes in the file passed their hash check
again: the journal never claims bytes that a crash or a full disk lost.

What a crash costs is bounded at both ends of that pipeline: the engine's
``record()`` waits while ``checkpoint_bytes`` are recorded and not yet in
the control file, and :class:`Backlog` slows libtorrent down while the
pieces verified and not yet recorded reach a quarter of the interval
(libtorrent downloads on its own threads: nothing else would stop it while
a flush or a checkpoint is slow).
"""

import hashlib
import logging
import os
import threading

LOG = logging.getLogger(__name__)

__all__ = ['Backlog', 'Recorder']

#: bytes/s libtorrent may download while the backlog is full: a trickle
#: that keeps the peers' connections (a paused torrent would drop them)
TRICKLE = 64 * 1024


class Backlog:
    """Verified pieces not yet recorded, with back-pressure on libtorrent.

    ``verified`` is called on the session's alert thread as each piece
    passes its hash check, ``settled`` on the loop thread once the engine
    took (or refused) it.  While the bytes between the two reach
    ``high``, the torrent's download rate is cut to :data:`TRICKLE`; it is
    lifted once they fall to half of it.

    Pieces held before the download started are never counted: libtorrent
    may report them as finished again when it takes them from the resume
    data, and nothing would ever settle them (the throttle would stay on
    for good).

    :param job: the download (its ``handle`` may be set later).
    :param high: bytes of the backlog that throttle the torrent; None or
        0: never.
    """

    def __init__(self, job, high):
        self.job = job
        self.high = high or 0
        self._lock = threading.Lock()
        #: pieces counted once already, or held from earlier runs
        self._seen = set()
        self.bytes = 0
        self.throttled = False
        #: times the torrent was slowed down (statistics)
        self.throttles = 0

    def held(self, pieces) -> None:
        """``pieces`` were held before the torrent was added."""
        with self._lock:
            self._seen.update(pieces)

    def verified(self, piece: int, nbytes: int) -> None:
        with self._lock:
            if piece in self._seen:
                return
            self._seen.add(piece)
            self.bytes += nbytes
            if self.high and not self.throttled and self.bytes >= self.high:
                self._limit(TRICKLE)

    def settled(self, nbytes: int) -> None:
        with self._lock:
            self.bytes -= nbytes
            if self.throttled and self.bytes <= self.high // 2:
                self._limit(0)

    def _limit(self, rate):
        handle = self.job.handle
        if handle is None:
            return
        try:
            handle.set_download_limit(rate)
        except RuntimeError as exc:      # the torrent left the session
            LOG.debug('bittorrent: set_download_limit: %s', exc)
            return
        self.throttled = bool(rate)
        LOG.debug('bittorrent: %s: download limit %d (backlog %d bytes)',
                  self.job.key, rate, self.bytes)
        self.throttles += bool(rate)


class Recorder:
    """Verified pieces -> libtorrent flush -> ``target.record``.

    Runs on the download's loop thread only.  A flush is a
    ``save_resume_data(flush_disk_cache)`` request: its alert says that
    libtorrent wrote every piece verified before the request into the
    ``.part`` file (through the page cache: the engine syncs the file
    before the control file names them, :class:`~oslo_transfer.driver.\
PartTarget`), and those pieces are recorded.  A flush starts once a
    second, or as soon as the pieces waiting for one hold a quarter of the
    engine's ``checkpoint_bytes`` (``target.checkpoint_bytes``), as the
    contract asks.

    :param backlog: the download's :class:`Backlog`, told of each piece
        recorded or dropped.
    """

    #: seconds between flushes while pieces arrive
    interval = 1.0

    def __init__(self, job, fd, backlog=None):
        self.job = job
        self.fd = fd
        self.backlog = backlog
        self.pending = []
        self.flushing = None
        self.started = 0.0
        self.last = 0.0
        self.result = None
        #: libtorrent reported a write error: check pieces before recording
        self.storage_failed = False
        ckpt = getattr(job.target, 'checkpoint_bytes', None)
        #: bytes of pending pieces that start a flush before the second
        self.flush_bytes = ckpt // 4 if ckpt else None
        self.pending_bytes = 0

    @property
    def idle(self) -> bool:
        return not self.pending and self.flushing is None

    def add(self, piece):
        self.pending.append(piece)
        self.pending_bytes += self.job.meta.piece_range(piece)[1]

    def flushed(self, ok: bool):
        if self.flushing is not None:
            self.result = ok

    def collect(self, now):
        """Record the pieces of a finished flush."""
        if self.flushing is None:
            return
        job = self.job
        if self.result is None:
            if now - self.started > job.ctx.io_timeout:
                LOG.warning('bittorrent: %s: libtorrent did not flush '
                            'within %.0fs', job.key, job.ctx.io_timeout)
                self._requeue()
            return
        if not self.result:
            self._requeue()
            return
        pieces = self.flushing
        good = self._on_disk(pieces) if self.storage_failed else pieces
        dropped = set(pieces) - set(good)
        for i in pieces:
            offset, length = job.meta.piece_range(i)
            if i not in dropped:
                job.target.record(offset, length)
            if self.backlog is not None:
                self.backlog.settled(length)
        self.flushing = None
        self.result = None
        self.last = now

    def maybe_flush(self, now, force=False):
        if self.flushing is not None or not self.pending:
            return
        full = (self.flush_bytes is not None and
                self.pending_bytes >= self.flush_bytes)
        if not force and not full and now - self.last < self.interval:
            return
        self.flushing, self.pending = self.pending, []
        self.pending_bytes = 0
        self.result = None
        self.started = now
        self.job.handle.save_resume_data(
            self.job.lt.save_resume_flags_t.flush_disk_cache)

    def _on_disk(self, pieces) -> list:
        """The pieces whose bytes in the file pass their hash check."""
        meta = self.job.meta
        good = []
        for i in pieces:
            offset, length = meta.piece_range(i)
            try:
                data = os.pread(self.fd, length, offset)
            except OSError:
                continue
            if len(data) == length and \
                    hashlib.sha1(data).digest() == meta.piece_hash(i):
                good.append(i)
        if len(good) < len(pieces):
            LOG.warning('bittorrent: %s: %d of %d verified pieces did not '
                        'reach %s before the write error; they are not '
                        'recorded', self.job.key, len(pieces) - len(good),
                        len(pieces), self.job.target.path)
        return good

    def _requeue(self):
        self.pending = self.flushing + self.pending
        self.pending_bytes = sum(self.job.meta.piece_range(i)[1]
                                 for i in self.pending)
        self.flushing = None
        self.result = None
