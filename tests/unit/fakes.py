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

"""In-memory drivers for unit tests (never registered as entry points)."""

import errno
import hashlib
import os
import threading

from oslo_transfer import driver
from oslo_transfer import exceptions

Cap = driver.Capability


def data(size, seed=b'unit'):
    out = bytearray()
    i = 0
    while len(out) < size:
        out += hashlib.sha512(seed + i.to_bytes(8, 'big')).digest()
        i += 1
    return bytes(out[:size])


class MemoryStore:
    """Objects by URL path, with knobs to misbehave."""

    def __init__(self):
        self.objects = {}
        self.versions = {}
        self.ignore_ranges = False
        self.fail_after = None      # raise ConnectionFailed after N bytes
        self.fail_times = 0
        self.truncate_to = None     # silently end a read early
        self.wrong_start = False
        self.served = 0
        self.requests = []
        self.lock = threading.Lock()
        self.block = None           # threading.Event a read waits on
        # yield views of page-aligned blocks when the engine takes them
        # (ctx.aligned_views), as the iscsi, nfs and file drivers do
        self.aligned_blocks = False

    def put(self, url, payload):
        self.objects[url] = payload
        self.versions[url] = self.versions.get(url, 0) + 1


class MemoryDriver(driver.Driver):
    """``mem://`` objects in a :class:`MemoryStore` (class attribute)."""

    name = 'mem'
    schemes = ('mem',)
    capabilities = Cap.READ | Cap.WRITE | Cap.RANGED_READ
    store = None
    chunk_size = 64 * 1024

    def _obj(self, location):
        key = location.url
        if key not in self.store.objects:
            raise exceptions.SourceNotFound('%s not found' % location.masked,
                                            url=location.masked)
        return self.store.objects[key]

    def stat(self, location, ctx):
        obj = self._obj(location)
        return driver.Stat(size=len(obj), validator='v%d' %
                           self.store.versions[location.url],
                           ranges=not self.store.ignore_ranges)

    def read(self, location, offset, length, ctx):
        obj = self._obj(location)
        st = self.store
        with st.lock:
            st.requests.append((offset, length))
        if st.ignore_ranges and (offset or length is not None):
            if offset or (length is not None and length != len(obj)):
                raise exceptions.RangeNotSupported('ignored Range')
        end = len(obj) if length is None else offset + length
        if st.wrong_start and offset:
            offset -= 1
        return self._gen(obj, offset, end, ctx)

    def _gen(self, obj, pos, end, ctx):
        st = self.store
        sent = 0
        blocks = None
        if st.aligned_blocks:
            from oslo_transfer._drivers import _common
            blocks = _common.block_pool(ctx, 0, self.chunk_size)
        while pos < end:
            ctx.cancel.check()
            if st.block is not None:
                while not st.block.wait(0.05):
                    ctx.cancel.check()
            n = min(self.chunk_size, end - pos)
            with st.lock:
                if st.fail_after is not None and st.fail_times > 0 and \
                        st.served + n > st.fail_after:
                    st.fail_times -= 1
                    raise exceptions.ConnectionFailed('connection reset '
                                                      '(test)')
                if st.truncate_to is not None and pos + n > st.truncate_to:
                    return
                st.served += n
            block = blocks.take(n) if blocks is not None else None
            if block is not None:
                view = block[0]
                view[:] = obj[pos:pos + n]
                del block
                yield view
                del view
            else:
                yield obj[pos:pos + n]
            pos += n
            sent += n

    def write(self, location, chunks, ctx, offset=0, size=None):
        buf = bytearray()
        for c in chunks:
            buf += c
        store = self.store

        class W(driver.Writer):
            bytes_written = len(buf)

            def commit(self_inner):
                store.put(location.url, bytes(buf))

            def abort(self_inner):
                pass

        return W()


def make_driver_class(name='mem', caps=None, schemes=None, store=None,
                      accepts=None):
    attrs = {'name': name, 'store': store or MemoryStore()}
    if caps is not None:
        attrs['capabilities'] = caps
    if schemes is not None:
        attrs['schemes'] = schemes
    if accepts is not None:
        attrs['accepts'] = accepts
    return type('%sDriver' % name.title(), (MemoryDriver,), attrs)


def sha(payload):
    """``"sha256:HEX"`` of ``payload``."""
    return 'sha256:' + hashlib.sha256(payload).hexdigest()


def make_transfer(drv, **overrides):
    """A Transfer with only ``drv``, small segments and no back-off.

    :param overrides: ``[oslo_transfer]`` options.
    """
    from oslo_transfer import testing
    from oslo_transfer import transfer as transfer_mod
    mib = 1024 * 1024
    o = {('oslo_transfer', 'retry_backoff'): 0.0,
         ('oslo_transfer', 'segment_threshold'): 0,
         ('oslo_transfer', 'segment_size'): mib,
         ('oslo_transfer', 'checkpoint_bytes'): mib}
    o.update({('oslo_transfer', k): v for k, v in overrides.items()})
    conf = testing.make_conf(o, [drv])
    return transfer_mod.Transfer(conf, drivers=[drv])


def fail_writes(monkeypatch, exc=None, fd=None, from_offset=0,
                name='pwrite', path_suffix=None):
    """Make ``os.pwrite`` (or ``os.pwritev``, ``name``) fail.

    A call raises ``exc`` (default: ENOSPC) when its offset is at least
    ``from_offset`` and its file is ``fd`` (any file if None) or, with
    ``path_suffix``, a file whose path ends so; other calls go through.
    :returns: the real function, to put back ("room again").
    """
    real = getattr(os, name)

    def write(f, buf, off):
        if off >= from_offset and (fd is None or f == fd) and (
                path_suffix is None or os.readlink(
                    '/proc/self/fd/%d' % f).endswith(path_suffix)):
            raise exc if exc is not None else OSError(
                errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(f, buf, off)

    monkeypatch.setattr(os, name, write)
    return real
