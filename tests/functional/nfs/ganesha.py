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

"""nfs-ganesha (an NFS server in user space) for the tests.

One export, FSAL VFS, no root squash.  NFSv4 only needs no rpcbind and
runs in the host's network namespace on its own ports, bound to
127.0.0.1.  NFSv3 needs rpcbind, which binds every address: it runs in a
private namespace (see :mod:`.nsagent`), where the standard ports are free.

ganesha caches attributes: change a file through NFS, or give the new
content a new name, never rewrite a served file behind its back.
"""

import os
import signal
import subprocess
import time

from tests.functional import servers

_CONF = """
NFS_CORE_PARAM {{
    NFS_Port = {nfs_port};
    MNT_Port = {mnt_port};
    {bind}
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Protocols = {protocols};
}}
NFS_KRB5 {{ Active_krb5 = false; }}
NFSV4 {{ Graceless = true; RecoveryRoot = {recovery}; }}
EXPORT {{
    Export_Id = 1;
    Path = {export};
    Pseudo = {pseudo};
    Access_Type = RW;
    Squash = No_Root_Squash;
    Protocols = {protocols};
    Transports = TCP;
    SecType = sys;
    FSAL {{ Name = VFS; }}
}}
"""

PSEUDO = '/export'


class Ganesha:
    """A ganesha.nfsd serving ``export`` (a folder).

    :param base: folder for the config, log, pid file and recovery state.
    :param versions: NFS versions to serve (3 needs rpcbind).
    :param nfs_port: None picks a free port on the first start.
    :param bind: listen on 127.0.0.1 only (not in a private namespace).
    """

    def __init__(self, base, export, versions=(4,), nfs_port=None,
                 mnt_port=None, bind=True):
        self.binary = servers.require_binary('ganesha.nfsd', 'nfs-ganesha')
        self.base = str(base)
        self.export = str(export)
        self.versions = tuple(versions)
        self.nfs_port = nfs_port
        self.mnt_port = mnt_port
        self.bind = bind
        self.process = None
        for d in (self.base, self.export, os.path.join(self.base, 'rec')):
            os.makedirs(d, exist_ok=True)
        # the FSAL exports the folder as it is: let the tests' files be
        # served whatever umask created them
        os.chmod(self.export, 0o777)
        self.conf_path = os.path.join(self.base, 'ganesha.conf')

    def write_conf(self):
        protocols = ', '.join(str(v) for v in self.versions)
        with open(self.conf_path, 'w') as f:
            f.write(_CONF.format(
                nfs_port=self.nfs_port, mnt_port=self.mnt_port,
                bind='Bind_addr = 127.0.0.1;' if self.bind else '',
                protocols=protocols, export=self.export, pseudo=PSEUDO,
                recovery=os.path.join(self.base, 'rec')))

    def start(self, attempts: int = 3) -> 'Ganesha':
        fixed = self.nfs_port is not None
        for attempt in range(1 if fixed else attempts):
            if not fixed:
                self.nfs_port = servers.free_port()
                self.mnt_port = servers.free_port()
            self.write_conf()
            self.process = servers.Process(
                [self.binary, '-F', '-L',
                 os.path.join(self.base, 'ganesha.log'), '-f',
                 self.conf_path, '-p', os.path.join(self.base, 'pid')],
                name='ganesha.nfsd', port=self.nfs_port,
                log_path=os.path.join(self.base, 'stdout.log'),
                startup_timeout=30.0)
            try:
                self.process.start()
            except servers.ProcessExited:
                if fixed or attempt == attempts - 1:
                    raise
                continue
            if 3 in self.versions:
                servers.wait_for_port(servers.LOOPBACK, self.mnt_port,
                                      process=self.process)
                self._wait_registered()
            return self
        raise AssertionError('unreachable')

    def _wait_registered(self, timeout=20.0):
        """Wait until rpcbind maps MOUNT and NFS v3 to our ports.

        ganesha opens its ports before it (re-)registers them with
        rpcbind; a v3 mount in between fails with "Program is not
        available" (seen right after a restart that followed a kill).
        """
        rpcinfo = servers.require_binary('rpcinfo', 'rpcbind')
        want = {('100005', '3', str(self.mnt_port)),
                ('100003', '3', str(self.nfs_port))}
        deadline = time.monotonic() + timeout
        while True:
            out = subprocess.run([rpcinfo, '-p', servers.LOOPBACK],
                                 capture_output=True, text=True).stdout
            have = {tuple(f[i] for i in (0, 1, 3))
                    for f in (line.split() for line in out.splitlines())
                    if len(f) >= 4}
            if want <= have:
                return
            if time.monotonic() > deadline:
                raise AssertionError('ganesha did not register %s with '
                                     'rpcbind; rpcinfo -p:\n%s'
                                     % (sorted(want - have), out))
            time.sleep(0.05)

    def stop(self):
        if self.process is not None:
            self.process.stop(timeout=20)

    def kill(self):
        """SIGKILL (a crash): no clean shutdown."""
        if self.process is not None:
            self.process.signal(signal.SIGKILL)
            self.process.stop()

    def restart(self) -> 'Ganesha':
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def path(self, name: str) -> str:
        """The local path of ``name`` in the export."""
        return os.path.join(self.export, name)

    def url(self, name: str, version: int = 4, port: bool = True,
            query: str = '') -> str:
        """The ``nfs://`` URL of ``name``.

        NFSv4 uses the pseudo path, NFSv3 the real path of the export.
        """
        path = '%s/%s' % (PSEUDO if version == 4 else self.export, name)
        args = ['version=%d' % version]
        host = '127.0.0.1'
        if port:
            host = '127.0.0.1:%d' % self.nfs_port
        if query:
            args.append(query)
        return 'nfs://%s%s?%s' % (host, path, '&'.join(args))

    def __repr__(self):
        return '<Ganesha 127.0.0.1:%s v%s>' % (self.nfs_port, self.versions)
