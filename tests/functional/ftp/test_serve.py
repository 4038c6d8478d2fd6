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

"""``oslo-transfer serve --ftp DIR``: read-only by default, its own
address, credentials, clean shutdown."""

import ftplib
import io
import os
import signal
import subprocess
import sys

import pytest

from oslo_transfer._drivers.ftp import driver as ftp
from oslo_transfer import driver as driver_mod
from oslo_transfer import exceptions
from oslo_transfer import locations
from oslo_transfer import testing
from oslo_transfer import transfer as transfer_mod
from tests.functional import conftest as fconf
from tests.functional.ftp import ftpservers
from tests.functional import servers

MiB = 1024 * 1024


def _driver():
    return ftp.FTPDriver(testing.make_conf(drivers=[ftp.FTPDriver]))


@pytest.fixture
def shared(tmp_path):
    d = tmp_path / 'shared'
    d.mkdir()
    return d


def _start(tmp_path, directory, **kwargs):
    return ftpservers.ServeFTP(tmp_path / 'serve', directory,
                               **kwargs).start()


def _stor(port, name, user='anonymous', password='anonymous@'):
    raw = ftplib.FTP()
    raw.connect(ftpservers.LOOPBACK, port, timeout=5)
    try:
        raw.login(user, password)
        raw.storbinary('STOR ' + name, io.BytesIO(b'intruder'))
    finally:
        raw.close()


def test_anonymous_read_only(tmp_path, shared, conf):
    df = fconf.make_data_file(shared, 'image.raw', 3 * MiB)
    srv = _start(tmp_path, shared)
    try:
        dest = str(tmp_path / 'copy.raw')
        with transfer_mod.Transfer(conf(), drivers=['ftp']) as t:
            res = t.copy(srv.url('image.raw'), dest, checksum=df.checksum())
        assert fconf.file_equals(dest, df.data)
        assert res.driver == 'ftp'
        # STOR is refused, by a bare client and by the driver.
        with pytest.raises(ftplib.error_perm) as ei:
            _stor(srv.port, 'evil.bin')
        assert ei.value.args[0].startswith('550')
        drv = _driver()
        with pytest.raises(exceptions.PermissionDenied):
            drv.write(locations.Location(srv.url('evil2.bin')),
                      iter([b'x' * 1000]), driver_mod.Context(io_timeout=5))
        with pytest.raises(ftplib.error_perm):
            raw = ftplib.FTP()
            raw.connect(ftpservers.LOOPBACK, srv.port, timeout=5)
            raw.login()
            try:
                raw.delete('image.raw')
            finally:
                raw.close()
    finally:
        srv.stop()
    assert sorted(os.listdir(shared)) == ['image.raw']


def test_user_read_only_without_writable(tmp_path, shared):
    fconf.make_data_file(shared, 'a.bin', 1000)
    srv = _start(tmp_path, shared, user='peer', password='R3ad-only')
    try:
        with pytest.raises(ftplib.error_perm):
            _stor(srv.port, 'b.bin', 'peer', 'R3ad-only')
        with pytest.raises(ftplib.error_perm) as ei:
            _stor(srv.port, 'c.bin')          # anonymous is not allowed
        assert ei.value.args[0].startswith('530')
    finally:
        srv.stop()
    assert os.listdir(shared) == ['a.bin']


def test_writable_user(tmp_path, shared, conf):
    src = fconf.make_data_file(tmp_path, 'up.bin', 2 * MiB)
    srv = _start(tmp_path, shared, user='peer', password='Wr1te-ok',
                 writable=True)
    try:
        with transfer_mod.Transfer(conf(), drivers=['ftp']) as t:
            t.upload(src.path, srv.url('up.bin'), checksum=src.checksum())
        with pytest.raises(ftplib.error_perm):
            _stor(srv.port, 'anon.bin')       # anonymous still cannot
    finally:
        srv.stop()
    assert os.listdir(shared) == ['up.bin']
    assert fconf.file_equals(os.path.join(shared, 'up.bin'), src.data)


def _run_serve(args, env=None, timeout=20):
    return subprocess.run([sys.executable, '-m', 'oslo_transfer.cmd.main',
                           'serve'] + args, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_writable_needs_a_user(shared):
    port = servers.free_port()
    res = _run_serve(['--ftp', str(shared), '--writable', '--bind',
                      '127.0.0.1:%d' % port])
    assert res.returncode == 2
    assert '--writable needs --user' in res.stderr
    assert not servers.port_open('127.0.0.1', port)


def test_user_needs_a_password(shared):
    env = dict(os.environ)
    env.pop('OSLO_TRANSFER_FTP_PASSWORD', None)
    res = _run_serve(['--ftp', str(shared), '--user', 'x', '--bind',
                      '127.0.0.1:0'], env=env)
    assert res.returncode == 2
    assert 'needs a password' in res.stderr


def test_bad_bind_is_a_usage_error(shared):
    res = _run_serve(['--ftp', str(shared), '--bind', 'nonsense'])
    assert res.returncode == 2
    assert 'HOST:PORT' in res.stderr


def test_binds_only_the_named_address(tmp_path, shared):
    # Port 0 picks a free port, printed on start; only 127.0.0.1
    # answers (not 127.0.0.2).
    proc = subprocess.Popen(
        [sys.executable, '-m', 'oslo_transfer.cmd.main', 'serve', '--ftp',
         str(shared), '--bind', '127.0.0.1:0'], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert 'read-only, anonymous' in line, line
        port = int(line.split('ftp://127.0.0.1:')[1].split('/')[0])
        servers.wait_for_port('127.0.0.1', port)
        assert not servers.port_open('127.0.0.2', port)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err


def test_sigterm_closes_connections_and_exits_0(tmp_path, shared):
    fconf.make_data_file(shared, 'big.bin', 8 * MiB)
    srv = _start(tmp_path, shared)
    raw = ftplib.FTP()
    raw.connect(ftpservers.LOOPBACK, srv.port, timeout=5)
    raw.login()
    conn = raw.transfercmd('RETR big.bin')
    conn.recv(1000)                       # a transfer in progress
    srv.proc.signal(signal.SIGTERM)
    assert srv.proc.popen.wait(15) == 0
    servers.wait_for_port_closed(ftpservers.LOOPBACK, srv.port)
    # Both of the client's connections were closed by the server.
    conn.settimeout(5)
    while conn.recv(1 << 20):
        pass
    raw.sock.settimeout(5)
    with pytest.raises((EOFError, OSError, ftplib.Error)):
        raw.voidresp()
        raw.voidcmd('NOOP')
    conn.close()
    raw.close()
    assert 'stopped' in srv.log_tail()
