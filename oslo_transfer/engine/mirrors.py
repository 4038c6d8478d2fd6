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

"""Filling a ``.part`` file from several locations of the same data at once.

:class:`MultiFill` is a :class:`~oslo_transfer.engine.segments.Fill`
(the same ``.part``, hasher, checkpoints and journal) whose workers read
from several mirrors; :mod:`oslo_transfer.engine.split` decides which
bytes each mirror reads.  Each mirror has ``segments`` workers, each
holding one of the scheduler's connection slots for the mirror's origin
(``max_connections_per_origin``) and passing its bytes through the
origin's rate limit.

A failing mirror is retried like one candidate among several (one quick
retry), then dropped: its pieces go to the others.  With a manifest
(blockmap or torrent piece hashes), a piece counts as held only once its
blocks match; a mirror that serves one bad block is dropped at once and
the piece is fetched again elsewhere.  The copy fails only when every
mirror is dropped.
"""

import dataclasses
import logging

from oslo_transfer import _utils
from oslo_transfer import driver as driver_mod
from oslo_transfer.engine import partfile as partfile_mod
from oslo_transfer.engine import segments as seg_mod
from oslo_transfer.engine import split
from oslo_transfer import exceptions

LOG = logging.getLogger(__name__)


class Mirror(split.Mirror):
    """One location of a multi-source copy: driver, stat and counters.

    :param drv: its driver.
    :param loc: its :class:`~oslo_transfer.locations.Location`.
    :param url: the masked URL (the name reported in ``Result``).
    :param origin: the scheduler's origin key.
    :param validator: the stat's validator.
    :param workers: parallel readers from it.
    :param retry: its :class:`~oslo_transfer.engine.retry.RetryPolicy`.
    """

    def __init__(self, drv, loc, url, origin, validator, workers, retry):
        super().__init__(url, workers)
        self.drv = drv
        self.loc = loc
        self.origin = origin
        self.validator = validator
        self.retry = retry
        self.retried = 0
        self.error = None
        #: the fill's context with this mirror's validator (a ranged
        #: read's ``If-Range``), set by :class:`MultiFill`
        self.ctx = None


class MultiFill(seg_mod.Fill):
    """Move the missing bytes of ``[0, size)`` from several mirrors.

    :param job: the owning download.
    :param mirrors: :class:`Mirror` objects, best first.
    :param size: the object's size (known: the splicing rule).
    :param hasher: as for :class:`~oslo_transfer.engine.segments.Fill`.
    :param hashed: as for :class:`~oslo_transfer.engine.segments.Fill`.
    :param manifest: an object with ``block_size``, ``block(i)`` and
        ``verify(i, data)`` (a lazy image's
        :class:`~oslo_transfer.lazy.manifest.Manifest`), or None.
    """

    def __init__(self, job, mirrors, size, hasher, hashed, manifest=None):
        first = mirrors[0]
        super().__init__(job, first.drv, first.loc, size, True,
                         sum(m.workers for m in mirrors), hasher, hashed)
        self.mirrors = mirrors
        self.manifest = manifest
        for m in mirrors:
            # Each location has its own validator (ETag, mtime): another
            # mirror's would make its ranged reads fail their If-Range.
            m.ctx = dataclasses.replace(self.ctx, validator=m.validator)
        self.splitter = split.Splitter(
            self.written.holes(size), size, mirrors, job.segment_size,
            align=manifest.block_size if manifest is not None else 1,
            chunk_bytes=job.transfer.conf.oslo_transfer.chunk_size)

    def _plan_pieces(self):
        """The splitter hands the pieces out."""

    def _workers(self):
        # The best-ranked mirror's workers first: when there are fewer
        # pieces than workers (a resumed copy's holes), it takes them.
        return [(lambda m=m: self._mirror_worker(m))
                for m in self.mirrors for _ in range(m.workers)]

    # -- one worker ----------------------------------------------------------

    def _mirror_worker(self, mirror):
        try:
            self._mirror_loop(mirror)
        except BaseException as exc:  # noqa: reported by run()
            self._fail(exc)
        finally:
            with self.cond:
                self.active -= 1
                self.cond.notify_all()

    def _mirror_loop(self, mirror):
        while True:
            with self.cond:
                if self.error is not None:
                    return
            if self.token.cancelled:
                # Between two pieces: the copy stops with the reason
                # (never a fill that looks complete with holes in it).
                self.ctx.cancel.check()
                raise exceptions.Cancelled(self.token.reason or 'cancelled')
            piece = self.splitter.take(mirror)
            if piece is None:
                if mirror.dropped or self.splitter.done():
                    return
                with self.cond:
                    self.cond.wait(0.05)
                continue
            try:
                self._read(mirror, piece)
            except exceptions.ChecksumMismatch as exc:
                self._drop(mirror, exc)
                return
            except exceptions.TransferError as exc:
                if not self._retry(mirror, exc):
                    return
            else:
                mirror.retried = 0

    def _retry(self, mirror, exc) -> bool:
        """After ``exc``: wait and go on (True), or drop ``mirror``."""
        if isinstance(exc, (exceptions.Cancelled,
                            exceptions.DestinationError)):
            raise exc
        delay = None if mirror.dropped else mirror.retry.next_delay(
            exc, mirror.retried, self.ctx, self.token)
        if delay is None:
            self._drop(mirror, exc)
            return False
        mirror.retried += 1
        self.job.retried += 1
        LOG.warning('%s: %s; retry %d/%d in %.1fs', mirror.name, exc,
                    mirror.retried, mirror.retry.retries, delay)
        self._checkpoint(force=True)
        if self.token.wait(delay):
            self.ctx.cancel.check()
            return False
        return True

    def _drop(self, mirror, exc):
        """Give ``mirror`` nothing more; fail when none is left."""
        self.splitter.drop(mirror, str(exc))
        if mirror.error is None:
            mirror.error = exc
        alive = self.splitter.alive()
        if alive:
            LOG.warning('%s: %s; dropped, reading from %s', mirror.name,
                        exc, ', '.join(m.name for m in alive))
            with self.cond:
                self.cond.notify_all()
            return
        self._fail(exc)

    # -- reading a piece ----------------------------------------------------

    def _read(self, mirror, piece):
        """Read ``piece`` from ``mirror``; the bytes held go to the journal.

        The read has a cancel token of its own (linked to the fill's):
        when another mirror takes the piece over whole, the splitter
        cancels it (``Piece.abort``), and the read ends at once instead
        of waiting for the chunk it asked for.

        :raises ChecksumMismatch: a block does not match the manifest
            (the piece is given back, its bytes emptied).
        """
        token = driver_mod.CancelToken()
        key = self.token.on_cancel(
            lambda: token.cancel(self.token.reason or 'cancelled'))
        piece.abort = lambda: token.cancel('taken over by another location')
        ctx = dataclasses.replace(mirror.ctx, cancel=token)
        pos = piece.pos
        try:
            with self.ctx.slot(mirror.origin):
                pos = self._stream(mirror, piece, ctx)
        except BaseException:
            if not self._taken_over(piece, token):
                self.splitter.give_back(
                    piece, piece.start if self.manifest is not None else pos)
                raise
        finally:
            self.token.remove(key)
        if pos < piece.end and not self._taken_over(piece, token):
            self.splitter.give_back(
                piece, piece.start if self.manifest is not None else pos)
            raise exceptions.ProtocolError(
                '%s ended after %d of %d bytes' % (
                    mirror.name, pos - piece.start, piece.end - piece.start),
                url=mirror.name)
        self.splitter.finish(piece)
        if self.manifest is not None and piece.end > piece.start:
            # (Up to where it was cut, when it was taken over.)
            self._verify(mirror, piece.start, piece.end)

    def _taken_over(self, piece, token) -> bool:
        """The read ended because ``piece`` was taken over whole.

        Its bytes up to the cut are written: the piece ends as if read.
        """
        return (token.cancelled and not self.token.cancelled and
                piece.pos >= piece.end)

    def _stream(self, mirror, piece, ctx):
        """The chunks of ``piece``, written; returns the end reached."""
        pos = piece.pos
        chunks = mirror.drv.read(mirror.loc, pos, piece.end - pos, ctx)
        try:
            for chunk in chunks:
                if self.token.cancelled:
                    self.ctx.cancel.check()
                    raise exceptions.Cancelled(
                        self.token.reason or 'cancelled')
                self.ctx.check_expiry()
                self.job.count_wire(len(chunk))
                if mirror.dropped:
                    break
                n = self.splitter.advance(piece, len(chunk))
                if n < len(chunk):
                    chunk = memoryview(chunk)[:n]
                if n:
                    self._put(mirror, pos, chunk, n)
                    pos += n
                if pos >= piece.end:
                    break
        except OSError as exc:
            raise exceptions.ConnectionFailed(
                '%s: %s' % (mirror.name, exc), url=mirror.name) from exc
        finally:
            close = getattr(chunks, 'close', None)
            if close:
                close()
        return pos

    def _put(self, mirror, pos, chunk, n):
        if self.manifest is None:
            self._store(pos, chunk, n, mirror.origin)
            self.splitter.credit(mirror, n)
            return
        # Held only once verified (see _verify).
        self.job.throttle(n, self.token, mirror.origin)
        _utils.cooperate()
        self.part.write(pos, chunk)

    def _verify(self, mirror, start, end):
        """Check ``[start, end)`` block by block, then count it as held."""
        m = self.manifest
        first = start // m.block_size
        index = first
        while True:
            off, length = m.block(index)
            if off >= end:
                break
            data = self.part.read(off, length)
            if not m.verify(index, data):
                self._empty(start, end)
                self.splitter.give_back_range(start, end)
                raise exceptions.ChecksumMismatch(
                    '%s served bytes [%d, %d) that do not match block %d '
                    'of the manifest' % (mirror.name, off, off + length,
                                         index), url=mirror.name)
            index += 1
            _utils.cooperate()
        self.splitter.credit(mirror, end - start)
        self._held(start, end)

    def _empty(self, start, end):
        """Make ``[start, end)`` read as zeros again.

        A sparse rewrite skips zero chunks (see ``PartFile.prepare``).
        """
        self.part.flush()
        if self.part.sparse and not partfile_mod.punch_hole(
                self.part.fd, start, end - start):
            self.part.sparse = False

    def _held(self, start, end):
        """``[start, end)`` is written and verified: count it as held."""
        with self.cond:
            due, full = self._mark_written(start, end)
            self.cond.notify_all()
        self._counted(end - start, due, full)
