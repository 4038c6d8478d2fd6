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

"""Local copies: sparse files, zero-copy, block devices, unsafe paths.

Sparse files are compared by their extent maps (``SEEK_DATA`` /
``SEEK_HOLE``) and the bytes at the data offsets; a 4 GiB file is never
read whole in Python.
"""

import errno
import hashlib
import os
import subprocess
import warnings

import pytest

import oslo_transfer
from oslo_transfer import exceptions as exc
from tests.functional import conftest as fconf
from tests.functional import servers

MiB = fconf.MiB
GiB = 1024 * MiB


def extents(path) -> list:
    """Data extents ``[(start, end)]`` of ``path`` by SEEK_DATA/SEEK_HOLE."""
    out = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    break
                raise
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            out.append((start, end))
            pos = end
    finally:
        os.close(fd)
    return out


def covered(inner, outer) -> bool:
    """True if every range of ``inner`` lies inside a range of ``outer``."""
    return all(any(os_ <= s and e <= oe for os_, oe in outer)
               for s, e in inner)


def make_sparse(path, size, islands) -> dict:
    """A sparse file of ``size`` with random data at ``{offset: length}``."""
    written = {}
    with open(path, 'wb') as f:
        f.truncate(size)
        for off, length in islands.items():
            data = os.urandom(length)
            f.seek(off)
            f.write(data)
            written[off] = data
    return written


def read_at(path, offset, length) -> bytes:
    with open(path, 'rb') as f:
        f.seek(offset)
        return f.read(length)


ISLANDS_4G = {0: MiB, GiB + 3 * 4096: 2 * MiB, 3 * GiB: MiB,
              4 * GiB - MiB: MiB}


def test_4gib_sparse_file_copies_as_sparse(tmp_path):
    src = str(tmp_path / 'sparse.img')
    islands = make_sparse(src, 4 * GiB, ISLANDS_4G)
    dest = str(tmp_path / 'out' / 'copy.img')
    os.mkdir(os.path.dirname(dest))

    r = oslo_transfer.copy(src, dest)

    fconf.assert_only_dest(dest)
    st = os.stat(dest)
    assert st.st_size == 4 * GiB
    data_bytes = sum(len(d) for d in islands.values())
    # Allocated: the data plus filesystem rounding, nowhere near 4 GiB.
    assert st.st_blocks * 512 <= data_bytes + 16 * MiB, st.st_blocks
    for off, data in islands.items():
        assert read_at(dest, off, len(data)) == data, off
    # Holes where the source has holes: every data extent of the copy lies
    # within a data extent of the source.
    dext = extents(dest)
    assert dext and covered(dext, extents(src)), (dext, extents(src))
    # And the holes read back as zeros.
    for off in (512 * MiB, 2 * GiB, 4 * GiB - 2 * MiB):
        assert read_at(dest, off, 4096) == bytes(4096)
    assert r.driver == 'file'
    assert r.size == 4 * GiB


def test_sparse_copy_with_checksum(tmp_path):
    """The digest covers the holes too; the copy stays sparse."""
    size = 96 * MiB
    src = str(tmp_path / 'sparse.img')
    islands = make_sparse(src, size, {0: MiB, 40 * MiB: MiB,
                                      size - 4096: 4096})
    h = hashlib.sha256()
    with open(src, 'rb') as f:
        for block in iter(lambda: f.read(4 * MiB), b''):
            h.update(block)
    dest = str(tmp_path / 'copy.img')

    r = oslo_transfer.copy(src, dest, checksum='sha256:' + h.hexdigest())

    assert r.digest == h.hexdigest()
    assert os.stat(dest).st_blocks * 512 <= 3 * MiB + 8 * MiB
    for off, data in islands.items():
        assert read_at(dest, off, len(data)) == data
    assert covered(extents(dest), extents(src))


def test_sparse_checksum_mismatch_leaves_nothing(tmp_path):
    src = str(tmp_path / 'sparse.img')
    make_sparse(src, 16 * MiB, {MiB: MiB})
    out = tmp_path / 'out'
    out.mkdir()
    dest = str(out / 'copy.img')
    with pytest.raises(exc.ChecksumMismatch) as ei:
        oslo_transfer.copy(src, dest, checksum='md5:' + hashlib.md5(
            b'no').hexdigest())
    assert src in str(ei.value)
    fconf.assert_nothing_left(dest)


def test_zero_copy_is_used(tmp_path, monkeypatch):
    """A regular file moves through copy_file_range, not user space."""
    src = fconf.make_data_file(tmp_path, 'src.img', 24 * MiB + 5)
    dest = str(tmp_path / 'out' / 'dst.img')
    os.mkdir(os.path.dirname(dest))
    moved = []
    real = os.copy_file_range

    def spy(src_fd, dst_fd, count, offset_src=None, offset_dst=None):
        n = real(src_fd, dst_fd, count, offset_src, offset_dst)
        moved.append(n)
        return n

    monkeypatch.setattr(os, 'copy_file_range', spy)
    r = oslo_transfer.copy(src.path, dest)

    fconf.assert_only_dest(dest, src.data)
    assert r.driver == 'file'
    assert r.digest is None
    # ext4 has no reflink: the kernel copied every byte.
    assert sum(moved) == src.size, moved


def test_checksum_streams_in_one_pass(tmp_path, monkeypatch,
                                      direct_writes):
    # With a digest to compute and no reflink (ext4), the data is streamed
    # and hashed as it goes rather than copied in the kernel and read back;
    # it is read into page-aligned blocks written with O_DIRECT as they are.
    from oslo_transfer.engine import partfile
    src = fconf.make_data_file(tmp_path, 'src.img', 24 * MiB + 5)
    dest = str(tmp_path / 'out' / 'dst.img')
    os.mkdir(os.path.dirname(dest))
    moved, read_back = [], []
    real_cfr, real_read = os.copy_file_range, partfile.PartFile.read
    monkeypatch.setattr(os, 'copy_file_range',
                        lambda *a: moved.append(a) or real_cfr(*a))
    monkeypatch.setattr(partfile.PartFile, 'read',
                        lambda self, o, n: read_back.append(n) or
                        real_read(self, o, n))

    r = oslo_transfer.copy(src.path, dest, checksum=src.checksum())

    fconf.assert_only_dest(dest, src.data)
    assert r.digest == src.sha256
    assert moved == []
    assert sum(read_back) == 0
    written, = direct_writes
    assert written['zero_copy'] == 24 * MiB and written['buffered'] == 5


def test_file_urls(tmp_path):
    src = fconf.make_data_file(tmp_path, 'a b.img', 3 * MiB)
    dest = tmp_path / 'out dir' / 'b.img'
    dest.parent.mkdir()
    r = oslo_transfer.copy('file://' + src.path.replace(' ', '%20'),
                           'file://' + str(dest).replace(' ', '%20'),
                           checksum=src.checksum('md5'))
    fconf.assert_only_dest(str(dest), src.data)
    assert r.driver == 'file'


def test_open_local_range(tmp_path):
    src = fconf.make_data_file(tmp_path, 'a.img', 2 * MiB)
    with oslo_transfer.open(src.path, offset=MiB - 10, length=20) as r:
        assert r.read() == src.data[MiB - 10:MiB + 10]


def test_missing_source(tmp_path):
    dest = str(tmp_path / 'out.img')
    with pytest.raises(exc.SourceNotFound) as ei:
        oslo_transfer.copy(str(tmp_path / 'nope.img'), dest)
    assert 'nope.img' in str(ei.value)
    fconf.assert_nothing_left(dest)


def test_missing_destination_directory(tmp_path):
    src = fconf.make_data_file(tmp_path, 'a.img', 1000)
    dest = str(tmp_path / 'no' / 'such' / 'dir' / 'b.img')
    with pytest.raises(exc.DestinationError) as ei:
        oslo_transfer.copy(src.path, dest)
    assert os.path.dirname(dest) in str(ei.value)


def test_part_symlink_is_not_followed(tmp_path):
    """A planted ``DEST.part`` symlink must not redirect the write."""
    src = fconf.make_data_file(tmp_path, 'a.img', 2 * MiB)
    victim = tmp_path / 'victim'
    victim.write_bytes(b'precious')
    out = tmp_path / 'out'
    out.mkdir()
    dest = str(out / 'b.img')
    os.symlink(str(victim), fconf.part_path(dest))
    os.symlink(str(victim), fconf.ctl_path(dest))
    try:
        oslo_transfer.copy(src.path, dest, checksum=src.checksum())
    except exc.TransferError as e:
        assert not os.path.exists(dest)
        assert 'part' in str(e)
    else:
        assert fconf.file_equals(dest, src.data)
    assert victim.read_bytes() == b'precious'


def test_destination_symlink_is_not_written_through(tmp_path):
    src = fconf.make_data_file(tmp_path, 'a.img', MiB)
    victim = tmp_path / 'victim'
    victim.write_bytes(b'precious')
    dest = str(tmp_path / 'b.img')
    os.symlink(str(victim), dest)
    with pytest.raises(exc.DestinationExists):
        oslo_transfer.copy(src.path, dest, checksum=src.checksum())
    assert victim.read_bytes() == b'precious'


# -- block devices ------------------------------------------------------------

def in_ci() -> bool:
    """True on a CI machine (``CI`` set to a true value, as CI systems do)."""
    return os.environ.get('CI', '').strip().lower() in ('1', 'true', 'yes')


@pytest.fixture
def block_device(tmp_path):
    """A loop device over a sparse image: ``(device_path, islands)``.

    In CI (``CI=true``) a machine without loop devices fails the test: the
    block-device code path must be exercised there.  Elsewhere (a
    developer's container without /dev/loop-control) the image file itself
    stands in and the test says so in a warning: the copy is still
    checked, only the block-device code path is not.
    """
    image = str(tmp_path / 'lun.img')
    islands = make_sparse(image, 64 * MiB, {0: MiB, 33 * MiB: 3 * MiB,
                                            64 * MiB - 4096: 4096})
    losetup = servers.require_binary('losetup', 'mount')
    p = subprocess.run([losetup, '--find', '--show', '--read-only', image],
                       capture_output=True, text=True)
    if p.returncode != 0:
        why = ('no loop device (losetup: %s): the block-device source is '
               'not tested' % (p.stderr.strip() or 'exit %d' % p.returncode))
        if in_ci():
            pytest.fail('%s; CI needs a machine or container with loop '
                        'devices (root, /dev/loop-control)' % why,
                        pytrace=False)
        warnings.warn(why + '; reading the image file instead')
        yield image, islands, False
        return
    dev = p.stdout.strip()
    try:
        yield dev, islands, True
    finally:
        subprocess.run([losetup, '--detach', dev], check=False)


def test_block_device_source(block_device, tmp_path, direct_writes):
    dev, islands, is_block = block_device
    h = hashlib.sha256()
    with open(dev, 'rb') as f:
        for block in iter(lambda: f.read(4 * MiB), b''):
            h.update(block)
    dest = str(tmp_path / 'out' / 'vol.img')
    os.mkdir(os.path.dirname(dest))

    r = oslo_transfer.copy(dev, dest, checksum='sha256:' + h.hexdigest())

    fconf.assert_only_dest(dest)
    assert os.path.getsize(dest) == 64 * MiB
    assert r.size == 64 * MiB and r.digest == h.hexdigest()
    for off, data in islands.items():
        assert read_at(dest, off, len(data)) == data
    # Zero blocks read from the device became holes in the copy; the
    # islands went from the read's aligned blocks to the disk, no copy.
    assert os.stat(dest).st_blocks * 512 <= 8 * MiB + 8 * MiB
    written, = direct_writes
    assert written['zero_copy'] == sum(len(d) for d in islands.values())
    if is_block:
        assert os.path.realpath(dev).startswith('/dev/')
        plan = oslo_transfer.plan(dev)
        assert plan.candidates[0].driver == 'file'
