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

"""Reusing the ``bytes`` objects that a read yields, once nobody holds them.

The libnfs and libiscsi bindings turn each READ answer into a ``bytes`` of
half a megabyte or so.  A fresh one per answer costs page faults: the
allocator gives such blocks back to the kernel and takes them again, one
fault per 4 KiB.  A ``bytes`` that only the read's :class:`Recycler` still
references (the reader and everything it handed the chunk to dropped it)
cannot be seen by anyone, so filling it again with the next answer, and
clearing its cached hash, is indistinguishable from making a new one.  A
``bytes`` that anyone else still references (a queue, a memoryview, a
list of chunks, a READ in flight) is never touched.

Refilling needs CPython's layout of ``bytes`` (checked on a probe at
import, not assumed) and the GIL; elsewhere (another interpreter, a
free-threaded build) :data:`LAYOUT` is None and every answer gets a new
``bytes``.
"""

import ctypes
import mmap
import sys
import sysconfig

from oslo_transfer import _utils

#: answers shorter than this are not worth keeping
MIN_SIZE = 4096
#: Bytes of one stream that the engine holds at most beyond the READs in
#: flight: what waits for the hasher (``segments.HANDOFF_BYTES``) and for
#: the ``O_DIRECT`` writer (a batch being gathered, two queued).
HELD_BYTES = 20 * 1024 * 1024


def _bytes_layout():
    """``(data_offset, hash_offset)`` inside a ``bytes`` object, or None."""
    if sys.implementation.name != 'cpython' or \
            sysconfig.get_config_var('Py_GIL_DISABLED'):
        return None
    try:
        probe = bytes(range(256)) * 16
        data_at = bytes.__basicsize__ - 1
        hash_at = data_at - ctypes.sizeof(ctypes.c_ssize_t)
        if ctypes.string_at(id(probe) + data_at, len(probe)) != probe:
            return None
        if ctypes.c_ssize_t.from_address(id(probe) + hash_at).value != -1:
            return None
        digest = hash(probe)  # cached in the object from now on
        if ctypes.c_ssize_t.from_address(
                id(probe) + hash_at).value != digest:
            return None
    except (AttributeError, TypeError, ValueError, OverflowError):
        return None
    return data_at, hash_at


#: where a ``bytes`` keeps its data and its cached hash, or None
LAYOUT = _bytes_layout()


def _bytes_api():
    """``(new, address)``: make an unfilled ``bytes``, find its data.

    ``PyBytes_FromStringAndSize(NULL, n)`` is how C code (``os.read``,
    ``socket.recv``) makes a ``bytes`` that it fills afterwards; nobody
    else holds the object until then.  None where the C API is not
    reachable (not CPython).
    """
    api = getattr(ctypes, 'pythonapi', None)
    if api is None:
        return None
    try:
        new = api.PyBytes_FromStringAndSize
        addr = api.PyBytes_AsString
    except AttributeError:
        return None
    new.restype = ctypes.py_object
    new.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
    addr.restype = ctypes.c_void_p
    addr.argtypes = (ctypes.py_object,)
    return new, addr


#: ``(new, address)`` of the C API, or None
BYTES_API = _bytes_api()


def _refs(items, i):
    """``sys.getrefcount`` of ``items[i]``, measured as the recycler does."""
    return sys.getrefcount(items[i])


#: the count :func:`_refs` gives for an object that only its list holds
_ALONE = _refs([bytes(MIN_SIZE)], 0)


def address(buf: bytes) -> int:
    """The C address of the data of ``buf`` (needs :data:`BYTES_API`)."""
    if LAYOUT is not None:
        return id(buf) + LAYOUT[0]
    return BYTES_API[1](buf)


class Recycler:
    """The ``bytes`` objects that one read yields, reused once unused.

    :param limit: how many objects to keep for reuse; more than the read
        ever has in flight, queued and handed on at once, so that a free
        one is found rather than a new one made.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self._spare = []
        #: ``bytes`` objects made (the other answers refilled one)
        self.made = 0

    def _free(self, n):
        """A kept ``bytes`` of length ``n`` that nobody else holds."""
        spare = self._spare
        for i in range(len(spare)):
            if len(spare[i]) == n and _refs(spare, i) == _ALONE:
                buf = spare[i]
                ctypes.c_ssize_t.from_address(id(buf) + LAYOUT[1]).value = -1
                return buf
        return None

    def _keep(self, buf):
        self.made += 1
        spare = self._spare
        if len(spare) >= self.limit:
            # keep the newest: the older ones may be held for good
            spare.pop(0)
        spare.append(buf)

    def fill(self, data: int, n: int) -> bytes:
        """``n`` bytes copied from the C address ``data``, as a ``bytes``."""
        if LAYOUT is None or n < MIN_SIZE:
            return ctypes.string_at(data, n)
        buf = self._free(n)
        if buf is not None:
            ctypes.memmove(id(buf) + LAYOUT[0], data, n)
            return buf
        buf = ctypes.string_at(data, n)
        self._keep(buf)
        return buf

    def buffer(self, n: int) -> bytes:
        """A ``bytes`` of length ``n`` for a C call to fill at :func:`address`.

        Nobody but the caller and this recycler holds it; its content is
        undefined until filled.  Needs :data:`BYTES_API`; without
        :data:`LAYOUT` every call makes a new one.
        """
        if LAYOUT is not None and n >= MIN_SIZE:
            buf = self._free(n)
            if buf is None:
                buf = BYTES_API[0](None, n)
                self._keep(buf)
            return buf
        return BYTES_API[0](None, n)

    def place(self, n: int):
        """``(bytes, address)``: :meth:`buffer` and where its data is.

        ``(None, None)`` without :data:`BYTES_API`.
        """
        if BYTES_API is None:
            return None, None
        buf = self.buffer(n)
        return buf, address(buf)


def pool(recycler, window: int, size: int, aligned: bool):
    """What a read with ``window`` answers of ``size`` bytes in flight fills.

    A :class:`BlockPool` (falling back to ``recycler``) if the consumer
    takes views of aligned blocks (``aligned``: see
    :attr:`oslo_transfer.driver.Context.aligned_views`), else ``recycler``,
    a :class:`Recycler` of ``bytes``.
    """
    if not aligned or LAYOUT is None:
        return recycler
    return BlockPool(window + HELD_BYTES // max(size, 1) + 4, size, recycler)


class BlockPool:
    """Page-aligned blocks for the answers of one read, reused once unused.

    A block is free once nobody holds a view of it: every ``memoryview``
    of a block (and every slice of one) keeps a reference to it, so the
    pool's own reference being the only one means that no view is left.
    When all ``limit`` blocks are held (a slow writer, a consumer that
    keeps chunks), answers go to ``fallback``, a :class:`Recycler` of
    ``bytes``: the read never waits for memory.

    :param limit: blocks made at most.
    :param size: bytes per block (rounded up to the page size); an answer
        larger than that goes to ``fallback``.
    :param fallback: the :class:`Recycler` of :meth:`place` and
        :meth:`fill`; None for a caller that uses :meth:`take` only (and
        reads into ``bytes`` of its own when it returns None).
    """

    def __init__(self, limit: int, size: int, fallback: Recycler):
        self.limit = limit
        self.size = -(-size // mmap.PAGESIZE) * mmap.PAGESIZE
        self.fallback = fallback
        self._blocks = []
        self._addresses = []
        self._next = 0
        #: blocks made
        self.made = 0

    def take(self, n: int):
        """``(view, address)`` of ``n`` bytes of a free block, or None.

        None when every block is held (or ``n`` is larger than a block).
        The view's content is undefined until filled.
        """
        if n > self.size:
            return None
        blocks = self._blocks
        k = len(blocks)
        for j in range(k):
            i = (self._next + j) % k
            if _refs(blocks, i) == _ALONE:
                self._next = i + 1
                return memoryview(blocks[i])[:n], self._addresses[i]
        if k >= self.limit:
            return None
        block = _utils.AlignedBlock(-1, self.size)
        blocks.append(block)
        self._addresses.append(_utils.buffer_address(block))
        self.made += 1
        self._next = 0
        return memoryview(block)[:n], self._addresses[-1]

    def place(self, n: int):
        """``(chunk, address)``: ``n`` bytes for a C call to fill.

        ``chunk`` is a view of a free block (or, when none is free, a
        ``bytes`` of the fallback); its content is undefined until filled.
        """
        return self.take(n) or self.fallback.place(n)

    def fill(self, data: int, n: int):
        """``n`` bytes copied from the C address ``data``: a view or bytes."""
        if n >= MIN_SIZE:
            chunk, at = self.place(n)
            if chunk is not None:
                ctypes.memmove(at, data, n)
                return chunk
        return self.fallback.fill(data, n)
