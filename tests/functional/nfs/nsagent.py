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

"""NFSv3 in a private network namespace, driven over a pipe.

NFSv3 needs rpcbind, which binds port 111 on every address: on a shared
host it must not run in the host's namespace.  :class:`NSAgent` starts this
module as PID 1 of a new PID, network and mount namespace (``unshare
--net --pid --fork --mount-proc --kill-child``); inside, it brings up
``lo``, mounts a private ``/run``, starts rpcbind and ganesha (NFSv3 and
v4 on the standard ports, which are free in there) and then runs the
functions of :mod:`.v3_ops` that the test asks for, one JSON line per
request and per answer.  When the test closes the pipe, or the agent dies,
the kernel ends every process of the namespace.

The file system is shared: the test writes source files into the export
and reads results from it directly.
"""

import contextlib
import json
import logging
import os
import select
import subprocess
import sys
import time

from tests.functional import servers

LOG = logging.getLogger(__name__)

NFS_PORT = 2049
MNT_PORT = 20048


class NSAgent:
    """The test side: start the namespace, call functions, stop it.

    :param base: a folder for ganesha's files and the logs.
    :param export: the exported folder.
    """

    def __init__(self, base, export):
        self.unshare = servers.require_binary('unshare', 'util-linux')
        servers.require_binary('rpcbind', 'rpcbind')
        servers.require_binary('ganesha.nfsd', 'nfs-ganesha')
        servers.require_binary('ip', 'iproute2')
        self.base = str(base)
        self.export = str(export)
        os.makedirs(self.base, exist_ok=True)
        self.log_path = os.path.join(self.base, 'agent.log')
        self.popen = None

    def start(self, timeout: float = 60.0) -> 'NSAgent':
        root = os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.dirname(os.path.abspath(__file__)))))
        env = dict(os.environ)
        env['PYTHONPATH'] = os.pathsep.join(
            [root] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep)
                      if p])
        self._log = open(self.log_path, 'ab')
        self.popen = subprocess.Popen(
            [self.unshare, '--net', '--pid', '--fork', '--mount-proc',
             '--kill-child', sys.executable, '-m',
             'tests.functional.nfs.nsagent', self.base, self.export],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            cwd=root, env=env)
        hello = self._read(timeout)
        if not hello.get('ready'):
            self.stop()
            raise RuntimeError('the NFSv3 namespace did not start: %s; '
                               'log:\n%s' % (hello, self.log_tail()))
        return self

    def log_tail(self, limit=4000) -> str:
        with open(self.log_path, 'rb') as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode('utf-8', 'replace')

    def _read(self, timeout):
        deadline = time.monotonic() + timeout
        line = b''
        while not line.endswith(b'\n'):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError('no answer from the NFSv3 namespace in '
                                   '%.0fs; log:\n%s' % (timeout,
                                                        self.log_tail()))
            ready, _, _ = select.select([self.popen.stdout], [], [], left)
            if ready:
                byte = os.read(self.popen.stdout.fileno(), 65536)
                if not byte:
                    raise RuntimeError('the NFSv3 namespace ended; log:\n%s'
                                       % self.log_tail())
                line += byte
        return json.loads(line)

    def call(self, func: str, timeout: float = 120.0, **kwargs):
        """Run ``v3_ops.func(agent, **kwargs)`` inside; return its result.

        An exception inside comes back as ``{'error': {'class': ...,
        'message': ..., 'retryable': ...}}`` (the return value).
        """
        req = json.dumps({'func': func, 'kwargs': kwargs}) + '\n'
        self.popen.stdin.write(req.encode())
        self.popen.stdin.flush()
        return self._read(timeout)

    def stop(self, timeout: float = 30.0):
        if self.popen is None:
            return
        with contextlib.suppress(OSError):
            self.popen.stdin.close()
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()  # --kill-child takes the namespace down
            self.popen.wait()
        self._log.close()


# -- inside the namespace -----------------------------------------------------

class Inside:
    """What runs as PID 1 of the namespace."""

    def __init__(self, base, export):
        from tests.functional.nfs import ganesha
        self.base = base
        self.export = export
        self.rpcbind = None
        self.ganesha = ganesha.Ganesha(os.path.join(base, 'ganesha'), export,
                                       versions=(3, 4), nfs_port=NFS_PORT,
                                       mnt_port=MNT_PORT, bind=False)

    def setup(self):
        subprocess.run(['ip', 'link', 'set', 'lo', 'up'], check=True)
        # rpcbind keeps its socket and lock in /run: a private one
        subprocess.run(['mount', '-t', 'tmpfs', 'tmpfs', '/run'], check=True)
        os.makedirs('/run/rpcbind', exist_ok=True)
        self.rpcbind = servers.Process(
            ['rpcbind', '-f', '-w'], name='rpcbind', port=111,
            log_path=os.path.join(self.base, 'rpcbind.log'))
        self.rpcbind.start()
        self.ganesha.start()

    def serve(self, stdin, stdout):
        from tests.functional.nfs import v3_ops
        for line in stdin:
            req = json.loads(line)
            try:
                func = getattr(v3_ops, req['func'])
                out = {'ok': func(self, **req['kwargs'])}
            except BaseException as exc:  # noqa: reported to the test
                LOG.exception('%s failed', req['func'])
                out = {'error': {'class': type(exc).__name__,
                                 'message': str(exc),
                                 'retryable': getattr(exc, 'retryable',
                                                      None)}}
            stdout.write(json.dumps(out) + '\n')
            stdout.flush()

    def teardown(self):
        self.ganesha.stop()
        if self.rpcbind is not None:
            self.rpcbind.stop()


def main():
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    base, export = sys.argv[1:3]
    # only our JSON lines go to the pipe
    out = os.fdopen(os.dup(1), 'w')
    os.dup2(2, 1)
    inside = Inside(base, export)
    try:
        inside.setup()
    except BaseException as exc:  # noqa: reported to the test
        LOG.exception('setup failed')
        out.write(json.dumps({'ready': False, 'error': str(exc)}) + '\n')
        out.flush()
        inside.teardown()
        return 1
    out.write(json.dumps({'ready': True}) + '\n')
    out.flush()
    try:
        inside.serve(sys.stdin, out)
    finally:
        inside.teardown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
