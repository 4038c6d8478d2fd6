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

"""Writes in place: local images onto real loop devices (Cinder volumes).

The sources of other protocols are in ``http/test_volume.py`` (with the
kill-and-resume test), ``sftp/test_volume.py`` and ``nfs/test_nfs4.py``.
"""

import hashlib
import os
import pathlib

import pytest

import oslo_transfer
from oslo_transfer import exceptions as exc
from tests.functional import conftest as fconf
from tests.functional.file.test_file import make_sparse

MiB = fconf.MiB


@pytest.fixture
def conf(make_conf):
    return make_conf()


def _state(tmp_path):
    return fconf.inplace_state(tmp_path / 'state')


def _sparse_image(tmp_path, size=20 * MiB):
    """An image with data islands and zero runs between them."""
    path = str(tmp_path / 'image.raw')
    make_sparse(path, size, {0: MiB, 9 * MiB + 4096: 2 * MiB,
                             size - 4096: 4096})
    with open(path, 'rb') as f:
        data = f.read()
    return fconf.DataFile(path, data)


def test_image_onto_block_device_overwrites_zero_runs(
        loop_device, tmp_path, conf, direct_writes):
    vol = loop_device(32 * MiB, fill=0xAA)
    src = _sparse_image(tmp_path)

    r = oslo_transfer.copy(src.path, vol.dev, checksum=src.checksum(),
                           conf=conf)

    # The zero runs of the image were written over the old contents; the
    # rest of the volume is untouched.
    assert vol.read(0, src.size) == src.data
    assert vol.read(src.size) == b'\xaa' * (vol.size - src.size)
    assert r.size == src.size and r.digest == src.sha256
    assert r.dest == vol.dev and r.bytes_transferred == src.size
    assert not [n for n in os.listdir('/dev')
                if n.startswith(os.path.basename(vol.dev) + '.')]
    assert _state(tmp_path) == []
    # One stream, written with O_DIRECT into the device.
    assert direct_writes and sum(w['direct'] for w in direct_writes) > 0


def test_assume_zeroed_skips_zero_runs(loop_device, tmp_path, conf):
    vol = loop_device(32 * MiB)
    src = _sparse_image(tmp_path)

    oslo_transfer.copy(src.path, vol.dev, checksum=src.checksum(),
                       assume_zeroed=True, conf=conf)

    assert vol.read(0, src.size) == src.data
    # Only the islands reached the (sparse) backing image.
    assert vol.allocated() <= 4 * MiB


def test_source_larger_than_the_device_is_refused(loop_device, tmp_path,
                                                  conf):
    vol = loop_device(16 * MiB, fill=0x5A)
    src = fconf.make_data_file(tmp_path, 'big.raw', 16 * MiB + 512)

    with pytest.raises(exc.DestinationError) as ei:
        oslo_transfer.copy(src.path, vol.dev, conf=conf)

    msg = str(ei.value)
    assert 'does not fit' in msg and vol.dev in msg
    assert str(src.size) in msg and str(vol.size) in msg
    assert 'nothing was written' in msg
    assert vol.read() == b'\x5a' * vol.size
    assert _state(tmp_path) == []


def test_if_exists_error_refuses_a_device(loop_device, tmp_path, conf):
    vol = loop_device(8 * MiB, fill=0x11)
    src = fconf.make_data_file(tmp_path, 'a.raw', MiB)
    with pytest.raises(exc.DestinationExists) as ei:
        oslo_transfer.copy(src.path, vol.dev, if_exists='error', conf=conf)
    assert 'if_exists="error"' in str(ei.value)
    assert vol.read() == b'\x11' * vol.size


def test_checksum_mismatch_in_place_says_the_device_holds_the_bytes(
        loop_device, tmp_path, conf):
    vol = loop_device(8 * MiB)
    src = fconf.make_data_file(tmp_path, 'a.raw', 2 * MiB)
    wrong = 'sha256:' + hashlib.sha256(b'other').hexdigest()

    with pytest.raises(exc.ChecksumMismatch) as ei:
        oslo_transfer.copy(src.path, vol.dev, checksum=wrong, conf=conf)

    assert 'holds those bytes now' in str(ei.value)
    assert 'read back' in str(ei.value)
    assert ei.value.actual == src.sha256
    # Nothing to resume from known-bad bytes.
    assert _state(tmp_path) == []


@pytest.mark.parametrize('fs', ['ext4', 'tmpfs'])
def test_regular_file_in_place_keeps_its_inode_and_size(tmp_path, conf,
                                                        tmpfs, fs):
    """A file standing in for a volume is neither replaced nor shrunk.

    On tmpfs (no ``O_DIRECT``) the writes and the read back go through
    the page cache.
    """
    where = tmp_path if fs == 'ext4' else pathlib.Path(
        tmpfs('16m', tmp_path / 'tmpfs'))
    vol = where / 'volume.raw'
    with open(vol, 'wb') as f:
        f.write(b'\x77' * (8 * MiB))
    ino = os.stat(vol).st_ino
    src = fconf.make_data_file(tmp_path, 'a.raw', 3 * MiB)

    r = oslo_transfer.copy(src.path, str(vol), checksum=src.checksum(),
                           write_in_place=True, if_exists='replace',
                           conf=conf)

    st = os.stat(vol)
    assert st.st_ino == ino and st.st_size == 8 * MiB
    with open(vol, 'rb') as f:
        assert f.read(src.size) == src.data
        assert f.read() == b'\x77' * (8 * MiB - src.size)
    assert sorted(os.listdir(where)) == sorted(
        ['volume.raw'] + (['a.raw', 'conf-1.conf', 'state']
                          if fs == 'ext4' else []))
    assert r.size == src.size and _state(tmp_path) == []


def test_arguments_of_writes_in_place_checked_before_any_io(tmp_path,
                                                            conf):
    src = fconf.make_data_file(tmp_path, 'a.raw', MiB)
    dest = str(tmp_path / 'plain.raw')
    with pytest.raises(ValueError) as ei:
        oslo_transfer.copy(src.path, dest, assume_zeroed=True, conf=conf)
    assert 'assume_zeroed' in str(ei.value)
    with pytest.raises(exc.DestinationError) as ei:
        oslo_transfer.copy(src.path, dest, write_in_place=True, conf=conf)
    assert 'does not exist' in str(ei.value)
    with open(dest, 'wb') as f:
        f.write(b'old')
    with pytest.raises(ValueError) as ei:
        oslo_transfer.copy(src.path, dest, write_in_place=True, mode=0o644,
                           conf=conf)
    assert 'mode' in str(ei.value)
    with open(dest, 'rb') as f:
        assert f.read() == b'old'
    os.unlink(dest)
    assert not os.path.exists(dest)


def test_upload_from_a_block_device_to_a_file_url(loop_device, tmp_path,
                                                  conf):
    """``upload('/dev/loopN', ...)`` sends the whole device."""
    vol = loop_device(4 * MiB, fill=0x42)
    dest = tmp_path / 'out.raw'
    r = oslo_transfer.upload(vol.dev, 'file://%s' % dest, conf=conf)
    assert r.size == vol.size
    assert dest.read_bytes() == b'\x42' * vol.size
