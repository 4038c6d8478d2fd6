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

"""OpenSSH's sshd on 127.0.0.1 with its own host key, for the sftp tests.

The server runs in the foreground (``-D -e``) from a config written into a
folder of its own, logs users in with keys from one shared
``authorized_keys`` file (and with passwords, for the wrong-password test),
and serves SFTP with ``internal-sftp``.  :meth:`Sshd.kill` kills the
listener *and* its session processes, which is what a crash of the host
looks like to a client.
"""

import os
import subprocess

from tests.functional.ftp import ftpservers
from tests.functional import servers

LOOPBACK = servers.LOOPBACK


def keygen(path, kind='ed25519') -> str:
    """Create a key pair without passphrase; returns the public key line."""
    binary = servers.require_binary('ssh-keygen', 'openssh-client')
    for p in (path, path + '.pub'):
        if os.path.exists(p):
            os.unlink(p)
    subprocess.run([binary, '-q', '-t', kind, '-N', '', '-f', path],
                   check=True, capture_output=True)
    with open(path + '.pub') as f:
        return f.read().strip()


class Sshd:
    """sshd serving SFTP on 127.0.0.1:``port``.

    :param root: folder of the config, host key, pid and log.
    :param authorized_keys: the AuthorizedKeysFile for every user (must be
        readable by them).
    """

    def __init__(self, root, authorized_keys, password_auth=True):
        self.root = str(root)
        os.makedirs(self.root, exist_ok=True)
        self.authorized_keys = str(authorized_keys)
        self.password_auth = password_auth
        self.port = servers.free_port()
        self.host_key = os.path.join(self.root, 'ssh_host_ed25519_key')
        self.host_pub = keygen(self.host_key)
        self.proc = None

    def known_hosts_line(self) -> str:
        kind, blob = self.host_pub.split()[:2]
        return '[%s]:%d %s %s\n' % (LOOPBACK, self.port, kind, blob)

    def _config(self):
        os.makedirs('/run/sshd', exist_ok=True)
        lines = [
            'Port %d' % self.port, 'ListenAddress %s' % LOOPBACK,
            'HostKey %s' % self.host_key,
            'PidFile %s' % os.path.join(self.root, 'sshd.pid'),
            'AuthorizedKeysFile %s' % self.authorized_keys,
            'PasswordAuthentication %s' % ('yes' if self.password_auth
                                           else 'no'),
            'KbdInteractiveAuthentication no', 'UsePAM no',
            'PermitRootLogin prohibit-password', 'StrictModes no',
            'Subsystem sftp internal-sftp', 'LogLevel VERBOSE',
            'MaxStartups 100', 'MaxSessions 100', 'UseDNS no',
        ]
        path = os.path.join(self.root, 'sshd_config')
        with open(path, 'w') as f:
            f.write('\n'.join(lines) + '\n')
        return path

    def start(self) -> 'Sshd':
        binary = servers.require_binary('sshd', 'openssh-server')
        conf = self._config()
        self.proc = servers.Process(
            [binary, '-D', '-e', '-f', conf], name='sshd', port=self.port,
            log_path=os.path.join(self.root, 'sshd.log'))
        self.proc.start()
        return self

    def kill(self):
        """SIGKILL the listener and every session (a crash)."""
        ftpservers.kill_tree(self.proc)
        servers.wait_for_port_closed(LOOPBACK, self.port)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.kill()

    def restart(self):
        self.kill()
        return self.start()

    def url(self, path, user=None, password=None):
        auth = ''
        if user:
            auth = user + (':%s' % password if password is not None
                           else '') + '@'
        return 'sftp://%s%s:%d%s' % (auth, LOOPBACK, self.port, path)

    def log_tail(self):
        return self.proc.log_tail() if self.proc else ''
