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

"""The soak's servers: one real server per protocol, restartable.

Each :class:`Protocol` writes a seeded random source of ``size`` bytes,
starts its server with the functional suites' own launchers (nginx,
vsftpd, sshd, nfs-ganesha, tgtd, an ``oslo-transfer seed`` peer) on
127.0.0.1, and knows how to restart it on the same port.  ``file`` has no
server: its :meth:`~FileSource.restart` replaces the source (in place, or
by a rename) with another version of the same size.
"""

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys

from tests.functional.ftp import ftpservers
from tests.functional.http import nginx as nginx_mod
from tests.functional.iscsi import tgt
from tests.functional.nfs import ganesha as ganesha_mod
from tests.functional import servers
from tests.functional.sftp import sshd as sshd_mod

MiB = 1024 * 1024
NAME = 'image.raw'


def seeded_bytes(size: int, seed: int) -> bytes:
    """``size`` random bytes from ``seed``, without an all-zero 4 KiB block.

    (A block of zeros would become a hole of a sparse ``.part`` and look
    like a byte never written.)
    """
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        out += rng.randbytes(min(16 * MiB, size - len(out)))
    out[::4096] = b'\x01' * len(out[::4096])
    return bytes(out)


def write_file(path: str, data: bytes):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(data)


class Protocol:
    """A source of ``size`` bytes behind a real server on loopback.

    :ivar url: the source's URL for ``oslo-transfer copy``.
    :ivar data: the source's bytes.
    """

    name = None
    #: False when the source changes during the soak (``file``)
    single_version = True
    #: what :meth:`restart` does to ``self.server`` (its ``restart()``)
    restarted = None
    #: True when the engine reads the source in parallel ranged segments
    #: (from ``segment_threshold`` bytes on)
    parallel = False
    #: a temporary tree of the server's (:func:`ftpservers.make_shared_base`)
    #: that :meth:`stop` removes
    base = None

    def __init__(self, workdir, size: int, seed: int = 0):
        self.workdir = str(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.size = size
        self.seed = seed
        self.data = seeded_bytes(size, seed)
        self._versions = [self.data]
        self._digests = [hashlib.sha256(self.data).hexdigest()]
        self.url = None

    def start(self) -> 'Protocol':
        raise NotImplementedError

    def stop(self):
        self.server.stop()
        if self.base is not None:
            ftpservers.remove_tree(self.base)

    def restart(self) -> str:
        """Stop and start the server (same port); returns what it did."""
        self.server.restart()
        return self.restarted

    def copy_args(self) -> list:
        """Arguments of ``oslo-transfer copy`` besides SRC and DST."""
        return ['--checksum', 'sha256:' + self._digests[-1]]

    def conf_sections(self) -> dict:
        """Option groups for the copies' config file."""
        return {}

    def segments(self, options: dict) -> int:
        """Parallel segments the engine uses for this source."""
        threshold = int(options.get('segment_threshold', 64 * MiB))
        if self.parallel and self.size >= threshold:
            return int(options.get('segments', 4))
        return 1

    def bound_per_kill(self, options: dict) -> int:
        """The most one kill may cost (:func:`.harness.bound_per_kill`)."""
        from tests.functional.soak import harness
        return harness.bound_per_kill(options, self.segments(options))

    def served_bytes(self):
        """Bytes the server says it sent for the source, or None."""
        return None

    def versions(self) -> list:
        return self._versions

    def digests(self) -> list:
        """sha256 of every version, the current one last."""
        return self._digests

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class HTTP(Protocol):
    """nginx (:mod:`tests.functional.http.nginx`); restart: SIGTERM + start.

    nginx's access log gives the bytes sent per request; a request cut by
    the fast shutdown of a restart is not logged.
    """

    name = 'http'
    parallel = True
    restarted = 'nginx stopped (SIGTERM) and started'

    def start(self):
        base = os.path.join(self.workdir, 'nginx')
        self.server = nginx_mod.Nginx(os.path.join(base, 'prefix'),
                                      os.path.join(base, 'docroot'),
                                      os.path.join(base, 'upload'))
        write_file(os.path.join(self.server.docroot, NAME), self.data)
        self.server.start()
        self.url = self.server.url(NAME)
        return self

    def served_bytes(self):
        return self.server.bytes_sent_for(NAME)


class FTP(Protocol):
    """vsftpd, anonymous; restart: SIGKILL of its process tree + start.

    vsftpd's log has one line per transfer with the bytes sent, when the
    session ends by itself (a killed client); a restart kills the sessions
    before they log.
    """

    name = 'ftp'
    restarted = 'vsftpd killed (SIGKILL, sessions too) and started'

    def start(self):
        self.base = ftpservers.make_shared_base('oslo-transfer-soak-ftp-')
        anon = os.path.join(self.base, 'anon')
        os.makedirs(anon)
        os.chmod(anon, 0o755)
        write_file(os.path.join(anon, NAME), self.data)
        self.server = ftpservers.Vsftpd(os.path.join(self.base, 'vsftpd'),
                                        anon)
        os.makedirs(self.server.root)
        self.server.start()
        self.url = self.server.url(NAME)
        return self

    def served_bytes(self):
        path = os.path.join(self.server.root, 'vsftpd.log')
        total = 0
        with open(path, errors='replace') as f:
            for line in f:
                if 'DOWNLOAD:' in line and '/%s"' % NAME in line:
                    total += int(line.rsplit(' bytes', 1)[0].rsplit(
                        ' ', 1)[1])
        return total


class SFTP(Protocol):
    """OpenSSH sshd with internal-sftp.

    Restart: SIGKILL of the listener and its sessions, then start.
    """

    name = 'sftp'
    restarted = 'sshd killed (SIGKILL, sessions too) and started'

    def start(self):
        self.base = ftpservers.make_shared_base('oslo-transfer-soak-sftp-')
        self.key = os.path.join(self.base, 'id_ed25519')
        auth = os.path.join(self.base, 'authorized_keys')
        with open(auth, 'w') as f:
            f.write(sshd_mod.keygen(self.key) + '\n')
        os.chmod(auth, 0o644)
        self.server = sshd_mod.Sshd(os.path.join(self.base, 'sshd'), auth,
                                    password_auth=False)
        self.known_hosts = os.path.join(self.base, 'known_hosts')
        with open(self.known_hosts, 'w') as f:
            f.write(self.server.known_hosts_line())
        path = os.path.join(self.base, 'data', NAME)
        write_file(path, self.data)
        self.server.start()
        self.url = self.server.url(path)
        return self

    def conf_sections(self):
        return {'oslo_transfer_sftp': {
            'known_hosts_file': self.known_hosts, 'key_file': self.key,
            'username': 'root', 'allow_agent': False,
            'look_for_keys': False}}


class NFS(Protocol):
    """nfs-ganesha, NFSv4 on 127.0.0.1; restart: SIGTERM + start."""

    name = 'nfs'
    parallel = True
    restarted = 'ganesha.nfsd stopped (SIGTERM) and started'

    def start(self):
        base = os.path.join(self.workdir, 'ganesha')
        export = os.path.join(base, 'export')
        # before ganesha starts: it caches attributes
        write_file(os.path.join(export, NAME), self.data)
        self.server = ganesha_mod.Ganesha(os.path.join(base, 'server'),
                                          export)
        self.server.start()
        self.url = self.server.url(NAME, version=4)
        return self


class ISCSI(Protocol):
    """tgtd with the source as a file-backed LUN.

    Restart: SIGKILL, then start (same port; the target and its LUN are
    created again).
    """

    name = 'iscsi'
    restarted = 'tgtd killed (SIGKILL) and started'

    def start(self):
        base = os.path.join(self.workdir, 'tgtd')
        backing = os.path.join(base, 'lun.img')
        write_file(backing, self.data)
        self.server = tgt.Tgtd(base).start()
        iqn = self.server.add_target(backing, name='soak-%d' % os.getpid())
        self.url = self.server.url(iqn)
        return self


class BitTorrent(Protocol):
    """One seeding peer (``oslo-transfer seed``) and no web seed.

    The copy reads a torrent-only source (``torrent://metadata`` with
    ``--torrent``) from the peer it names; the peer names the copy's fixed
    listening port in turn, so that a restarted peer connects to it at
    once.  Restart: SIGTERM to the peer, start it again (it checks the
    data against the metadata first).
    """

    name = 'bittorrent'
    #: blocks libtorrent keeps requested from one peer
    #: (``max_out_request_queue``, its default), 16 KiB each
    REQUEST_QUEUE = 500

    def start(self):
        from oslo_transfer import torrent as torrent_mod
        self.base = os.path.join(self.workdir, 'bittorrent')
        self.path = os.path.join(self.base, 'seed', NAME)
        write_file(self.path, self.data)
        self.torrent = os.path.join(self.base, NAME + '.torrent')
        with open(self.torrent, 'wb') as f:
            f.write(torrent_mod.make_torrent(self.path))
        self.piece_length = torrent_mod.parse_file(self.torrent).piece_length
        self.seed_port, self.copy_port = self._two_ports()
        self.seed_conf = os.path.join(self.base, 'seed.conf')
        with open(self.seed_conf, 'w') as f:
            f.write('[oslo_transfer_bittorrent]\n'
                    'allow_multiple_connections_per_ip = true\n')
        self.url = 'torrent://metadata'
        self.popen = None
        self._start_seed()
        return self

    @staticmethod
    def _two_ports():
        while True:
            a, b = servers.free_port(), servers.free_port()
            if a != b:
                return a, b

    def _start_seed(self):
        self.log = open(os.path.join(self.base, 'seed.log'), 'ab')
        self.popen = subprocess.Popen(
            [sys.executable, '-m', 'oslo_transfer.cmd.torrent',
             '--config-file', self.seed_conf, '-v', 'seed', self.path,
             '--torrent', self.torrent,
             '--listen', '127.0.0.1:%d' % self.seed_port,
             '--peer', '127.0.0.1:%d' % self.copy_port],
            stdout=subprocess.PIPE, stderr=self.log,
            stdin=subprocess.DEVNULL)
        line = self.popen.stdout.readline()
        if b'"seeding"' not in line:
            self._stop_seed()
            raise RuntimeError('the seeding peer did not start: %r' % line)

    def _stop_seed(self):
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self.popen is not None:
            self.popen.stdout.close()
        self.log.close()

    def stop(self):
        self._stop_seed()

    def restart(self):
        self._stop_seed()
        self._start_seed()
        return 'seeding peer stopped (SIGTERM) and started'

    def bound_per_kill(self, options):
        """The checkpoint interval plus the pieces in flight.

        libtorrent keeps up to :data:`REQUEST_QUEUE` 16 KiB blocks
        requested from its one peer, spread over partial pieces; a kill
        loses the partial pieces (they were never verified, so never
        recorded), and the pieces verified since the last flush.
        """
        ckpt = int(options.get('checkpoint_bytes', 16 * MiB))
        return ckpt + self.REQUEST_QUEUE * 16 * 1024 + self.piece_length

    def copy_args(self):
        return super().copy_args() + [
            '--torrent', self.torrent, '--peers', '2',
            '--peer', '127.0.0.1:%d' % self.seed_port]

    def conf_sections(self):
        return {'oslo_transfer_bittorrent': {
            'listen_interfaces': '127.0.0.1:%d' % self.copy_port,
            'allow_multiple_connections_per_ip': True, 'seed_time': 0,
            'stall_timeout': 30}}


class FileSource(Protocol):
    """A local file; no server.  Copied without ``--checksum``.

    :meth:`restart` replaces the source with a new version of the same
    size, by turns in place (same inode, 4 MiB blocks from the end
    backwards, as a VM writes its disk image while it is copied) and by a
    rename over it (what an atomic writer does).  The copy must restart
    or fail, never join two versions: the final destination must be one
    version, whole.
    """

    name = 'file'
    single_version = False
    #: the unit of an in-place rewrite
    BLOCK = 4 * MiB

    def start(self):
        self.path = os.path.join(self.workdir, 'source', NAME)
        write_file(self.path, self.data)
        self.url = self.path
        self.replaced = 0
        return self

    def stop(self):
        shutil.rmtree(os.path.dirname(self.path), ignore_errors=True)

    def copy_args(self):
        return []

    def restart(self):
        self.replaced += 1
        data = seeded_bytes(self.size, self.seed * 1000 + self.replaced)
        self._versions.append(data)
        self._digests.append(hashlib.sha256(data).hexdigest())
        if self.replaced % 2:
            # From the end backwards: the copy, reading forwards, meets
            # new bytes ahead of the old ones it read (a disk image that
            # its VM writes while it is copied).
            view = memoryview(data)
            with open(self.path, 'r+b') as f:
                for end in range(self.size, 0, -self.BLOCK):
                    start = max(0, end - self.BLOCK)
                    os.pwrite(f.fileno(), view[start:end], start)
            return 'source rewritten in place, from the end (same inode)'
        tmp = self.path + '.new'
        write_file(tmp, data)
        os.replace(tmp, self.path)
        return 'source replaced by a rename'


PROTOCOLS = {cls.name: cls for cls in (HTTP, FTP, SFTP, NFS, ISCSI,
                                       BitTorrent, FileSource)}
