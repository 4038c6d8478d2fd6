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

"""What a user sees when an SFTP transfer fails: host keys, credentials,
permissions, missing files, full disks; messages with secrets masked."""

import logging
import os

import pytest

from oslo_transfer import exceptions
from oslo_transfer import transfer as transfer_mod
from tests.functional import conftest as fconf
from tests.functional import servers
from tests.functional.sftp import sshd as sshd_mod

MiB = 1024 * 1024


def _copy(conf, url, dest, **kwargs):
    with transfer_mod.Transfer(conf, drivers=['sftp']) as t:
        return t.copy(url, dest, **kwargs)


def test_unknown_host_key(sshd, put, sftp_conf, dest, tmp_path):
    """A server whose key is not in known_hosts is refused, with advice."""
    empty = tmp_path / 'known_hosts'
    empty.write_text('')
    df = put(4096)
    c = sftp_conf(oslo_transfer_sftp={'known_hosts_file': str(empty)})
    with pytest.raises(exceptions.AuthenticationFailed) as ei:
        _copy(c, sshd.url(df.path), dest)
    msg = str(ei.value)
    assert 'host key of [127.0.0.1]:%d is unknown' % sshd.port in msg
    assert 'ssh-keyscan -t ssh-ed25519 -p %d 127.0.0.1 >> %s' % (
        sshd.port, empty) in msg
    assert 'SHA256:' in msg
    assert empty.read_text() == '', 'a key was added to known_hosts'
    fconf.assert_nothing_left(dest)


def test_missing_known_hosts_file(sshd, put, sftp_conf, dest, tmp_path):
    df = put(4096)
    c = sftp_conf(oslo_transfer_sftp={
        'known_hosts_file': str(tmp_path / 'absent')})
    with pytest.raises(exceptions.AuthenticationFailed) as ei:
        _copy(c, sshd.url(df.path), dest)
    assert 'is unknown' in str(ei.value)
    assert not (tmp_path / 'absent').exists()


def test_changed_host_key(sshd, put, sftp_conf, dest, tmp_path):
    """known_hosts holds another ed25519 key for the server: CHANGED."""
    other = sshd_mod.keygen(str(tmp_path / 'other_host_key'))
    kh = tmp_path / 'known_hosts'
    kh.write_text('[127.0.0.1]:%d %s\n' % (sshd.port,
                                           ' '.join(other.split()[:2])))
    df = put(4096)
    c = sftp_conf(oslo_transfer_sftp={'known_hosts_file': str(kh)})
    with pytest.raises(exceptions.AuthenticationFailed) as ei:
        _copy(c, sshd.url(df.path), dest)
    msg = str(ei.value)
    assert 'has CHANGED' in msg
    assert 'ssh-keygen -R' in msg
    assert ei.value.retryable is False
    fconf.assert_nothing_left(dest)


def test_changed_host_key_type(sshd, put, sftp_conf, dest, tmp_path):
    """known_hosts holds only an RSA key but the server has none."""
    other = sshd_mod.keygen(str(tmp_path / 'rsa_host_key'), kind='rsa')
    kh = tmp_path / 'known_hosts'
    kh.write_text('[127.0.0.1]:%d %s\n' % (sshd.port,
                                           ' '.join(other.split()[:2])))
    c = sftp_conf(oslo_transfer_sftp={'known_hosts_file': str(kh)})
    with pytest.raises(exceptions.AuthenticationFailed) as ei:
        _copy(c, sshd.url(put(4096).path), dest)
    assert 'CHANGED' in str(ei.value)
    assert 'ssh-rsa' in str(ei.value)


def test_hashed_known_hosts(sshd, put, sftp_conf, dest, tmp_path):
    """A hashed known_hosts (ssh-keygen -H) is understood."""
    kh = tmp_path / 'known_hosts'
    kh.write_text(sshd.known_hosts_line())
    keygen = servers.require_binary('ssh-keygen', 'openssh-client')
    import subprocess
    subprocess.run([keygen, '-H', '-f', str(kh)], check=True,
                   capture_output=True)
    assert '[127.0.0.1]' not in kh.read_text()
    df = put(10000)
    c = sftp_conf(oslo_transfer_sftp={'known_hosts_file': str(kh)})
    _copy(c, sshd.url(df.path), dest, checksum=df.checksum())
    fconf.assert_only_dest(dest, df.data)


def test_wrong_key(sshd, put, sftp_conf, dest, tmp_path):
    stranger = str(tmp_path / 'stranger')
    sshd_mod.keygen(stranger)
    c = sftp_conf(oslo_transfer_sftp={'key_file': stranger})
    with pytest.raises(exceptions.AuthenticationFailed) as ei:
        _copy(c, sshd.url(put(4096).path), dest)
    assert 'refused user root' in str(ei.value)
    assert stranger in str(ei.value)
    fconf.assert_nothing_left(dest)


def test_wrong_password(sshd, ssh_user, sftp_conf, dest, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = 'Wr0ng-ssh-%d' % os.getpid()
    c = sftp_conf(oslo_transfer_sftp={'key_file': ''})
    url = sshd.url('/etc/hostname', user=ssh_user.name, password=wrong)
    with pytest.raises(exceptions.AuthenticationFailed) as ei:
        _copy(c, url, dest)
    msg = str(ei.value)
    assert 'tried: password' in msg
    assert '%s:***@' % ssh_user.name in msg
    assert wrong not in msg
    assert wrong not in caplog.text
    fconf.assert_nothing_left(dest)


def test_password_login(sshd, ssh_user, sftp_conf, dest):
    """The right password (from the URL) works where no key does."""
    df = fconf.make_data_file(ssh_user.home, 'pw.bin', 50000)
    ssh_user.chown(df.path)
    c = sftp_conf(oslo_transfer_sftp={'key_file': ''})
    url = sshd.url(df.path, user=ssh_user.name, password=ssh_user.password)
    res = _copy(c, url, dest, checksum=df.checksum())
    fconf.assert_only_dest(dest, df.data)
    assert ssh_user.password not in res.url


def test_missing_file(sshd, remote_dir, sftp_conf, dest):
    url = sshd.url(os.path.join(remote_dir, 'no-such-disk'))
    with pytest.raises(exceptions.SourceNotFound) as ei:
        _copy(sftp_conf(), url, dest)
    assert 'no-such-disk does not exist' in str(ei.value)
    fconf.assert_nothing_left(dest)


def test_permission_denied_download(sshd, ssh_user, put, sftp_conf, dest):
    df = put(4096)                     # root-owned, 0644 ...
    os.chmod(df.path, 0o600)           # ... now root only
    os.chmod(os.path.dirname(df.path), 0o755)
    os.chmod(os.path.dirname(os.path.dirname(df.path)), 0o755)
    c = sftp_conf(oslo_transfer_sftp={'username': ssh_user.name})
    with pytest.raises(exceptions.PermissionDenied) as ei:
        _copy(c, sshd.url(df.path), dest)
    assert 'permission denied' in str(ei.value)
    fconf.assert_nothing_left(dest)


def test_permission_denied_upload(sshd, ssh_user, sftp_conf, tmp_path):
    locked = os.path.join(ssh_user.home, 'locked-%d' % os.getpid())
    os.mkdir(locked)                  # root-owned 0755
    src = fconf.make_data_file(tmp_path, 'src.bin', 100000)
    c = sftp_conf(oslo_transfer_sftp={'username': ssh_user.name})
    with transfer_mod.Transfer(c, drivers=['sftp']) as t:
        with pytest.raises(exceptions.PermissionDenied):
            t.upload(src.path, sshd.url(os.path.join(locked, 'x')))
    assert os.listdir(locked) == []


def test_connection_refused(sftp_conf, dest):
    port = servers.free_port()
    url = 'sftp://root:Refused-pw@127.0.0.1:%d/x' % port
    with pytest.raises(exceptions.ConnectionFailed) as ei:
        _copy(sftp_conf(oslo_transfer={'retries': 1}), url, dest)
    assert 'root:***@' in str(ei.value)
    assert 'Refused-pw' not in str(ei.value)
    fconf.assert_nothing_left(dest)


def test_server_disk_full_on_upload(sshd, tmpfs, sftp_conf, tmp_path):
    """sshd writes into an 8 MiB tmpfs: DestinationError, nothing left."""
    small = tmpfs('8m')
    src = fconf.make_data_file(tmp_path, 'src.bin', 16 * MiB)
    with transfer_mod.Transfer(sftp_conf(), drivers=['sftp']) as t:
        with pytest.raises(exceptions.DestinationError) as ei:
            t.upload(src.path, sshd.url(os.path.join(small, 'disk')),
                     checksum=src.checksum())
    assert 'disk full' in str(ei.value)
    assert os.listdir(small) == [], 'the aborted upload stayed'


def test_local_disk_full_on_download(sshd, put, tmpfs, sftp_conf):
    df = put(16 * MiB)
    dest = os.path.join(tmpfs('8m'), 'disk')
    with pytest.raises(exceptions.DestinationError) as ei:
        _copy(sftp_conf(), sshd.url(df.path), dest, checksum=df.checksum())
    assert 'space' in str(ei.value).lower()
    assert not os.path.exists(dest)
