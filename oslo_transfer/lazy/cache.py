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

"""The local cache of a lazy image: the engine's files, plus a present-map.

Beside the destination ``DEST`` a lazy image keeps what a ``copy()`` keeps
(:mod:`oslo_transfer.engine.journal`): ``DEST.part`` (sparse: blocks not
fetched are holes), the control file ``DEST.part.ctl`` and the lock
``DEST.part.lock``, held for as long as the image is attached; and
``DEST.part.map`` (:mod:`oslo_transfer.lazy.presentmap`), whose header is
the control file's ``lazy`` entry.

Durability: a written block is *pending* until :meth:`Cache.flush`, which
the image calls at least once a second: ``fdatasync`` of ``DEST.part``,
then the pending bits into the map and an ``fdatasync`` of the map, then
the control file's ranges (rewritten atomically), which mirror the map so
that a ``copy()`` resumes from what the image left.  A crash loses at most
the blocks written since the last flush and never leaves a bit over data
that did not reach the disk.

A full disk (or any write error) stops the caching, never the serving: the
image goes on from memory and the origin, and :attr:`Cache.failed` holds
the :class:`~oslo_transfer.exceptions.DestinationError` for ``wait()``.
"""

import logging
import os
import threading
import time

from oslo_transfer import _utils
from oslo_transfer.engine import journal as journal_mod
from oslo_transfer.engine import partfile
from oslo_transfer import exceptions
from oslo_transfer.lazy import presentmap

LOG = logging.getLogger(__name__)

__all__ = ['Cache']


class Cache:
    """``DEST.part`` and its map, control file and lock.

    :param dest: the final path of the image.
    :param manifest: the image's :class:`~oslo_transfer.lazy.manifest.
        Manifest` (its blocks are the map's bits).
    :param durable: sync data and map (``[oslo_transfer] fsync``).
    :param sparse: punch holes where nothing is held
        (``[oslo_transfer] sparse``).
    :param part_factory: builds the ``.part`` file
        (:class:`~oslo_transfer.engine.partfile.PartFile`; tests pass one
        that forgets unsynced writes).
    """

    def __init__(self, dest: str, manifest, durable: bool = True,
                 sparse: bool = True, part_factory=partfile.PartFile):
        self.dest = os.path.abspath(dest)
        self.manifest = manifest
        self.durable = durable
        self.part = part_factory(self.dest + '.part', sparse=sparse,
                                 durable=durable, direct_io=False)
        self.journal = journal_mod.Journal(self.dest + '.part.ctl',
                                           durable=durable)
        self.map = presentmap.PresentMap(self.journal.map_path,
                                         manifest.count, durable)
        self.lock = journal_mod.DestinationLock(self.dest + '.part.lock')
        #: the error that stopped the caching, or None
        self.failed = None
        self.committed = False
        self._pending = set()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._ctl_warned = False

    # -- the lock ------------------------------------------------------------

    def acquire(self, cancel, wait: float = 0.0) -> None:
        """Take ``DEST.part.lock``, waiting at most ``wait`` seconds.

        :raises DestinationError: another process holds it (a copy or an
            attach of the same cache).
        """
        try:
            self.lock.acquire(cancel, time.monotonic() + wait)
        except exceptions.TransferTimeout as exc:
            err = exceptions.DestinationError(
                'the cache %s is in use by another process (it holds %s): '
                'a cache is attached by one process at a time'
                % (self.dest, self.lock.path))
            raise err from exc

    # -- opening -----------------------------------------------------------

    def header(self) -> dict:
        """The map's header, as the control file's ``lazy`` entry."""
        m = self.manifest
        return {'version': presentmap.VERSION, 'size': m.size,
                'block_size': m.block_size, 'blocks': m.count,
                'manifest': m.identity}

    def load(self, source: str, validator: str | None,
             checksum: str | None) -> list:
        """Open the files; returns the blocks held (to verify on read).

        What a previous attach or ``copy()`` left is kept when it is the
        same image: with a trusted manifest, any bytes of the same size
        (each block is verified before it is served); without one, only
        those of the same source and validator.

        :param source: the location, as recorded (no secrets).
        :raises SourceChanged: no trusted manifest, and the source has
            another validator than the bytes held.
        :raises DestinationError: the cache cannot be created.
        """
        j = self.journal
        j.load()
        held = self._held(j, source, validator)
        self.part.open(fresh=not held)
        ranges = self._ranges(held)
        self.part.prepare(self.manifest.size, ranges)
        keep_map = j.lazy == self.header() and bool(held)
        self.map.open(fresh=not keep_map)
        self.map.commit([i for i in held if i not in self.map])
        j.lazy = self.header()
        j.source, j.validator = source, validator
        j.size, j.checksum = self.manifest.size, checksum
        j.algorithm, j.prefix_len, j.prefix_digest = None, 0, None
        j.ranges = ranges
        if self.part.sparse:
            # Zero blocks are holes (prepare() punched them): held too.
            for i in range(self.manifest.count):
                if self.manifest.is_zero(i):
                    off, n = self.manifest.block(i)
                    j.ranges.add(off, off + n)
        try:
            j.save()
        except exceptions.DestinationError as exc:
            self.stop(exc)
        return held

    def _ranges(self, indexes) -> _utils.RangeSet:
        """The byte ranges of blocks ``indexes``."""
        out = _utils.RangeSet()
        for i in indexes:
            off, n = self.manifest.block(i)
            out.add(off, off + n)
        return out

    def _held(self, j, source, validator) -> list:
        m = self.manifest
        if j.size != m.size or not j.ranges:
            return []
        if not m.trusted:
            same = j.source == source
            if same and j.validator and validator and \
                    j.validator != validator:
                raise exceptions.SourceChanged(
                    '%s changed since the cache %s was filled (validator '
                    '%s, now %s) and no trusted manifest verifies the '
                    'blocks held; the cache is kept' % (
                        source, self.part.path, j.validator, validator),
                    url=source)
            if not (same and j.validator == validator):
                return []
        ranges = j.ranges
        held = [i for i in range(m.count) if not m.is_zero(i) and
                ranges.covers(m.block(i)[0], sum(m.block(i)))]
        if m.trusted and j.lazy == self.header() and self.map.peek():
            # The map may be a flush ahead of the control file's ranges.
            held = sorted(set(held) | {i for i in self.map.indexes()
                                       if not m.is_zero(i)})
        return held

    # -- blocks --------------------------------------------------------------

    def write(self, index: int, data) -> bool:
        """Write block ``index``; False when caching stopped (or stops)."""
        if self.failed is not None:
            return False
        try:
            self.part.write(self.manifest.block(index)[0], data)
        except exceptions.DestinationError as exc:
            self.stop(exc)
            return False
        with self._lock:
            self._pending.add(index)
        return True

    def read(self, offset: int, length: int) -> bytes:
        """Bytes of the cache (holes read as zeros)."""
        return self.part.read(offset, length)

    def stop(self, exc: exceptions.DestinationError) -> None:
        """Stop caching (a full disk): serving goes on without it."""
        if self.failed is None:
            self.failed = exc
            LOG.error('%s; the image is served on without caching what '
                      'it fetches from now on', exc)

    def flush(self) -> list:
        """Make the pending blocks durable and present in the map.

        :returns: the blocks that could not be made durable (their data
            may be lost: serve them from elsewhere).
        """
        with self._flush_lock:
            with self._lock:
                pending, self._pending = sorted(self._pending), set()
            if not pending or self.committed:
                return []
            try:
                self.part.sync()
                self.map.commit(pending)
            except exceptions.DestinationError as exc:
                self.stop(exc)
                return [i for i in pending if i not in self.map]
            self._mirror(pending)
            return []

    def _mirror(self, indexes):
        """Add the blocks to the control file's ranges (for copy())."""
        j = self.journal
        for i in indexes:
            off, n = self.manifest.block(i)
            j.ranges.add(off, off + n)
        try:
            j.save()
        except exceptions.DestinationError as exc:
            if not self._ctl_warned:
                self._ctl_warned = True
                LOG.warning('%s; the present-map stays up to date, a copy() '
                            'would resume from less', exc)

    # -- the end -------------------------------------------------------------

    def commit(self, mode: int | None = None) -> None:
        """Rename the complete, verified cache to ``DEST``; let go of it.

        The open file stays readable: the image serves the renamed file.

        :raises DestinationExists: ``DEST`` appeared meanwhile.
        """
        self.flush()
        self.map.close()
        self.part.commit(self.dest, mode, replace=False)
        self.committed = True
        self.journal.remove()
        self.lock.release(remove=True)

    def discard(self) -> None:
        """Remove the cache (its bytes are known bad) and let go of it."""
        with self._lock:
            self._pending = set()
        self.part.remove()
        self.map.remove()
        self.journal.remove()
        self.lock.release(remove=True)

    def close(self) -> None:
        """Make what was written durable, close the files, unlock."""
        if not self.committed and self.part.fd is not None:
            try:
                self.flush()
            except exceptions.TransferError as exc:
                LOG.warning('closing %s: %s', self.dest, exc)
        self.map.close()
        self.part.close()
        self.lock.release(remove=False)
