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

"""tgtd (the Linux SCSI target in user space) on loopback for the tests.

Each :class:`Tgtd` has its own iSCSI port and its own control socket
(``tgtd -C N``, ``/var/run/tgtd/socket.N``), so suites can run side by
side.  tgtd ignores SIGTERM: it is stopped by SIGKILL (by PID) and its
control socket files are removed.  Targets are remembered, so
:meth:`Tgtd.restart` brings the same LUNs back on the same port (a server
that died mid-transfer and came back).
"""

import itertools
import os
import random
import signal
import subprocess

from tests.functional import servers

IQN_PREFIX = 'iqn.2024-01.org.openstack.oslo-transfer.test'
_SOCKET_DIR = '/var/run/tgtd'


def _free_control_port() -> int:
    for _ in range(1000):
        n = random.randint(1000, 32000)  # tgtd takes -C < 32768
        if not os.path.exists(os.path.join(_SOCKET_DIR, 'socket.%d' % n)):
            return n
    raise RuntimeError('no free tgtd control port')


class Tgtd:
    """A tgtd instance with file-backed LUNs.

    :param base: a folder for the log and backing files.
    """

    def __init__(self, base):
        self.binary = servers.require_binary('tgtd', 'tgt')
        self.tgtadm = servers.require_binary('tgtadm', 'tgt')
        self.base = str(base)
        os.makedirs(self.base, exist_ok=True)
        self.port = None
        self.control = None
        self.process = None
        self.targets = {}  # tid -> (iqn, [(lun, path)], chap)
        self._tids = itertools.count(1)

    # -- life cycle ----------------------------------------------------------

    def start(self, attempts: int = 3) -> 'Tgtd':
        fixed = self.port is not None
        for attempt in range(1 if fixed else attempts):
            if not fixed:
                self.port = servers.free_port()
                self.control = _free_control_port()
            self.process = servers.Process(
                [self.binary, '-f', '--iscsi',
                 'portal=127.0.0.1:%d' % self.port, '-C', str(self.control)],
                name='tgtd', port=self.port,
                log_path=os.path.join(self.base, 'tgtd.log'),
                stop_signal=signal.SIGKILL)
            try:
                self.process.start()
            except servers.ProcessExited:
                self._remove_socket()
                if fixed or attempt == attempts - 1:
                    raise
                continue
            for tid, (iqn, luns, chap) in sorted(self.targets.items()):
                self._create(tid, iqn, luns, chap)
            return self
        raise AssertionError('unreachable')

    def stop(self):
        """SIGKILL tgtd (it ignores SIGTERM) and remove its socket."""
        if self.process is not None:
            self.process.stop()
            self._remove_socket()

    kill = stop

    def restart(self) -> 'Tgtd':
        self.stop()
        return self.start()

    def _remove_socket(self):
        for suffix in ('', '.lock'):
            try:
                os.unlink(os.path.join(_SOCKET_DIR, 'socket.%d%s'
                                       % (self.control, suffix)))
            except FileNotFoundError:
                pass

    # -- targets -------------------------------------------------------------

    def adm(self, *args):
        cmd = [self.tgtadm, '-C', str(self.control), '--lld', 'iscsi']
        cmd += [str(a) for a in args]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            raise RuntimeError('%s failed: %s' % (' '.join(cmd),
                                                  res.stderr or res.stdout))
        return res.stdout

    def add_target(self, backing, name=None, chap=None, luns=None) -> str:
        """Export ``backing`` (a file) as LUN 1 of a new target.

        :param chap: ``(user, secret)`` required from initiators.
        :param luns: ``[(lun, path)]`` instead of LUN 1 = ``backing``.
        :returns: the target IQN.
        """
        tid = next(self._tids)
        iqn = '%s:%s' % (IQN_PREFIX, name or 't%d' % tid)
        luns = luns or [(1, str(backing))]
        self.targets[tid] = (iqn, luns, chap)
        self._create(tid, iqn, luns, chap)
        return iqn

    def _create(self, tid, iqn, luns, chap):
        self.adm('--op', 'new', '--mode', 'target', '--tid', tid, '-T', iqn)
        for lun, path in luns:
            self.adm('--op', 'new', '--mode', 'logicalunit', '--tid', tid,
                     '--lun', lun, '-b', path)
        self.adm('--op', 'bind', '--mode', 'target', '--tid', tid,
                 '-I', 'ALL')
        if chap:
            user, secret = chap
            try:
                self.adm('--op', 'new', '--mode', 'account', '--user', user,
                         '--password', secret)
            except RuntimeError as exc:
                if 'exist' not in str(exc):
                    raise
            self.adm('--op', 'bind', '--mode', 'account', '--tid', tid,
                     '--user', user)

    def url(self, iqn: str, lun: int = 1, userinfo: str = '') -> str:
        host = '127.0.0.1:%d' % self.port
        if userinfo:
            host = '%s@%s' % (userinfo, host)
        return 'iscsi://%s/%s/%d' % (host, iqn, lun)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def __repr__(self):
        return '<Tgtd 127.0.0.1:%s -C %s>' % (self.port, self.control)
