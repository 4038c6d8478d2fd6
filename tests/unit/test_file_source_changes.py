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

"""A local source rewritten while it is copied: never two versions joined.

The soak (``benchmarks/soak/run.py``, ``file``) rewrote the source in
place, from the end backwards, while ``oslo-transfer copy SRC DEST`` ran:
DEST held the old version's first 88-104 MiB and the new version's rest,
and the copy succeeded (no checksum to catch it; the Result's digest was
that of the mix).  A local read has no ``If-Range``: the file driver now
checks the file against the validator the engine stat'ed when it opens it
and after its last byte, and raises ``SourceChanged``; the engine then
starts again from zero (``on_source_change = restart``) or raises.
"""

import hashlib
import os
import types

import pytest

from oslo_transfer._drivers import file as file_mod
from oslo_transfer import driver as driver_mod
from oslo_transfer.engine import download
from oslo_transfer import exceptions
from oslo_transfer import locations
from oslo_transfer import testing
from oslo_transfer import transfer as transfer_mod
from tests.unit import fakes

MiB = 1024 * 1024
OLD, NEW = fakes.data(6 * MiB, b'old'), fakes.data(6 * MiB, b'new')


def _source(tmp_path, data=OLD):
    """A file last modified a minute ago (a rewrite gets another mtime).

    (File times are as coarse as the kernel's tick: a rewrite within the
    tick of the last write would keep the mtime.)
    """
    path = tmp_path / 'src.raw'
    path.write_bytes(data)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - 60 * 10 ** 9))
    return str(path)


def _rewrite_in_place(path, data=NEW):
    """Same inode, same size, new bytes (``dd conv=notrunc``)."""
    with open(path, 'r+b') as f:
        f.write(data)


def _driver_and_ctx(path):
    drv = file_mod.FileDriver(testing.make_conf(drivers=[file_mod.FileDriver]))
    loc = locations.Location(path)
    ctx = driver_mod.Context()
    ctx.validator = drv.stat(loc, ctx).validator
    return drv, loc, ctx


def test_read_notices_a_rewrite_after_its_last_byte(tmp_path):
    path = _source(tmp_path)
    drv, loc, ctx = _driver_and_ctx(path)
    chunks = drv.read(loc, 0, None, ctx)
    got = next(chunks)
    _rewrite_in_place(path)
    with pytest.raises(exceptions.SourceChanged) as ei:
        for chunk in chunks:
            got += chunk
    assert 'changed while it was read' in str(ei.value)
    assert got != OLD and got != NEW     # what the engine must not keep


def test_read_refuses_another_version_when_it_opens(tmp_path):
    """A retry after a rename over the source: a new inode."""
    path = _source(tmp_path)
    drv, loc, ctx = _driver_and_ctx(path)
    os.replace(_source(tmp_path / '..', NEW), path)
    with pytest.raises(exceptions.SourceChanged) as ei:
        drv.read(loc, MiB, None, ctx)
    assert 'changed since it was first read' in str(ei.value)


def test_copy_to_path_notices_a_rewrite(tmp_path):
    path = _source(tmp_path)
    drv, loc, ctx = _driver_and_ctx(path)
    part = tmp_path / 'dest.part'
    part.write_bytes(b'')
    recorded = []

    def record(offset, length):
        if not recorded:
            _rewrite_in_place(path)
        recorded.append((offset, length))

    target = types.SimpleNamespace(path=str(part), size=len(OLD),
                                   checkpoint_bytes=4 * MiB,
                                   held=lambda: [], record=record)
    with pytest.raises(exceptions.SourceChanged) as ei:
        drv.copy_to_path(loc, target, ctx)
    assert 'changed while it was copied' in str(ei.value)
    assert len(recorded) == 6               # a MiB (a quarter) at a time


def _copy(tmp_path, path, on_first_progress, checksum=None, **options):
    conf = testing.make_conf({('oslo_transfer', k): v
                              for k, v in dict(checkpoint_bytes=4 * MiB,
                                               **options).items()},
                             [file_mod.FileDriver])
    seen = []

    def progress(done, total):
        if done:
            seen.append(done)
            on_first_progress(len(seen))

    dest = str(tmp_path / 'out' / 'dest.raw')
    os.makedirs(os.path.dirname(dest))
    with transfer_mod.Transfer(conf, drivers=[file_mod.FileDriver]) as t:
        return dest, t.copy(path, dest, checksum=checksum,
                            progress=progress)


@pytest.mark.parametrize('checksum', [None, fakes.sha(NEW)],
                         ids=['whole-file', 'streamed'])
def test_the_copy_starts_again_with_the_new_version(tmp_path, checksum):
    """The copy holds the new version, whole.

    Without a checksum nothing else would catch a mix; with one, the copy
    would fail with ChecksumMismatch instead of succeeding.
    """
    path = _source(tmp_path)

    def rewrite(n):
        if n == 1:
            _rewrite_in_place(path)

    dest, res = _copy(tmp_path, path, rewrite, checksum)
    with open(dest, 'rb') as f:
        assert f.read() == NEW
    # (The whole-file path reads nothing to hash without a checksum.)
    assert res.digest in (None, hashlib.sha256(NEW).hexdigest())
    assert res.bytes_resumed == 0
    assert sorted(os.listdir(os.path.dirname(dest))) == ['dest.raw']


def test_with_on_source_change_error_it_raises(tmp_path):
    path = _source(tmp_path)
    with pytest.raises(exceptions.SourceChanged):
        _copy(tmp_path, path, lambda n: n == 1 and _rewrite_in_place(path),
              on_source_change='error')
    assert not os.path.exists(tmp_path / 'out' / 'dest.raw')


class _EverChanging(file_mod.FileDriver):
    """Rewrites its source before every copy: it never settles."""

    versions = []

    def copy_to_path(self, location, target, ctx, progress=None):
        data = fakes.data(6 * MiB, b'v%d' % len(self.versions))
        self.versions.append(data)
        _rewrite_in_place(location.url, data)
        return super().copy_to_path(location, target, ctx, progress)


def test_a_source_that_never_settles_fails_after_the_restarts(
        tmp_path, monkeypatch):
    monkeypatch.setattr(_EverChanging, 'versions', [])
    path = _source(tmp_path)
    conf = testing.make_conf({('oslo_transfer', 'retries'): 2},
                             [_EverChanging])
    dest = str(tmp_path / 'dest.raw')
    with transfer_mod.Transfer(conf, drivers=[_EverChanging]) as t:
        with pytest.raises(exceptions.SourceChanged) as exc_info:
            t.copy(path, dest)
    # the first try + MAX_RESTARTS (retries do not count: a change is not
    # a transient error)
    assert len(_EverChanging.versions) == download.MAX_RESTARTS + 1
    assert 'giving up after %d restarts' % download.MAX_RESTARTS in str(
        exc_info.value)
    assert not os.path.exists(dest)
    assert not os.path.exists(dest + '.part')
    assert not os.path.exists(dest + '.part.ctl')
