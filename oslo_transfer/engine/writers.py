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

"""Writes of one stream off the thread that receives it.

One worker writes a single-stream download in order.  Each ``pwrite`` it
made itself would stop its receiving for as long as the kernel takes to
copy the chunk into the page cache (or the disk takes to store it), time in
which the link and the source's server sit idle.  The writers here take
the chunks and write them from a thread of their own, so that receiving,
hashing and writing overlap (on the CI's VM an iSCSI GiB with
``fsync=false`` went from 1.56-1.95 s to 1.25-1.35 s).

:class:`DirectWriter` is for durable streams.  Through the page cache
every byte is first copied into freshly allocated cache pages, then
written back, then waited for by ``fdatasync``.  Written with ``O_DIRECT``
the bytes go from our buffer to the device: no cache pages to allocate and
fill (on the CI's VM that copy cost 0.6-1.7 CPU-s per GiB, the spread
being the hypervisor's), no writeback left for the final ``fdatasync``,
and no image of many GiB pushing a compute node's page cache out.  It
gathers contiguous writes in page-aligned buffers (``O_DIRECT`` wants the
memory, the file offset and the length aligned) and hands each full
buffer to its thread.  Whatever cannot be written aligned (the head of a
write that starts inside a block, the last partial block of a stream) goes
through the caller's buffered ``fd``; the range each path writes is
disjoint.  A file system that refuses ``O_DIRECT`` at open gets no writer
(:func:`open_direct` returns None); one that refuses a write (``EINVAL``)
has it, and every later one, written through the buffered ``fd`` instead.

Only local disk file systems get a :class:`DirectWriter` (ext2/3/4, XFS,
btrfs, F2FS, by ``fstatfs``): on NFS, SMB, CephFS or FUSE a direct write is
a synchronous round trip to a server that would otherwise batch and
commit, and tmpfs has no disk to go around.

:class:`QueuedWriter` is for everything else that one worker writes in
order (``fsync = false``, ``direct_io = false``, a destination that is not
a local disk): it queues the chunks themselves, up to
:data:`QUEUE_BYTES`, and its thread writes them through the page
cache.  Only chunks that cannot change are queued (``bytes``, or a
memoryview of ``bytes``): a driver may refill a ``bytearray`` once the
write returns, so those are written at once, by the caller.

Writes are visible to :meth:`~_Background.flush` callers only: read the
file or ``fdatasync`` it after ``flush()``, which waits for what was
written before it was called (not for what other threads write
meanwhile).  The first write error (a full disk) is raised by the next
``write`` or ``flush``.
"""

import collections
import ctypes
import errno
import logging
import mmap
import os
import threading

from oslo_transfer import _utils

LOG = logging.getLogger(__name__)

#: Alignment of offsets, lengths and memory: the page size, a multiple of
#: every disk's logical block size in use (512 or 4096).
ALIGN = mmap.PAGESIZE
#: Bytes per direct write: 4 MiB wrote a GiB in 0.80-0.95 s here, 1 MiB
#: in 1.07-1.50 s.
BUFFER_BYTES = 4 * 1024 * 1024
#: Buffers per writer: one filling while two wait for or are in the disk.
BUFFERS = 3
#: A run shorter than this that a gap in the stream cut short (a hole of a
#: sparse image) is written through the page cache: a fragmented image
#: would otherwise cost one synchronous disk write per 4 KiB run.
MIN_DIRECT = 256 * 1024
#: Views one ``pwritev`` takes at most (Linux: 1024).
try:
    IOV_MAX = os.sysconf('SC_IOV_MAX')
except (AttributeError, ValueError, OSError):
    IOV_MAX = 1024
if IOV_MAX <= 0:
    IOV_MAX = 1024
#: Bytes a :class:`QueuedWriter` holds at most (the engine keeps as much
#: for its hasher, mostly the same chunks).
QUEUE_BYTES = 8 * 1024 * 1024
#: Bytes of a stream's chunks that a writer may hold at most: a
#: :class:`DirectWriter`'s batches of a driver's views (one being gathered,
#: two queued), or a :class:`QueuedWriter`'s queue.
HELD_BYTES = max(BUFFERS * BUFFER_BYTES, QUEUE_BYTES)


#: ``statfs.f_type`` of the file systems written with ``O_DIRECT``: local
#: disks (ext2/3/4, XFS, btrfs, F2FS).
LOCAL_DISK_FS = frozenset([0xEF53, 0x58465342, 0x9123683E, 0xF2F52010])
_libc = None


def fs_type(fd: int):
    """The ``f_type`` of the file system of ``fd`` (Linux), or None."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(256)     # > sizeof(struct statfs)
        if _libc.fstatfs(fd, buf) != 0:
            return None
    except (OSError, AttributeError):
        return None
    # f_type is the first member, a C long (__fsword_t)
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def open_direct(path: str, buffered_fd: int, buffer_bytes=None,
                buffers=None, block_device: bool = False):
    """A :class:`DirectWriter` for ``path``, or None without ``O_DIRECT``.

    :param buffered_fd: an open ``fd`` of the same file, used for what
        cannot be written aligned.
    :param block_device: ``path`` is a block device (a volume): written
        with ``O_DIRECT`` whatever file system its node sits on.
    """
    flags = getattr(os, 'O_DIRECT', None)
    if flags is None:
        return None
    kind = None if block_device else fs_type(buffered_fd)
    if not block_device and kind not in LOCAL_DISK_FS:
        LOG.debug('%s: file system type %s is not a local disk; writing '
                  'through the page cache', path,
                  'unknown' if kind is None else hex(kind))
        return None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW | flags)
    except OSError as exc:
        LOG.debug('%s: no direct I/O (%s); writing through the page cache',
                  path, exc.strerror)
        return None
    return DirectWriter(fd, buffered_fd, buffer_bytes or BUFFER_BYTES,
                        buffers or BUFFERS)


def _pwrite_all(fd, view, offset):
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def immutable(data) -> bool:
    """True for chunks that nobody changes while they are held.

    ``bytes``, views of ``bytes``, and views of a driver's
    :class:`~oslo_transfer._utils.AlignedBlock` (which the driver refills
    only once no view of it is left).
    """
    return type(data) is bytes or (type(data) is memoryview and (
        type(data.obj) is bytes or
        type(data.obj) is _utils.AlignedBlock))


class _Background:
    """A writer thread, its queue, and the first error it met.

    Items are written in the order queued; :meth:`flush` waits for the
    items queued before it was called.  Subclasses write an item in
    :meth:`_perform` (the thread, without the lock) and account for it in
    :meth:`_done` (the thread, lock held).
    """

    def __init__(self, fd):
        self.fd = fd
        self.lock = threading.Condition()
        self.queue = collections.deque()
        self.queued = 0         # items queued so far
        self.finished = 0       # of those, items written or failed
        self.error = None       # the first OSError of the writer thread
        self.failed_at = None   # the file offset of the item it failed
        self.closed = False
        self.thread = None
        # Bytes written each way (diagnostics and tests).
        self.direct_bytes = 0
        self.buffered_bytes = 0

    def flush(self):
        """Write out what is held and wait for it (raises the first error)."""
        with self.lock:
            self._before_flush()
            target = self.queued
            while self.finished < target and self.error is None:
                self.lock.wait()
            self._raise()

    def written_below(self):
        """After a failed write: the offset below which all writes landed.

        None if nothing failed.  Waits until the thread has finished what
        was queued (it writes in order, and one stream is written in
        increasing offsets, so what was queued before the item that failed
        is in the file).
        """
        with self.lock:
            if self.error is None:
                return None
            while self.finished < self.queued:
                self.lock.wait()
            return self.failed_at

    def close(self):
        """Flush what can be flushed, stop the thread, close the ``fd``."""
        try:
            self.flush()
        except OSError:
            pass            # reported by the write or flush that failed
        finally:
            with self.lock:
                self.closed = True
                self.lock.notify_all()
            if self.thread is not None:
                self.thread.join()
            self._closed()

    def _before_flush(self):
        """Queue what is held back (lock held)."""

    def _closed(self):
        """Release what the thread used (after it stopped)."""

    def _raise(self):
        if self.error is not None:
            raise self.error

    def _enqueue(self, item):
        """Hand ``item`` to the thread (lock held)."""
        self.queue.append(item)
        self.queued += 1
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, daemon=True,
                                           name='oslo-transfer-writer')
            self.thread.start()
        self.lock.notify_all()

    def _run(self):
        while True:
            with self.lock:
                while not self.queue and not self.closed:
                    self.lock.wait()
                if not self.queue:
                    return
                item = self.queue.popleft()
            err = None
            try:
                self._perform(item)
            except OSError as exc:
                err = exc
            except Exception as exc:  # noqa: never leave the caller waiting
                LOG.exception('background writer failed')
                err = OSError(errno.EIO, 'background writer failed: %s' % exc)
            with self.lock:
                if err is not None and self.error is None:
                    self.error = err
                    self.failed_at = self._offset(item)
                self._done(item, err)
                self.finished += 1
                self.lock.notify_all()

    def _perform(self, item):
        raise NotImplementedError

    def _done(self, item, err):
        raise NotImplementedError

    def _offset(self, item):
        raise NotImplementedError


class DirectWriter(_Background):
    """Aligned, buffered-in-memory, asynchronous ``O_DIRECT`` writes."""

    def __init__(self, fd, buffered_fd, buffer_bytes, buffers):
        super().__init__(fd)
        self.bfd = buffered_fd
        self.size = max(ALIGN, buffer_bytes // ALIGN * ALIGN)
        self.buffers = buffers
        self.free = [mmap.mmap(-1, self.size) for _ in range(buffers)]
        self.direct = True      # False once the file system refused
        # The buffer being filled: file offset of its first byte, bytes.
        self.stage = None
        self.stage_at = 0
        self.stage_len = 0
        # Aligned views of the driver's blocks gathered for one pwritev
        # (see _gather): file offset of the first, bytes; bytes of the
        # batches queued and not yet written.
        self.batch = []
        self.batch_at = 0
        self.batch_len = 0
        self.batched = 0
        # Bytes written straight from the driver's blocks (no copy).
        self.zero_copy_bytes = 0

    # -- the caller's side ------------------------------------------------

    def write(self, offset, data):
        """Write ``data`` at ``offset`` (visible after :meth:`flush`)."""
        view = memoryview(data).cast('B')
        with self.lock:
            self._raise()
            if self.batch and offset != self.batch_at + self.batch_len:
                self._submit_batch(cut=True)
            if self.stage is not None and offset != self.stage_at + \
                    self.stage_len:
                self._submit(cut=True)
            if self.stage is None and self._gather(offset, data):
                return
            if self.batch:
                self._submit_batch()
            while view:
                if self.stage is None:
                    head = (-offset) % ALIGN
                    if head or len(view) < ALIGN:
                        # Starts inside a block (or is less than one):
                        # through the page cache up to the next boundary.
                        k = min(len(view), head or len(view))
                        _pwrite_all(self.bfd, view[:k], offset)
                        self.buffered_bytes += k
                        view, offset = view[k:], offset + k
                        continue
                    self.stage = self._take()
                    self.stage_at, self.stage_len = offset, 0
                k = min(len(view), self.size - self.stage_len)
                self.stage[self.stage_len:self.stage_len + k] = view[:k]
                self.stage_len += k
                view, offset = view[k:], offset + k
                if self.stage_len == self.size:
                    self._submit()

    def _gather(self, offset, data) -> bool:
        """Take a driver's aligned view as it is, for one ``pwritev``.

        A chunk that is a view of an
        :class:`~oslo_transfer._utils.AlignedBlock` at an aligned address
        and file offset needs no copy into a buffer of ours: the views are
        gathered into batches of ``self.size`` bytes, each written by the
        thread with one ``pwritev`` from the driver's memory.  The block
        stays held (so the driver does not refill it) until written.  An
        unaligned tail goes through the page cache now.  Returns False
        when ``data`` is not such a chunk (lock held).
        """
        if (not self.direct or offset % ALIGN or
                not _utils.is_aligned_view(data) or
                len(data) < ALIGN or
                _utils.buffer_address(data) % ALIGN):
            return False
        n = len(data)
        aligned = n // ALIGN * ALIGN
        if not self.batch:
            self.batch_at = offset
        self.batch.append(data[:aligned] if aligned < n else data)
        self.batch_len += aligned
        if aligned < n:
            # The end of the stream: whatever follows starts unaligned.
            _pwrite_all(self.bfd, data[aligned:], offset + aligned)
            self.buffered_bytes += n - aligned
            self._submit_batch()
        elif self.batch_len >= self.size or len(self.batch) >= IOV_MAX:
            self._submit_batch()
        return True

    def _submit_batch(self, cut=False):
        """Queue the gathered views for the writer thread (lock held).

        At most ``buffers - 1`` batches wait for the thread (the caller
        waits beyond).  A short run that a gap in the stream cut short is
        written through the page cache now, as in :meth:`_submit`.
        """
        if cut and self.batch_len < min(MIN_DIRECT, self.size):
            views, at, n = self.batch, self.batch_at, self.batch_len
            self.batch, self.batch_len = [], 0
            self._write_item(self.bfd, views, at, n)
            self.buffered_bytes += n
            return
        # The batch stays in self.batch while we wait: a flush meanwhile
        # (the checkpoint thread) must see it, queue it, and wait for it.
        limit = (self.buffers - 1) * self.size
        while (self.batch and self.batched and
               self.batched + self.batch_len > limit):
            self.lock.wait()
            self._raise()
        if not self.batch:
            return              # queued meanwhile by another thread
        views, at, n = self.batch, self.batch_at, self.batch_len
        self.batch, self.batch_len = [], 0
        self.batched += n
        self._enqueue((views, at, n))

    def _before_flush(self):
        if self.batch:
            self._submit_batch()
        if self.stage is not None:
            self._submit()

    def _closed(self):
        os.close(self.fd)
        # (Not mmap.close(): a traceback may still hold a view of one.)
        self.free = []

    def _take(self):
        """A free buffer (waits for the writer; lock held)."""
        while not self.free:
            self.lock.wait()
            self._raise()
        return self.free.pop()

    def _submit(self, cut=False):
        """Queue the staged buffer for the writer thread (lock held).

        Its unaligned tail, if any, is written through the page cache now,
        from the buffer, before the buffer changes hands; so is all of it
        when a gap in the stream (``cut``) left a short run.
        """
        buf, at, n = self.stage, self.stage_at, self.stage_len
        self.stage = None
        aligned = n // ALIGN * ALIGN
        if aligned < n:
            try:
                _pwrite_all(self.bfd, memoryview(buf)[aligned:n],
                            at + aligned)
            except OSError:
                self.free.append(buf)
                raise
            self.buffered_bytes += n - aligned
        if not aligned or (cut and aligned < min(MIN_DIRECT, self.size)):
            try:
                if aligned:
                    _pwrite_all(self.bfd, memoryview(buf)[:aligned], at)
            finally:
                self.free.append(buf)
            self.buffered_bytes += aligned
            return
        self._enqueue((buf, at, aligned))

    # -- the writer thread ------------------------------------------------

    def _perform(self, item):
        buf, at, n = item
        with self.lock:
            direct = self.direct
        try:
            self._write_item(self.fd if direct else self.bfd, buf, at, n)
        except OSError as exc:
            if not direct or exc.errno != errno.EINVAL:
                raise
            LOG.debug('direct write refused (%s); writing through '
                      'the page cache', exc.strerror)
            with self.lock:
                self.direct = False
            self._write_item(self.bfd, buf, at, n)
            direct = False
        with self.lock:
            if direct:
                self.direct_bytes += n
                if type(buf) is list:
                    self.zero_copy_bytes += n
            else:
                self.buffered_bytes += n

    @staticmethod
    def _write_item(fd, buf, at, n):
        if type(buf) is not list:
            _pwrite_all(fd, memoryview(buf)[:n], at)
            return
        done = os.pwritev(fd, buf, at)
        if done < n:
            # (Rare: a signal, a nearly full disk.)  The rest view by view.
            for view in buf:
                k = len(view)
                if done >= k:
                    done -= k
                else:
                    _pwrite_all(fd, view[done:], at + done)
                    done = 0
                at += k

    def _done(self, item, err):
        if type(item[0]) is list:
            self.batched -= item[2]
            item[0].clear()     # the blocks are the driver's again
        else:
            self.free.append(item[0])

    def _offset(self, item):
        return item[1]


class QueuedWriter(_Background):
    """Writes through the page cache from a thread, in order.

    :param fd: the file, opened for writing (not closed by this writer).
    :param after: called in the thread as ``after(start, end)`` after each
        write (the :class:`~oslo_transfer.engine.partfile.PartFile` starts
        the writeback of a durable file there).
    :param limit: bytes queued at most; :meth:`write` waits beyond.
    """

    def __init__(self, fd, after=None, limit=None):
        super().__init__(fd)
        self.after = after
        self.limit = limit or QUEUE_BYTES
        self.held = 0           # bytes queued and not yet written

    def write(self, offset, data):
        """Write ``data`` at ``offset`` (visible after :meth:`flush`)."""
        n = len(data)
        if not immutable(data):
            # The caller may reuse it as soon as this returns.
            with self.lock:
                self._raise()
            self._perform((offset, data))
            with self.lock:
                self.buffered_bytes += n
            return
        with self.lock:
            while (self.held and self.held + n > self.limit and
                   self.error is None):
                self.lock.wait()
            self._raise()
            self.held += n
            self._enqueue((offset, data))

    def _perform(self, item):
        offset, data = item
        _pwrite_all(self.fd, memoryview(data).cast('B'), offset)
        if self.after is not None:
            self.after(offset, offset + len(data))

    def _offset(self, item):
        return item[0]

    def _done(self, item, err):
        n = len(item[1])
        self.held -= n
        if err is None:
            self.buffered_bytes += n
