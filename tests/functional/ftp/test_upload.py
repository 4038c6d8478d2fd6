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

"""FTP uploads: staged and renamed, verified, replacing, in place."""

import os

import pytest

from oslo_transfer import driver as driver_mod
from oslo_transfer import exceptions
from oslo_transfer import transfer as transfer_mod
from tests.functional import conftest as fconf
from tests.functional.ftp import conftest as ftpconf
from tests.functional.ftp import ftpservers

MiB = 1024 * 1024


@pytest.fixture(params=['vsftpd', 'serve'])
def server(request):
    return request.getfixturevalue(
        'vsftpd' if request.param == 'vsftpd' else 'serve_ftp')


def _url(server, name):
    if isinstance(server, ftpservers.Vsftpd):
        return ftpconf.vsftpd_url(server, name)
    return server.url(name)


def _where(server, name):
    return os.path.join(ftpconf.server_dir(server), name)


def _name(tag):
    return '%s-%d-%d.bin' % (tag, os.getpid(), id(tag) % 100000)


def test_upload_with_checksum(server, conf, tmp_path):
    src = fconf.make_data_file(tmp_path, 'src.bin', 6 * MiB + 3)
    name = _name('upload')
    with transfer_mod.Transfer(conf(), drivers=['ftp']) as t:
        res = t.upload(src.path, _url(server, name), checksum=src.checksum())
    assert fconf.file_equals(_where(server, name), src.data)
    assert not os.path.exists(_where(server, name) + '.part')
    assert res.driver == 'ftp'
    assert res.digest == src.sha256
    assert res.bytes_transferred == src.size


def test_copy_local_to_ftp(server, conf, tmp_path):
    """copy(local path, ftp URL) uploads."""
    src = fconf.make_data_file(tmp_path, 'src.bin', 2 * MiB)
    name = _name('copy-up')
    with transfer_mod.Transfer(conf(), drivers=['ftp', 'file']) as t:
        t.copy(src.path, _url(server, name), checksum=src.checksum())
    assert fconf.file_equals(_where(server, name), src.data)


def test_checksum_mismatch_leaves_nothing(server, conf, tmp_path):
    src = fconf.make_data_file(tmp_path, 'src.bin', 3 * MiB)
    name = _name('bad')
    wrong = 'sha256:' + '0' * 64
    with transfer_mod.Transfer(conf(), drivers=['ftp']) as t:
        with pytest.raises(exceptions.ChecksumMismatch):
            t.upload(src.path, _url(server, name), checksum=wrong)
    assert not os.path.exists(_where(server, name))
    assert not os.path.exists(_where(server, name) + '.part')


def test_replaces_an_existing_object(server, conf, tmp_path):
    name = _name('replace')
    old = fconf.make_data_file(ftpconf.server_dir(server), name, 5000)
    if isinstance(server, ftpservers.Vsftpd):
        server.user.chown(old.path)
    src = fconf.make_data_file(tmp_path, 'src.bin', MiB)
    with transfer_mod.Transfer(conf(), drivers=['ftp']) as t:
        t.upload(src.path, _url(server, name), checksum=src.checksum())
    assert fconf.file_equals(_where(server, name), src.data)


def test_in_place_uploads(vsftpd, conf, tmp_path):
    """stage_uploads = false: STOR into NAME; no ATOMIC_COMMIT."""
    src = fconf.make_data_file(tmp_path, 'src.bin', MiB)
    name = _name('inplace')
    c = conf(oslo_transfer_ftp={'stage_uploads': False})
    with transfer_mod.Transfer(c, drivers=['ftp']) as t:
        drv = t.driver('ftp')
        assert driver_mod.Capability.ATOMIC_COMMIT not in drv.capabilities
        assert driver_mod.Capability.RESUMABLE_WRITE in drv.capabilities
        t.upload(src.path, ftpconf.vsftpd_url(vsftpd, name),
                 checksum=src.checksum())
    assert fconf.file_equals(_where(vsftpd, name), src.data)
    assert not os.path.exists(_where(vsftpd, name) + '.part')
