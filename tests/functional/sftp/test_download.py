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

"""SFTP against OpenSSH: the driver contract, copies through the engine in
both directions, parallel segments, sparse migration copies."""

import itertools
import os

import pytest

from oslo_transfer._drivers.sftp import driver as sftp
from oslo_transfer import driver as driver_mod
from oslo_transfer import locations
from oslo_transfer import opts
from oslo_transfer import testing
from oslo_transfer import transfer as transfer_mod
from tests.functional import conftest as fconf

MiB = 1024 * 1024
_n = itertools.count()


class TestConformance(testing.DriverConformance):
    """The contract, logged in as root with a key."""

    driver_class = sftp.SFTPDriver

    @pytest.fixture(autouse=True)
    def _server(self, sshd, known_hosts, client_key, remote_dir):
        self.server = sshd
        self.directory = remote_dir
        self.conf_overrides = {
            ('oslo_transfer_sftp', 'known_hosts_file'): known_hosts,
            ('oslo_transfer_sftp', 'key_file'): client_key,
            ('oslo_transfer_sftp', 'username'): 'root',
            ('oslo_transfer_sftp', 'allow_agent'): False,
            ('oslo_transfer_sftp', 'look_for_keys'): False,
        }

    def make_object(self, data):
        path = os.path.join(self.directory, 'c-%d.bin' % next(_n))
        with open(path, 'wb') as f:
            f.write(data)
        return self.server.url(path)

    def new_url(self):
        return self.server.url(os.path.join(self.directory,
                                            'n-%d.bin' % next(_n)))

    def read_back(self, url):
        with open(locations.Location(url).parts().path, 'rb') as f:
            return f.read()

    def wrong_credentials(self, url):
        return locations.Location(url, credentials={
            'username': 'conformance-nobody', 'password': 'wrong-password'})


def test_copy_with_checksum(sshd, put, sftp_conf, dest):
    df = put(5 * MiB + 11)
    with transfer_mod.Transfer(sftp_conf(), drivers=['sftp', 'file']) as t:
        res = t.copy(sshd.url(df.path), dest, checksum=df.checksum())
    fconf.assert_only_dest(dest, df.data)
    assert res.driver == 'sftp'
    assert res.digest == df.sha256
    assert res.url == sshd.url(df.path)


def test_parallel_segments(sshd, put, sftp_conf, dest):
    """Ranged segments, each on its own SSH connection."""
    df = put(12 * MiB + 5)
    c = sftp_conf(oslo_transfer={'segment_threshold': MiB,
                                 'segment_size': 2 * MiB, 'segments': 4},
                  oslo_transfer_sftp={'max_segments': 0})
    with transfer_mod.Transfer(c, drivers=['sftp']) as t:
        res = t.copy(sshd.url(df.path), dest, checksum=df.checksum())
        pooled = t.driver('sftp')._pool.idle_count()
    fconf.assert_only_dest(dest, df.data)
    assert res.bytes_transferred == df.size
    assert pooled >= 2


def test_one_connection_by_default(sshd, put, sftp_conf, dest):
    """max_segments=1 (the default) wins over [oslo_transfer] segments."""
    df = put(12 * MiB + 5)
    c = sftp_conf(oslo_transfer={'segment_threshold': MiB,
                                 'segment_size': 2 * MiB, 'segments': 4})
    with transfer_mod.Transfer(c, drivers=['sftp']) as t:
        st = t.driver('sftp').stat(locations.Location(sshd.url(df.path)),
                                   driver_mod.Context(io_timeout=10.0))
        assert st.max_segments == 1
        res = t.copy(sshd.url(df.path), dest, checksum=df.checksum())
        pooled = t.driver('sftp')._pool.idle_count()
    fconf.assert_only_dest(dest, df.data)
    assert res.bytes_transferred == df.size
    assert pooled == 1


@pytest.mark.parametrize('read_ahead', [True, False])
def test_one_stream_reads_ahead_across_pieces(sshd, put, sftp_conf, dest,
                                              monkeypatch, read_ahead):
    """One segment: one open file and one pipeline for the whole stream.

    The engine reads a single stream as one piece; read-ahead keeps the
    pipeline across pieces when there are several (a resume with holes).
    """
    import paramiko

    opened = []
    real_open = paramiko.SFTPClient.open

    def counting_open(self, filename, *args, **kwargs):
        opened.append(filename)
        return real_open(self, filename, *args, **kwargs)

    monkeypatch.setattr(paramiko.SFTPClient, 'open', counting_open)
    df = put(6 * MiB + 3)
    c = sftp_conf(oslo_transfer={'segment_threshold': MiB,
                                 'segment_size': MiB, 'segments': 1},
                  oslo_transfer_sftp={'read_ahead': read_ahead})
    with transfer_mod.Transfer(c, drivers=['sftp']) as t:
        res = t.copy(sshd.url(df.path), dest, checksum=df.checksum())
        drv = t.driver('sftp')
        # The session still serves other requests (the read-ahead past
        # the end of the file is drained first).
        assert drv.stat(locations.Location(sshd.url(df.path)),
                        driver_mod.Context(io_timeout=10.0)).size == df.size
    fconf.assert_only_dest(dest, df.data)
    assert res.bytes_transferred == df.size
    assert len(opened) == 1


def test_migration_copy_is_sparse(sshd, remote_dir, sftp_conf, dest):
    """A mostly empty disk image (Nova cold migration) lands sparse."""
    path = os.path.join(remote_dir, 'disk')
    with open(path, 'wb') as f:
        f.truncate(64 * MiB)
        f.seek(10 * MiB)
        f.write(os.urandom(MiB))
        f.seek(60 * MiB)
        f.write(os.urandom(MiB))
    with open(path, 'rb') as f:
        data = f.read()
    c = sftp_conf(oslo_transfer={'segments': 1})
    import hashlib
    with transfer_mod.Transfer(c, drivers=['sftp']) as t:
        t.copy(sshd.url(path), dest,
               checksum='sha256:' + hashlib.sha256(data).hexdigest())
    assert fconf.file_equals(dest, data)
    assert os.stat(dest).st_blocks * 512 < 8 * MiB


def test_upload_migration_direction(sshd, remote_dir, sftp_conf, tmp_path):
    """copy(local, sftp://...) with a checksum: staged, then renamed."""
    src = fconf.make_data_file(tmp_path, 'disk', 7 * MiB + 1)
    target = os.path.join(remote_dir, 'uploaded')
    with transfer_mod.Transfer(sftp_conf(), drivers=['sftp', 'file']) as t:
        res = t.copy(src.path, sshd.url(target), checksum=src.checksum())
    assert fconf.file_equals(target, src.data)
    assert not os.path.exists(target + '.part')
    assert res.driver == 'sftp'
    assert res.digest == src.sha256


def test_user_from_url_and_key_from_location(sshd, put, sftp_conf, dest,
                                             client_key):
    # No username/key in config: the URL names the user, the Location's
    # credentials carry the key file.
    df = put(MiB)
    c = sftp_conf(oslo_transfer_sftp={'username': '', 'key_file': ''})
    loc = locations.Location(sshd.url(df.path, user='root'),
                             credentials={'key_file': client_key})
    with transfer_mod.Transfer(c, drivers=['sftp']) as t:
        t.copy(loc, dest, checksum=df.checksum())
    fconf.assert_only_dest(dest, df.data)


def test_home_relative_path(sshd, ssh_user, sftp_conf, dest):
    """sftp://user@host/~/name is relative to the login folder."""
    df = fconf.make_data_file(ssh_user.home, 'in-home.bin', 100000)
    ssh_user.chown(df.path)
    c = sftp_conf(oslo_transfer_sftp={'username': ssh_user.name})
    with transfer_mod.Transfer(c, drivers=['sftp']) as t:
        t.copy(sshd.url('/~/in-home.bin'), dest, checksum=df.checksum())
    fconf.assert_only_dest(dest, df.data)


def test_ranges_and_pool_reuse(sshd, put, sftp_conf):
    df = put(3 * MiB)
    conf = sftp_conf()
    opts.register_opts(conf, [sftp.SFTPDriver])
    drv = sftp.SFTPDriver(conf)
    ctx = driver_mod.Context(io_timeout=10)
    loc = locations.Location(sshd.url(df.path))
    for off, n in ((0, 1), (77, 300000), (MiB, None), (3 * MiB - 1, 1)):
        got = b''.join(drv.read(loc, off, n, ctx))
        assert got == (df.data[off:] if n is None else df.data[off:off + n])
        assert drv._pool.idle_count() == 1
    drv.close()


def test_a_background_read_asks_for_at_most_its_receive_buffer(
        sshd, put, sftp_conf, monkeypatch):
    """SFTP's receive buffer: READ bytes requested and not yet answered.

    A background read (256 KiB) with 64 KiB requests keeps at most four
    in flight; a normal read keeps requests_in_flight.
    """
    from oslo_transfer._drivers.sftp import pipeline
    from oslo_transfer.engine import throttle

    df = put(3 * MiB)
    conf = sftp_conf(oslo_transfer_sftp={'request_size': 64 * 1024,
                                         'requests_in_flight': 16})
    opts.register_opts(conf, [sftp.SFTPDriver])
    drv = sftp.SFTPDriver(conf)
    loc = locations.Location(sshd.url(df.path))
    sched = throttle.Scheduler()
    most = []
    send = pipeline._Channel.send

    def counting_send(self, *args, **kwargs):
        send(self, *args, **kwargs)
        most[-1] = max(most[-1], len(self.pending))

    monkeypatch.setattr(pipeline._Channel, 'send', counting_send)
    for cls in (throttle.BACKGROUND, throttle.NORMAL):
        most.append(0)
        ctx = driver_mod.Context(io_timeout=10.0, scheduler=sched,
                                 priority=cls)
        assert b''.join(drv.read(loc, 0, None, ctx)) == df.data
    assert most == [4, 16]
    drv.close()
