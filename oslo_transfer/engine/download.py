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
import logging
import os
import threading
import time

from oslo_transfer import _utils
from oslo_transfer import checksum as checksum_mod
from oslo_transfer import driver as driver_mod
from oslo_transfer.engine import admission
from oslo_transfer.engine import digests as digests_mod
from oslo_transfer.engine import journal as journal_mod
from oslo_transfer.engine import mirrors as mirrors_mod
from oslo_transfer.engine import partfile
from oslo_transfer.engine import retry as retry_mod
from oslo_transfer.engine import segments as seg_mod
from oslo_transfer.engine import sizes
from oslo_transfer.engine import throttle
from oslo_transfer.engine import verified
from oslo_transfer.engine import wholefile
from oslo_transfer import exceptions
from oslo_transfer import locations
from oslo_transfer import result as result_mod

LOG = logging.getLogger(__name__)

Cap = driver_mod.Capability
#: the smallest piece a class policy makes a ranged read ask for
MIN_PIECE = 256 * 1024

#: restarts of one copy because its source changed while it was being
#: read (``[oslo_transfer] on_source_change = restart``); one change more
#: raises ``SourceChanged``
MAX_RESTARTS = 3

#: the largest ``rate`` a caller may pass (bytes per second)
MAX_RATE = 2 ** 63 - 1

#: errors that another location would not cure: raised at once, never a
#: reason to try the next candidate or to read the mirrors one at a time
_NOT_LOCATION_FAULTS = (
    exceptions.Cancelled, exceptions.ChecksumMismatch,
    exceptions.DestinationError, exceptions.SourceChanged,
    exceptions.SizeMismatch, exceptions.DeadlineUnreachable)


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


def default_digest(conf):
    """``[oslo_transfer] default_digest`` of ``conf`` (None for ``none``)."""
    return _default_digest(conf.oslo_transfer.default_digest)


#: The downloads of this process that hold their destination's lock, so
#: that waiters on the same destination can report the holder's progress.
_ACTIVE = {}
_active_lock = threading.Lock()


class Download:
    """One copy of a source into the local path ``dest``."""

    #: several locations may be read at once (see :meth:`_mirrors`)
    several_at_once = True

    def __init__(self, transfer, plan, dest, checksum, ctx, progress=None,
                 if_exists='verify', mode=None, segments=None, rate=None,
                 expected_size=None, hash_algos=None, verifier=None,
                 retry=None, manifest=None):
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
        #: a resolved manifest (``lazy.manifest.Manifest``) or None: with
        #: several locations, each piece is verified against it
        self.manifest = manifest
        self.segments = min(segments or g.segments,
                            g.max_connections_per_origin)
        self.segment_threshold = g.segment_threshold
        self.segment_size = g.segment_size
        self.multi_source = g.multi_source
        sched = ctx.scheduler
        if sched is not None and sched.mode == 'classes':
            # A lower class asks for little at a time (its class policy),
            # so that what it has in flight when a higher class arrives
            # is small: a piece it has asked for arrives at the link's
            # rate whatever the scheduler paces.
            most = sched.policy(ctx.priority).request_bytes
            if most:
                self.segment_size = min(self.segment_size,
                                        max(most, MIN_PIECE))
        self.checkpoint_bytes = g.checkpoint_bytes
        self.base_retry = retry or retry_mod.RetryPolicy.from_conf(
            transfer.conf)
        self.retry = self.base_retry
        self.on_source_change = g.on_source_change
        self.default_digest = _default_digest(g.default_digest)
        self.explicit_algos = hash_algos is not None or verifier is not None
        self.algos = digests_mod.algorithms(hash_algos, self.default_digest)
        self.feed = digests_mod.Feed(verifier) if verifier is not None \
            else None
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
        self.sched_job = None
        #: ``{url: TransferError or Stat}`` of the multi-source probe:
        #: its failed stats, and the stat of a small object's first
        #: location, taken by that candidate's first attempt (no second
        #: stat)
        self._probed = {}
        #: ``{url: bytes}`` received from each candidate tried one at a
        #: time (see ``Result.bytes_by_location``)
        self._wire_by = {}
        self._cand_wire = 0
        #: ``(url, driver, why)`` of the locations left out of a
        #: multi-source read
        self._left_out = []

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
        return throttle.origin_key(loc, drv)

    def throttle(self, n, token, origin=None):
        """Wait until ``n`` bytes from ``origin`` may pass (all limits)."""
        self.bucket.consume(n, token)
        sched = self.ctx.scheduler
        if sched is not None:
            sched.consume(n, self.ctx.current_priority, origin, token,
                          self.ctx.deadline_at)

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
        return self._scheduled(self._locked)

    def _scheduled(self, body):
        """Run ``body()`` as this copy's job in the Transfer's scheduler."""
        sched = self.ctx.scheduler
        if sched is None:
            return body()
        due = self.ctx.deadline_at
        self.sched_job = sched.job(self.ctx.priority, due)
        self.ctx.job = self.sched_job
        LOG.info('copying %s to %s: class %s%s', self.plan.candidates[0].url,
                 self.dest, self.sched_job.cls,
                 '' if due is None else ', deadline in %.1fs'
                 % (due - time.monotonic()))
        with self.sched_job:
            return body()

    def _acquire(self):
        """Take the writer lock, within ``lock_timeout`` and the deadline."""
        lock_expires = self.ctx.expires_at
        if self.lock_timeout:
            t = time.monotonic() + self.lock_timeout
            lock_expires = t if lock_expires is None else min(t,
                                                              lock_expires)
        loan = throttle.Loan(self.sched_job)

        def on_wait():
            loan.lend(self._holder_job())
            if self.progress_cb:
                self._waiting()

        try:
            self.lock.acquire(self.ctx.cancel, lock_expires, on_wait=on_wait)
        finally:
            loan.end()

    def _holder_job(self):
        """The Job of the writer that holds the destination.

        None: no writer, or one in another process (not seen).
        """
        with _active_lock:
            leader = _ACTIVE.get(self.dest)
        return getattr(leader, 'sched_job', None)

    def _locked(self):
        self._acquire()
        with _active_lock:
            _ACTIVE[self.dest] = self
        try:
            kept = self._existing()
            if kept is not None:
                return kept
            return self._run_candidates()
        finally:
            with _active_lock:
                if _ACTIVE.get(self.dest) is self:
                    del _ACTIVE[self.dest]
            self.part.close()
            # Keep the lock file only beside resumable state.
            self.lock.release(remove=not os.path.exists(self.part.path))

    def _waiting(self):
        """Another writer has the destination: report its progress.

        From the writer's counters when it runs in this process, else
        from its control file (the durable ranges), once a second.
        """
        now = time.monotonic()
        if now - self._last_progress < 1.0:
            return
        self._last_progress = now
        with _active_lock:
            leader = _ACTIVE.get(self.dest)
        if leader is not None:
            done, total = leader.done, leader.total
        else:
            j = journal_mod.Journal(self.dest + '.part.ctl', durable=False)
            if not j.load():
                return
            done, total = j.ranges.total(), j.size
        if (done, total) != (self.done, self.total):
            self.done, self.total = done, total
            self._report()

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
        stat_error = None
        if want is None:
            cand = self.plan.candidates[0]
            try:
                want = sizes.checked_stat(cand.driver_obj.stat(
                    cand.location, self.ctx), cand.location).size
            except exceptions.TransferError as exc:
                LOG.debug('cannot stat %s to compare: %s', cand.url, exc)
                stat_error = exc
        if want is not None and want != size:
            raise exceptions.DestinationExists(
                '%s exists with %d bytes, the source has %d; pass '
                'if_exists="replace" to overwrite it' % (self.dest, size,
                                                         want))
        digest = algo = None
        known = verified.lookup(self.dest)
        if self.checksum is not None:
            algo = self.checksum.algorithm
            digest = known.get(algo)
            if digest is None:
                digest = self._hash_existing()
                known[algo] = digest
                if digest == self.checksum.hexdigest:
                    verified.remember(self.dest, known)
            else:
                LOG.debug('%s: %s digest known from its writer; not read '
                          'again', self.dest, algo)
            if digest != self.checksum.hexdigest:
                raise exceptions.DestinationExists(
                    '%s exists and its %s digest %s differs from %s; pass '
                    'if_exists="replace" to overwrite it'
                    % (self.dest, algo, digest, self.checksum.hexdigest))
        elif want is None:
            if stat_error is not None:
                # The real reason (an unknown host key, a refused login),
                # not a DestinationExists that would hide it.
                raise stat_error
            raise exceptions.DestinationExists(
                '%s exists and neither a checksum nor the source size can '
                'tell whether it is the same data' % self.dest)
        if algo is None and known:
            algo = self.algos[0] if self.algos and self.algos[0] in known \
                else sorted(known)[0]
            digest = known[algo]
        LOG.info('%s already holds the data; nothing to do', self.dest)
        self.done = self.total = size
        self._report()
        return result_mod.Result(bytes_transferred=0, bytes_resumed=0,
                                 driver=None, url=None, digest=digest,
                                 algorithm=algo, size=size, digests=known,
                                 elapsed=time.monotonic() - self._started,
                                 plan=self.plan, dest=self.dest)

    def _hash_existing(self):
        """The checksum's digest of ``DEST``, read back (yielding)."""
        h = self.checksum.new()
        with open(self.dest, 'rb') as f:
            while True:
                b = f.read(seg_mod.HASH_BLOCK)
                if not b:
                    break
                h.update(b)
                # Green threads run between two blocks (eventlet).
                time.sleep(0)
        return h.hexdigest()

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
        res, candidates, last = self._try_mirrors(attempts)
        if res is not None:
            return res
        for cand in candidates:
            self.ctx.cancel.check()
            last_cand = cand is candidates[-1]
            self.retry = self.base_retry.for_candidate(last_cand)
            wire = self._cand_wire = self.wire
            try:
                res = self._attempt(cand)
            except _NOT_LOCATION_FAULTS:
                raise
            except exceptions.TransferError as exc:
                self._count_location(cand.url, wire)
                attempts.append((cand.url, cand.driver, str(exc)))
                last = exc
                if self.ctx.expired():
                    # total_timeout: no time left for another candidate.
                    raise
                if last_cand:
                    # Raised to the caller, who logs it: once is enough.
                    LOG.info('%s via %s failed: %s', cand.url, cand.driver,
                             exc)
                else:
                    LOG.warning('%s via %s failed: %s; trying the next '
                                'candidate', cand.url, cand.driver, exc)
                continue
            res.attempts = attempts
            return res
        if last is None:
            raise exceptions.NoDriverFound('nothing to try')
        raise last

    # -- several locations at once ------------------------------------------

    def _try_mirrors(self, attempts):
        """Read several locations at once, when :meth:`_mirrors` allows.

        When every one of them fails, the candidates not read yet are
        tried one at a time, keeping the verified bytes.

        :returns: ``(Result or None, candidates to try one at a time,
            last error or None)``.
        """
        candidates = list(self.plan.candidates)
        mirrors = self._mirrors()
        if not mirrors:
            return None, candidates, None
        try:
            res = self._attempt_mirrors(mirrors)
        except _NOT_LOCATION_FAULTS:
            raise
        except exceptions.TransferError as exc:
            used = {m.name for m in mirrors}
            candidates = [c for c in candidates if c.url not in used]
            attempts.extend((m.name, m.drv.name, str(m.error or exc))
                            for m in mirrors)
            if not candidates or self.ctx.expired():
                raise
            LOG.warning('every location failed (%s); trying the other '
                        'candidates', exc)
            return None, candidates, exc
        res.attempts = attempts + self._left_out + [
            (m.name, m.drv.name, 'dropped: %s' % m.dropped)
            for m in mirrors if m.dropped]
        return res, [], None

    def _mirrors(self):
        """The locations to read at once, or None for one at a time.

        Several locations of the same data are read together when
        ``multi_source`` is on, the best candidate and at least one other
        read ranges (each location once, by its best driver), their stats
        agree on the size, and the splicing rule allows it: size and
        checksum known, or a trusted manifest.  A location whose stat
        fails or disagrees is left out (see :meth:`_stat_mirrors`).
        """
        if not (self.several_at_once and self.multi_source) or (
                self.checksum is None and not (
                    self.manifest is not None and self.manifest.trusted)):
            return None
        picked, seen = [], set()
        for cand in self.plan.candidates:
            drv = cand.driver_obj
            if cand.url in seen:
                continue
            if not self._ranged_driver(drv, cand.location):
                if not picked:
                    return None
                continue
            seen.add(cand.url)
            picked.append(cand)
        if len(picked) < 2:
            return None
        return self._stat_mirrors(picked)

    def _ranged_driver(self, drv, loc) -> bool:
        caps = drv.capabilities
        return (Cap.READ in caps and Cap.RANGED_READ in caps and
                Cap.PEER_TO_PEER not in caps and
                not self._whole_file_wanted(drv, loc))

    def _stat_mirrors(self, picked):
        """:class:`~oslo_transfer.engine.mirrors.Mirror` of each usable one.

        Each stat gets one quick retry.  A failed stat is remembered
        (``_probed``) for the candidate's turn if the copy goes on one
        location at a time, so that a dead location is not asked twice
        (except the plan's last candidate, which then gets its full
        retries); a location left out is reported in ``Result.attempts``
        (``_left_out``).
        """
        out, size = [], self.expected_size
        self._left_out = []
        self._probed = {}
        if self.manifest is not None:
            size = self.manifest.size if size is None else size
        quick = self.base_retry.for_candidate(False)
        last = self.plan.candidates[-1]
        for cand in picked:
            if size is not None and size < max(1, self.segment_threshold):
                # Read as one stream anyway: no need to ask the others.
                return None
            drv, loc = cand.driver_obj, cand.location
            try:
                st = retry_mod.stat(quick, drv, loc, self.ctx)
            except exceptions.TransferError as exc:
                LOG.warning('%s via %s: %s; not read', cand.url,
                            cand.driver, exc)
                if cand is not last:
                    self._probed[cand.url] = exc
                self._left_out.append((cand.url, cand.driver, str(exc)))
                continue
            if size is None:
                size = st.size
                if size is not None and size < max(1,
                                                   self.segment_threshold):
                    # One stream from this one: its stat is fresh.
                    self._probed[cand.url] = st
                    return None
            why = None
            if st.size != size:
                why = 'it has %s bytes, not %d' % (st.size, size)
            elif not st.ranges:
                why = 'it does not serve ranged reads'
            if why:
                LOG.warning('%s: %s; not read', cand.url, why)
                self._left_out.append((cand.url, cand.driver, why))
                continue
            workers = self.segments
            if st.max_segments:
                workers = max(1, min(workers, st.max_segments))
            out.append(mirrors_mod.Mirror(
                drv, loc, cand.url, throttle.origin_key(loc, drv),
                st.validator, workers, quick))
        if len(out) < 2 or size is None or size < max(
                1, self.segment_threshold):
            return None
        self.total = size
        return out

    def _attempt_mirrors(self, mirrors):
        """Copy from every mirror at once (see :mod:`.mirrors`)."""
        first = mirrors[0]
        size = self.total
        if self.manifest is not None and self.manifest.size != size:
            raise exceptions.SizeMismatch(
                '%s has %d bytes; the manifest describes %d'
                % (first.name, size, self.manifest.size), url=first.name)
        self.ctx.validator = first.validator
        self._decide_resume_mirrors(mirrors, size)
        j = self.journal
        self._admit(first.drv, first.loc, size)
        self.part.open(fresh=not j.ranges)
        if j.ranges and self.manifest is not None and self.checksum is None:
            self._reverify_held()
        self.part.prepare(size, j.ranges, self.preallocate)
        new, algo = self._new_hasher()
        hasher, hashed, resumed_from = self._start_journal(
            first.loc, first.validator, size, new, algo,
            sources={_journal_name(m.loc): m.validator for m in mirrors})
        LOG.info('reading %s from %d locations at once: %s', self.dest,
                 len(mirrors), ', '.join(m.name for m in mirrors))
        fill = mirrors_mod.MultiFill(self, mirrors, size, hasher, hashed,
                                     self.manifest)
        final = fill.run()
        fill.finish_hash(final)
        # The Result names the location that delivered the most.
        top = max(mirrors, key=lambda m: m.bytes)
        cand = next(c for c in self.plan.candidates if c.url == top.name)
        res = self._complete(cand, fill, final, resumed_from, algo)
        res.bytes_by_location = {m.name: m.bytes for m in mirrors}
        return res

    def _decide_resume_mirrors(self, mirrors, size):
        """Keep the held bytes only if no location changed since.

        The control file records one validator per location: a location
        whose validator differs now restarts the copy (or raises
        ``SourceChanged``, by ``on_source_change``); the bytes of
        locations not recorded are joined by the splicing rule.
        """
        j = self.journal
        if not j.ranges:
            j.reset()
            return
        recorded = dict(j.sources or {})
        if not recorded and j.source:
            recorded[j.source] = j.validator
        for m in mirrors:
            old = recorded.get(_journal_name(m.loc))
            if old and m.validator is not None and old != m.validator:
                self._source_changed(m.loc, old, m.validator)
                return
        trusted = self.manifest is not None and self.manifest.trusted
        if j.size == size and (trusted or (
                self.checksum is not None and
                j.checksum == str(self.checksum))):
            LOG.info('resuming %s: %d bytes held from %s', self.dest,
                     j.ranges.total(), ', '.join(sorted(recorded)))
            return
        LOG.info('not resuming %s: the held bytes (size %s) cannot be '
                 'joined without a checksum or a trusted manifest',
                 self.dest, j.size)
        j.reset()

    def _reverify_held(self):
        """Keep only the held blocks that match the manifest.

        Without a checksum nothing else checks them at the end.
        """
        m, j = self.manifest, self.journal
        kept = _utils.RangeSet()
        for s, e in j.ranges.to_list():
            i = -(-s // m.block_size)
            while True:
                off, n = m.block(i)
                if off >= e or off + n > e:
                    break
                if m.verify(i, self.part.read(off, n)):
                    kept.add(off, off + n)
                i += 1
        if kept.total() != j.ranges.total():
            LOG.warning('%s: %d held bytes do not match the manifest; '
                        'fetched again', self.part.path,
                        j.ranges.total() - kept.total())
        j.ranges = kept
        j.prefix_len, j.prefix_digest = 0, None

    def _count_location(self, url, wire_before):
        """Add what ``url`` sent since ``wire_before`` to its count."""
        n = self.wire - wire_before
        if n:
            self._wire_by[url] = self._wire_by.get(url, 0) + n

    def _cleanup_if_empty(self):
        if not self.journal.ranges and not self.part.refused:
            try:
                self.part.remove()
                self.journal.remove()
            except OSError as exc:
                LOG.warning('could not remove %s: %s', self.part.path,
                            exc.strerror or exc)

    def _stat(self, drv, loc):
        return retry_mod.stat(self.retry, drv, loc, self.ctx)

    def _new_hasher(self):
        """``(factory of Digests, primary algorithm)``, or (None, None)."""
        probe = digests_mod.Digests(self.algos, self.checksum, self.feed)
        if not probe:
            return None, None
        return (lambda: digests_mod.Digests(self.algos, self.checksum,
                                            self.feed)), probe.algorithm

    def _attempt(self, cand):
        """Copy from ``cand``, again from the start when its source changes.

        A loop, not a recursion: a source whose validator changes on every
        request raises ``SourceChanged`` after :data:`MAX_RESTARTS`
        restarts (see :meth:`_changed_during_copy`).  A driver that sees
        its source change in the middle of a read (a local file rewritten
        in place: no ``If-Range`` to refuse the read) raises
        ``SourceChanged`` itself; the bytes of this attempt may be of two
        versions, so they are dropped and the copy starts again, within
        the same :data:`MAX_RESTARTS`.
        """
        while True:
            try:
                return self._attempt_once(cand)
            except _Restart:
                continue
            except exceptions.SourceChanged as exc:
                if self.on_source_change == 'error' or \
                        getattr(exc, 'restarts_exhausted', False):
                    raise
                try:
                    self._driver_saw_change(cand.location, exc)
                except _Restart:
                    continue

    def _attempt_once(self, cand):
        drv, loc = cand.driver_obj, cand.location
        whole_file = self._whole_file_wanted(drv, loc)
        st = self._probed.pop(cand.url, None)
        if isinstance(st, exceptions.TransferError):
            # Its stat failed moments ago (the multi-source probe).
            raise st
        if st is None:
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
        self._admit(drv, loc, size)
        self.part.open(fresh=not j.ranges)
        self.part.prepare(size, j.ranges, self.preallocate)
        new, algo = self._new_hasher()
        if whole_file and self.checksum is None and not self.explicit_algos:
            new, algo = None, None
        hasher, hashed, resumed_from = self._start_journal(
            loc, st.validator, size, new, algo)
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

    def _start_journal(self, loc, validator, size, new, algo,
                       sources=None):
        """Record what this attempt copies; verify the held prefix; save.

        :param loc: the location recorded as the source.
        :param new: a new hasher (``_new_hasher``) or None; ``algo`` its
            name.
        :param sources: ``{location: validator}`` of a multi-source copy
            (one validator per location), or None to keep what is there.
        :returns: ``(hasher, hashed, resumed_from)``: the hasher fed
            with the held prefix, its length, and the bytes held.
        """
        j = self.journal
        j.source = _journal_name(loc)
        j.validator = validator
        if sources is not None:
            j.sources = sources
        j.size = size
        j.checksum = str(self.checksum) if self.checksum else None
        hasher, hashed = self._verify_prefix(new, algo)
        resumed_from = j.ranges.total()
        j.algorithm = algo
        j.save()
        self.done = resumed_from
        self._report()
        return hasher, hashed, resumed_from

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

    def _admit(self, drv, loc, size):
        """Admission of the deadline: after stat, before ``.part``."""
        rec = self.sched_job
        if rec is None:
            return
        rec.origin = throttle.origin_key(loc, drv)
        rec.rate = self.bucket.rate
        if size is None:
            return
        rec.remaining = lambda: (self.total or 0) - self.done
        admission.check(self.ctx.scheduler, rec,
                        size - self.journal.ranges.total(), loc.masked)

    def _whole_file_wanted(self, drv, loc) -> bool:
        """True when the driver copies the whole file itself (no stream)."""
        sched = self.ctx.scheduler
        limited = bool(self.bucket.rate or (sched is not None and (
            sched.rate or sched.origin_rate)))
        return Cap.COPY_TO_PATH in drv.capabilities and (
            Cap.READ not in drv.capabilities or (
                # A rate limit is applied chunk by chunk to a stream.
                not limited and drv.use_copy_to_path(
                    loc, os.path.dirname(self.part.path),
                    self.checksum is not None, self.ctx)))

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
            exc = exceptions.SourceChanged(
                '%s changed %d times during the copy (validator %s, now '
                '%s); giving up after %d restarts; %s' % (
                    loc.masked, self._changes, old, new, MAX_RESTARTS,
                    '%s is kept (%d bytes)' % (self.part.path, held)
                    if held else 'nothing was kept'), url=loc.masked)
            exc.restarts_exhausted = True
            raise exc
        self._source_changed(loc, old, new)
        raise _Restart()

    def _driver_saw_change(self, loc, exc):
        """A driver raised ``SourceChanged`` in the middle of a read.

        :raises _Restart: start again from zero (this attempt's bytes may
            be of two versions: they are all dropped).
        :raises SourceChanged: more than :data:`MAX_RESTARTS` changes
            during this call; nothing is kept.
        """
        self._changes += 1
        self.journal.reset()
        self.part.close()
        self.part.open(fresh=True)
        if self._changes > MAX_RESTARTS:
            err = exceptions.SourceChanged(
                '%s; it changed %d times during the copy; giving up after '
                '%d restarts; nothing was kept' % (
                    exc, self._changes, MAX_RESTARTS), url=loc.masked)
            err.restarts_exhausted = True
            raise err from exc
        LOG.warning('%s; starting again (%d/%d)', exc, self._changes,
                    MAX_RESTARTS)
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
        with wholefile.Target(self, size,
                              throttle.origin_key(loc, drv)) as target:
            drv.copy_to_path(loc, target, self.ctx, progress=target.progress)
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
        digests = fill.hasher.hexdigests() if fill.hasher else {}
        if self.checksum is not None and digest != self.checksum.hexdigest:
            self.part.remove()
            self.journal.remove()
            raise exceptions.ChecksumMismatch(
                '%s: %s digest is %s, expected %s; the received data was '
                'discarded' % (cand.url, algo, digest,
                               self.checksum.hexdigest),
                url=cand.url, expected=self.checksum.hexdigest,
                actual=digest)
        if fill.hasher:
            try:
                fill.hasher.verify(cand.url)
            except exceptions.VerificationFailed:
                self.part.remove()
                self.journal.remove()
                raise
        self.part.commit(self.dest, self.mode,
                         replace=self.if_exists == 'replace',
                         stamp=lambda fd: verified.stamp(fd, digests))
        self.part.close()
        verified.remember(self.dest, digests)
        self.journal.remove()
        self.done = size
        self.total = size
        self._report()
        seeding = self._after_commit(cand)
        self._count_location(cand.url, self._cand_wire)
        return result_mod.Result(
            bytes_transferred=self.wire, bytes_resumed=resumed_from,
            bytes_by_location=dict(self._wire_by),
            driver=cand.driver, url=cand.url, digest=digest, algorithm=algo,
            digests=digests, size=size,
            elapsed=time.monotonic() - self._started,
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
