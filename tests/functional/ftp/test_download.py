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

"""FTP downloads against vsftpd and pyftpdlib: the driver contract, copies
through the engine, ranged segments, FTPS and PASV spoofing."""

import ftplib
import itertools
import os
import subprocess

import pytest

from oslo_transfer._drivers.ftp import driver as ftp
from oslo_transfer import driver as driver_mod
from oslo_transfer.engine import throttle
from oslo_transfer import exceptions
from oslo_transfer import locations
from oslo_transfer import testing
from oslo_transfer import transfer as transfer_mod
from tests.functional import conftest as fconf
from tests.functional.ftp import conftest as ftpconf
from tests.functional.ftp import ftpservers

MiB = 1024 * 1024
_n = itertools.count()


def _ctx():
    return driver_mod.Context(io_timeout=10.0)


def _driver(**overrides):
    conf = testing.make_conf({('oslo_transfer_ftp', k): v
                              for k, v in overrides.items()},
                             [ftp.FTPDriver])
    return ftp.FTPDriver(conf)


class _Conformance(testing.DriverConformance):
    driver_class = ftp.FTPDriver

    def make_object(self, data):
        name = 'conf-%d-%d.bin' % (os.getpid(), next(_n))
        path = os.path.join(self.directory, name)
        with open(path, 'wb') as f:
            f.write(data)
        self.fix_owner(path)
        return self.url(name)

    def new_url(self):
        return self.url('new-%d-%d.bin' % (os.getpid(), next(_n)))

    def read_back(self, url):
        name = url.rsplit('/', 1)[1]
        with open(os.path.join(self.directory, name), 'rb') as f:
            return f.read()

    def fix_owner(self, path):
        pass


class TestConformanceVsftpd(_Conformance):
    """The contract against vsftpd, logged in as a local user."""

    @pytest.fixture(autouse=True)
    def _server(self, vsftpd):
        self.server = vsftpd
        self.directory = vsftpd.user.home

    def url(self, name):
        return ftpconf.vsftpd_url(self.server, name)

    def fix_owner(self, path):
        self.server.user.chown(path)

    def wrong_credentials(self, url):
        return locations.Location(ftpconf.vsftpd_url(
            self.server, url.rsplit('/', 1)[1], password='wrong-password'))


class TestConformanceServe(_Conformance):
    """The contract against ``oslo-transfer serve --ftp --writable``."""

    @pytest.fixture(autouse=True)
    def _server(self, serve_ftp):
        self.server = serve_ftp
        self.directory = serve_ftp.directory

    def url(self, name):
        return self.server.url(name)

    def wrong_credentials(self, url):
        return locations.Location(
            self.server.url(url.rsplit('/', 1)[1], with_password=False),
            credentials=(self.server.user, 'wrong-password'))


@pytest.fixture(params=['vsftpd', 'serve'])
def server(request):
    """Each test runs against vsftpd and against pyftpdlib (serve)."""
    return request.getfixturevalue(
        'vsftpd' if request.param == 'vsftpd' else 'serve_ftp')


def _url(server, name):
    if isinstance(server, ftpservers.Vsftpd):
        return ftpconf.vsftpd_url(server, name)
    return server.url(name)


def test_copy_with_checksum(server, put, conf, dest):
    df = put(server, 5 * MiB + 7)
    with transfer_mod.Transfer(conf(), drivers=['ftp', 'file']) as t:
        res = t.copy(_url(server, df.name), dest,
                     checksum=df.checksum('sha256'))
    fconf.assert_only_dest(dest, df.data)
    assert res.driver == 'ftp'
    assert res.digest == df.sha256
    assert res.size == df.size
    assert res.bytes_resumed == 0
    assert 'pw-' not in res.url and 's3cret' not in res.url


def _cached_pages(path):
    """Pages of ``path`` in the page cache (util-linux's fincore)."""
    fincore = fconf.require_binary('fincore', 'util-linux-extra')
    out = subprocess.run([fincore, '--noheadings', '--output', 'PAGES',
                          path], check=True, capture_output=True, text=True)
    return int(out.stdout)


@pytest.mark.parametrize('settings,cached', [
    ({}, False),                                  # default: O_DIRECT
    ({'direct_io': False}, True),
    ({'fsync': False}, True),                     # not durable: the cache
])
def test_durable_stream_bypasses_the_page_cache(server, put, conf, dest,
                                                settings, cached):
    # One stream, fsync on: written with O_DIRECT, so the copy (and its
    # final fdatasync) leave the page cache alone; otherwise it is there.
    df = put(server, 24 * MiB + 1000)
    with transfer_mod.Transfer(conf(oslo_transfer=settings),
                               drivers=['ftp']) as t:
        res = t.copy(_url(server, df.name), dest, checksum=df.checksum())
    pages = _cached_pages(dest)         # (before reading it to compare)
    fconf.assert_only_dest(dest, df.data)
    assert res.digest == df.sha256
    if cached:
        assert pages >= (24 * MiB) // 4096
    else:
        # at most the partial blocks written through the cache
        assert pages <= 4


def test_parallel_segments(server, put, conf, dest):
    # A file above segment_threshold is read as ranged segments, each on
    # its own control connection, once max_segments allows it.
    df = put(server, 9 * MiB + 4321)
    c = conf(oslo_transfer={'segment_threshold': MiB,
                            'segment_size': 2 * MiB, 'segments': 4},
             oslo_transfer_ftp={'max_segments': 4})
    with transfer_mod.Transfer(c, drivers=['ftp']) as t:
        res = t.copy(_url(server, df.name), dest, checksum=df.checksum())
        pooled = t.driver('ftp')._pool.idle_count()
    fconf.assert_only_dest(dest, df.data)
    assert res.bytes_transferred == df.size
    # Several connections were used at once and went back to the pool.
    assert pooled >= 2


def test_one_stream_by_default(server, put, conf, dest):
    """max_segments=1 (the default): one connection, whatever segments."""
    df = put(server, 9 * MiB + 4321)
    c = conf(oslo_transfer={'segment_threshold': MiB,
                            'segment_size': 2 * MiB, 'segments': 4})
    with transfer_mod.Transfer(c, drivers=['ftp']) as t:
        drv = t.driver('ftp')
        assert drv.stat(locations.Location(_url(server, df.name)),
                        _ctx()).max_segments == 1
        res = t.copy(_url(server, df.name), dest, checksum=df.checksum())
        pooled = drv._pool.idle_count()
    fconf.assert_only_dest(dest, df.data)
    assert res.bytes_transferred == df.size
    assert pooled == 1


def test_max_segments_zero_leaves_the_engine_alone(server, put):
    df = put(server, 4096)
    st = _driver(max_segments=0).stat(
        locations.Location(_url(server, df.name)), _ctx())
    assert st.max_segments is None and st.ranges


def test_anonymous_read(vsftpd, put, conf, dest):
    df = put(vsftpd, 2 * MiB, anonymous=True)
    with transfer_mod.Transfer(conf(), drivers=['ftp']) as t:
        res = t.copy(vsftpd.url(df.name), dest, checksum=df.checksum())
    fconf.assert_only_dest(dest, df.data)
    assert res.driver == 'ftp'


def test_config_credentials(vsftpd, put, conf, dest):
    """[oslo_transfer_ftp] username/password when the URL has none."""
    df = put(vsftpd, 1 * MiB)
    c = conf(oslo_transfer_ftp={'username': vsftpd.user.name,
                                'password': vsftpd.user.password})
    with transfer_mod.Transfer(c, drivers=['ftp']) as t:
        t.copy(vsftpd.url(df.name), dest, checksum=df.checksum())
    fconf.assert_only_dest(dest, df.data)


def test_location_credentials_win(vsftpd, put, conf, dest):
    """Location credentials beat a wrong password in the URL."""
    df = put(vsftpd, 1 * MiB)
    loc = locations.Location(
        ftpconf.vsftpd_url(vsftpd, df.name, password='wrong'),
        credentials=(vsftpd.user.name, vsftpd.user.password))
    with transfer_mod.Transfer(conf(), drivers=['ftp']) as t:
        t.copy(loc, dest, checksum=df.checksum())
    fconf.assert_only_dest(dest, df.data)


def test_stat_validator_changes(server, put):
    df = put(server, 4096)
    drv = _driver()
    loc = locations.Location(_url(server, df.name))
    st1 = drv.stat(loc, _ctx())
    assert st1.size == 4096 and st1.ranges
    df.rewrite(os.urandom(4096))          # same size, newer mtime
    st2 = drv.stat(loc, _ctx())
    assert st2.size == 4096
    assert st1.validator != st2.validator


def test_absolute_path(vsftpd, put):
    """ftp://host/%2F... is an absolute path on the server."""
    df = put(vsftpd, 10000)
    url = ftpconf.vsftpd_url(vsftpd, '%2F' + df.path.lstrip('/'))
    got = b''.join(_driver().read(locations.Location(url), 0, None, _ctx()))
    assert got == df.data


def test_ranged_read_keeps_connection_usable(server, put):
    """After a ranged read stops early, the pooled session still works."""
    df = put(server, 3 * MiB)
    drv = _driver()
    loc = locations.Location(_url(server, df.name))
    for off, n in ((0, 100), (MiB, MiB), (5, 3 * MiB - 5)):
        got = b''.join(drv.read(loc, off, n, _ctx()))
        assert got == df.data[off:off + n]
        assert drv._pool.idle_count() == 1
    drv.close()


def test_ftps_download(vsftpd, put, conf, dest):
    """Explicit FTPS (AUTH TLS, PROT P, TLS session reuse on data)."""
    df = put(vsftpd, 3 * MiB)
    c = conf(oslo_transfer_ftp={'ca_file': vsftpd.cert[0]})
    with transfer_mod.Transfer(c, drivers=['ftp']) as t:
        res = t.copy(ftpconf.vsftpd_url(vsftpd, df.name, scheme='ftps'),
                     dest, checksum=df.checksum())
    fconf.assert_only_dest(dest, df.data)
    assert res.url.startswith('ftps://')


def test_ftps_verifies_the_certificate(vsftpd, put, conf, dest):
    """Without the CA, the self-signed certificate is refused."""
    df = put(vsftpd, 4096)
    c = conf(oslo_transfer={'retries': 0})
    url = ftpconf.vsftpd_url(vsftpd, df.name, scheme='ftps')
    with transfer_mod.Transfer(c, drivers=['ftp']) as t:
        with pytest.raises(exceptions.AuthenticationFailed) as ei:
            t.copy(url, dest, checksum=df.checksum())
    assert 'certificate' in str(ei.value)
    assert 'ca_file' in str(ei.value)
    assert vsftpd.user.password not in str(ei.value)
    fconf.assert_nothing_left(dest)


def _announced_address(port):
    """What a server announces in PASV, read with a bare ftplib client."""
    raw = ftplib.FTP()
    raw.connect(ftpservers.LOOPBACK, port, timeout=5)
    raw.login()
    try:
        return ftplib.parse227(raw.sendcmd('PASV'))[0]
    finally:
        raw.close()


def test_pasv_spoofing_pyftpdlib(tmp_path, caplog):
    # The server refuses EPSV and announces 127.0.0.2 in PASV; the driver
    # connects to the control connection's address and succeeds.
    df = fconf.make_data_file(tmp_path / 'spoof', 'f.bin', 2 * MiB)
    with ftpservers.spoofing_pyftpd(tmp_path / 'spoof') as srv:
        # The trap is real: the server does announce another address, and
        # a client that follows it fails.
        assert _announced_address(srv.port) == srv.announced
        trusting = ftplib.FTP()
        trusting.trust_server_pasv_ipv4_address = True
        trusting.connect(ftpservers.LOOPBACK, srv.port, timeout=5)
        trusting.login()
        with pytest.raises(OSError):
            trusting.retrbinary('RETR f.bin', lambda b: None)
        trusting.close()

        caplog.set_level('DEBUG', logger='oslo_transfer')
        got = b''.join(_driver().read(locations.Location(srv.url('f.bin')),
                                      0, None, _ctx()))
    assert got == df.data
    assert 'announced 127.0.0.2' in caplog.text


def test_pasv_spoofing_vsftpd(ftp_base, tmp_path, caplog):
    """vsftpd with EPSV denied and pasv_address=127.0.0.2."""
    root = os.path.join(ftp_base, 'spoof-vsftpd-%d' % next(_n))
    os.makedirs(root)
    anon = os.path.join(root, 'anon')
    os.makedirs(anon)
    df = fconf.make_data_file(anon, 'f.bin', MiB)
    srv = ftpservers.Vsftpd(root, anon, pasv_address='127.0.0.2',
                            deny_epsv=True).start()
    try:
        assert _announced_address(srv.port) == '127.0.0.2'
        caplog.set_level('DEBUG', logger='oslo_transfer')
        drv = _driver()
        loc = locations.Location(srv.url('f.bin'))
        assert drv.stat(loc, _ctx()).size == MiB
        got = b''.join(drv.read(loc, 1000, MiB - 1000, _ctx()))
    finally:
        srv.stop()
    assert got == df.data[1000:]
    assert 'EPSV refused' in caplog.text


def test_a_background_read_has_a_small_receive_buffer(vsftpd, put):
    """The data connection of a background read: 256 KiB SO_RCVBUF."""
    df = put(vsftpd, 3 * MiB)
    drv = _driver()
    loc = locations.Location(_url(vsftpd, df.name))
    sched = throttle.Scheduler()

    def data_connection(cls):
        """The new data connection's (rcvbuf, wscale), mid-read."""
        before = fconf.client_sockets()
        ctx = driver_mod.Context(io_timeout=10.0, scheduler=sched,
                                 priority=cls)
        chunks = drv.read(loc, 0, None, ctx)
        got = [next(chunks)]
        found = [v for (local, peer), v in fconf.client_sockets().items()
                 if peer != vsftpd.port and (local, peer) not in before]
        got.extend(chunks)
        assert b''.join(got) == df.data
        assert len(found) == 1, found
        return found[0]

    rb, wscale = data_connection(throttle.BACKGROUND)
    assert rb == 2 * 256 * 1024
    assert wscale <= 4               # set before connect()
    rb, normal_wscale = data_connection(throttle.NORMAL)
    assert rb != 2 * 256 * 1024      # autotuned
    assert normal_wscale > wscale
