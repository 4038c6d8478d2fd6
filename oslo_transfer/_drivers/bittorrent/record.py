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

A piece counts as held only once libtorrent flushed it, the ``.part`` was
fsync'd, and (after a write error) its bytes in the file passed their hash
check again: the journal never claims bytes that a crash or a full disk
lost.
"""

import hashlib
import logging
import os

from oslo_transfer import exceptions

LOG = logging.getLogger(__name__)

__all__ = ['Recorder']


class Recorder:
    """Verified pieces -> libtorrent flush -> fsync -> ``target.record``.

    Runs on the download's loop thread only.  A flush is a
    ``save_resume_data(flush_disk_cache)`` request: its alert says that
    libtorrent wrote every piece verified before the request; the ``.part``
    file is then fsync'd and those pieces are recorded.  A flush starts
    once a second, or as soon as the pieces waiting for one hold half the
    engine's ``checkpoint_bytes`` (``target.checkpoint_bytes``): what a
    crash costs stays within the interval however fast the pieces come.
    """

    #: seconds between flushes while pieces arrive
    interval = 1.0

    def __init__(self, job, fd):
        self.job = job
        self.fd = fd
        self.pending = []
        self.flushing = None
        self.started = 0.0
        self.last = 0.0
        self.result = None
        #: libtorrent reported a write error: check pieces before recording
        self.storage_failed = False
        ckpt = getattr(job.target, 'checkpoint_bytes', None)
        #: bytes of pending pieces that start a flush before the second
        self.flush_bytes = ckpt // 2 if ckpt else None
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
        try:
            os.fsync(self.fd)
        except OSError as exc:
            raise exceptions.DestinationError(
                'cannot fsync %s: %s' % (job.target.path, exc)) from exc
        pieces = self.flushing
        if self.storage_failed:
            pieces = self._on_disk(pieces)
        for i in pieces:
            job.target.record(*job.meta.piece_range(i))
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
