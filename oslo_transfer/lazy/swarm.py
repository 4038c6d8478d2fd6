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

"""Fetching the blocks of a lazy image through a driver's lazy reader.

When the plan's first candidate is a driver with ``LAZY_READ``
(BitTorrent: ranked first with torrent metadata and ``peers >=
p2p_min_peers``) and the manifest is that torrent's metadata (its pieces
are the image's blocks), :func:`fetcher_for` returns a
:class:`SwarmFetcher` instead of the ranged-read
:class:`~oslo_transfer.lazy.fetch.Fetcher`.  It has the same face for the
image: :meth:`SwarmFetcher.fetch` asks the reader for the run's pieces
(``urgent`` at the ``interactive`` class) and returns once each was
delivered, or raises the reader's error for a piece it cannot get.  The
reader also delivers pieces nobody asked for (its own prefetch: normal
piece picking among the peers plus this host's share of the origin), so
the image's own sweep does not run.  Every piece is checked against the
manifest again before the image sees it.
"""

import logging
import threading

from oslo_transfer import driver as driver_mod
from oslo_transfer.engine import throttle
from oslo_transfer import exceptions
from oslo_transfer.lazy import fetch as fetch_mod

LOG = logging.getLogger(__name__)

__all__ = ['SwarmFetcher', 'fetcher_for']

Cap = driver_mod.Capability


def _lazy_candidate(plan, manifest):
    """The plan's first candidate, if it reads this manifest's pieces."""
    if manifest is None or manifest.kind != 'torrent' or \
            not plan.candidates:
        return None
    cand = plan.candidates[0]
    if Cap.LAZY_READ not in cand.driver_obj.capabilities:
        return None
    return cand


def fetcher_for(transfer, plan, manifest, ctx, splice=True):
    """A :class:`SwarmFetcher` or a ranged-read ``Fetcher`` for the image.

    :raises NoDriverFound: neither a lazy reader nor ranged reads.
    """
    cand = _lazy_candidate(plan, manifest)
    if cand is None:
        return fetch_mod.Fetcher(transfer, plan, manifest, ctx, splice)
    return SwarmFetcher(transfer, plan, cand, manifest, ctx, splice)


class SwarmFetcher:
    """The image's fetcher when its blocks come through a lazy reader.

    Built with the image; :meth:`start` (with the image's threads, after
    a fork in the NBD plugin) builds the reader.  When the reader cannot
    start, the other candidates' ranged reads serve instead, if any.
    """

    #: the reader prefetches by itself: the image runs no sweep
    prefetches = True

    def __init__(self, transfer, plan, cand, manifest, ctx, splice=True):
        self.plan = plan
        self.cand = cand
        self.candidates = [cand]
        self.manifest = manifest
        self.ctx = ctx
        self.reader = None
        self.used = None
        self.wire = 0
        self._got = set()
        self._cond = threading.Condition()
        self._deliver = None
        self._stat = None
        try:
            self.ranged = fetch_mod.Fetcher(transfer, plan, manifest, ctx,
                                            splice)
        except exceptions.NoDriverFound:
            self.ranged = None

    def stat(self, cancel=None):
        """``(candidate, Stat)`` from the metadata (no origin I/O)."""
        if self._stat is None:
            self._stat = self.cand.driver_obj.stat(self.cand.location,
                                                   self.ctx)
        st = self._stat
        if st.size is not None and st.size != self.manifest.size:
            raise exceptions.SizeMismatch(
                '%s has %d bytes, the manifest %d' % (
                    self.cand.url, st.size, self.manifest.size),
                url=self.cand.url)
        return self.cand, st

    def journal_name(self, cand) -> str:
        return fetch_mod.Fetcher.journal_name(self, cand)

    # -- life -------------------------------------------------------------

    def start(self, path, held, deliver, prefetch) -> None:
        """Build and start the reader.

        :param path: the cache's ``.part`` file.
        :param held: blocks the image holds.
        :param deliver: the image's ``deliver(index, data, cand)``.
        :param prefetch: the image prefetches (the reader's own order).
        """
        self._deliver = deliver
        drv = self.cand.driver_obj
        try:
            reader = drv.lazy_reader(self.cand.location, path,
                                     self.manifest.meta, self.ctx, held,
                                     self._on_piece, prefetch=prefetch)
            reader.start()
        except exceptions.TransferError as exc:
            if self.ranged is None:
                raise
            LOG.warning('%s via %s: %s; reading ranges of %s instead',
                        self.cand.url, self.cand.driver, exc,
                        self.ranged.candidates[0].url)
            self.prefetches = False
            return
        self.reader = reader
        LOG.info('lazy image %s reads through %s', path, self.cand.driver)

    def completed(self, path) -> None:
        if self.reader is not None:
            self.reader.completed(path)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
        with self._cond:
            self._cond.notify_all()

    # -- blocks -----------------------------------------------------------

    def _on_piece(self, index, data) -> None:
        """The reader's ``deliver``: check, hand to the image, note."""
        if not self.manifest.verify(index, data):
            LOG.error('piece %d from %s does not match the manifest; not '
                      'served', index, self.cand.url)
            return
        self.used = self.cand
        with self._cond:
            self.wire += len(data)
        self._deliver(index, data, self.cand)
        with self._cond:
            self._got.add(index)
            self._cond.notify_all()

    def fetch(self, run, cls, cancel, deliver) -> None:
        """Ask for ``run``'s blocks; return once each was delivered."""
        if self.reader is None:
            if self.ranged is None:
                raise exceptions.ConnectionFailed(
                    'the lazy reader of %s is not running' % self.cand.url,
                    url=self.cand.url)
            return self.ranged.fetch(run, cls, cancel, deliver)
        m = self.manifest
        with self._cond:
            todo = [i for i in range(run.next, run.last + 1)
                    if i not in self._got]
        for i in todo:
            off, n = m.block(i)
            self.reader.want(off, n, urgent=cls == throttle.INTERACTIVE)
        with self._cond:
            while True:
                while run.next <= run.last and run.next in self._got:
                    run.next += 1
                if run.next > run.last:
                    return
                cancel.check()
                for i in range(run.next, run.last + 1):
                    if i not in self._got:
                        exc = self.reader.failed(i)
                        if exc is not None:
                            raise exc
                self._cond.wait(0.1)
