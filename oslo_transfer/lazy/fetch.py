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

"""Fetching runs of blocks of a lazy image through ranged reads.

A :class:`Run` is a contiguous range of blocks; :meth:`Fetcher.fetch`
reads it with one ranged read of the selected driver (any driver with
``RANGED_READ``), holding a slot of the process scheduler in the run's
class and passing each chunk through its :meth:`consume
<oslo_transfer.engine.throttle.Scheduler.consume>`, and hands each block
to the caller once it matches the manifest.  Retries follow the engine's
one :class:`~oslo_transfer.engine.retry.RetryPolicy`; when a candidate
gives up, the next one of the plan continues from the first block not yet
delivered.  A block that does not match the manifest is never delivered:
it is fetched from the next candidate, and with none left the run fails
with :class:`~oslo_transfer.exceptions.ChecksumMismatch`.
"""

import dataclasses
import logging
import threading

from oslo_transfer import driver as driver_mod
from oslo_transfer.engine import retry as retry_mod
from oslo_transfer import exceptions
from oslo_transfer import locations

LOG = logging.getLogger(__name__)

Cap = driver_mod.Capability

__all__ = ['Run', 'Fetcher', 'origin_key']


@dataclasses.dataclass
class Run:
    """Blocks ``[next, last]`` still to fetch (``next`` advances).

    ``job``: the scheduler's :class:`~oslo_transfer.engine.throttle.Job`
    of a prefetch's run, or None; a reader that waits for one of its
    blocks lends it its class (:meth:`promote`), so that the rest of the
    run no longer yields to that reader's own misses.
    """

    next: int
    last: int
    job: object = dataclasses.field(default=None, repr=False)
    promoted: bool = False

    def promote(self, cls: str) -> None:
        """A reader of class ``cls`` waits for this run: lend it ``cls``.

        Once per run; the lent class applies from the run's next slot or
        bytes (``Context.current_priority``).
        """
        if self.job is not None and not self.promoted:
            self.promoted = True
            self.job.borrow(cls)


class _Corrupt(exceptions.ChecksumMismatch):
    """A block did not match the manifest (never delivered)."""

    def __init__(self, index, url):
        super().__init__('block %d from %s does not match the manifest'
                         % (index, url), url=url)
        self.index = index


def origin_key(loc: locations.Location, drv=None) -> str:
    """``scheme://host:port`` of ``loc``: its scheduler slots' origin.

    With the driver, the server it contacts
    (:meth:`~oslo_transfer.driver.Driver.origin`).
    """
    if drv is not None:
        return drv.origin(loc)
    return locations.origin_of(loc.url)


def _journal_name(loc):
    return locations.mask_url(loc.without_userinfo())


class Fetcher:
    """The candidates of a plan that read ranges, and how to use them.

    :param transfer: the :class:`~oslo_transfer.transfer.Transfer`.
    :param plan: its read plan for the source.
    :param manifest: the image's manifest.
    :param ctx: the base :class:`~oslo_transfer.driver.Context`; each
        fetch runs on a copy with its own class and cancel token.
    :param splice: blocks of one image may come from several locations
        (DESIGN, "Splicing": a trusted manifest verifies every block, or
        a whole checksum is checked at the end); otherwise every block
        comes from the location that delivered the first one.
    :raises NoDriverFound: no candidate can read ranges.
    """

    def __init__(self, transfer, plan, manifest, ctx, splice=True):
        self.candidates = [
            c for c in plan.candidates
            if Cap.READ in c.driver_obj.capabilities and
            Cap.RANGED_READ in c.driver_obj.capabilities]
        if not self.candidates:
            drivers = ', '.join(sorted({c.driver for c in plan.candidates}))
            raise exceptions.NoDriverFound(
                'no driver for %s reads ranges (%s cannot): a lazy image '
                'needs ranged reads' % (plan.candidates[0].url, drivers))
        self.plan = plan
        self.manifest = manifest
        self.ctx = ctx
        self.retry = retry_mod.RetryPolicy.from_conf(transfer.conf)
        self.splice = splice
        self._stats = {}
        self._preferred = 0
        self._pinned = False
        self._lock = threading.Lock()
        #: bytes received from the network
        self.wire = 0
        #: the candidate that delivered the last block
        self.used = None

    #: the image's own prefetch sweeps the blocks (see
    #: :class:`~oslo_transfer.lazy.swarm.SwarmFetcher`)
    prefetches = False

    def start(self, path, held, deliver, prefetch) -> None:
        """Nothing to start: each fetch is a ranged read."""

    def completed(self, path) -> None:
        """Nothing to hand over."""

    def close(self) -> None:
        """Nothing to stop."""

    # -- stat -------------------------------------------------------------

    def stat(self, cancel=None):
        """Stat the candidates in order (with retries) until one answers.

        :returns: ``(candidate, Stat)``.
        :raises TransferError: the last candidate's error.
        """
        error = None
        for index, cand in enumerate(self.candidates):
            try:
                st = self._stat(index, cand, cancel or self.ctx.cancel,
                                retry=True)
            except (exceptions.Cancelled, exceptions.SizeMismatch):
                raise
            except exceptions.TransferError as exc:
                LOG.warning('%s via %s: %s', cand.url, cand.driver, exc)
                error = exc
                continue
            with self._lock:
                self._preferred = index
            return cand, st
        raise error

    def _stat(self, index, cand, cancel, retry=False, again=False):
        with self._lock:
            st = self._stats.get(index)
        if st is not None and not again:
            return st
        ctx = dataclasses.replace(self.ctx, cancel=cancel)
        retried = 0
        while True:
            try:
                st = cand.driver_obj.stat(cand.location, ctx)
                break
            except exceptions.TransferError as exc:
                delay = self.retry.next_delay(exc, retried, ctx) \
                    if retry else None
                if delay is None:
                    raise
                retried += 1
                if cancel.wait(delay):
                    cancel.check()
        if self.manifest is not None and st.size is not None and \
                st.size != self.manifest.size:
            raise exceptions.SizeMismatch(
                '%s has %d bytes, the manifest %d' % (
                    cand.url, st.size, self.manifest.size), url=cand.url)
        with self._lock:
            self._stats[index] = st
        return st

    def journal_name(self, cand) -> str:
        """The candidate's URL as the control file records it."""
        return _journal_name(cand.location)

    # -- fetch --------------------------------------------------------------

    def fetch(self, run: Run, cls: str, cancel, deliver) -> None:
        """Fetch the blocks of ``run``; ``deliver(index, data, cand)`` each.

        Blocks are delivered in order, each once it matched the manifest;
        ``run.next`` follows.  On return every block of the run was
        delivered.

        :raises TransferError: every candidate failed (the last error:
            retryable when the origin could not be reached).
        """
        with self._lock:
            first = self._preferred
            pinned = self._pinned and not self.splice
        order = [first] if pinned else \
            list(range(first, len(self.candidates))) + list(range(first))
        error = None
        for index in order:
            cand = self.candidates[index]
            try:
                self._with_retries(index, cand, run, cls, cancel, deliver)
            except (exceptions.Cancelled, exceptions.SourceChanged):
                raise
            except exceptions.TransferError as exc:
                error = exc
                if index != order[-1]:
                    LOG.warning('%s via %s: %s; trying the next location',
                                cand.url, cand.driver, exc)
                continue
            with self._lock:
                self._preferred = index
            return
        raise error

    def _with_retries(self, index, cand, run, cls, cancel, deliver):
        retried = 0
        while True:
            try:
                return self._read(index, cand, run, cls, cancel, deliver)
            except (_Corrupt, exceptions.Cancelled,
                    exceptions.SourceChanged, exceptions.SizeMismatch):
                raise
            except exceptions.TransferError as exc:
                delay = self.retry.next_delay(exc, retried, self.ctx,
                                              cancel)
                if delay is None:
                    raise
                retried += 1
                LOG.warning('%s: %s; retry %d/%d in %.1fs at block %d',
                            cand.url, exc, retried, self.retry.retries,
                            delay, run.next)
                if cancel.wait(delay):
                    cancel.check()

    def _read(self, index, cand, run, cls, cancel, deliver):
        st = self._stat(index, cand, cancel)
        m = self.manifest
        start = m.block(run.next)[0]
        end = sum(m.block(run.last))
        ctx = dataclasses.replace(self.ctx, cancel=cancel, priority=cls,
                                  validator=st.validator,
                                  job=run.job or self.ctx.job)
        origin = origin_key(cand.location, cand.driver_obj)
        with ctx.slot(origin):
            cancel.check()
            try:
                chunks = cand.driver_obj.read(cand.location, start,
                                              end - start, ctx)
            except exceptions.RangeNotSupported as exc:
                self._refused(index, cand, cancel, exc)
            try:
                self._receive(cand, chunks, run, ctx, origin, deliver)
            except exceptions.RangeNotSupported as exc:
                self._refused(index, cand, cancel, exc)
            except OSError as exc:
                raise exceptions.ConnectionFailed(
                    '%s: %s' % (cand.url, exc), url=cand.url) from exc
            finally:
                close = getattr(chunks, 'close', None)
                if close is not None:
                    close()

    def _receive(self, cand, chunks, run, ctx, origin, deliver):
        m = self.manifest
        block = run.next
        want = m.block(block)[1]
        buf = bytearray()
        for chunk in chunks:
            ctx.cancel.check()
            n = len(chunk)
            with self._lock:
                self.wire += n
            ctx.consume(n, origin)
            view = memoryview(chunk)
            pos = 0
            while pos < n:
                if block > run.last:
                    raise exceptions.ProtocolError(
                        '%s sent more bytes than asked for' % cand.url,
                        url=cand.url)
                take = min(n - pos, want - len(buf))
                buf += view[pos:pos + take]
                pos += take
                if len(buf) < want:
                    continue
                data = bytes(buf)
                buf.clear()
                if not m.verify(block, data):
                    raise _Corrupt(block, cand.url)
                self._pin(cand)
                deliver(block, data, cand)
                block += 1
                run.next = block
                if block <= run.last:
                    want = m.block(block)[1]
            del view
        if run.next <= run.last:
            raise exceptions.ProtocolError(
                '%s ended before block %d of a ranged read' % (cand.url,
                                                               run.next),
                url=cand.url)

    def _pin(self, cand):
        """``cand`` delivered a block: without splicing, the only one."""
        if self.used is not cand:
            with self._lock:
                self.used = cand
                if not self._pinned:
                    self._pinned = True
                    self._preferred = self.candidates.index(cand)

    def _refused(self, index, cand, cancel, exc):
        """A refused range: the object changed, or ranges do not work.

        Always raises: the read's error when the object did not change
        (the next candidate takes over); with a trusted manifest, a
        retryable error, so that the new version is read on (every block
        is verified); without one, :class:`SourceChanged`.
        """
        with self._lock:
            old = self._stats.get(index)
        st = self._stat(index, cand, cancel, again=True)
        if old is None or st.validator == old.validator:
            raise exc
        if not self.manifest.trusted:
            raise exceptions.SourceChanged(
                '%s changed while it was being read (validator %s, now '
                '%s) and no trusted manifest verifies its blocks'
                % (cand.url, old.validator, st.validator),
                url=cand.url) from exc
        LOG.warning('%s changed (validator %s, now %s): reading on, every '
                    'block is verified against the manifest', cand.url,
                    old.validator, st.validator)
        raise exceptions.ProtocolError(
            '%s changed: reading the new version' % cand.url,
            url=cand.url) from exc
