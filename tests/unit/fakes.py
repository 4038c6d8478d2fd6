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

"""Test helpers of this project only.

The in-memory driver and the ``Transfer`` fixture are public, for the
services' tests too: :mod:`oslo_transfer.fixture`.  What stays here is
what only these tests need: deterministic data, the engine tests'
``Transfer`` settings, a driver that yields page-aligned blocks, and fakes
of failing disk writes.
"""

import contextlib
import errno
import hashlib
import os

from oslo_transfer import driver
from oslo_transfer import fixture

Cap = driver.Capability

MiB = 1024 * 1024

#: what the engine tests' memory driver declares: an HTTP-like server
#: (ranged reads, writes that neither resume nor stage)
ENGINE_CAPS = Cap.READ | Cap.WRITE | Cap.RANGED_READ

#: the engine tests' options: small segments and checkpoints
ENGINE_OPTIONS = {'segment_threshold': 0, 'segment_size': MiB,
                  'checkpoint_bytes': MiB}


def data(size, seed=b'unit'):
    out = bytearray()
    i = 0
    while len(out) < size:
        out += hashlib.sha512(seed + i.to_bytes(8, 'big')).digest()
        i += 1
    return bytes(out[:size])


def sha(payload):
    """``"sha256:HEX"`` of ``payload``."""
    return 'sha256:' + hashlib.sha256(payload).hexdigest()


@contextlib.contextmanager
def make_transfer(store, driver_class=fixture.MemoryDriver, **options):
    """The fixture's Transfer over ``store``, with the engine tests' options.

    :param driver_class: ``fixture.MemoryDriver`` or a subclass.
    :param options: ``[oslo_transfer]`` options over
        :data:`ENGINE_OPTIONS` (no back-off is the fixture's default).
    """
    with fixture.TransferFixture(
            store=store, driver_class=driver_class,
            capabilities=ENGINE_CAPS,
            **dict(ENGINE_OPTIONS, **options)) as fix:
        yield fix.transfer


class AlignedBlocksDriver(fixture.MemoryDriver):
    """Yields views of page-aligned blocks when the engine takes them.

    (``ctx.aligned_views``), as the iscsi, nfs and file drivers do.
    """

    def chunks(self, data, start, end, ctx):
        if not ctx.aligned_views:
            yield from super().chunks(data, start, end, ctx)
            return
        from oslo_transfer._drivers import _common
        blocks = _common.block_pool(ctx, 0, self.chunk_size)
        for pos in range(start, end, self.chunk_size):
            n = min(self.chunk_size, end - pos)
            block = blocks.take(n)
            if block is None:       # every block held: plain bytes
                yield data[pos:pos + n]
                continue
            view = block[0]
            view[:] = data[pos:pos + n]
            del block
            yield view
            del view


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
