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

"""Fixtures shared by every functional suite.

* ``processes``: start servers with :class:`tests.functional.servers.Process`
  and have them stopped (by PID) when the test ends, whatever happens;
* ``make_conf``: an ``oslo_config`` ``ConfigOpts`` built from a config file
  written into ``tmp_path``, as a service would build it;
* ``random_file``: a file of random bytes and its digests.

``free_port``, ``wait_for_port`` and ``Process`` are importable from
:mod:`tests.functional.servers`.
"""

import hashlib
import os
import re
import subprocess

import pytest

# The helpers ship in oslo_transfer.testing (for driver authors too); the
# names stay importable from here.
from oslo_transfer.testing.files import assert_nothing_left  # noqa: F401
from oslo_transfer.testing.files import assert_only_dest  # noqa: F401
from oslo_transfer.testing.files import assert_resumable  # noqa: F401
from oslo_transfer.testing.files import correct_bytes  # noqa: F401
from oslo_transfer.testing.files import ctl_path  # noqa: F401
from oslo_transfer.testing.files import DataFile  # noqa: F401
from oslo_transfer.testing.files import file_equals  # noqa: F401
from oslo_transfer.testing.files import files_beside  # noqa: F401
from oslo_transfer.testing.files import lock_path  # noqa: F401
from oslo_transfer.testing.files import make_data_file  # noqa: F401
from oslo_transfer.testing.files import MiB  # noqa: F401
from oslo_transfer.testing.files import part_path  # noqa: F401
from tests.functional.servers import free_port  # noqa: F401 (re-export)
from tests.functional.servers import Process
from tests.functional.servers import require_binary  # noqa: F401
from tests.functional.servers import wait_for_port  # noqa: F401


class ProcessGroup:
    """Processes started by one test or fixture; all stopped at the end."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.started = []

    def start(self, argv, **kwargs) -> Process:
        """Build a :class:`Process`, start it and remember it."""
        kwargs.setdefault('log_path', str(
            self.tmp_path / ('%s-%d.log' % (os.path.basename(str(argv[0])),
                                            len(self.started)))))
        proc = Process(argv, **kwargs)
        self.started.append(proc)
        return proc.start()

    def add(self, proc: Process) -> Process:
        self.started.append(proc)
        return proc

    def stop_all(self):
        errors = []
        for proc in reversed(self.started):
            try:
                proc.stop()
            except Exception as exc:  # noqa: stop the others anyway
                errors.append('%r: %s' % (proc, exc))
                proc.kill()
        if errors:
            raise RuntimeError('could not stop: %s' % '; '.join(errors))


@pytest.fixture
def processes(tmp_path):
    """A :class:`ProcessGroup`; everything started through it is stopped."""
    group = ProcessGroup(tmp_path)
    yield group
    group.stop_all()


def write_conf_file(path, sections: dict) -> str:
    """Write ``{'group': {'opt': value}}`` as an ini file."""
    lines = []
    for group, values in sections.items():
        lines.append('[%s]' % group)
        for key, value in values.items():
            if isinstance(value, bool):
                value = 'true' if value else 'false'
            elif isinstance(value, (list, tuple)):
                value = ','.join(str(v) for v in value)
            lines.append('%s = %s' % (key, value))
        lines.append('')
    with open(path, 'w') as f:
        f.write('\n'.join(lines))
    return str(path)


@pytest.fixture
def make_conf(tmp_path):
    """Return ``make_conf(**sections)`` -> a parsed ``ConfigOpts``.

    ``make_conf(oslo_transfer={'retries': 1}, oslo_transfer_http={...})``
    writes the file into ``tmp_path`` and parses it with
    ``conf(args=[], default_config_files=[file])``; options registered
    later (by ``Transfer(conf)``) read their values from it.
    ``state_path`` defaults to a folder under ``tmp_path``.
    """
    from oslo_config import cfg

    counter = [0]

    def make(**sections):
        counter[0] += 1
        sections = {k: dict(v) for k, v in sections.items()}
        sections.setdefault('oslo_transfer', {}).setdefault(
            'state_path', str(tmp_path / 'state'))
        path = write_conf_file(tmp_path / ('conf-%d.conf' % counter[0]),
                               sections)
        conf = cfg.ConfigOpts()
        conf(args=[], project='oslo_transfer_tests',
             default_config_files=[path], default_config_dirs=[])
        return conf

    return make


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(size='8m', path=None)`` -> path of a mounted small tmpfs."""
    from tests.functional.ftp import ftpservers
    mounted = []

    def make(size='8m', path=None):
        fs = ftpservers.Tmpfs(path or tmp_path / 'small', size).mount()
        mounted.append(fs)
        return fs.path

    yield make
    for fs in mounted:
        fs.umount()


@pytest.fixture
def small_ext4(tmp_path):
    """``small_ext4(size='16m')`` -> path of a mounted small ext4.

    A local disk file system: a durable download into it is written with
    O_DIRECT (tmpfs is not).
    """
    from tests.functional.ftp import ftpservers
    mounted = []

    def make(size='16m'):
        fs = ftpservers.SmallExt4(tmp_path / 'ext4', size).mount()
        mounted.append(fs)
        return fs.path

    yield make
    for fs in mounted:
        fs.umount()


def full_disk_then_resume(copy, small_dir, room_dir, data: bytes,
                          name='image.raw'):
    """``copy(dest)`` onto a full file system, then again with room.

    Asserts what a download to a full disk must leave: a
    ``DestinationError`` that names the ``.part`` and the lack of space, no
    DEST, the resumable state (``.part``, control file, lock file) whose
    held ranges are the source's bytes (some held: the last checkpoint
    makes room for the control file); and that a rerun, with the state
    moved to ``room_dir``, resumes exactly what was held.

    :returns: ``(error, held_bytes, result_of_the_rerun)``.
    """
    import json
    import shutil

    from oslo_transfer import exceptions

    dest = os.path.join(small_dir, name)
    with pytest.raises(exceptions.DestinationError) as ei:
        copy(dest)
    assert 'no space left on the device of %s' % part_path(dest) in \
        str(ei.value), str(ei.value)
    assert not os.path.lexists(dest)
    assert [n for n in files_beside(dest) if n != 'lost+found'] == sorted(
        os.path.basename(p) for p in (part_path(dest), ctl_path(dest),
                                      lock_path(dest)))
    with open(ctl_path(dest)) as f:
        ranges = json.load(f)['ranges']
    held = sum(e - s for s, e in ranges)
    assert 0 < held < len(data), ranges
    with open(part_path(dest), 'rb') as f:
        for s, e in ranges:
            f.seek(s)
            assert f.read(e - s) == data[s:e], 'held [%d, %d) differs' % (
                s, e)
    os.makedirs(room_dir, exist_ok=True)
    again = os.path.join(room_dir, name)
    os.unlink(lock_path(dest))
    for path, to in ((part_path(dest), part_path(again)),
                     (ctl_path(dest), ctl_path(again))):
        shutil.move(path, to)
    res = copy(again)
    assert res.bytes_resumed == held
    assert res.bytes_transferred == len(data) - held
    assert_only_dest(again, data)
    return ei.value, held, res


@pytest.fixture
def direct_writes(monkeypatch):
    """What each ``O_DIRECT`` writer of the test wrote, counted at close.

    A list of ``{'direct': .., 'zero_copy': .., 'buffered': ..}`` byte
    counts, one per :class:`~oslo_transfer.engine.writers.DirectWriter`.
    """
    from oslo_transfer.engine import writers
    seen = []
    closed = writers.DirectWriter._closed

    def spy(self):
        seen.append({'direct': self.direct_bytes,
                     'zero_copy': self.zero_copy_bytes,
                     'buffered': self.buffered_bytes})
        closed(self)

    monkeypatch.setattr(writers.DirectWriter, '_closed', spy)
    return seen


class LoopDevice:
    """A loop device over an image file: ``dev``, ``image``, ``size``."""

    def __init__(self, dev, image, size):
        self.dev = dev
        self.image = image
        self.size = size

    def read(self, offset: int = 0, length: int | None = None) -> bytes:
        """What the device holds (read through the device itself)."""
        with open(self.dev, 'rb') as f:
            f.seek(offset)
            return f.read(self.size - offset if length is None else length)

    def sha256(self) -> str:
        return hashlib.sha256(self.read()).hexdigest()

    def allocated(self) -> int:
        """Bytes allocated to the backing image (what was written)."""
        return os.stat(self.image).st_blocks * 512


@pytest.fixture
def loop_device(tmp_path):
    """``loop_device(size, fill=None)`` -> a :class:`LoopDevice`.

    The image is sparse (reads as zeros) or, with ``fill``, made of that
    byte repeated: old contents that a write in place must overwrite.
    Every device is detached at the end.  No loop device fails the test:
    the functional tests run as root with ``/dev/loop-control``.
    """
    import subprocess
    losetup = require_binary('losetup', 'mount')
    made = []

    def make(size, fill=None):
        image = str(tmp_path / ('volume-%d.img' % len(made)))
        with open(image, 'wb') as f:
            if fill is None:
                f.truncate(size)
            else:
                block = bytes([fill]) * MiB
                for _ in range(size // MiB):
                    f.write(block)
                f.write(bytes([fill]) * (size % MiB))
        p = subprocess.run([losetup, '--find', '--show', image],
                           capture_output=True, text=True)
        if p.returncode != 0:
            pytest.fail('no loop device (losetup: %s): writes in place are '
                        'tested on loop devices; run as root with '
                        '/dev/loop-control' % (p.stderr.strip() or
                                               'exit %d' % p.returncode),
                        pytrace=False)
        dev = LoopDevice(p.stdout.strip(), image, size)
        made.append(dev)
        return dev

    yield make
    for dev in made:
        subprocess.run([losetup, '--detach', dev.dev], check=False)


def inplace_state(conf_or_state_path) -> list:
    """The files of writes in place under ``STATE_PATH/oslo_transfer``."""
    d = os.path.join(str(conf_or_state_path), 'oslo_transfer', 'inplace')
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


@pytest.fixture
def rates(monkeypatch):
    """``[(rate, nbytes)]`` of every limited ``TokenBucket.consume``."""
    seen = []
    from oslo_transfer.engine import throttle
    consume = throttle.TokenBucket.consume

    def spy(self, nbytes, cancel=None):
        if self.rate:
            seen.append((self.rate, nbytes))
        return consume(self, nbytes, cancel)

    monkeypatch.setattr(throttle.TokenBucket, 'consume', spy)
    return seen


def client_sockets(host: str = '127.0.0.1') -> dict:
    """This process's open TCP connections to ``host``, from ``ss``.

    ``{(local port, peer port): (rcvbuf, rcv_wscale)}``: the receive
    buffer the kernel gives the socket (``SO_RCVBUF``, doubled) and the
    window scale its handshake announced (which a buffer set before
    ``connect()`` keeps small).  Connections the server has closed while
    we still read them count too: a small file can be all in our
    receive buffer, the server's side already closed.
    """
    out = '\n'.join(subprocess.run(
        ['ss', '-tmnipH', 'state', state, 'dst', host],
        capture_output=True, text=True, check=True).stdout.strip()
        for state in ('established', 'close-wait'))
    found = {}
    for rec in re.split(r'\n(?=\S)', out.strip()):
        if 'pid=%d,' % os.getpid() not in rec:
            continue
        fields = rec.split()
        local, peer = (int(a.rsplit(':', 1)[1]) for a in fields[2:4])
        rb = int(re.search(r'skmem:\(r\d+,rb(\d+)', rec).group(1))
        wscale = int(re.search(r'wscale:\d+,(\d+)', rec).group(1))
        found[local, peer] = (rb, wscale)
    return found
