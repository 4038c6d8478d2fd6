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

"""sshd killed in the middle of a transfer, in both directions; fallback
between locations (sftp and ftp) that keeps the verified bytes."""

import io
import os
import signal
import threading
import time

import pytest

from oslo_transfer._drivers.sftp import driver as sftp
from oslo_transfer import driver as driver_mod
from oslo_transfer import exceptions
from oslo_transfer import locations
from oslo_transfer import opts
from oslo_transfer import transfer as transfer_mod
from tests.functional import conftest as fconf
from tests.functional.ftp import ftpservers
from tests.functional import servers

MiB = 1024 * 1024


def _ctx():
    return driver_mod.Context(io_timeout=10.0)


@pytest.fixture
def drv(sftp_conf):
    conf = sftp_conf()
    opts.register_opts(conf, [sftp.SFTPDriver])
    d = sftp.SFTPDriver(conf)
    yield d
    d.close()


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


def test_read_resumes_after_kill(own_sshd, put, drv):
    df = put(32 * MiB)
    loc = locations.Location(own_sshd.url(df.path))
    got = bytearray()
    with pytest.raises(exceptions.ConnectionFailed) as ei:
        for chunk in drv.read(loc, 0, None, _ctx()):
            before = len(got)
            got += chunk
            if before < 4 * MiB <= len(got):
                own_sshd.kill()
    assert ei.value.retryable
    assert 0 < len(got) < df.size
    assert bytes(got) == df.data[:len(got)]
    own_sshd.start()
    rest = b''.join(drv.read(loc, len(got), None, _ctx()))
    assert bytes(got) + rest == df.data


def test_copy_resumes_after_kill(own_sshd, put, sftp_conf, dest):
    df = put(32 * MiB)
    c = sftp_conf(oslo_transfer={'retries': 0})

    def killer():
        if _wait_written(fconf.part_path(dest), 6 * MiB):
            own_sshd.kill()

    t = threading.Thread(target=killer)
    t.start()
    with transfer_mod.Transfer(c, drivers=['sftp']) as tr:
        with pytest.raises(exceptions.ConnectionFailed):
            tr.copy(own_sshd.url(df.path), dest, checksum=df.checksum(),
                    rate=16 * MiB)
    t.join()
    fconf.assert_resumable(dest, df.size)
    assert fconf.correct_bytes(fconf.part_path(dest), df.data) >= 4 * MiB
    own_sshd.start()
    with transfer_mod.Transfer(c, drivers=['sftp']) as tr:
        res = tr.copy(own_sshd.url(df.path), dest, checksum=df.checksum())
    fconf.assert_only_dest(dest, df.data)
    assert res.bytes_resumed > 0


def test_write_resumes_after_kill(own_sshd, remote_dir, drv, tmp_path):
    src = fconf.make_data_file(tmp_path, 'src.bin', 24 * MiB)
    target = os.path.join(remote_dir, 'disk')
    loc = locations.Location(own_sshd.url(target))

    def chunks(start, kill_at=None):
        for pos in range(start, src.size, MiB):
            if kill_at is not None and pos >= kill_at:
                own_sshd.kill()
                kill_at = None
            yield src.data[pos:pos + MiB]

    with pytest.raises(exceptions.ConnectionFailed) as ei:
        drv.write(loc, chunks(0, kill_at=8 * MiB), _ctx(), size=src.size)
    assert ei.value.retryable
    assert not os.path.exists(target)
    assert os.path.exists(target + '.part')
    own_sshd.start()
    offset = drv.written_size(loc, _ctx())
    assert 0 < offset <= 8 * MiB
    writer = drv.write(loc, chunks(offset), _ctx(), offset=offset,
                       size=src.size)
    assert writer.bytes_written == src.size - offset
    writer.commit()
    assert fconf.file_equals(target, src.data)
    assert not os.path.exists(target + '.part')


class _CrashingFile(io.FileIO):
    """Restarts the server (a crash) once the upload has read ``at``."""

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


def test_upload_resumes_through_engine(own_sshd, remote_dir, sftp_conf,
                                       tmp_path):
    src = fconf.make_data_file(tmp_path, 'src.bin', 24 * MiB)
    target = os.path.join(remote_dir, 'uploaded')
    c = sftp_conf(oslo_transfer={'retries': 4})
    with _CrashingFile(src.path, own_sshd, 10 * MiB) as data:
        with transfer_mod.Transfer(c, drivers=['sftp']) as tr:
            res = tr.upload(data, own_sshd.url(target),
                            checksum=src.checksum())
    assert fconf.file_equals(target, src.data)
    assert not os.path.exists(target + '.part')
    assert res.bytes_resumed > 0
    assert res.bytes_resumed + res.bytes_transferred == src.size


def test_fallback_sftp_then_sftp(own_sshd, sshd, put, sftp_conf, dest):
    # The first server dies mid-way; the second location (same size and
    # checksum) continues from the bytes already held.
    df = put(32 * MiB)
    source = locations.Source(urls=[own_sshd.url(df.path),
                                    sshd.url(df.path)],
                              size=df.size, checksum=df.checksum())

    def killer():
        if _wait_written(fconf.part_path(dest), 6 * MiB):
            own_sshd.kill()

    t = threading.Thread(target=killer)
    t.start()
    with transfer_mod.Transfer(sftp_conf(oslo_transfer={'retries': 0}),
                               drivers=['sftp']) as tr:
        res = tr.copy(source, dest, rate=16 * MiB)
    t.join()
    fconf.assert_only_dest(dest, df.data)
    assert res.url == sshd.url(df.path)
    assert res.bytes_resumed >= 4 * MiB


def test_failing_ftp_location_falls_back_to_sftp(sshd, put, sftp_conf,
                                                 dest):
    """Source with a dead ftp:// location first and sftp:// second."""
    df = put(2 * MiB)
    dead = 'ftp://u:Dead-ftp-pw@127.0.0.1:%d/x' % servers.free_port()
    source = locations.Source(urls=[dead, sshd.url(df.path)],
                              checksum=df.checksum())
    with transfer_mod.Transfer(sftp_conf(oslo_transfer={'retries': 0}),
                               drivers=['ftp', 'sftp']) as tr:
        res = tr.copy(source, dest)
    fconf.assert_only_dest(dest, df.data)
    assert res.driver == 'sftp'
    assert res.url == sshd.url(df.path)
    assert 'Dead-ftp-pw' not in repr(res.attempts) + repr(res.plan)


def _freeze(server):
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


def test_hung_server_times_out(own_sshd, put, sftp_conf):
    df = put(32 * MiB)
    conf = sftp_conf()
    opts.register_opts(conf, [sftp.SFTPDriver])
    drv = sftp.SFTPDriver(conf)
    reader = drv.read(locations.Location(own_sshd.url(df.path)), 0, None,
                      driver_mod.Context(io_timeout=1.0))
    next(reader)
    frozen = _freeze(own_sshd)
    try:
        with pytest.raises(exceptions.TransferTimeout) as ei:
            for _chunk in reader:
                pass
    finally:
        _thaw(frozen)
        drv.close()
    assert ei.value.retryable


def test_cancel_interrupts_a_blocked_read(own_sshd, put, drv):
    df = put(32 * MiB)
    ctx = driver_mod.Context(io_timeout=120.0)
    reader = drv.read(locations.Location(own_sshd.url(df.path)), 0, None,
                      ctx)
    next(reader)
    frozen = _freeze(own_sshd)
    timer = threading.Timer(0.5, ctx.cancel.cancel)
    timer.start()
    try:
        with pytest.raises(exceptions.Cancelled):
            for _chunk in reader:
                pass
    finally:
        timer.cancel()
        _thaw(frozen)


def test_upload_resumes_in_a_later_call(own_sshd, remote_dir, sftp_conf,
                                        tmp_path):
    # The first call dies with the server; a later call with the same data
    # and checksum continues at the size of the staged file.
    src = fconf.make_data_file(tmp_path, 'src.bin', 24 * MiB)
    target = os.path.join(remote_dir, 'later')
    c = sftp_conf(oslo_transfer={'retries': 0})
    with _CrashingFile(src.path, own_sshd, 10 * MiB, restart=False) as data:
        with transfer_mod.Transfer(c, drivers=['sftp']) as tr:
            with pytest.raises(exceptions.ConnectionFailed):
                tr.upload(data, own_sshd.url(target),
                          checksum=src.checksum())
    assert not os.path.exists(target)
    held = os.path.getsize(target + '.part')
    assert held > 0
    own_sshd.start()
    with transfer_mod.Transfer(c, drivers=['sftp']) as tr:
        res = tr.upload(src.path, own_sshd.url(target),
                        checksum=src.checksum())
    assert fconf.file_equals(target, src.data)
    assert res.bytes_resumed == held
    assert res.bytes_transferred == src.size - held
