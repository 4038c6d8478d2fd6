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

"""LazyImage: an image that is served before it has arrived.

:meth:`Transfer.attach <oslo_transfer.transfer.Transfer.attach>` returns a
:class:`LazyImage`.  A read of a block that is not in the local cache
fetches it through the selected driver's ranged reads, at the scheduler's
``interactive`` class, verifies it against the manifest, writes it into
the cache and serves it; the rest of the image is prefetched meanwhile at
the ``background`` class (:mod:`oslo_transfer.lazy.prefetch`).  The rules:

* the fetch unit is the manifest's block, or ``[oslo_transfer]
  lazy_block_size`` (a multiple of it): a miss fetches the missing blocks
  of its whole unit;
* adjacent misses are fetched by one read of at most ``max(1 MiB, one
  unit)``; several reads run at once (``[oslo_transfer] segments``, at
  least 4); a block that another reader is already fetching is waited
  for, never fetched twice;
* blocks the (trusted) manifest flags as zeros are never fetched;
* a block held from an earlier attach (or a ``copy()``) is verified again
  on its first read after each attach;
* a block that does not match the manifest is never cached nor served:
  it is fetched from the next location, and the read fails when none has
  it right (:class:`~oslo_transfer.exceptions.ChecksumMismatch`);
* an origin that cannot be reached after the retries fails the read with
  a retryable error; the prefetch resumes once it answers again;
* on a full cache disk the image goes on serving (from the origin and
  from memory), stops caching, and :meth:`LazyImage.wait` raises the
  :class:`~oslo_transfer.exceptions.DestinationError`;
* once every block is present and verified (and the whole checksum, if
  given, matches) the cache is renamed to its destination with the
  engine's semantics, and the image serves the renamed file.

Two attaches of one cache in one process share one image; another process
cannot attach it meanwhile, and a ``copy()`` to it waits.
"""

import collections
import concurrent.futures
import hashlib
import logging
import os
import stat as stat_mod
import threading
import time
import typing

from oslo_transfer import checksum as checksum_mod
from oslo_transfer.engine import throttle
from oslo_transfer import exceptions
from oslo_transfer.lazy import cache as cache_mod
from oslo_transfer.lazy import fetch as fetch_mod
from oslo_transfer.lazy import manifest as manifest_mod
from oslo_transfer.lazy import prefetch as prefetch_mod
from oslo_transfer.lazy import profile as profile_mod
from oslo_transfer.lazy import swarm as swarm_mod
from oslo_transfer import result as result_mod

LOG = logging.getLogger(__name__)

__all__ = ['LazyImage', 'Present', 'attach']

MiB = 1024 * 1024

#: adjacent misses are fetched by one read of at most this many bytes (or
#: one unit, when a unit is larger)
MAX_RUN = MiB
#: seconds between two flushes of the cache (durable data, then bits)
SYNC_INTERVAL = 0.5
#: bytes of fetched blocks kept in memory when they cannot be cached
MEMORY_BYTES = 32 * MiB
#: bytes read at once by the verification before the rename
_VERIFY_SPAN = 4 * MiB

#: what :meth:`LazyImage.present` returns: ``extents``, a list of
#: ``(offset, length)`` readable without the network (blocks present and
#: zero blocks), and ``fraction``, their share of the image (0.0 to 1.0)
Present = collections.namedtuple('Present', 'extents fraction')


class _Bits:
    """A fixed-size set of block indexes."""

    def __init__(self, count: int, indexes=()):
        self._bits = bytearray((count + 7) // 8)
        for i in indexes:
            self.add(i)

    def __contains__(self, i):
        return bool(self._bits[i >> 3] >> (i & 7) & 1)

    def add(self, i):
        self._bits[i >> 3] |= 1 << (i & 7)

    def discard(self, i):
        self._bits[i >> 3] &= ~(1 << (i & 7)) & 0xff


class _Pending:
    """A block being fetched: readers wait for its data or error.

    ``run``: the prefetch's :class:`~oslo_transfer.lazy.fetch.Run` that
    fetches it (None for a reader's fetch).
    """

    __slots__ = ('event', 'data', 'error', 'run')

    def __init__(self, run=None):
        self.event = threading.Event()
        self.data = None
        self.error = None
        self.run = run

    def resolve(self, data=None, error=None):
        self.data, self.error = data, error
        self.event.set()


def _default_digest(conf):
    name = conf.oslo_transfer.default_digest
    if not name or name.strip().lower() == 'none':
        return None
    return checksum_mod.algorithm(name)


def check_trust(conf, m, source, checksum, what) -> None:
    """Refuse an untrusted manifest unless unverified reads are allowed.

    :param what: the image (its path), for the messages.
    :raises ManifestNotTrusted: ``m`` is None or not trusted, and
        ``[oslo_transfer] lazy_unverified_reads`` is off.
    """
    if m is not None and m.trusted:
        return
    names = ', '.join(c.masked for c in source.urls)
    if not conf.oslo_transfer.lazy_unverified_reads:
        raise exceptions.ManifestNotTrusted(
            'no trusted manifest for %s: pass a blockmap or torrent '
            'metadata (a local path, its bytes, or its sha256), or set '
            '[oslo_transfer] lazy_unverified_reads = true to serve blocks '
            'nobody verified' % names)
    LOG.warning('lazy image %s: serving unverified blocks of %s (%s); the '
                'whole checksum is checked only at the end%s', what, names,
                m.describe() if m else 'no manifest',
                '' if checksum else ' (none was given)')


class _Image:
    """The state of one attached cache, shared by its :class:`LazyImage`\\ s.

    Built by :func:`attach`; :meth:`start` starts its threads.
    """

    def __init__(self, transfer, plan, source, dest, checksum, ctx,
                 manifest=None, prefetch=True, profile=None, lock_wait=0.0,
                 part_factory=None):
        g = transfer.conf.oslo_transfer
        self.transfer = transfer
        self.plan = plan
        self.source = source
        self.dest = dest
        self.checksum = checksum
        self.ctx = ctx
        self.token = ctx.cancel
        self.refs = 1
        self.closed = False
        self.prefetch_on = prefetch
        self.segments = max(4, g.segments)
        self._started_at = time.monotonic()
        self._lock = threading.Lock()
        self._inflight = {}
        #: ``time.monotonic()`` of the last on-demand miss (a read that
        #: had to fetch), None before the first; the prefetch pauses after
        #: it (:class:`~oslo_transfer.lazy.prefetch.Prefetcher`)
        self.last_miss = None
        self._memory = collections.OrderedDict()
        self._memory_bytes = 0
        self._done = threading.Event()
        self._wake = threading.Event()
        self._result = None
        self._error = None
        self._broken = None
        self._threads = []
        self._executor = None
        self.prefetcher = None
        self.fetcher = None
        self.cache = None
        self._fd = None
        m = manifest_mod.resolve(transfer, manifest, source, ctx)
        check_trust(transfer.conf, m, source, checksum, dest)
        if m is not None:
            self._set_unit(g, m)
        if os.path.lexists(dest):
            self._open_complete(m)
        else:
            self._open_cache(g, m, lock_wait, part_factory)
        try:
            self._set_unit(g, self.manifest)
            self._set_profile(profile)
        except BaseException:
            self._close_files()
            raise

    # -- opening --------------------------------------------------------------

    def _open_cache(self, g, m, lock_wait, part_factory):
        self.fetcher = swarm_mod.fetcher_for(
            self.transfer, self.plan, m, self.ctx,
            splice=bool(m and m.trusted) or self.checksum is not None)
        cand, st = self._stat(m)
        if m is None:
            if st is None or st.size is None:
                raise exceptions.SizeMismatch(
                    '%s does not say its size: a lazy image needs it'
                    % cand.url, url=cand.url)
            m = manifest_mod.Manifest.none(
                st.size, g.lazy_block_size or manifest_mod.DEFAULT_BLOCK_SIZE)
            self.fetcher.manifest = m
        self.manifest = m
        kwargs = {'part_factory': part_factory} if part_factory else {}
        self.cache = cache_mod.Cache(self.dest, m, durable=g.fsync,
                                     sparse=g.sparse and not g.preallocate,
                                     **kwargs)
        self.cache.acquire(self.token, lock_wait)
        try:
            held = self.cache.load(self.fetcher.journal_name(cand),
                                   st.validator if st else None,
                                   str(self.checksum) if self.checksum
                                   else None)
        except BaseException:
            self.cache.close()
            raise
        self._set_state(held)
        LOG.info('attached %s: %s; %d of %d blocks held', self.dest,
                 m.describe(), len(held), m.count)

    def _stat(self, m):
        """The first candidate that answers, and its Stat.

        With a trusted manifest an origin that does not answer now is no
        reason to refuse the attach: the blocks held are served, and
        missing ones fail to read until it is back.
        """
        try:
            return self.fetcher.stat(self.token)
        except exceptions.SizeMismatch:
            raise
        except exceptions.TransferError as exc:
            if m is None or not m.trusted or \
                    isinstance(exc, exceptions.Cancelled):
                raise
            LOG.warning('%s; attaching %s anyway: missing blocks fail to '
                        'read until a location answers', exc, self.dest)
            return self.fetcher.candidates[0], None

    def _open_complete(self, m):
        """``DEST`` exists: serve it as it is (verified on first read)."""
        try:
            fd = os.open(self.dest, os.O_RDONLY | os.O_NOFOLLOW |
                         os.O_CLOEXEC)
        except OSError as exc:
            raise exceptions.DestinationExists(
                '%s exists and cannot be read: %s' % (self.dest,
                                                      exc.strerror)) from exc
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode) or \
                (m is not None and st.st_size != m.size):
            os.close(fd)
            raise exceptions.DestinationExists(
                '%s exists and is not the image (%d bytes, the manifest '
                'says %s)' % (self.dest, st.st_size, m and m.size))
        self._fd = fd
        if m is None:
            m = manifest_mod.Manifest.none(st.st_size)
        self.manifest = m
        self._set_state(range(m.count))
        self._result = result_mod.Result(
            size=m.size, plan=self.plan, dest=self.dest,
            elapsed=time.monotonic() - self._started_at)
        self._done.set()
        LOG.info('attached %s: complete already', self.dest)

    def _set_state(self, held):
        m = self.manifest
        self.count = m.count
        self.present = _Bits(m.count, held)
        self.verified = _Bits(m.count)
        self.missing = sum(1 for i in range(m.count)
                           if not m.is_zero(i) and i not in self.present)
        self.resumed = sum(m.block(i)[1] for i in held)

    def _set_unit(self, g, m):
        bs = m.block_size
        unit = g.lazy_block_size or bs
        if unit % bs:
            raise ValueError('[oslo_transfer] lazy_block_size %d is not a '
                             'multiple of the manifest\'s %d-byte blocks'
                             % (unit, bs))
        #: blocks per fetch unit
        self.unit_blocks = unit // bs
        self.unit = unit
        self.max_run_blocks = max(MAX_RUN, unit) // bs

    def _set_profile(self, path):
        self.profile_path = path
        self.profile_units = ()
        self.recorder = None
        if path is None or self._done.is_set():
            return
        self.profile_head = profile_mod.header(
            self.manifest.identity, self.manifest.size, self.unit)
        units = profile_mod.load(os.fspath(path), self.profile_head)
        if units is not None:
            self.profile_units = units
            LOG.info('%s: fetching the %d units of the access profile %s '
                     'first', self.dest, len(units), path)
        else:
            self.recorder = profile_mod.Recorder(self.unit)

    def start(self) -> None:
        """Start the threads (after a fork, in the NBD plugin)."""
        if self._done.is_set() and self.cache is None:
            return
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.segments, thread_name_prefix='oslo-lazy-fetch')
        self._spawn(self._maintain, 'oslo-lazy-sync')
        with self._lock:
            held = [i for i in range(self.count) if i in self.present]
        self.fetcher.start(self.cache.part.path, held, self._deliver,
                           self.prefetch_on)
        sweep = self.prefetch_on and not self.fetcher.prefetches
        if sweep or self.profile_units:
            self._start_prefetch(sweep=sweep)

    def _spawn(self, target, name):
        t = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(t)
        t.start()

    def _start_prefetch(self, sweep, blocks=None):
        """Start the prefetch, or tell the running one.

        :param blocks: a ``(first, last)`` range of blocks to fetch first.
        """
        with self._lock:
            running = self.prefetcher is not None and self.prefetcher.alive
            if not running:
                self.prefetcher = prefetch_mod.Prefetcher(self, sweep)
            self.prefetcher.sweep |= sweep
            if blocks is not None:
                self.prefetcher.add(*blocks)
            if running:
                return
            prefetcher = self.prefetcher
        self._spawn(prefetcher.run, 'oslo-lazy-prefetch')

    # -- reading --------------------------------------------------------------

    @property
    def size(self) -> int:
        return self.manifest.size

    def readinto(self, buf, offset: int) -> int:
        view = memoryview(buf).cast('B')
        n = len(view)
        if offset < 0 or offset + n > self.size:
            raise ValueError('[%d, %d) is outside the image (%d bytes)'
                             % (offset, offset + n, self.size))
        if n == 0:
            return 0
        if self._broken is not None:
            raise self._broken
        if self.closed:
            raise exceptions.Cancelled('the image was closed')
        if self.recorder is not None:
            self.recorder.touch(offset, n)
        m = self.manifest
        first = offset // m.block_size
        last = (offset + n - 1) // m.block_size
        got = self._gather(first, last)
        self._assemble(view, offset, first, last, got)
        return n

    def _gather(self, first, last) -> dict:
        """The blocks of ``[first, last]`` not read from the cache file.

        Fetches the missing ones (waiting for those in flight) and
        verifies held ones on their first read.
        """
        got = {}
        for _attempt in range(3):
            need = self._settle(first, last, got)
            if not need:
                return got
            for i, pending in self.request(need, throttle.INTERACTIVE,
                                           on_demand=True).items():
                pending.event.wait()
                if pending.error is not None:
                    raise pending.error
                got[i] = pending.data
        raise exceptions.TransferError(
            'blocks %d-%d of %s keep failing their verification'
            % (first, last, self.dest))

    def _settle(self, first, last, got) -> list:
        """Blocks of ``[first, last]`` to fetch; verify held ones."""
        m = self.manifest
        need = []
        for i in range(first, last + 1):
            if i in got or m.is_zero(i):
                continue
            with self._lock:
                if i in self.present and i in self.verified:
                    continue
                data = self._memory.get(i)
                held = i in self.present
            if data is not None:
                got[i] = data
            elif held:
                data = self._verify_held(i)
                if data is None:
                    need.append(i)
                else:
                    got[i] = data
            else:
                need.append(i)
        return need

    def _verify_held(self, i):
        """Block ``i`` from the cache, if it matches the manifest."""
        off, n = self.manifest.block(i)
        data = self._read_file(off, n)
        if self.manifest.verify(i, data):
            with self._lock:
                self.verified.add(i)
            return data
        if self.cache is None or self.cache.committed:
            # A complete image: nothing fetches into it any more.
            raise exceptions.ChecksumMismatch(
                'block %d of %s does not match the manifest' % (i,
                                                                self.dest))
        LOG.warning('block %d of the cache %s does not match the manifest; '
                    'fetching it again', i, self.dest)
        with self._lock:
            if i in self.present:
                self.present.discard(i)
                self.missing += 1
        return None

    def _read_file(self, offset, length) -> bytes:
        if self._fd is not None:
            return os.pread(self._fd, length, offset)
        return self.cache.read(offset, length)

    def _assemble(self, view, offset, first, last, got):
        m = self.manifest
        bs = m.block_size
        end = offset + len(view)
        i = first
        while i <= last:
            start = max(offset, i * bs)
            if i in got or m.is_zero(i):
                stop = min(end, (i + 1) * bs)
                dst = view[start - offset:stop - offset]
                if i in got:
                    src = got[i]
                    dst[:] = memoryview(src)[start - i * bs:stop - i * bs]
                else:
                    dst[:] = bytes(len(dst))
                i += 1
                continue
            j = i
            while j + 1 <= last and j + 1 not in got and \
                    not m.is_zero(j + 1):
                j += 1
            stop = min(end, (j + 1) * bs)
            data = self._read_file(start, stop - start)
            if len(data) != stop - start:
                raise exceptions.DestinationError(
                    'the cache %s is shorter than the image' % self.dest)
            view[start - offset:stop - offset] = data
            i = j + 1

    # -- fetching -------------------------------------------------------------

    def request(self, need, cls, on_demand=False) -> dict:
        """Fetch the units of blocks ``need``; ``{block: _Pending}``.

        Blocks already in flight are waited for, not fetched again; a
        prefetch's run that fetches one of them gets ``cls`` lent
        (:meth:`Run.promote <oslo_transfer.lazy.fetch.Run.promote>`).

        :param on_demand: a reader's request: if it fetches anything, it
            is a miss (:attr:`last_miss`).
        """
        m = self.manifest
        wanted = set(need)
        blocks = set()
        for i in need:
            u = i // self.unit_blocks * self.unit_blocks
            blocks.update(range(u, min(u + self.unit_blocks, self.count)))
        waits, todo, runs = {}, [], {}
        with self._lock:
            for i in sorted(blocks):
                if i in self.present and (i in self.verified or
                                          i not in wanted):
                    continue
                if m.is_zero(i) or i in self._memory:
                    continue
                pending = self._inflight.get(i)
                if pending is None:
                    pending = self._inflight[i] = _Pending()
                    todo.append(i)
                if i in wanted:
                    waits[i] = pending
                    if pending.run is not None:
                        runs[id(pending.run)] = pending.run
            if on_demand and todo:
                self.last_miss = time.monotonic()
        for run in runs.values():
            run.promote(cls)
        for run in self._runs(todo, self.max_run_blocks):
            self._submit(run, cls)
        return waits

    @staticmethod
    def _runs(indexes, most) -> list:
        runs = []
        for i in indexes:
            if runs and runs[-1].last == i - 1 and \
                    i - runs[-1].next < most:
                runs[-1].last = i
            else:
                runs.append(fetch_mod.Run(i, i))
        return runs

    def _submit(self, run, cls):
        try:
            self._executor.submit(self.fetch_claimed, run, cls)
        except RuntimeError as exc:     # shut down: closing
            self._fail_run(run, exceptions.Cancelled(
                'the image was closed (%s)' % exc))

    def claim_run(self, start: int, most_bytes: int,
                  last: int | None = None, job=None):
        """Claim the next missing blocks of ``[start, last]`` (prefetch).

        :param job: the run's scheduler Job (:attr:`Run.job
            <oslo_transfer.lazy.fetch.Run.job>`), lent the class of a
            reader that waits for one of its blocks.
        :returns: a :class:`~oslo_transfer.lazy.fetch.Run` of adjacent
            blocks (at most ``most_bytes``, at least one block), registered
            as in flight; None when none is missing there.
        """
        m = self.manifest
        most = max(1, most_bytes // m.block_size)
        end = self.count if last is None else min(self.count, last + 1)
        with self._lock:
            i = start
            while i < end and (i in self.present or m.is_zero(i) or
                               i in self._inflight):
                i += 1
            if i >= end:
                return None
            run = fetch_mod.Run(i, i, job=job)
            self._inflight[i] = _Pending(run)
            while run.last + 1 < end and \
                    run.last + 1 - run.next < most:
                j = run.last + 1
                if j in self.present or m.is_zero(j) or j in self._inflight:
                    break
                self._inflight[j] = _Pending(run)
                run.last = j
            return run

    def fetch_claimed(self, run, cls) -> None:
        """Fetch a claimed run in this thread (errors fail its blocks)."""
        try:
            self.fetcher.fetch(run, cls, self.token, self._deliver)
        except BaseException as exc:
            self._fail_run(run, exc)
            if isinstance(exc, exceptions.SourceChanged):
                # Unverified blocks of two versions are never served
                # together: this image is done.
                self._broken = exc
                self._finish(error=exc)
            raise

    def _fail_run(self, run, exc):
        failed = []
        with self._lock:
            for i in range(run.next, run.last + 1):
                pending = self._inflight.pop(i, None)
                if pending is not None:
                    failed.append(pending)
        for pending in failed:
            pending.resolve(error=exc)

    def _deliver(self, i, data, cand) -> None:
        cached = self.cache.write(i, data)
        with self._lock:
            if cached:
                if i not in self.present:
                    self.present.add(i)
                    self.missing -= 1
                self.verified.add(i)
            else:
                self._remember(i, data)
            pending = self._inflight.pop(i, None)
            complete = self.missing == 0
        if pending is not None:
            pending.resolve(data=data)
        if complete:
            self._wake.set()

    def _remember(self, i, data):
        """Keep a block that could not be cached (lock held)."""
        if i in self._memory:
            return
        self._memory[i] = data
        self._memory_bytes += len(data)
        while self._memory_bytes > MEMORY_BYTES and len(self._memory) > 1:
            _i, old = self._memory.popitem(last=False)
            self._memory_bytes -= len(old)

    # -- upkeep: flushes, the profile, completion -----------------------------

    def _maintain(self):
        while not self.closed:
            self._wake.wait(SYNC_INTERVAL)
            self._wake.clear()
            if self.closed:
                return
            try:
                self._upkeep()
            except Exception:  # noqa: the thread must go on
                LOG.exception('lazy image %s: upkeep failed', self.dest)

    def _upkeep(self):
        self._flush()
        if self.recorder is not None and self.recorder.over:
            self._save_profile()
        if self.cache.failed is not None and not self._done.is_set():
            self._finish(error=self.cache.failed)
        with self._lock:
            complete = self.missing == 0
        if complete and not self._done.is_set():
            self._complete()

    def _flush(self):
        lost = self.cache.flush()
        if lost:
            with self._lock:
                for i in lost:
                    if i in self.present:
                        self.present.discard(i)
                        self.verified.discard(i)
                        self.missing += 1

    def _save_profile(self):
        recorder, self.recorder = self.recorder, None
        if recorder is not None and recorder.units:
            profile_mod.save(os.fspath(self.profile_path), self.profile_head,
                             recorder.units)

    def _complete(self):
        """Verify the whole cache, then rename it into place."""
        self._flush()
        if self.cache.failed is not None:
            return
        digest, algo, bad = self._verify_all()
        if bad:
            LOG.warning('%d blocks of the cache %s no longer match the '
                        'manifest; fetching them again', len(bad), self.dest)
            with self._lock:
                for i in bad:
                    if i in self.present:
                        self.present.discard(i)
                        self.verified.discard(i)
                        self.missing += 1
            return
        if self.checksum is not None and digest != self.checksum.hexdigest:
            err = exceptions.ChecksumMismatch(
                '%s: the %s digest of the whole image is %s, expected %s; '
                'the cache was discarded' % (
                    self.dest, algo, digest, self.checksum.hexdigest),
                expected=self.checksum.hexdigest, actual=digest)
            self._broken = err
            self.cache.discard()
            LOG.error('%s', err)
            self._finish(error=err)
            return
        try:
            self.cache.commit()
        except exceptions.TransferError as exc:
            self._finish(error=exc)
            return
        self.fetcher.completed(self.dest)
        cand = self.fetcher.used
        self._finish(result=result_mod.Result(
            bytes_transferred=self.fetcher.wire, bytes_resumed=self.resumed,
            driver=cand.driver if cand else None,
            url=cand.url if cand else None, digest=digest, algorithm=algo,
            size=self.size, elapsed=time.monotonic() - self._started_at,
            plan=self.plan, dest=self.dest))
        LOG.info('lazy image %s is complete and verified', self.dest)

    def _verify_all(self):
        """One pass over the cache: block digests, zeros, whole digest."""
        m = self.manifest
        if self.checksum is not None:
            hasher, algo = self.checksum.new(), self.checksum.algorithm
        else:
            algo = _default_digest(self.transfer.conf)
            hasher = hashlib.new(algo) if algo else None
        bad = []
        per_span = max(1, _VERIFY_SPAN // m.block_size)
        for first in range(0, m.count, per_span):
            last = min(m.count, first + per_span) - 1
            start, end = m.block(first)[0], sum(m.block(last))
            data = memoryview(self._read_file(start, end - start))
            for i in range(first, last + 1):
                off, n = m.block(i)
                block = data[off - start:off - start + n]
                if m.is_zero(i):
                    if bytes(block) != bytes(n):
                        bad.append(i)
                elif not m.verify(i, block):
                    bad.append(i)
            if hasher is not None:
                hasher.update(data)
        return (hasher.hexdigest() if hasher else None), algo, bad

    def _finish(self, result=None, error=None):
        if self._done.is_set():
            return
        self._result, self._error = result, error
        self._done.set()

    # -- the rest of the API --------------------------------------------------

    def extents(self) -> list:
        """``(offset, length)`` readable without the network, merged."""
        m = self.manifest
        out = []
        with self._lock:
            for i in range(m.count):
                if i in self.present or m.is_zero(i):
                    off, n = m.block(i)
                    if out and out[-1][0] + out[-1][1] == off:
                        out[-1] = (out[-1][0], out[-1][1] + n)
                    else:
                        out.append((off, n))
        return out

    def zero_extents(self, offset: int, length: int) -> list:
        """``(offset, length, is_zero)`` covering the range (manifest)."""
        m = self.manifest
        out = []
        end = offset + length
        i = offset // m.block_size
        pos = offset
        while pos < end:
            bstart, n = m.block(i)
            stop = min(end, bstart + n)
            zero = m.is_zero(i)
            if out and out[-1][2] == zero:
                out[-1] = (out[-1][0], stop - out[-1][0], zero)
            else:
                out.append((pos, stop - pos, zero))
            pos = stop
            i += 1
        return out

    def prefetch(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError('[%d, %d) is outside the image (%d bytes)'
                             % (offset, offset + length, self.size))
        if self._done.is_set() or self.cache is None or not length:
            return
        bs = self.manifest.block_size
        self._start_prefetch(False, (offset // bs,
                                     (offset + length - 1) // bs))

    def wait(self, timeout: float | None = None) -> result_mod.Result:
        if not self._done.wait(timeout):
            raise exceptions.TransferTimeout(
                '%s is not complete after %s seconds' % (self.dest, timeout))
        if self._error is not None:
            raise self._error
        return self._result

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.token.cancel('the lazy image was closed')
        self._wake.set()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=self.ctx.io_timeout + 5)
        if self.fetcher is not None:
            self.fetcher.close()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            left, self._inflight = list(self._inflight.values()), {}
        for pending in left:
            pending.resolve(error=exceptions.Cancelled(
                'the image was closed'))
        if self.recorder is not None:
            self._save_profile()
        self._close_files()
        if not self._done.is_set():
            self._finish(error=exceptions.Cancelled(
                'the lazy image %s was closed before it was complete'
                % self.dest))

    def _close_files(self):
        """Close the cache (its map made durable) or the complete file."""
        if self.cache is not None:
            self.cache.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class LazyImage:
    """An image served before it has arrived (:meth:`Transfer.attach`).

    Thread-safe; a context manager (``close()`` on exit).  Reads are
    positional: ``pread(length, offset)`` and ``readinto(buf, offset)``.
    """

    def __init__(self, core: _Image):
        self._core = core
        self._closed = False
        #: a Transfer closed with the image (the module-level attach)
        self.owner = None

    @property
    def size(self) -> int:
        """Bytes of the image."""
        return self._core.size

    @property
    def path(self) -> str:
        """The destination: the cache's final path."""
        return self._core.dest

    def pread(self, length: int, offset: int) -> bytes:
        """The bytes ``[offset, offset + length)`` of the image.

        Missing blocks are fetched first (at the ``interactive`` class).

        :raises ValueError: the range is outside the image.
        :raises TransferError: a block could not be fetched (retryable
            when its origin could not be reached) or matches nothing.
        """
        buf = bytearray(length)
        self.readinto(buf, offset)
        return bytes(buf)

    def readinto(self, buf, offset: int) -> int:
        """Fill ``buf`` (a writable buffer) from ``offset``.

        :returns: the length of ``buf``.  Raises as :meth:`pread`.
        """
        self._check()
        return self._core.readinto(buf, offset)

    def present(self) -> Present:
        """What is readable without the network: a :data:`Present`."""
        self._check()
        extents = self._core.extents()
        size = self._core.size
        held = sum(n for _off, n in extents)
        return Present(extents, held / size if size else 1.0)

    def prefetch(self, offset: int, length: int) -> None:
        """Fetch ``[offset, offset + length)`` soon, in the background.

        Works with ``prefetch=False`` too (only this range is fetched).
        """
        self._check()
        self._core.prefetch(offset, length)

    def wait(self, timeout: float | None = None) -> result_mod.Result:
        """Wait until the image is complete, verified and renamed.

        :param timeout: seconds; None waits as long as it takes.
        :returns: the :class:`~oslo_transfer.result.Result` (bytes fetched
            by this attach, bytes held before it, digest).
        :raises TransferTimeout: not complete within ``timeout``.
        :raises DestinationError: the cache disk is full (the image is
            still served, but will not complete).
        :raises ChecksumMismatch: the whole image does not match the
            checksum (the cache was discarded; reads fail from now on).
        :raises Cancelled: the image was closed first.
        """
        return self._core.wait(timeout)

    def close(self) -> None:
        """Let go of the image; the last user's close stops it.

        What was fetched is made durable first (a re-attach continues).
        """
        if self._closed:
            return
        self._closed = True
        _release(self._core)
        if self.owner is not None:
            self.owner.close()
            self.owner = None

    def _check(self):
        if self._closed:
            raise ValueError('the lazy image was closed')

    def __enter__(self) -> 'LazyImage':
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self):
        return '<LazyImage %s>' % self._core.dest


_REGISTRY = {}
_REGISTRY_LOCK = threading.Lock()


def attach(transfer, plan, source, cache, checksum, ctx,
           manifest=None, prefetch: bool = True, profile=None,
           lock_wait: float = 0.0, start: bool = True,
           part_factory: typing.Callable | None = None) -> LazyImage:
    """Attach ``cache`` (see :meth:`Transfer.attach`); the engine's entry.

    :param lock_wait: seconds to wait for another process's lock (the NBD
        export waits for a predecessor that is still exiting).
    :param start: start the threads now (the NBD plugin starts them after
        nbdkit forked).
    """
    dest = os.path.abspath(os.fspath(cache))
    with _REGISTRY_LOCK:
        core = _REGISTRY.get(dest)
        if core is not None and not core.closed:
            _check_same(core, source, checksum)
            core.refs += 1
            if prefetch and not core.prefetch_on:
                core.prefetch_on = True
                if core._executor is not None and \
                        not core.fetcher.prefetches:
                    core._start_prefetch(sweep=True)
            return LazyImage(core)
        core = _Image(transfer, plan, source, dest, checksum, ctx,
                      manifest=manifest, prefetch=prefetch, profile=profile,
                      lock_wait=lock_wait, part_factory=part_factory)
        _REGISTRY[dest] = core
    if start:
        core.start()
    return LazyImage(core)


def _check_same(core, source, checksum):
    urls = [u.masked for u in source.urls]
    if urls != [u.masked for u in core.source.urls] or \
            str(checksum) != str(core.checksum):
        raise ValueError(
            '%s is attached already, to %s: a second attach in this '
            'process shares that image and must name the same source and '
            'checksum' % (core.dest,
                          ', '.join(u.masked for u in core.source.urls)))


def _release(core):
    with _REGISTRY_LOCK:
        core.refs -= 1
        if core.refs > 0:
            return
        if _REGISTRY.get(core.dest) is core:
            del _REGISTRY[core.dest]
    core.close()
