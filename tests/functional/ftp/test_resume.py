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

"""FTP servers killed in the middle of a transfer, in both directions, and
fallback to another location that keeps the verified bytes."""

import io
import os
import signal
import threading
import time

import pytest

from oslo_transfer._drivers.ftp import driver as ftp
from oslo_transfer import driver as driver_mod
from oslo_transfer import exceptions
from oslo_transfer import locations
from oslo_transfer import testing
from oslo_transfer import transfer as transfer_mod
from tests.functional import conftest as fconf
from tests.functional.ftp import conftest as ftpconf
from tests.functional.ftp import ftpservers
from tests.functional import servers

MiB = 1024 * 1024


def _ctx():
    return driver_mod.Context(io_timeout=10.0)


def _driver():
    return ftp.FTPDriver(testing.make_conf(drivers=[ftp.FTPDriver]))


@pytest.fixture(params=['vsftpd', 'serve'])
def own(request):
    """A server of each kind that the test may kill and restart."""
    return request.getfixturevalue(
        'own_vsftpd' if request.param == 'vsftpd' else 'own_serve')


def _url(server, name):
    if isinstance(server, ftpservers.Vsftpd):
        return ftpconf.vsftpd_url(server, name)
    return server.url(name)


def _where(server, name):
    return os.path.join(ftpconf.server_dir(server), name)


def test_read_resumes_after_kill(own, put):
    # Kill the server while a read is half consumed; the read fails with a
    # retryable error; after a restart a read from the offset completes.
    df = put(own, 32 * MiB)
    drv = _driver()
    loc = locations.Location(_url(own, df.name))
    got = bytearray()
    reader = drv.read(loc, 0, None, _ctx())
    with pytest.raises(exceptions.ConnectionFailed) as ei:
        for chunk in reader:
            before = len(got)
            got += chunk
            if before < 4 * MiB <= len(got):
                own.kill()
    assert ei.value.retryable
    assert 0 < len(got) < df.size
    assert bytes(got) == df.data[:len(got)]
    own.start()
    rest = b''.join(drv.read(loc, len(got), None, _ctx()))
    assert bytes(got) + rest == df.data
    drv.close()


def _wait_written(path, nbytes, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.stat(path).st_blocks * 512 >= nbytes:
                return True
        except FileNotFoundError:
            pass
        time.sleep(0.02)
    return False


def test_copy_resumes_after_kill(own, put, conf, dest):
    # Through the engine: a copy interrupted by a server crash leaves
    # resumable state; the next run continues from it.
    df = put(own, 32 * MiB)
    url = _url(own, df.name)
    c = conf(oslo_transfer={'retries': 0})

    def killer():
        if _wait_written(fconf.part_path(dest), 6 * MiB):
            own.kill()

    t = threading.Thread(target=killer)
    t.start()
    with transfer_mod.Transfer(c, drivers=['ftp']) as tr:
        with pytest.raises(exceptions.ConnectionFailed):
            tr.copy(url, dest, checksum=df.checksum(), rate=16 * MiB)
    t.join()
    fconf.assert_resumable(dest, df.size)
    held = fconf.correct_bytes(fconf.part_path(dest), df.data)
    assert held >= 4 * MiB

    own.start()
    with transfer_mod.Transfer(c, drivers=['ftp']) as tr:
        res = tr.copy(url, dest, checksum=df.checksum())
    fconf.assert_only_dest(dest, df.data)
    assert res.bytes_resumed > 0
    assert res.bytes_transferred <= df.size - res.bytes_resumed + MiB


def test_write_resumes_after_kill(own, tmp_path):
    # Kill the server in the middle of a STOR; after a restart the upload
    # continues at the server's size and the object appears on commit.
    src = fconf.make_data_file(tmp_path, 'src.bin', 24 * MiB)
    name = 'up-%d.bin' % os.getpid()
    loc = locations.Location(_url(own, name))
    drv = _driver()

    def chunks(start, kill_at=None):
        for pos in range(start, src.size, MiB):
            if kill_at is not None and pos >= kill_at:
                own.kill()
                kill_at = None
            yield src.data[pos:pos + MiB]

    with pytest.raises(exceptions.ConnectionFailed) as ei:
        drv.write(loc, chunks(0, kill_at=8 * MiB), _ctx(), size=src.size)
    assert ei.value.retryable
    # Staged: only NAME.part exists, never a partial NAME.
    assert not os.path.exists(_where(own, name))
    assert os.path.exists(_where(own, name) + '.part')

    own.start()
    offset = drv.written_size(loc, _ctx())
    assert 0 < offset <= 8 * MiB
    writer = drv.write(loc, chunks(offset), _ctx(), offset=offset,
                       size=src.size)
    assert writer.bytes_written == src.size - offset
    assert not os.path.exists(_where(own, name))
    writer.commit()
    assert fconf.file_equals(_where(own, name), src.data)
    assert not os.path.exists(_where(own, name) + '.part')
    drv.close()


class _CrashingFile(io.FileIO):
    # A local file that kills and restarts the server once, when the
    # upload has read ``at`` bytes of it.

    def __init__(self, path, server, at, restart=True):
        super().__init__(path, 'rb')
        self.server = server
        self.at = at
        self.restart = restart

    def read(self, n=-1):
        if self.at is not None and self.tell() >= self.at:
            self.at = None
            if self.restart:
                self.server.restart()
            else:
                self.server.kill()
        return super().read(n)


def test_upload_resumes_through_engine(own, conf, tmp_path):
    """Transfer.upload retries after the crash and sends only the rest."""
    src = fconf.make_data_file(tmp_path, 'src.bin', 24 * MiB)
    name = 'eng-%d.bin' % os.getpid()
    c = conf(oslo_transfer={'retries': 4})
    with _CrashingFile(src.path, own, 10 * MiB) as data:
        with transfer_mod.Transfer(c, drivers=['ftp']) as tr:
            res = tr.upload(data, _url(own, name), checksum=src.checksum())
    assert fconf.file_equals(_where(own, name), src.data)
    assert not os.path.exists(_where(own, name) + '.part')
    assert res.bytes_resumed > 0
    assert res.bytes_resumed + res.bytes_transferred == src.size
    assert res.digest == src.sha256


def test_fallback_to_next_location(vsftpd, serve_ftp, put, conf, dest):
    """A Source whose first FTP location is down falls back to the second."""
    df = put(serve_ftp, 3 * MiB)
    dead = 'ftp://nobody:Dead-s3cret@127.0.0.1:%d/%s' % (servers.free_port(),
                                                         df.name)
    source = locations.Source(urls=[dead, serve_ftp.url(df.name)],
                              checksum=df.checksum())
    with transfer_mod.Transfer(conf(oslo_transfer={'retries': 0}),
                               drivers=['ftp']) as t:
        res = t.copy(source, dest)
    fconf.assert_only_dest(dest, df.data)
    assert res.driver == 'ftp'
    assert res.url == locations.mask_url(serve_ftp.url(df.name))
    assert [a[0] for a in res.attempts] == [locations.mask_url(dead)]
    assert 'Dead-s3cret' not in repr(res.attempts)


def test_fallback_keeps_verified_bytes(own_serve, vsftpd, put, conf, dest):
    # The first server dies in the middle; the second location serves
    # the same bytes (size and checksum known), so the bytes already held are
    # kept instead of being fetched again.
    df = put(own_serve, 32 * MiB)
    mirror = os.path.join(vsftpd.user.home, df.name)
    with open(mirror, 'wb') as f:
        f.write(df.data)
    vsftpd.user.chown(mirror)
    source = locations.Source(
        urls=[own_serve.url(df.name), ftpconf.vsftpd_url(vsftpd, df.name)],
        size=df.size, checksum=df.checksum())

    def killer():
        if _wait_written(fconf.part_path(dest), 6 * MiB):
            own_serve.kill()

    t = threading.Thread(target=killer)
    t.start()
    with transfer_mod.Transfer(conf(oslo_transfer={'retries': 0}),
                               drivers=['ftp']) as tr:
        res = tr.copy(source, dest, rate=16 * MiB)
    t.join()
    fconf.assert_only_dest(dest, df.data)
    assert res.url == locations.mask_url(ftpconf.vsftpd_url(vsftpd,
                                                            df.name))
    assert res.bytes_resumed >= 4 * MiB
    assert len(res.attempts) == 1


def _freeze(server):
    """SIGSTOP the server and its sessions: it hangs without closing."""
    pids = [server.proc.pid] + ftpservers.descendants(server.proc.pid)
    for p in pids:
        os.kill(p, signal.SIGSTOP)
    return pids


def _thaw(pids):
    for p in pids:
        try:
            os.kill(p, signal.SIGCONT)
        except ProcessLookupError:
            pass


def test_hung_server_times_out(own_serve, put):
    df = put(own_serve, 32 * MiB)
    drv = _driver()
    reader = drv.read(locations.Location(_url(own_serve, df.name)), 0, None,
                      driver_mod.Context(io_timeout=1.0))
    next(reader)
    frozen = _freeze(own_serve)
    try:
        with pytest.raises(exceptions.TransferTimeout) as ei:
            for _chunk in reader:
                pass
    finally:
        _thaw(frozen)
    assert ei.value.retryable
    assert 'timed out' in str(ei.value)


def test_cancel_interrupts_a_blocked_read(own_serve, put):
    """With a long I/O timeout, cancel() still ends the blocked read."""
    df = put(own_serve, 32 * MiB)
    drv = _driver()
    ctx = driver_mod.Context(io_timeout=120.0)
    reader = drv.read(locations.Location(_url(own_serve, df.name)), 0, None,
                      ctx)
    next(reader)
    frozen = _freeze(own_serve)
    timer = threading.Timer(0.5, ctx.cancel.cancel)
    timer.start()
    try:
        with pytest.raises(exceptions.Cancelled):
            for _chunk in reader:
                pass
    finally:
        timer.cancel()
        _thaw(frozen)


def test_upload_resumes_in_a_later_call(own, conf, tmp_path):
    # The first call dies with the server; a later call with the same data
    # and checksum continues at the server's size.
    src = fconf.make_data_file(tmp_path, 'src.bin', 24 * MiB)
    name = 'later-%d.bin' % os.getpid()
    c = conf(oslo_transfer={'retries': 0})
    with _CrashingFile(src.path, own, 10 * MiB, restart=False) as data:
        with transfer_mod.Transfer(c, drivers=['ftp']) as tr:
            with pytest.raises(exceptions.ConnectionFailed):
                tr.upload(data, _url(own, name), checksum=src.checksum())
    assert not os.path.exists(_where(own, name))
    held = os.path.getsize(_where(own, name) + '.part')
    assert held > 0
    own.start()
    with transfer_mod.Transfer(c, drivers=['ftp']) as tr:
        res = tr.upload(src.path, _url(own, name), checksum=src.checksum())
    assert fconf.file_equals(_where(own, name), src.data)
    assert res.bytes_resumed == held
    assert res.bytes_transferred == src.size - held
