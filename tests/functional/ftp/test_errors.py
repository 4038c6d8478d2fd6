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

"""What a user sees when an FTP transfer fails: the exception class, a
readable message with the password masked, and what is left on disk."""

import errno
import logging
import os

import pytest

from oslo_transfer import exceptions
from oslo_transfer import transfer as transfer_mod
from tests.functional import conftest as fconf
from tests.functional.ftp import conftest as ftpconf
from tests.functional.ftp import ftpservers
from tests.functional import servers

MiB = 1024 * 1024


@pytest.fixture(params=['vsftpd', 'serve'])
def server(request):
    return request.getfixturevalue(
        'vsftpd' if request.param == 'vsftpd' else 'serve_ftp')


def _url(server, name, password=None):
    if isinstance(server, ftpservers.Vsftpd):
        return ftpconf.vsftpd_url(server, name, password=password)
    url = server.url(name)
    if password is not None:
        url = url.replace(':%s@' % server.password, ':%s@' % password)
    return url


def _password(server):
    if isinstance(server, ftpservers.Vsftpd):
        return server.user.password
    return server.password


def _no_secret(text, *secrets):
    for s in secrets:
        assert s not in text, 'a secret leaked: %r' % text


def test_wrong_password(server, put, conf, dest, caplog):
    caplog.set_level(logging.DEBUG)
    df = put(server, 4096)
    wrong = 'Wr0ng-Secret-%d' % os.getpid()
    with transfer_mod.Transfer(conf(), drivers=['ftp']) as t:
        with pytest.raises(exceptions.AuthenticationFailed) as ei:
            t.copy(_url(server, df.name, password=wrong), dest)
    msg = str(ei.value)
    assert 'refused the login' in msg and '530' in msg
    assert ':***@127.0.0.1' in msg
    assert ei.value.retryable is False
    _no_secret(msg, wrong)
    _no_secret(caplog.text, wrong)
    fconf.assert_nothing_left(dest)


def test_missing_file(server, conf, dest, caplog):
    caplog.set_level(logging.DEBUG)
    with transfer_mod.Transfer(conf(), drivers=['ftp']) as t:
        with pytest.raises(exceptions.SourceNotFound) as ei:
            t.copy(_url(server, 'no-such-object.bin'), dest)
    msg = str(ei.value)
    assert 'no-such-object.bin' in msg and 'does not exist' in msg
    _no_secret(msg, _password(server))
    _no_secret(caplog.text, _password(server))
    fconf.assert_nothing_left(dest)


def test_permission_denied_download(vsftpd, conf, dest):
    # A file the user may not read: 550 on RETR, told apart from a
    # missing file by listing it.
    path = os.path.join(vsftpd.user.home, 'root-only-%d.bin' % os.getpid())
    with open(path, 'wb') as f:
        f.write(os.urandom(10000))
    os.chmod(path, 0o600)                  # owned by root
    url = ftpconf.vsftpd_url(vsftpd, os.path.basename(path))
    with transfer_mod.Transfer(conf(), drivers=['ftp']) as t:
        with pytest.raises(exceptions.PermissionDenied) as ei:
            t.copy(url, dest)
    assert 'permission denied' in str(ei.value)
    _no_secret(str(ei.value), vsftpd.user.password)
    fconf.assert_nothing_left(dest)


def test_permission_denied_upload(vsftpd, conf, tmp_path):
    """STOR into a folder the user may not write."""
    locked = os.path.join(vsftpd.user.home, 'locked-%d' % os.getpid())
    os.mkdir(locked)                      # root-owned, 0755
    src = fconf.make_data_file(tmp_path, 'up.bin', 100000)
    url = ftpconf.vsftpd_url(vsftpd, os.path.basename(locked) + '/x.bin')
    with transfer_mod.Transfer(conf(), drivers=['ftp']) as t:
        with pytest.raises(exceptions.PermissionDenied) as ei:
            t.upload(src.path, url)
    _no_secret(str(ei.value), vsftpd.user.password)
    assert os.listdir(locked) == []


def test_connection_refused(conf, dest, caplog):
    caplog.set_level(logging.DEBUG)
    port = servers.free_port()
    url = 'ftp://user:Pa55-refused@127.0.0.1:%d/x.bin' % port
    with transfer_mod.Transfer(conf(oslo_transfer={'retries': 1}),
                               drivers=['ftp']) as t:
        with pytest.raises(exceptions.ConnectionFailed) as ei:
            t.copy(url, dest)
    assert ei.value.retryable
    assert 'user:***@127.0.0.1:%d' % port in str(ei.value)
    _no_secret(str(ei.value), 'Pa55-refused')
    _no_secret(caplog.text, 'Pa55-refused')
    fconf.assert_nothing_left(dest)


def test_server_disk_full_on_upload(vsftpd, tmpfs, conf, tmp_path):
    # vsftpd writes into an 8 MiB tmpfs: the upload fails with
    # DestinationError and no object (staged or final) stays behind.
    small = tmpfs('8m', os.path.join(vsftpd.user.home,
                                     'full-%d' % os.getpid()))
    vsftpd.user.chown(small)
    src = fconf.make_data_file(tmp_path, 'big.bin', 16 * MiB)
    url = ftpconf.vsftpd_url(vsftpd, os.path.basename(small) + '/big.bin')
    with transfer_mod.Transfer(conf(), drivers=['ftp']) as t:
        with pytest.raises(exceptions.DestinationError) as ei:
            t.upload(src.path, url, checksum=src.checksum())
    assert 'big.bin' in str(ei.value)
    assert 'disk full' in str(ei.value)
    _no_secret(str(ei.value), vsftpd.user.password)
    assert os.listdir(small) == [], 'the aborted upload stayed'


def test_serve_disk_full_on_upload(tmp_path, tmpfs, conf):
    """The same with pyftpdlib (serve --writable) on a full disk."""
    small = tmpfs('8m')
    srv = ftpservers.ServeFTP(tmp_path / 'serve', small, user='peer',
                              password='Full-s3cret', writable=True).start()
    src = fconf.make_data_file(tmp_path, 'big.bin', 16 * MiB)
    try:
        with transfer_mod.Transfer(conf(), drivers=['ftp']) as t:
            with pytest.raises(exceptions.DestinationError) as ei:
                t.upload(src.path, srv.url('big.bin'),
                         checksum=src.checksum())
    finally:
        srv.stop()
    assert 'big.bin' in str(ei.value)
    _no_secret(str(ei.value), 'Full-s3cret')
    assert os.listdir(small) == [], 'the aborted upload stayed'


def _record(monkeypatch, module, name):
    """Wrap ``module.name`` (a factory) so that what it makes is listed."""
    made = []
    real = getattr(module, name)

    def make(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(module, name, make)
    return made


def _full_small_disk(vsftpd, put, small_ext4, conf, **options):
    """Download 24 MiB into a 16 MiB ext4: the DestinationError raised.

    Also checks what every disk-full download must leave: a readable
    message without the password, no DEST, and a ``.part`` (if any) that
    holds only a prefix of the source.
    """
    df = put(vsftpd, 24 * MiB)
    small = small_ext4('16m')
    dest = os.path.join(small, 'image.raw')
    with transfer_mod.Transfer(conf(oslo_transfer=options),
                               drivers=['ftp']) as t:
        with pytest.raises(exceptions.DestinationError) as ei:
            t.copy(_url(vsftpd, df.name), dest, checksum=df.checksum())
    assert 'no space left on the device of %s.part' % dest in str(ei.value)
    _no_secret(str(ei.value), _password(vsftpd))
    assert not os.path.exists(dest)
    if os.path.exists(dest + '.part'):
        with open(dest + '.part', 'rb') as f:
            kept = f.read().rstrip(b'\0')
        assert df.data.startswith(kept)
    return ei.value


def test_local_disk_full_on_a_direct_io_download(vsftpd, put, small_ext4,
                                                 conf, monkeypatch):
    # A 16 MiB ext4 (a local disk: the stream is written with O_DIRECT by
    # the engine's writer thread): the writer's ENOSPC reaches the caller
    # as DestinationError; no DEST, and the .part holds only what fitted.
    from oslo_transfer.engine import writers
    made = _record(monkeypatch, writers, 'open_direct')
    _full_small_disk(vsftpd, put, small_ext4, conf)
    # it was the O_DIRECT writer that ran out of space
    assert made and made[0] is not None
    assert made[0].direct_bytes > 0 and made[0].error is not None


def test_local_disk_full_on_a_queued_download(vsftpd, put, small_ext4,
                                              conf, monkeypatch):
    # fsync=false: the stream is written through the page cache by the
    # engine's writer thread; its ENOSPC reaches the caller the same way.
    from oslo_transfer.engine import writers
    made = _record(monkeypatch, writers, 'QueuedWriter')
    _full_small_disk(vsftpd, put, small_ext4, conf, fsync=False)
    assert made and made[0].error is not None
    assert made[0].error.errno == errno.ENOSPC
    assert made[0].buffered_bytes > 0


def test_local_disk_full_on_download(server, put, tmpfs, conf):
    # The local destination is an 8 MiB tmpfs: DestinationError; nothing
    # complete-looking is left, and no DEST appears.
    df = put(server, 16 * MiB)
    small = tmpfs('8m')
    dest = os.path.join(small, 'image.raw')
    with transfer_mod.Transfer(conf(), drivers=['ftp']) as t:
        with pytest.raises(exceptions.DestinationError) as ei:
            t.copy(_url(server, df.name), dest, checksum=df.checksum())
    assert 'space' in str(ei.value).lower()
    _no_secret(str(ei.value), _password(server))
    assert not os.path.exists(dest)
