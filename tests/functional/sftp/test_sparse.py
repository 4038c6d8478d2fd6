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

"""Sparse uploads (``sparse_writes``): a Nova migration's disk keeps its
holes on the server, reads the same, and resumes right."""

import hashlib
import os

import pytest

from oslo_transfer import driver as driver_mod
from oslo_transfer import exceptions
from oslo_transfer import transfer as transfer_mod
from tests.functional import conftest as fconf

MiB = fconf.MiB
SIZE = 128 * MiB
#: 30 MiB of data; holes in the middle and at the end (90..128 MiB)
EXTENTS = ((0, 10 * MiB), (40 * MiB, 10 * MiB), (80 * MiB, 10 * MiB))


def _sha256(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(4 * MiB), b''):
            h.update(block)
    return h.hexdigest()


def _allocated(path):
    return os.stat(path).st_blocks * 512


@pytest.fixture
def disk(tmp_path):
    """A 128 MiB sparse disk image with 30 MiB allocated."""
    path = str(tmp_path / 'disk')
    with open(path, 'wb') as f:
        for offset, length in EXTENTS:
            f.seek(offset)
            f.write(os.urandom(length))
        f.truncate(SIZE)
    assert _allocated(path) < 32 * MiB, 'this filesystem has no holes'
    return path, _sha256(path)


@pytest.mark.parametrize('sparse', [True, False])
def test_sparse_disk_stays_sparse(sshd, sftp_conf, remote_dir, disk, sparse):
    src, digest = disk
    target = os.path.join(remote_dir, 'disk')
    conf = sftp_conf(oslo_transfer_sftp={'sparse_writes': sparse})
    with transfer_mod.Transfer(conf, drivers=['sftp']) as t:
        r = t.upload(src, sshd.url(target), checksum='sha256:' + digest)
    assert r.size == SIZE
    assert os.listdir(remote_dir) == ['disk']
    assert os.path.getsize(target) == SIZE
    assert _sha256(target) == digest
    allocated = _allocated(target)
    if sparse:
        assert allocated < 40 * MiB, allocated
    else:
        assert allocated >= SIZE, allocated


def test_dense_file_is_exact(sshd, sftp_conf, remote_dir, tmp_path):
    # Random data with a zero run that is not a whole piece, and one that
    # is, in the middle and at the end.
    data = (os.urandom(3 * MiB + 5) + bytes(1000) + os.urandom(7) +
            bytes(MiB) + os.urandom(MiB) + bytes(MiB + 13))
    src = tmp_path / 'dense'
    src.write_bytes(data)
    target = os.path.join(remote_dir, 'dense')
    with transfer_mod.Transfer(sftp_conf(), drivers=['sftp']) as t:
        t.upload(str(src), sshd.url(target),
                 checksum='sha256:' + hashlib.sha256(data).hexdigest())
    assert fconf.file_equals(target, data)


def test_interrupted_sparse_upload_resumes(sshd, sftp_conf, remote_dir,
                                           disk):
    """Cancelled in the middle hole, then resumed from NAME.part's size.

    The staged file ends at the last data written (a skipped zero run
    does not extend it), so its size is a safe place to continue.
    """
    src, digest = disk
    target = os.path.join(remote_dir, 'disk')
    token = driver_mod.CancelToken()
    seen = []

    def progress(done, total):
        seen.append(done)
        if done >= 60 * MiB:
            token.cancel('the migration was paused')

    with transfer_mod.Transfer(sftp_conf(), drivers=['sftp']) as t:
        with pytest.raises(exceptions.Cancelled):
            t.upload(src, sshd.url(target), checksum='sha256:' + digest,
                     progress=progress, cancel=token)
        assert os.listdir(remote_dir) == ['disk.part']
        part = target + '.part'
        have = os.path.getsize(part)
        assert 10 * MiB <= have < SIZE
        with open(src, 'rb') as f, open(part, 'rb') as g:
            assert f.read(have) == g.read(), 'the staged prefix differs'
        r = t.upload(src, sshd.url(target), checksum='sha256:' + digest)
    assert r.bytes_resumed > 0
    assert os.listdir(remote_dir) == ['disk']
    assert os.path.getsize(target) == SIZE
    assert _sha256(target) == digest
    assert _allocated(target) < 40 * MiB
