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

"""Fixtures of the lazy-image tests: nginx, images, ``oslo-transfer nbd``.

``own_nginx``
    an nginx for one test (stopped and restarted by the origin tests);
``lazy_image``
    ``lazy_image(server, size, zero_blocks=())`` writes an image into a
    server's docroot and its blockmap (64 KiB) beside the test;
``export``
    ``export(src, cache, *options)`` starts ``oslo-transfer nbd`` on a
    Unix socket and returns an :class:`Export` once it printed ``ready``;
    every export is stopped at the end;
``nbd_client``
    ``nbd_client(uri, reads, ...)`` runs python3-libnbd (Debian's
    python3) and returns its JSON report (:mod:`.nbdclient`).
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.functional import conftest as fconf
from tests.functional.http import nginx as nginx_mod
from tests.functional import servers

KiB = 1024
MiB = 1024 * KiB
BLOCK = 64 * KiB
CLIENT = os.path.join(os.path.dirname(__file__), 'nbdclient.py')
#: the Python that has python3-libnbd (Debian's), not the tests' one
SYSTEM_PYTHON = '/usr/bin/python3'


@pytest.fixture
def own_nginx(tmp_path):
    server = nginx_mod.Nginx(tmp_path / 'nginx', tmp_path / 'docroot',
                             tmp_path / 'upload', rate='1m')
    server.start()
    yield server
    server.stop()


class Image(fconf.DataFile):
    """An image in a docroot: ``url``, ``blockmap`` (a path), blocks."""

    def __init__(self, path, data, url, blockmap_path):
        super().__init__(path, data)
        self.url = url
        self.blockmap = blockmap_path

    def block(self, i) -> bytes:
        return self.data[i * BLOCK:(i + 1) * BLOCK]

    def sha(self, offset, length) -> str:
        return hashlib.sha256(self.data[offset:offset + length]).hexdigest()


@pytest.fixture
def lazy_image(tmp_path):
    from oslo_transfer import blockmap

    def make(server, size=4 * MiB, zero_blocks=(), name='image.raw'):
        data = bytearray(os.urandom(size))
        for i in zero_blocks:
            data[i * BLOCK:(i + 1) * BLOCK] = bytes(BLOCK)
        path = os.path.join(server.docroot, name)
        with open(path, 'wb') as f:
            f.write(data)
        bm = str(tmp_path / (name + '.blockmap'))
        with open(bm, 'wb') as f:
            f.write(blockmap.make_blockmap(path, BLOCK))
        return Image(path, bytes(data), server.url(name), bm)

    return make


def blocks_fetched(server, name) -> list:
    """64 KiB blocks nginx sent for ``name`` (GETs with a Range), in order.

    Waits until the log stops growing (nginx logs after it answered).
    """
    out = []
    for line in server.settled_requests_for(name, quiet=0.3, timeout=3):
        out.extend(blocks_of(server, line))
    return out


def blocks_of(server, line) -> range:
    """The 64 KiB blocks one access log line sent (none but for a GET)."""
    if not line.startswith('GET '):
        return range(0)
    rng = server.field(line, 'range')
    assert rng.startswith('bytes='), line
    first = int(rng[6:].split('-')[0])
    sent = int(server.field(line, 'sent'))
    return range(first // BLOCK, (first + sent - 1) // BLOCK + 1) if sent \
        else range(0)


def write_conf(tmp_path, **options) -> str:
    """A config file of ``[oslo_transfer]`` options for an export."""
    options.setdefault('retry_backoff', 0.1)
    return fconf.write_conf_file(tmp_path / 'lazy.conf',
                                 {'oslo_transfer': options})


class Export:
    """A running ``oslo-transfer nbd`` (the command and its nbdkit)."""

    def __init__(self, argv, log_path, socket_path):
        self.argv = argv
        self.log_path = log_path
        self.socket = socket_path
        self.uri = 'nbd+unix:///?socket=%s' % socket_path
        self.proc = None
        self.ready_line = None

    @classmethod
    def build(cls, src, cache, sock, log_path, *options) -> 'Export':
        """``oslo-transfer nbd SRC --cache CACHE --socket SOCK -v OPTIONS``."""
        argv = [sys.executable, '-m', 'oslo_transfer.cmd.main', 'nbd', src,
                '--cache', str(cache), '--socket', sock, '-v'] + [
                    str(o) for o in options]
        return cls(argv, log_path, sock)

    def start(self, timeout=60.0) -> 'Export':
        env = dict(os.environ,
                   PYTHONPATH=os.pathsep.join(
                       [os.path.dirname(os.path.dirname(os.path.dirname(
                           os.path.dirname(os.path.abspath(__file__)))))] +
                       [p for p in os.environ.get('PYTHONPATH', '').split(
                           os.pathsep) if p]))
        self.log = open(self.log_path, 'ab')
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE,
                                     stderr=self.log, env=env)
        deadline = time.monotonic() + timeout
        os.set_blocking(self.proc.stdout.fileno(), False)
        buf = b''
        while time.monotonic() < deadline:
            chunk = self.proc.stdout.read()
            if chunk:
                buf += chunk
            if b'\n' in buf:
                self.ready_line = buf.split(b'\n')[0].decode()
                return self
            if self.proc.poll() is not None:
                raise AssertionError('oslo-transfer nbd exited with %s:\n%s'
                                     % (self.proc.returncode, self.tail()))
            time.sleep(0.05)
        raise AssertionError('oslo-transfer nbd not ready after %ss:\n%s'
                             % (timeout, self.tail()))

    def tail(self, n=40) -> str:
        with open(self.log_path, 'rb') as f:
            return b''.join(f.readlines()[-n:]).decode(errors='replace')

    def children(self) -> list:
        """PIDs of the command's children (its nbdkit)."""
        pid = self.proc.pid
        try:
            with open('/proc/%d/task/%d/children' % (pid, pid)) as f:
                return [int(p) for p in f.read().split()]
        except FileNotFoundError:
            return []

    def stop(self, timeout=30.0) -> int:
        """SIGTERM, as a service manager would; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.log.close()

    def kill(self) -> None:
        """SIGKILL the command and its nbdkit: nothing runs a clean-up."""
        for pid in self.children() + [self.proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)
        self.log.close()


@pytest.fixture
def export(tmp_path):
    started = []
    servers.require_binary('nbdkit', 'nbdkit')

    def start(src, cache, *options, name='export'):
        sock = str(tmp_path / ('%s-%d.sock' % (name, len(started))))
        exp = Export.build(src, cache, sock, str(tmp_path / (
            '%s.log' % name)), *options)
        started.append(exp)
        return exp.start()

    yield start
    for exp in started:
        if exp.proc is not None and exp.proc.poll() is None:
            exp.stop()


@pytest.fixture
def nbd_client():
    probe = subprocess.run([SYSTEM_PYTHON, '-c', 'import nbd'],
                           capture_output=True)
    if probe.returncode:
        pytest.fail('%s cannot import nbd: install the Debian package '
                    'python3-libnbd (bindep.txt)' % SYSTEM_PYTHON,
                    pytrace=False)

    def run(uri, reads=(), connections=1, extents=False):
        res = subprocess.run(**client_call(uri, reads, connections, extents),
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    return run


def client_call(uri, reads=(), connections=1, extents=False,
                times=False) -> dict:
    """``args`` and ``env`` of one run of :mod:`.nbdclient` (subprocess)."""
    req = {'reads': [list(r) for r in reads], 'connections': connections,
           'extents': extents, 'times': times}
    return {'args': [SYSTEM_PYTHON, CLIENT, uri, json.dumps(req)],
            'env': dict(os.environ, PATH='/usr/bin:/bin')}


def wait_for(predicate, timeout=30.0, what='the condition'):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError('timed out waiting for %s' % what)


def cached(cache, offset, length) -> bytes:
    """What the cache's part file holds at [offset, offset + length)."""
    with open(str(cache) + '.part', 'rb') as f:
        f.seek(offset)
        return f.read(length)


def present_map(cache) -> bytes:
    """The cache's present-map, as the bytes on disk."""
    with open(str(cache) + '.part.map', 'rb') as f:
        return f.read()
