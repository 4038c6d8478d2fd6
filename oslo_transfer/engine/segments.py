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

"""Filling a ``.part`` file from one driver: segments, hashing, checkpoints.

One :class:`Fill` moves the missing ranges of one object from one location
into the ``.part`` file.  Worker threads (one per segment) take pieces from
a queue, read them with ranged reads and write them at their offsets; the
calling thread is the single hasher, which follows the contiguous prefix by
reading ``.part`` back (from the page cache).  Once ``checkpoint_bytes``
have been written since the last checkpoint, by all workers together, a
checkpoint thread makes the file durable and records the written ranges
(as they were before the sync) and the prefix digest in the journal, so
that a crash re-sends at most about ``checkpoint_bytes`` in total.  One
``fdatasync`` covers what every worker wrote, so counting across workers
(rather than giving each worker ``checkpoint_bytes / segments``) keeps the
same bound with a ``segments``-th of the syncs, and no worker waits for the
disk while it could be reading.
"""

import collections
import errno
import logging
import threading

from oslo_transfer import _utils
from oslo_transfer import driver as driver_mod
from oslo_transfer.engine import partfile as partfile_mod
from oslo_transfer.engine import writers
from oslo_transfer import exceptions

LOG = logging.getLogger(__name__)

HASH_BLOCK = 4 * 1024 * 1024
# Chunks that a worker wrote at (or just ahead of) the hasher's position are
# handed to the hasher in memory, so that it need not read them back from
# .part; at most this many bytes wait there, so memory stays bounded.
HANDOFF_BYTES = 8 * 1024 * 1024
#: Bytes of one stream's chunks that the engine may hold besides the reads
#: a driver has in flight: those waiting for the hasher and for the
#: writer.  Told to drivers as ``Context.held_bytes``, so that a driver
#: that reuses its aligned blocks keeps enough of them.
HELD_BYTES = HANDOFF_BYTES + writers.HELD_BYTES

#: After a failure on a full disk, the control file may find no block for
#: its rewrite: this much of the end of the held data is punched out (then
#: twice as much, at most ``_ROOM_TRIES`` times) to make room, so that a
#: rerun resumes the rest instead of nothing.
ROOM_BYTES = 1024 * 1024
_ROOM_TRIES = 3


class _StreamMode(Exception):
    """Internal: the server ignored Range; go on as one stream."""


class Fill:
    """Move the missing bytes of ``[0, size)`` into ``part``.

    :param job: the owning download (its options, counters, journal).
    :param drv: the driver.
    :param loc: the location.
    :param size: the object's size, or None when unknown.
    :param ranged: use ranged reads (resume, parallel segments).
    :param segments: parallel workers (1 for a single stream).
    :param hasher: a hashlib object already fed with ``[0, hashed)``, or
        None when no digest is computed.
    """

    def __init__(self, job, drv, loc, size, ranged, segments, hasher,
                 hashed):
        self.job = job
        self.drv = drv
        self.loc = loc
        self.size = size
        self.ranged = ranged
        self.segments = segments if ranged and size else 1
        self.hasher = hasher
        self.hashed = hashed
        self.part = job.part
        self.journal = job.journal
        self.cond = threading.Condition()
        self.written = job.journal.ranges.copy()
        #: bytes held before this fill began (not fetched by it)
        self.resumed = self.written.total()
        self.pieces = collections.deque()
        self.error = None
        self.active = 0
        self.token = driver_mod.CancelToken()
        self.ctx = job.child_context(self.token)
        self.origin = job.origin_key(drv, loc)
        # Chunks go to the .part (and the hasher) only: views of a driver's
        # aligned blocks are welcome, and are written without a copy.
        self.ctx.aligned_views = True
        self.ctx.held_bytes = HELD_BYTES
        self.ckpt_lock = threading.Lock()
        self.mark = (hashed, hasher.copy().hexdigest() if hasher else None)
        self.interval = job.checkpoint_bytes
        # What a crash now would cost: the bytes written by all workers
        # since the last checkpoint took its snapshot, and those of the
        # checkpoint being made (synced, not recorded yet).  A checkpoint
        # starts at half the interval; workers wait at the full interval
        # (see _hold_back), so that a slow sync cannot let it grow.
        self.since_snapshot = 0
        self.checkpointing = 0
        self.ckpt_due = threading.Event()
        self.ckpt_stop = False
        # {offset: bytes} written but not yet hashed (see HANDOFF_BYTES).
        self.handoff = {}
        self.handoff_bytes = 0
        self.handoff_hits = 0
        # Whoever feeds the hasher holds this lock: the calling thread's
        # hash loop, or (one stream) the worker itself, see _hash_inline.
        self.hash_lock = threading.Lock()
        self.last_mark = hashed
        self.inline = (self.segments == 1 and hasher is not None and
                       bool(getattr(drv, 'background_reads', False)))

    # -- planning ---------------------------------------------------------

    def _plan_pieces(self):
        if self.size is None:
            self.pieces.append((self.written.prefix(), None))
            return
        # One stream reads each hole with one request: pieces only serve to
        # share the work among parallel segments, and every piece costs a
        # driver a request (an HTTP GET, an FTP RETR, SFTP read-ahead lost).
        step = self.job.segment_size if self.segments > 1 else self.size
        if not self.ranged:
            start = self.written.prefix()
            if start < self.size:
                self.pieces.append((start, self.size))
            return
        for s, e in self.written.holes(self.size):
            while s < e:
                n = min(step, e - s)
                self.pieces.append((s, s + n))
                s += n

    # -- workers ------------------------------------------------------------

    def _workers(self):
        """The functions the worker threads run (one per segment)."""
        return [self._worker] * min(self.segments, max(1, len(self.pieces)))

    def _worker(self):
        attempts = 0
        while True:
            with self.cond:
                if self.error is not None or not self.pieces:
                    self.active -= 1
                    self.cond.notify_all()
                    return
                start, end = self.pieces.popleft()
            at = [start]
            try:
                self._read_piece(start, end, at)
                attempts = 0
            except exceptions.TransferError as exc:
                pos = at[0]
                with self.cond:
                    if end is None or pos < end:
                        self.pieces.appendleft((pos, end))
                delay = self.job.retry.next_delay(exc, attempts, self.ctx,
                                                  self.token)
                if delay is None:
                    self._fail(exc)
                    continue
                attempts += 1
                LOG.warning('%s: %s; retry %d/%d in %.1fs at offset %d',
                            self.loc.masked, exc, attempts,
                            self.job.retry.retries, delay, pos)
                self.job.retried += 1
                self._checkpoint(force=True)
                if self.token.wait(delay):
                    self._fail(exc)
            except _StreamMode as exc:
                self._fail(exc)
            except BaseException as exc:  # noqa: reported by run()
                self._fail(exc)

    def _read_piece(self, start, end, at):
        """Read ``[start, end)``; ``at[0]`` follows the bytes written."""
        job = self.job
        pos = first = start
        length = None if end is None else end - start
        skip = 0
        if not self.ranged:
            # One stream, never a range: from zero to the end, dropping
            # what we already hold.  (Even ``read(0, size)`` is a ranged
            # request to HTTP, which a server that ignores ranges may
            # answer with a body that does not say its length.)
            skip, start, length = start, 0, None
        with self.ctx.slot(self.origin):
            try:
                chunks = self.drv.read(self.loc, start, length, self.ctx)
            except exceptions.RangeNotSupported as exc:
                raise _StreamMode(str(exc)) from exc
            try:
                for chunk in chunks:
                    if self.token.cancelled:
                        self.ctx.cancel.check()
                    self.ctx.check_expiry()
                    n = len(chunk)
                    job.count_wire(n)
                    if skip:
                        if n <= skip:
                            skip -= n
                            continue
                        chunk = chunk[skip:]
                        n -= skip
                        skip = 0
                    if end is not None and pos + n > end:
                        if self.ranged:
                            raise exceptions.ProtocolError(
                                '%s sent more bytes than asked for'
                                % self.loc.masked, url=self.loc.masked)
                        raise exceptions.SizeMismatch(
                            '%s is larger than its announced size %d'
                            % (self.loc.masked, self.size),
                            url=self.loc.masked)
                    self._store(pos, chunk, n, self.origin)
                    pos += n
                    at[0] = pos
            except exceptions.RangeNotSupported as exc:
                raise _StreamMode(str(exc)) from exc
            except exceptions.TransferError:
                raise
            except OSError as exc:
                raise exceptions.ConnectionFailed(
                    '%s: %s' % (self.loc.masked, exc),
                    url=self.loc.masked) from exc
            finally:
                close = getattr(chunks, 'close', None)
                if close:
                    close()
        if self.token.cancelled:
            # A cancel (or the deadline) may end a stream early by shutting
            # its socket down: never take that end for the object's.
            self.ctx.cancel.check()
        if end is not None and pos < end:
            raise exceptions.ProtocolError(
                '%s ended after %d of %d bytes' % (self.loc.masked,
                                                   pos - first, end - first),
                url=self.loc.masked)
        return pos

    def _store(self, pos, chunk, n, origin):
        """Write ``chunk`` (``n`` bytes at ``pos``) and count it as held."""
        self.job.throttle(n, self.token, origin)
        _utils.cooperate()
        self.part.write(pos, chunk)
        inline = self._hash_inline(pos, chunk, n)
        with self.cond:
            if not inline:
                # Before it counts as written: one stream's hasher then
                # never finds a written chunk missing from memory (and
                # reads nothing back).
                self._offer(pos, chunk, n)
            due, full = self._mark_written(pos, pos + n)
            if not inline:
                # (Hashed here: nothing for the hash loop.)
                self.cond.notify_all()
        self._counted(n, due, full)

    def _mark_written(self, start, end):
        """Add ``[start, end)`` to what is written (the lock is held).

        :returns: ``(due, full)``: a checkpoint is due (half the interval
            is not recorded yet), and writers must hold back (a whole
            interval is not).
        """
        self.written.add(start, end)
        self.since_snapshot += end - start
        return (self.since_snapshot >= self.interval // 2,
                self.since_snapshot + self.checkpointing >= self.interval)

    def _counted(self, n, due, full):
        """Count ``n`` bytes done, checkpoint and hold back as told.

        Called after :meth:`_mark_written`, with the lock released.
        """
        self.job.count_done(n)
        if due or full:
            self.ckpt_due.set()
        if full:
            self._hold_back()

    def _hash_inline(self, pos, chunk, n) -> bool:
        """One stream from a ``background_reads`` driver: hash ``chunk`` here.

        Saves a hand-off to the calling thread per chunk (a wake-up and a
        few lock round trips, which take the GIL from the driver's receiving
        thread at the wrong moment: SFTP over paramiko used 0.35 CPU-s less
        per 512 MiB); hashing releases the GIL, so the driver's threads go
        on receiving meanwhile.  Returns False when the chunk is not the
        next one for the digest (it then goes through :meth:`_offer`).
        """
        if not self.inline or not writers.immutable(chunk):
            return False
        with self.hash_lock:
            if pos != self.hashed:
                return False
            self.hasher.update(chunk)
            self._hashed_more(n)
        return True

    def _hashed_more(self, n, force_mark=False):
        """``n`` more bytes went into the hasher (``hash_lock`` held).

        Every ``HASH_BLOCK`` (or when forced) the digest so far becomes the
        mark that the next checkpoint records for resume.
        """
        end = self.hashed + n
        mark = None
        if force_mark or end - self.last_mark >= HASH_BLOCK:
            self.last_mark = end
            mark = (end, self.hasher.copy().hexdigest())
        with self.cond:
            self.hashed = end
            if mark is not None:
                self.mark = mark

    def _offer(self, pos, chunk, n):
        """Keep ``chunk`` for the hasher if it will want it soon.

        Only chunks that cannot change are kept (``bytes``, views of
        ``bytes`` or of a driver's ``AlignedBlock``): a driver may reuse a
        bytearray once the engine has written it.  Called with
        ``self.cond`` held.
        """
        if (self.hasher is None or not writers.immutable(chunk) or
                pos < self.hashed or n > HANDOFF_BYTES):
            return
        if self.segments == 1:
            # One stream arrives in order: wait for the hasher rather than
            # make it read the chunk back (it hashes faster than most links
            # deliver, so this rarely waits, and memory stays bounded).
            # The caller adds the chunk to ``written`` only after this, so
            # the hasher cannot get to it meanwhile.
            while (self.handoff_bytes + n > HANDOFF_BYTES and
                   self.error is None and not self.token.cancelled):
                self.cond.wait(0.2)
        elif (pos - self.hashed >= HANDOFF_BYTES or
              self.handoff_bytes + n > HANDOFF_BYTES):
            return
        self.handoff[pos] = chunk
        self.handoff_bytes += n

    def _take(self, limit):
        """The bytes at ``self.hashed``, from memory or read back.

        :param limit: the end of the contiguous written prefix.
        """
        with self.cond:
            data = self.handoff.pop(self.hashed, None)
            if data is not None:
                self.handoff_bytes -= len(data)
                self.handoff_hits += 1
                self.cond.notify_all()
                return data
            end = min(limit, self.hashed + HASH_BLOCK)
            for k in self.handoff:
                if self.hashed < k < end:
                    end = k
        data = self.part.read(self.hashed, end - self.hashed)
        if len(data) != end - self.hashed:
            raise exceptions.DestinationError(
                '%s is shorter than what was written to it' % self.part.path)
        return data

    def _drop_stale(self):
        """Forget kept chunks the hasher went past (read back instead)."""
        with self.cond:
            for k in [k for k in self.handoff if k < self.hashed]:
                self.handoff_bytes -= len(self.handoff.pop(k))
            self.cond.notify_all()

    def _fail(self, exc):
        with self.cond:
            if self.error is None:
                self.error = exc
            self.cond.notify_all()
        self.token.cancel('stopping after an error in another segment')

    def _hold_back(self):
        """Wait while the bytes not yet recorded reach the interval.

        A worker looks after each chunk, so a crash costs at most
        ``checkpoint_bytes`` plus one chunk per segment (DESIGN.md), however
        slow the disk is: the soak lost up to 36 MiB to one kill with the
        default 16 MiB while the workers went on during a sync.  On a fast
        disk the checkpoint started at half the interval is done before
        the workers get here.
        """
        with self.cond:
            while (self.since_snapshot + self.checkpointing >= self.interval
                   and self.error is None and not self.token.cancelled):
                self.ckpt_due.set()
                self.cond.wait(0.05)

    def _checkpointer(self):
        """Thread: a checkpoint each time the workers ask for one."""
        while True:
            self.ckpt_due.wait()
            self.ckpt_due.clear()
            if self.ckpt_stop:
                return
            try:
                self._checkpoint()
            except BaseException as exc:  # noqa: a full disk, an EIO
                self._fail(exc)
                return

    def _checkpoint(self, force=False, make_room=False):
        """fsync, then record the written ranges and the prefix digest.

        :param make_room: the transfer failed and every worker stopped: on a
            full disk, give back the end of the held data (see
            :data:`ROOM_BYTES`) rather than record nothing.
        """
        with self.ckpt_lock:
            with self.cond:
                snap = self.written.copy()
                mark = self.mark
                self.checkpointing = self.since_snapshot
                self.since_snapshot = 0
            try:
                self._record(snap, mark, force, make_room)
            finally:
                with self.cond:
                    self.checkpointing = 0
                    self.cond.notify_all()

    def _record(self, snap, mark, force, make_room):
        """Sync, then record ``snap`` and the prefix digest ``mark``."""
        if not force and snap.total() == self.journal.ranges.total():
            return
        try:
            self.part.sync()
        except exceptions.DestinationError:
            below = self.part.written_below()
            if below is None:
                raise
            # The writer thread failed (a full disk) on bytes the
            # worker had already handed it: record what reached the
            # file before that, so that a rerun resumes from there.
            held = self.journal.ranges.copy()
            for s, e in snap.below(below):
                held.add(s, e)
            self.part.sync(flush=False)
            self.journal.ranges = held
            if mark[1] is not None and mark[0] <= held.prefix():
                self.journal.prefix_len, self.journal.prefix_digest = \
                    mark
            self._save_journal(make_room)
            if make_room:
                # The last checkpoint of a failed transfer: recorded,
                # and the failure is already the transfer's error.
                return
            raise
        self.journal.ranges = snap
        if mark[1] is not None and mark[0] <= snap.prefix():
            self.journal.prefix_len, self.journal.prefix_digest = mark
        self._save_journal(make_room)

    def _save_journal(self, make_room):
        save_journal(self.journal, self.part, make_room)

    # -- the hasher (calling thread) ---------------------------------------

    def run(self):
        """Run the workers and hash; returns the final size.

        :raises _StreamMode: the caller should retry without ranges.
        """
        self._plan_pieces()
        workers = self._workers()
        n = len(workers)
        self.active = n
        if n == 1:
            # One worker writes in order and the hasher takes its chunks
            # from memory: the writes can wait in a queue, and nothing
            # needs the written bytes in the page cache.
            self.part.use_background()
        else:
            # (After a one-stream candidate failed over to this one.)
            self.part.use_buffered()
        self.job.user_cancel_link(self.token)
        ckpt = threading.Thread(target=self._checkpointer,
                                name='oslo-transfer-checkpoint', daemon=True)
        ckpt.start()
        futures = [self.job.executor.submit(w) for w in workers]
        try:
            self._hash_loop()
        except BaseException as exc:
            self._fail(exc)
            raise
        finally:
            for f in futures:
                f.result()
            self.ckpt_stop = True
            self.ckpt_due.set()
            ckpt.join()
            self.job.user_cancel_unlink()
            try:
                self._checkpoint(force=True,
                                 make_room=self.error is not None)
            except exceptions.TransferError as exc:
                LOG.warning('could not record progress of %s: %s',
                            self.part.path, exc)
        if self.error is not None:
            raise self.error
        size = self.size if self.size is not None else self.written.prefix()
        return size

    def _hash_loop(self):
        while True:
            with self.cond:
                while True:
                    avail = self.written.prefix()
                    if self.error is not None:
                        break
                    if avail > self.hashed:
                        break
                    if self.active == 0:
                        return
                    self.cond.wait(0.5)
            if self.error is not None:
                self._drain_handoff()
                return
            if self.hasher is None:
                self.hashed = avail
                continue
            with self.hash_lock:
                while self.hashed < avail:
                    data = self._take(avail)
                    self.hasher.update(data)
                    self._hashed_more(len(data))
                    _utils.cooperate()
            self._drop_stale()

    def _drain_handoff(self):
        """After an error: hash the kept chunks that follow the prefix.

        They are in memory already (at most HANDOFF_BYTES), and a digest
        mark at their end lets the next attempt verify those bytes on
        resume instead of hashing them again from the start.
        """
        if self.hasher is None:
            return
        with self.hash_lock:
            while True:
                with self.cond:
                    data = self.handoff.pop(self.hashed, None)
                if data is None:
                    break
                self.hasher.update(data)
                self._hashed_more(len(data))
            if self.hashed > self.mark[0]:
                self._hashed_more(0, force_mark=True)

    def finish_hash(self, size):
        """Hash whatever is left up to ``size`` (after the workers)."""
        if self.hasher is None:
            return
        while self.hashed < size:
            n = min(HASH_BLOCK, size - self.hashed)
            data = self.part.read(self.hashed, n)
            if not data:
                raise exceptions.SizeMismatch(
                    '%s holds %d bytes, expected %d'
                    % (self.part.path, self.hashed, size))
            self.hasher.update(data)
            self.hashed += len(data)
            _utils.cooperate()


def rehash_prefix(part, algorithm_new, length, block=HASH_BLOCK):
    """Hash ``[0, length)`` of ``part``; returns the hashlib object."""
    h = algorithm_new()
    pos = 0
    while pos < length:
        data = part.read(pos, min(block, length - pos))
        if not data:
            break
        h.update(data)
        pos += len(data)
        _utils.cooperate()
    return h, pos


def save_journal(journal, part, make_room=False):
    """``journal.save()``; after a failure on a full disk, make room first.

    :param make_room: the transfer failed and nothing writes ``part`` any
        more: when the control file finds no free block, punch out the end
        of the held data (:data:`ROOM_BYTES`, then twice as much, at most
        ``_ROOM_TRIES`` times) and record the rest, rather than nothing.
    :raises DestinationError: the control file could not be written.
    """
    room = ROOM_BYTES
    for _ in range(_ROOM_TRIES):
        try:
            journal.save()
            return
        except exceptions.DestinationError as exc:
            if not make_room or not _no_space(exc) or \
                    not _give_back(journal, part, room):
                raise
        room *= 2
    journal.save()


def _give_back(journal, part, room) -> bool:
    """Punch out the last ``room`` bytes held; False if it cannot."""
    ranges = journal.ranges.to_list()
    if not ranges or part.fd is None:
        return False
    start, end = ranges[-1]
    cut = max(start, (end - room) // 4096 * 4096)
    if not partfile_mod.punch_hole(part.fd, cut, end - cut):
        return False
    kept = _utils.RangeSet(ranges[:-1])
    if cut > start:
        kept.add(start, cut)
    journal.ranges = kept
    if journal.prefix_len > kept.prefix():
        journal.prefix_len, journal.prefix_digest = 0, None
    LOG.warning('%s: the disk is full: dropped [%d, %d) of the %d bytes '
                'held, so that the control file can record the rest',
                part.path, cut, end, kept.total() + end - cut)
    return True


def _no_space(exc) -> bool:
    cause = exc.__cause__
    return isinstance(cause, OSError) and cause.errno in (errno.ENOSPC,
                                                          errno.EDQUOT)
