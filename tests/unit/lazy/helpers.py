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

"""What the lazy-image unit tests share: images, blockmaps, fakes."""

import contextlib
import os

from oslo_transfer import blockmap
from oslo_transfer.engine import partfile
from oslo_transfer import fixture
from tests.unit import fakes

KiB = 1024
MiB = 1024 * KiB
BLOCK = 64 * KiB
URL = 'memory://origin/image'


def image(size=3 * MiB + 1000, zero_blocks=(16, 17, 18, 19), seed=b'lazy'):
    """Image bytes with all-zero blocks at ``zero_blocks`` (64 KiB)."""
    data = bytearray(fakes.data(size, seed))
    for i in zero_blocks:
        data[i * BLOCK:(i + 1) * BLOCK] = bytes(len(data[i * BLOCK:
                                                         (i + 1) * BLOCK]))
    return bytes(data)


def make_blockmap(tmp_path, data, block_size=BLOCK) -> bytes:
    path = tmp_path / ('img-%d' % len(data))
    path.write_bytes(data)
    return blockmap.make_blockmap(str(path), block_size)


@contextlib.contextmanager
def transfer(store=None, **options):
    """A fixture Transfer over ``store``: retries without back-off."""
    options.setdefault('retries', 1)
    with fixture.TransferFixture(store=store, capabilities=fakes.ENGINE_CAPS,
                                 **options) as fix:
        yield fix


def blocks_read(store, url=URL) -> list:
    """The 64 KiB blocks that the store's reads covered, in order."""
    out = []
    for key, offset, length in store.reads:
        if key.endswith(url.split('://', 1)[1]):
            out.extend(range(offset // BLOCK,
                             (offset + length - 1) // BLOCK + 1))
    return out


class VolatilePart(partfile.PartFile):
    """A ``.part`` file whose writes reach the file only at ``sync()``.

    What a power cut does to a page cache: :meth:`crash` forgets every
    write since the last sync.  ``events`` records ``("write", offset)``
    and ``("sync",)`` in order.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.volatile = {}
        self.events = []
        self.fail_sync = None

    def write(self, offset, data):
        self.volatile[offset] = bytes(data)
        self.events.append(('write', offset))

    def read(self, offset, length):
        out = bytearray(super().read(offset, length))
        out += bytes(length - len(out))
        for off, data in self.volatile.items():
            lo, hi = max(off, offset), min(off + len(data), offset + length)
            if lo < hi:
                out[lo - offset:hi - offset] = data[lo - off:hi - off]
        return bytes(out)

    def sync(self, flush=True):
        self.events.append(('sync',))
        if self.fail_sync is not None:
            raise self.fail_sync
        for off, data in sorted(self.volatile.items()):
            os.pwrite(self.fd, data, off)
        os.fdatasync(self.fd)
        self.volatile.clear()

    def crash(self):
        """A power cut: what was not synced is gone."""
        self.volatile.clear()


def attach(fix, cache, manifest, **kwargs):
    """``fix.transfer.attach(URL, ...)``; no prefetch unless asked for."""
    kwargs.setdefault('prefetch', False)
    return fix.transfer.attach(URL, cache, manifest=manifest, **kwargs)
