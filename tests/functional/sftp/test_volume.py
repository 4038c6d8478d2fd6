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

"""Volumes over SFTP (OpenSSH): a loop device uploaded and written back,
and what ``copy()`` to an ``sftp://`` URL honours."""

import os

import pytest

from oslo_transfer import exceptions as exc
from oslo_transfer import transfer as transfer_mod
from tests.functional import conftest as fconf

MiB = fconf.MiB


def test_volume_to_image_and_back(sshd, sftp_conf, remote_dir, loop_device):
    """upload('/dev/loopN', sftp://...), then the image onto another."""
    vol = loop_device(5 * MiB, fill=0x61)
    target = os.path.join(remote_dir, 'volume.raw')
    with transfer_mod.Transfer(sftp_conf()) as tr:
        r = tr.upload(vol.dev, sshd.url(target))
        assert r.size == vol.size
        assert fconf.file_equals(target, b'\x61' * vol.size)

        back = loop_device(8 * MiB)
        r = tr.copy(sshd.url(target), back.dev,
                    checksum='sha256:' + vol.sha256())
    assert back.read(0, vol.size) == b'\x61' * vol.size
    assert r.driver == 'sftp'


def test_copy_to_sftp_rate_is_applied(sshd, sftp_conf, remote_dir, tmp_path,
                                      rates):
    src = fconf.make_data_file(tmp_path, 'src.raw', 2 * MiB)
    target = os.path.join(remote_dir, 'rated.raw')
    with transfer_mod.Transfer(sftp_conf()) as tr:
        tr.copy(src.path, sshd.url(target), rate=16 * MiB)
    assert fconf.file_equals(target, src.data)
    assert sum(n for rate, n in rates if rate == 16 * MiB) == src.size


def test_copy_to_sftp_if_exists(sshd, sftp_conf, remote_dir, tmp_path):
    src = fconf.make_data_file(tmp_path, 'src.raw', MiB)
    old = fconf.make_data_file(remote_dir, 'old.raw', MiB)
    url = sshd.url(old.path)
    with transfer_mod.Transfer(sftp_conf()) as tr:
        with pytest.raises(exc.DestinationExists) as ei:
            tr.copy(src.path, url, if_exists='error')
        assert 'if_exists="error"' in str(ei.value)
        # Same size, another digest: "verify" reads it back and refuses.
        with pytest.raises(exc.DestinationExists) as ei:
            tr.copy(src.path, url, checksum=src.checksum())
        assert old.sha256 in str(ei.value)
        assert fconf.file_equals(old.path, old.data)
        r = tr.copy(src.path, url, if_exists='replace',
                    checksum=src.checksum())
        assert r.bytes_transferred == src.size
        assert fconf.file_equals(old.path, src.data)
        r = tr.copy(src.path, url, checksum=src.checksum())
        assert r.bytes_transferred == 0
