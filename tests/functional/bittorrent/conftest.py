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

"""Fixtures of the BitTorrent functional tests: real peers on loopback.

Every peer is a separate process, stopped by its PID when the test ends:

* receivers: ``python -m tests.functional.bittorrent.receiver`` (one
  ``Transfer.copy`` each, then seeding; prints one JSON line);
* our seeder: ``python -m oslo_transfer.cmd.torrent seed`` (prints a JSON
  line once it seeds);
* aria2c, as an independent client, seeding or downloading;
* the origin: a real nginx (see :mod:`tests.functional.http.nginx`);
* a tracker: Debian's opentracker, which serves only the info-hashes of
  its whitelist file.

Peers listen on 127.0.0.1 only, on ports found by binding port 0;
``allow_multiple_connections_per_ip`` is on (every peer has the same IP).
"""

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

import pytest

from tests.functional import conftest as fconf
from tests.functional.http import nginx as nginx_mod
from tests.functional import servers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


class Peer:
    """A peer process whose stdout carries JSON lines."""

    def __init__(self, argv, log_path, name):
        self.name = name
        self.log_path = str(log_path)
        self._log = open(self.log_path, 'ab')
        self.popen = subprocess.Popen(
            [str(a) for a in argv], cwd=REPO, stdout=subprocess.PIPE,
            stderr=self._log, stdin=subprocess.DEVNULL)
        self.lines = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.popen.stdout:
            self.lines.put(line.decode('utf-8', 'replace').strip())
        self.lines.put(None)

    def log_tail(self, limit=3000) -> str:
        with open(self.log_path, 'rb') as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode('utf-8', 'replace')

    def json_line(self, timeout=60.0) -> dict:
        """The next JSON line on stdout (fails the test on timeout/exit)."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail('%s printed nothing within %.0fs; log:\n%s'
                        % (self.name, timeout, self.log_tail()))
        if line is None:
            pytest.fail('%s exited (%s) without a result; log:\n%s'
                        % (self.name, self.popen.wait(), self.log_tail()))
        return json.loads(line)

    @property
    def pid(self):
        return self.popen.pid

    def signal(self, signum):
        if self.popen.poll() is None:
            try:
                os.kill(self.popen.pid, signum)
            except ProcessLookupError:
                pass

    def wait(self, timeout=30.0) -> int:
        """The exit status (fails the test, with the log, on timeout)."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail('%s still runs after %.0fs; log:\n%s'
                        % (self.name, timeout, self.log_tail()))

    def stop(self, timeout=10.0):
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.popen.wait()
        self._log.close()


class Swarm:
    """Starts the peers of one test; :meth:`stop_all` at teardown."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.peers = []

    def _start(self, argv, name):
        peer = Peer(argv, self.tmp_path / ('%s.log' % name), name)
        self.peers.append(peer)
        return peer

    def receiver(self, name, torrent, dest, port, urls=(), peers=(),
                 peers_count=4, checksum=None, options=None,
                 slow_final_flush=0.0) -> Peer:
        """Start a receiver listening on ``127.0.0.1:port``.

        :param slow_final_flush: seconds the download waits, complete and
            still in the swarm, before its last flush (a slow disk).
        """
        argv = [sys.executable, '-m', 'tests.functional.bittorrent.receiver',
                '--dest', dest, '--torrent', torrent,
                '--listen', '127.0.0.1:%d' % port,
                '--peers', str(peers_count),
                '--state-path', str(self.tmp_path / 'state')]
        for url in urls:
            argv += ['--url', url]
        for p in peers:
            argv += ['--peer', p]
        if checksum:
            argv += ['--checksum', checksum]
        if slow_final_flush:
            argv += ['--slow-final-flush', str(slow_final_flush)]
        opts = {'seed_time': 20, 'stall_timeout': 30, 'peer_wait': 3}
        opts.update(options or {})
        for key, value in opts.items():
            argv += ['--set', '%s=%s' % (key, value)]
        return self._start(argv, name)

    def seeder(self, name, path, torrent, port, peers=()) -> Peer:
        """Our seeder (``oslo-transfer seed``), ready when this returns."""
        conf = self.tmp_path / ('%s.conf' % name)
        fconf.write_conf_file(conf, {'oslo_transfer_bittorrent': {
            'allow_multiple_connections_per_ip': True}})
        argv = [sys.executable, '-m', 'oslo_transfer.cmd.torrent',
                '--config-file', conf, '-v', 'seed', path,
                '--torrent', torrent, '--listen', '127.0.0.1:%d' % port]
        for p in peers:
            argv += ['--peer', p]
        peer = self._start(argv, name)
        line = peer.json_line(timeout=60)
        assert line['event'] == 'seeding', line
        return peer

    def aria2c(self, name, torrent, directory, port, seed=False,
               keep_seeding=False) -> Peer:
        """aria2c seeding ``directory`` (``seed=True``) or downloading.

        A downloader exits when complete, unless ``keep_seeding``.
        """
        binary = servers.require_binary('aria2c', 'aria2')
        argv = [binary, '--enable-dht=false', '--enable-dht6=false',
                '--bt-enable-lpd=false', '--enable-peer-exchange=false',
                '--listen-port=%d' % port, '--interface=127.0.0.1',
                '--dir', directory, '--console-log-level=warn',
                '--summary-interval=0', '--bt-stop-timeout=60',
                '--follow-torrent=false']
        if seed:
            argv += ['--seed-ratio=0.0', '--check-integrity=true']
        elif keep_seeding:
            argv += ['--seed-ratio=0.0']
        else:
            argv += ['--seed-time=0']
        peer = self._start(argv + [torrent], name)
        if seed:
            servers.wait_for_port('127.0.0.1', port, timeout=30)
        return peer

    def stop_all(self):
        for peer in reversed(self.peers):
            peer.stop()


@pytest.fixture
def swarm(tmp_path):
    group = Swarm(tmp_path)
    yield group
    group.stop_all()


@pytest.fixture(scope='session')
def origin(tmp_path_factory):
    """One nginx for the session (the web seed); files under ``docroot``."""
    base = tmp_path_factory.mktemp('bt-origin')
    server = nginx_mod.Nginx(base / 'prefix', base / 'docroot',
                             base / 'upload', rate='3m')
    server.start()
    yield server
    server.stop()


_counter = [0]


@pytest.fixture
def image(origin, tmp_path):
    """``image(size)`` -> DataFile in the origin's docroot, unique name."""

    def make(size, name=None):
        _counter[0] += 1
        name = name or 'img-%d-%d.raw' % (os.getpid(), _counter[0])
        return fconf.make_data_file(origin.docroot, name, size)

    return make


class Tracker:
    """opentracker on 127.0.0.1 (TCP and UDP on one port).

    Debian builds it with a whitelist: it answers only for the info-hashes
    given to :meth:`start` ("Requested download is not authorized"
    otherwise).
    """

    def __init__(self, base):
        self.base = base
        self.port = servers.free_port()
        self.process = None
        self._dir = None

    @property
    def announce(self) -> str:
        return 'http://127.0.0.1:%d/announce' % self.port

    def start(self, *info_hashes):
        binary = servers.require_binary('opentracker', 'opentracker')
        # It reads the file as the user it drops to (nobody), and pytest's
        # folders are private: the list goes in a folder anyone can enter.
        self._dir = tempfile.mkdtemp(prefix='oslo-transfer-tracker-')
        os.chmod(self._dir, 0o755)
        whitelist = os.path.join(self._dir, 'whitelist')
        with open(whitelist, 'w') as f:
            f.write(''.join(h + '\n' for h in info_hashes))
        os.chmod(whitelist, 0o644)
        self.process = servers.Process(
            [binary, '-i', '127.0.0.1', '-p', self.port, '-P', self.port,
             '-w', whitelist], name='opentracker', port=self.port,
            log_path=str(self.base / 'opentracker.log')).start()
        return self

    def stop(self):
        if self.process is not None:
            self.process.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture
def tracker(tmp_path):
    """``tracker.start(info_hash, ...)``; ``tracker.announce`` is its URL."""
    base = tmp_path / 'tracker'
    base.mkdir()
    t = Tracker(base)
    yield t
    t.stop()


def ports(n) -> list:
    """``n`` distinct free ports on 127.0.0.1."""
    found = set()
    while len(found) < n:
        found.add(servers.free_port())
    return sorted(found)


@pytest.fixture
def make_transfer(make_conf):
    """``make_transfer(**bittorrent_options)`` -> an in-process Transfer.

    The test process's own libtorrent session listens on 127.0.0.1 (a free
    port); seeding is off unless the test asks for it.
    """
    from oslo_transfer import transfer

    def make(oslo_transfer=None, **options):
        opts = {'listen_interfaces': '127.0.0.1:0',
                'allow_multiple_connections_per_ip': True,
                'seed_time': 0, 'stall_timeout': 10, 'peer_wait': 1}
        opts.update(options)
        conf = make_conf(oslo_transfer_bittorrent=opts,
                         oslo_transfer=dict(oslo_transfer or {}))
        return transfer.Transfer(conf)

    return make


@pytest.fixture
def dest(tmp_path):
    """A destination path in a folder of its own (``out/image.raw``)."""
    d = tmp_path / 'out'
    d.mkdir()
    return str(d / 'image.raw')
