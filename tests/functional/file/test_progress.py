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

"""The progress bar of ``oslo-transfer copy``: on a terminal, not in a pipe.

The command runs in a child process whose standard error is the slave side
of a pseudo-terminal (or a pipe); the test reads what it wrote.
"""

import os
import pty
import subprocess
import sys

from tests.functional import conftest as fconf

MiB = fconf.MiB


def _dest(tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    return str(out / 'dst.img')


def _copy_argv(src, dest):
    # The rate limit keeps the copy going for a while, as a stream of
    # chunks rather than one in-kernel copy.
    return [sys.executable, '-m', 'oslo_transfer.cmd.main', 'copy', src,
            dest, '--rate', '16M']


def _read_all(fd) -> bytes:
    out = bytearray()
    while True:
        try:
            block = os.read(fd, 65536)
        except OSError:     # EIO: every slave descriptor is closed
            break
        if not block:
            break
        out += block
    return bytes(out)


def test_progress_bar_on_a_terminal(tmp_path):
    src = fconf.make_data_file(tmp_path / 'in', 'src.img', 8 * MiB)
    dest = _dest(tmp_path)
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen(_copy_argv(src.path, dest),
                             stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        slave = None
        err = _read_all(master).decode('utf-8', 'replace')
        out, _ = p.communicate(timeout=120)
    finally:
        os.close(master)
        if slave is not None:
            os.close(slave)
    assert p.returncode == 0, err
    fconf.assert_only_dest(dest, src.data)
    # (The terminal turns the final '\n' into '\r\n': count the bars.)
    updates = [u for u in err.split('\r') if '%' in u]
    # The bar redraws itself in place ('\r'), from a first report to the
    # end of the copy.
    assert len(updates) >= 2, repr(err)
    assert '100.0%' in updates[-1] and '8.0 MiB/8.0 MiB' in updates[-1]
    assert not any('100.0%' in u for u in updates[:1]), repr(err)
    # The result line goes to stdout, never mixed with the bar.
    assert b'\r' not in out and b'via file' in out


def test_no_progress_bar_in_a_pipe(tmp_path):
    src = fconf.make_data_file(tmp_path / 'in', 'src.img', 8 * MiB)
    dest = _dest(tmp_path)
    p = subprocess.run(_copy_argv(src.path, dest), stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr
    fconf.assert_only_dest(dest, src.data)
    assert b'\r' not in p.stderr and b'%' not in p.stderr, p.stderr


def test_no_progress_bar_on_a_terminal_with_no_progress(tmp_path):
    src = fconf.make_data_file(tmp_path / 'in', 'src.img', MiB)
    dest = _dest(tmp_path)
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen(_copy_argv(src.path, dest) + ['--no-progress'],
                             stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=slave)
        os.close(slave)
        slave = None
        err = _read_all(master)
        p.wait(timeout=120)
    finally:
        os.close(master)
        if slave is not None:
            os.close(slave)
    assert p.returncode == 0, err
    assert b'\r' not in err, err
