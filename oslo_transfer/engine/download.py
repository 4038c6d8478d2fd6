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

"""Copy into a local file: lock, resume, verify, atomic rename.

The order of events for ``copy(source, DEST)``:

1. take ``DEST.part.lock`` (one writer per destination; a second caller
   waits, then usually finds a finished destination and returns);
2. decide what to do with an existing ``DEST`` (``if_exists``);
3. for each candidate of the plan: stat, decide whether the bytes already
   held may be kept (same source and validator, or size and checksum known
   for a splice), re-verify the held prefix, then fill the rest;
4. check size and digest; only then ``fsync`` + rename to ``DEST``.

A failure leaves ``DEST.part`` and its control file for the next attempt,
except a checksum mismatch, which removes them: those bytes are known bad.
"""

import dataclasses
import hashlib
import logging
import os
import threading
import time

from oslo_transfer import _utils
from oslo_transfer import checksum as checksum_mod
from oslo_transfer import driver as driver_mod
from oslo_transfer.engine import journal as journal_mod
from oslo_transfer.engine import partfile
from oslo_transfer.engine import retry as retry_mod
from oslo_transfer.engine import segments as seg_mod
from oslo_transfer.engine import sizes
from oslo_transfer.engine import throttle
from oslo_transfer import exceptions
from oslo_transfer import locations
from oslo_transfer import result as result_mod

LOG = logging.getLogger(__name__)

Cap = driver_mod.Capability

#: restarts of one copy because its source changed while it was being
#: read (``[oslo_transfer] on_source_change = restart``); one change more
#: raises ``SourceChanged``
MAX_RESTARTS = 3

#: the largest ``rate`` a caller may pass (bytes per second)
MAX_RATE = 2 ** 63 - 1


class _Restart(Exception):
    """Internal: the source changed during the copy; start it again."""


def _journal_name(loc):
    """The source as recorded in the control file: no secrets at all."""
    return locations.mask_url(loc.without_userinfo())


def _default_digest(name):
    """``[oslo_transfer] default_digest`` checked: None for ``none``.

    :raises ValueError: an unknown or variable-length algorithm, before
        any I/O.
    """
    if not name or name.strip().lower() == 'none':
        return None
    try:
        return checksum_mod.algorithm(name)
    except ValueError as exc:
        raise ValueError('[oslo_transfer] default_digest: %s' % exc) from None


class Download:
    """One copy of a source into the local path ``dest``."""

    def __init__(self, transfer, plan, dest, checksum, ctx, progress=None,
                 if_exists='verify', mode=None, segments=None, rate=None,
                 expected_size=None):
        if if_exists not in ('verify', 'replace', 'error'):
            raise ValueError('if_exists must be "verify", "replace" or '
                             '"error", not %r' % (if_exists,))
        if segments is not None and (not isinstance(segments, int) or
                                     segments < 1):
            raise ValueError('segments must be an integer of at least 1, '
                             'not %r' % (segments,))
        if rate is not None and (
                isinstance(rate, bool) or
                not isinstance(rate, (int, float)) or
                not 0 <= rate <= MAX_RATE):
            # (``nan`` fails every comparison, so it lands here too.)
            raise ValueError('rate must be 0 (unlimited) or a positive '
                             'number of bytes per second, not %r' % (rate,))
        g = transfer.conf.oslo_transfer
        self.transfer = transfer
        self.plan = plan
        self.dest = os.path.abspath(dest)
        self.checksum = checksum
        self.ctx = ctx
        self.progress_cb = progress
        self.if_exists = if_exists
        self.mode = mode
        self.expected_size = expected_size
        self.segments = min(segments or g.segments,
                            g.max_connections_per_origin)
        self.segment_threshold = g.segment_threshold
        self.segment_size = g.segment_size
        self.checkpoint_bytes = g.checkpoint_bytes
        self.retry = retry_mod.RetryPolicy.from_conf(transfer.conf)
        self.on_source_change = g.on_source_change
        self.default_digest = _default_digest(g.default_digest)
        self.lock_timeout = g.lock_timeout
        self.executor = transfer.segment_executor
        rate = g.rate_limit if rate is None else rate
        self.bucket = throttle.TokenBucket(rate)
        self.part = partfile.PartFile(self.dest + '.part',
                                      sparse=g.sparse and not g.preallocate,
                                      durable=g.fsync,
                                      direct_io=g.direct_io)
        self.preallocate = g.preallocate
        self.journal = journal_mod.Journal(self.dest + '.part.ctl',
                                           durable=g.fsync)
        self.lock = journal_mod.DestinationLock(self.dest + '.part.lock')
        self.wire = 0
        self.done = 0
        self.retried = 0
        self.total = None
        self._count_lock = threading.Lock()
        self._last_progress = 0.0
        self._cancel_key = None
        self._started = time.monotonic()
        self._changes = 0

    # -- helpers used by Fill ---------------------------------------------

    def child_context(self, token):
        """The transfer's context (every field) with its own cancel token."""
        return dataclasses.replace(self.ctx, cancel=token)

    def user_cancel_link(self, token):
        self._cancel_key = self.ctx.cancel.on_cancel(
            lambda: token.cancel(self.ctx.cancel.reason or 'cancelled'))

    def user_cancel_unlink(self):
        if self._cancel_key is not None:
            self.ctx.cancel.remove(self._cancel_key)
            self._cancel_key = None

    @staticmethod
    def origin_key(drv, loc):
        """The origin whose connection slots the driver's calls hold."""
        return drv.origin(loc)

    def throttle(self, n, token):
        self.bucket.consume(n, token)
        throttle.SCHEDULER.consume(n, self.ctx.priority, cancel=token)

    def count_wire(self, n):
        with self._count_lock:
            self.wire += n

    def count_done(self, n):
        with self._count_lock:
            self.done += n
            now = time.monotonic()
            due = now - self._last_progress >= 0.5
            if due:
                self._last_progress = now
        if due:
            self._report()

    def _report(self):
        if self.progress_cb is not None:
            try:
                self.progress_cb(self.done, self.total)
            except Exception:  # noqa: a broken callback must not fail us
                LOG.exception('progress callback failed')

    # -- the job ------------------------------------------------------------

    def run(self) -> result_mod.Result:
        d = os.path.dirname(self.dest)
        if not os.path.isdir(d):
            raise exceptions.DestinationError(
                'the destination directory %s does not exist' % d)
        lock_expires = self.ctx.expires_at
        if self.lock_timeout:
            t = time.monotonic() + self.lock_timeout
            lock_expires = t if lock_expires is None else min(t,
                                                              lock_expires)
        self.lock.acquire(self.ctx.cancel, lock_expires)
        try:
            kept = self._existing()
            if kept is not None:
                return kept
            return self._run_candidates()
        finally:
            self.part.close()
            # Keep the lock file only beside resumable state.
            self.lock.release(remove=not os.path.exists(self.part.path))

    def _existing(self):
        if not os.path.lexists(self.dest):
            return None
        if self.if_exists == 'replace':
            return None
        if self.if_exists == 'error':
            raise exceptions.DestinationExists(
                '%s exists (if_exists="error")' % self.dest)
        if not os.path.isfile(self.dest) or os.path.islink(self.dest):
            raise exceptions.DestinationExists(
                '%s exists and is not a regular file' % self.dest)
        size = os.path.getsize(self.dest)
        want = self.expected_size
        if want is None:
            cand = self.plan.candidates[0]
            try:
                want = sizes.checked_stat(cand.driver_obj.stat(
                    cand.location, self.ctx), cand.location).size
            except exceptions.TransferError as exc:
                LOG.debug('cannot stat %s to compare: %s', cand.url, exc)
        if want is not None and want != size:
            raise exceptions.DestinationExists(
                '%s exists with %d bytes, the source has %d; pass '
                'if_exists="replace" to overwrite it' % (self.dest, size,
                                                         want))
        digest = algo = None
        if self.checksum is not None:
            h = self.checksum.new()
            with open(self.dest, 'rb') as f:
                while True:
                    b = f.read(seg_mod.HASH_BLOCK)
                    if not b:
                        break
                    h.update(b)
            digest, algo = h.hexdigest(), self.checksum.algorithm
            if digest != self.checksum.hexdigest:
                raise exceptions.DestinationExists(
                    '%s exists and its %s digest %s differs from %s; pass '
                    'if_exists="replace" to overwrite it'
                    % (self.dest, algo, digest, self.checksum.hexdigest))
        elif want is None:
            raise exceptions.DestinationExists(
                '%s exists and neither a checksum nor the source size can '
                'tell whether it is the same data' % self.dest)
        LOG.info('%s already holds the data; nothing to do', self.dest)
        return result_mod.Result(bytes_transferred=0, bytes_resumed=0,
                                 driver=None, url=None, digest=digest,
                                 algorithm=algo, size=size,
                                 elapsed=time.monotonic() - self._started,
                                 plan=self.plan, dest=self.dest)

    def _run_candidates(self):
        try:
            return self._try_candidates()
        except BaseException:
            # Whatever ended the copy: a .part that holds nothing (a
            # failed prepare, a first read that failed) is not left.
            self._cleanup_if_empty()
            raise

    def _try_candidates(self):
        attempts = []
        self.journal.load()
        last = None
        for cand in self.plan.candidates:
            self.ctx.cancel.check()
            try:
                res = self._attempt(cand)
            except (exceptions.Cancelled, exceptions.ChecksumMismatch,
                    exceptions.DestinationError, exceptions.SourceChanged,
                    exceptions.SizeMismatch):
                raise
            except exceptions.TransferError as exc:
                attempts.append((cand.url, cand.driver, str(exc)))
                last = exc
                if self.ctx.expired():
                    # total_timeout: no time left for another candidate.
                    raise
                LOG.warning('%s via %s failed: %s%s', cand.url, cand.driver,
                            exc, '; trying the next candidate'
                            if cand is not self.plan.candidates[-1] else '')
                continue
            res.attempts = attempts
            return res
        if last is None:
            raise exceptions.NoDriverFound('nothing to try')
        raise last

    def _cleanup_if_empty(self):
        if not self.journal.ranges and not self.part.refused:
            try:
                self.part.remove()
                self.journal.remove()
            except OSError as exc:
                LOG.warning('could not remove %s: %s', self.part.path,
                            exc.strerror or exc)

    def _stat(self, drv, loc):
        retried = 0
        while True:
            try:
                return sizes.checked_stat(drv.stat(loc, self.ctx), loc)
            except exceptions.TransferError as exc:
                # A stat that timed out means a host that does not answer:
                # the next candidate is a better bet than retries *
                # io_timeout of waiting.
                delay = None if isinstance(
                    exc, exceptions.TransferTimeout) else \
                    self.retry.next_delay(exc, retried, self.ctx)
                if delay is None:
                    raise
                retried += 1
                LOG.warning('%s: %s; retry %d/%d in %.1fs', loc.masked, exc,
                            retried, self.retry.retries, delay)
                if self.ctx.cancel.wait(delay):
                    self.ctx.cancel.check()

    def _new_hasher(self):
        if self.checksum is not None:
            return self.checksum.new, self.checksum.algorithm
        algo = self.default_digest
        if algo is None:
            return None, None
        return (lambda: hashlib.new(algo)), algo

    def _attempt(self, cand):
        """Copy from ``cand``, again from the start when its source changes.

        A loop, not a recursion: a source whose validator changes on every
        request raises ``SourceChanged`` after :data:`MAX_RESTARTS`
        restarts (see :meth:`_changed_during_copy`).
        """
        while True:
            try:
                return self._attempt_once(cand)
            except _Restart:
                continue

    def _attempt_once(self, cand):
        drv, loc = cand.driver_obj, cand.location
        limited = bool(self.bucket.rate or throttle.PROCESS_BUCKET.rate)
        whole_file = Cap.COPY_TO_PATH in drv.capabilities and (
            Cap.READ not in drv.capabilities or (
                # A rate limit is applied chunk by chunk to a stream.
                not limited and drv.use_copy_to_path(
                    loc, os.path.dirname(self.part.path),
                    self.checksum is not None, self.ctx)))
        st = self._stat(drv, loc)
        size = st.size
        if size is None:
            size = self.expected_size
        elif self.expected_size is not None and size != self.expected_size:
            raise exceptions.SizeMismatch(
                '%s has %d bytes, the caller expected %d'
                % (loc.masked, size, self.expected_size), url=loc.masked)
        self.total = size
        self.ctx.validator = st.validator
        self._decide_resume(loc, st, size)
        j = self.journal
        ranged = (not whole_file and Cap.RANGED_READ in drv.capabilities and
                  st.ranges and size is not None)
        if not whole_file and not ranged:
            # One stream from the start: what is held past the prefix is
            # fetched again, so it does not count as resumed.
            self._keep_prefix()
        self.part.open(fresh=not j.ranges)
        self.part.prepare(size, j.ranges, self.preallocate)
        new, algo = self._new_hasher()
        if whole_file and self.checksum is None:
            new, algo = None, None
        j.source = _journal_name(loc)
        j.validator = st.validator
        j.size = size
        j.checksum = str(self.checksum) if self.checksum else None
        hasher, hashed = self._verify_prefix(new, algo)
        resumed_from = j.ranges.total()
        j.algorithm = algo
        j.save()
        self.done = j.ranges.total()
        self._report()
        if whole_file:
            final = self._whole_file(drv, loc, size)
            fill = seg_mod.Fill(self, drv, loc, final, False, 1, hasher,
                                hashed)
        else:
            nseg = self.segments if (size or 0) >= self.segment_threshold \
                else 1
            if st.max_segments:
                nseg = max(1, min(nseg, st.max_segments))
            fill, final = self._fill(drv, loc, st, size, ranged, nseg,
                                     hasher, hashed)
            resumed_from = min(resumed_from, fill.resumed)
        fill.finish_hash(final)
        return self._complete(cand, fill, final, resumed_from, algo)

    def _fill(self, drv, loc, st, size, ranged, nseg, hasher, hashed):
        """Run a :class:`~oslo_transfer.engine.segments.Fill`.

        A server that ignores or mangles a ranged read makes the rest go
        as one stream from the start (never a range: see
        :meth:`Fill._read_piece`), after the held prefix; one that will
        not even serve that stream is a ``ProtocolError``.

        :returns: ``(fill, final size)``.
        :raises _Restart: the source changed; the attempt starts again.
        """
        while True:
            fill = seg_mod.Fill(self, drv, loc, size, ranged, nseg, hasher,
                                hashed)
            try:
                return fill, fill.run()
            except seg_mod._StreamMode as exc:
                reason = str(exc)
            except exceptions.SourceChanged:
                # The driver's read() says the object changed under it (a
                # 412 to If-Match): restart or raise, by on_source_change.
                st2 = self._stat(drv, loc)
                self._changed_during_copy(loc, st.validator, st2.validator)
            hasher, hashed = fill.hasher, fill.hashed
            st2 = self._stat(drv, loc)
            if st2.validator != st.validator or st2.size != st.size:
                self._changed_during_copy(loc, st.validator, st2.validator)
            if not ranged:
                raise exceptions.ProtocolError(
                    '%s refused to be read as one stream from the start: '
                    '%s' % (loc.masked, reason), url=loc.masked,
                    retryable=False)
            LOG.info('%s ignored a ranged read (%s); reading it as one '
                     'stream', loc.masked, reason)
            ranged, nseg = False, 1
            # Bytes after the verified prefix are fetched again: forget
            # them, and empty them so that no leftover of a write cut
            # short survives under a zero chunk that a sparse write skips.
            self._keep_prefix()
            self.part.flush()
            self.part.prepare(size, self.journal.ranges, False)

    def _keep_prefix(self):
        """Hold only the contiguous prefix (a stream from the start)."""
        j = self.journal
        prefix = j.ranges.prefix()
        j.ranges = _utils.RangeSet([(0, prefix)] if prefix else [])

    def _decide_resume(self, loc, st, size):
        j = self.journal
        if not j.ranges:
            j.reset()
            return
        same_url = j.source == _journal_name(loc)
        if (same_url and j.validator and st.validator is not None and
                st.validator != j.validator):
            # The same source, another version: never spliced, even when a
            # checksum would catch it at the end (DESIGN: restart or
            # SourceChanged).
            self._source_changed(loc, j.validator, st.validator)
            return
        same_version = (same_url and st.validator is not None and
                        j.validator == st.validator and j.size == size)
        splice_ok = (size is not None and self.checksum is not None and
                     j.size == size and j.checksum == str(self.checksum))
        if same_version or splice_ok:
            LOG.info('resuming %s: %d bytes held from %s', self.dest,
                     j.ranges.total(), j.source)
            return
        LOG.info('not resuming %s: the held bytes came from %s (size %s) '
                 'and cannot be joined with %s without a checksum',
                 self.dest, j.source, j.size, loc.masked)
        j.reset()

    def _changed_during_copy(self, loc, old, new):
        """The source changed while this call read it: restart, or give up.

        :raises _Restart: start the attempt again (the held bytes are
            dropped).
        :raises SourceChanged: ``on_source_change = error``, or the
            source changed more than :data:`MAX_RESTARTS` times during
            this call; what is held stays (the last version's bytes).
        """
        self._changes += 1
        if self.on_source_change != 'error' and \
                self._changes > MAX_RESTARTS:
            held = self.journal.ranges.total()
            raise exceptions.SourceChanged(
                '%s changed %d times during the copy (validator %s, now '
                '%s); giving up after %d restarts; %s' % (
                    loc.masked, self._changes, old, new, MAX_RESTARTS,
                    '%s is kept (%d bytes)' % (self.part.path, held)
                    if held else 'nothing was kept'), url=loc.masked)
        self._source_changed(loc, old, new)
        raise _Restart()

    def _source_changed(self, loc, old, new):
        if self.on_source_change == 'error':
            raise exceptions.SourceChanged(
                '%s changed since the partial copy was made (validator %s, '
                'now %s); %s is kept' % (loc.masked, old, new,
                                         self.part.path), url=loc.masked)
        LOG.warning('%s changed (validator %s, now %s): starting again',
                    loc.masked, old, new)
        self.journal.reset()
        self.part.close()
        self.part.open(fresh=True)

    def _verify_prefix(self, new, algo):
        j = self.journal
        if new is None:
            return None, 0
        prefix = j.ranges.prefix()
        if not prefix:
            return new(), 0
        if j.prefix_digest and j.algorithm == algo and j.prefix_len:
            h, n = seg_mod.rehash_prefix(self.part, new, j.prefix_len)
            if n != j.prefix_len or h.hexdigest() != j.prefix_digest:
                LOG.warning('%s does not hold the bytes its control file '
                            'recorded; starting again', self.part.path)
                j.reset()
                self.part.close()
                self.part.open(fresh=True)
                self.part.prepare(j.size, j.ranges, self.preallocate)
                return new(), 0
            return h, n
        return new(), 0

    def _whole_file(self, drv, loc, size):
        job = self

        class _Target:
            path = job.part.path

            def __init__(self):
                self.size = size
                self._lock = threading.Lock()
                self._saved = time.monotonic()

            def held(self):
                return list(job.journal.ranges)

            def record(self, offset, length):
                with self._lock:
                    job.journal.ranges.add(offset, offset + length)
                    if time.monotonic() - self._saved > 1.0:
                        self._saved = time.monotonic()
                        self.save()

            def save(self, make_room=False):
                # Held means durable: whatever the driver did, the ranges
                # reach the control file only after the .part was synced
                # (one fdatasync a second; the inode is shared).
                job.part.sync()
                seg_mod.save_journal(job.journal, job.part, make_room)

            def progress(self, nbytes):
                job.count_wire(nbytes)
                job.count_done(nbytes)

        target = _Target()
        failed = True
        try:
            drv.copy_to_path(loc, target, self.ctx, progress=target.progress)
            failed = False
        finally:
            # What the driver recorded since the last save stays held,
            # also when it failed or was cancelled.
            with target._lock:
                try:
                    target.save(make_room=failed)
                except exceptions.TransferError as exc:
                    # Do not hide the driver's own error behind this one.
                    LOG.warning('could not record progress of %s: %s',
                                self.part.path, exc)
        final = size if size is not None else self.part.size()
        if self.part.size() != final:
            raise exceptions.SizeMismatch(
                '%s delivered %d bytes, expected %d' % (
                    loc.masked, self.part.size(), final), url=loc.masked)
        return final

    def _complete(self, cand, fill, size, resumed_from, algo):
        if self.part.size() != size:
            self.part.truncate(size)
        if self.expected_size is not None and size != self.expected_size:
            raise exceptions.SizeMismatch(
                '%s delivered %d bytes, expected %d'
                % (cand.url, size, self.expected_size), url=cand.url)
        digest = fill.hasher.hexdigest() if fill.hasher else None
        if self.checksum is not None and digest != self.checksum.hexdigest:
            self.part.remove()
            self.journal.remove()
            raise exceptions.ChecksumMismatch(
                '%s: %s digest is %s, expected %s; the received data was '
                'discarded' % (cand.url, algo, digest,
                               self.checksum.hexdigest),
                url=cand.url, expected=self.checksum.hexdigest,
                actual=digest)
        self.part.commit(self.dest, self.mode,
                         replace=self.if_exists == 'replace')
        self.part.close()
        self.journal.remove()
        self.done = size
        self.total = size
        self._report()
        seeding = self._after_commit(cand)
        return result_mod.Result(
            bytes_transferred=self.wire, bytes_resumed=resumed_from,
            driver=cand.driver, url=cand.url, digest=digest, algorithm=algo,
            size=size, elapsed=time.monotonic() - self._started,
            plan=self.plan, dest=self.dest, seeding=seeding)

    def _after_commit(self, cand):
        """The driver's ``after_commit()``: its Seeding, or None."""
        try:
            seeding = cand.driver_obj.after_commit(cand.location, self.dest,
                                                   self.ctx)
        except Exception:  # noqa: the copy succeeded; seeding is extra
            LOG.exception('after_commit of %s failed', cand.driver)
            return None
        if seeding is not None and not isinstance(seeding,
                                                  driver_mod.Seeding):
            LOG.warning('after_commit of %s returned %r, not a Seeding; '
                        'ignored', cand.driver, seeding)
            return None
        return seeding
