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

"""Real FTP servers on 127.0.0.1 for the ftp driver's tests (and helpers
the sftp suite shares: a local user, process trees, a small tmpfs).

* :class:`Vsftpd`: vsftpd 3 in the foreground from a config written into a
  folder of its own; anonymous (read-only) and local-user logins, optional
  FTPS, optional PASV spoofing (``pasv_address``) with EPSV refused.
* :class:`ServeFTP`: ``python -m oslo_transfer.cmd.serve`` (pyftpdlib), the
  command users run, as a subprocess.
* :func:`spoofing_pyftpd`: an in-process pyftpdlib server that refuses EPSV
  and announces another loopback address in PASV.
* :class:`HostileFTP`: an in-process control connection that answers each
  command with the raw bytes a test gives (a Latin-1 banner, a SIZE in
  another script's digits, an endless FEAT), counting what it sent.
* :class:`LocalUser`: a unique system user (useradd + chpasswd), removed at
  the end; vsftpd logs local users in with PAM, and the sftp suite uses it
  for permission tests.

Servers keep their port across restarts, so a test can kill one in the
middle of a transfer and start it again.
"""

import os
import secrets
import shutil
import signal
import socketserver
import subprocess
import sys
import threading
import time

from tests.functional import servers

LOOPBACK = servers.LOOPBACK


def descendants(pid: int) -> list:
    """PIDs of every descendant of ``pid`` (from /proc), deepest last."""
    out = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open('/proc/%d/task/%d/children' % (p, p)) as f:
                kids = [int(k) for k in f.read().split()]
        except OSError:
            continue
        out.extend(kids)
        todo.extend(kids)
    return out


def kill_tree(proc: servers.Process) -> None:
    """SIGKILL a server and every process it forked (by PID)."""
    if proc.popen is None or proc.poll() is not None:
        return
    kids = descendants(proc.pid)
    proc.kill()
    for k in kids:
        try:
            os.kill(k, signal.SIGKILL)
        except ProcessLookupError:
            pass


def make_cert(directory) -> tuple:
    """A self-signed certificate for 127.0.0.1 (its own CA)."""
    openssl = servers.require_binary('openssl', 'openssl')
    cert = os.path.join(str(directory), 'ftp-cert.pem')
    key = os.path.join(str(directory), 'ftp-key.pem')
    subprocess.run([openssl, 'req', '-x509', '-newkey', 'rsa:2048',
                    '-nodes', '-keyout', key, '-out', cert, '-days', '2',
                    '-subj', '/CN=127.0.0.1',
                    '-addext', 'subjectAltName=IP:127.0.0.1',
                    '-addext', 'basicConstraints=critical,CA:TRUE'],
                   check=True, capture_output=True)
    return cert, key


def _run_retry(argv, input_text=None, attempts=20):
    """useradd & co. fail while another process holds /etc/passwd's lock."""
    for i in range(attempts):
        res = subprocess.run(argv, input=input_text, capture_output=True,
                             text=True)
        if res.returncode == 0:
            return
        time.sleep(0.2 + 0.1 * i)
    raise RuntimeError('%s failed: %s' % (' '.join(argv), res.stderr))


class LocalUser:
    """A system user with a random name and password, for this run only."""

    def __init__(self, home):
        self.name = 'otx%s' % secrets.token_hex(4)
        self.password = 'pw-%s' % secrets.token_hex(8)
        self.home = str(home)

    def create(self) -> 'LocalUser':
        for tool in ('useradd', 'chpasswd', 'userdel'):
            servers.require_binary(tool, 'passwd')
        _run_retry(['useradd', '-M', '-d', self.home, '-s', '/bin/bash',
                    self.name])
        _run_retry(['chpasswd'], '%s:%s\n' % (self.name, self.password))
        import pwd
        pw = pwd.getpwnam(self.name)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        return self

    def chown(self, path):
        os.chown(path, self.uid, self.gid)

    def remove(self):
        _run_retry(['userdel', '-f', self.name], attempts=10)


class Vsftpd:
    """vsftpd on 127.0.0.1:``port``.

    :param root: folder of the config, logs and the empty chroot folder.
    :param anon_root: what anonymous users see (root-owned, read-only).
    :param user: a :class:`LocalUser` whose home is what it sees.
    :param cert: ``(cert, key)`` to enable explicit FTPS.
    :param pasv_address: address announced in PASV replies; with
        ``deny_epsv`` the client must use PASV (spoofing tests).
    """

    def __init__(self, root, anon_root, user=None, cert=None,
                 pasv_address=LOOPBACK, deny_epsv=False):
        self.root = str(root)
        self.anon_root = str(anon_root)
        self.user = user
        self.cert = cert
        self.pasv_address = pasv_address
        self.deny_epsv = deny_epsv
        self.port = servers.free_port()
        self.proc = None

    def _config(self):
        empty = os.path.join(self.root, 'empty')
        os.makedirs(empty, exist_ok=True)
        lines = [
            'listen=YES', 'listen_ipv6=NO', 'background=NO',
            'listen_address=%s' % LOOPBACK, 'listen_port=%d' % self.port,
            'anonymous_enable=YES', 'anon_root=%s' % self.anon_root,
            'no_anon_password=YES', 'anon_upload_enable=NO',
            'local_enable=%s' % ('YES' if self.user else 'NO'),
            'write_enable=YES', 'local_umask=022',
            'pasv_enable=YES', 'port_enable=NO',
            'pasv_address=%s' % self.pasv_address, 'pasv_addr_resolve=NO',
            'seccomp_sandbox=NO', 'secure_chroot_dir=%s' % empty,
            'pam_service_name=vsftpd', 'userlist_enable=NO',
            'xferlog_enable=YES', 'vsftpd_log_file=%s'
            % os.path.join(self.root, 'vsftpd.log'),
            'log_ftp_protocol=YES', 'max_clients=0', 'max_per_ip=0',
            'idle_session_timeout=120', 'data_connection_timeout=60',
        ]
        if self.user:
            lines.append('local_root=%s' % self.user.home)
        if self.deny_epsv:
            lines.append('cmds_denied=EPSV')
        if self.cert:
            lines += ['ssl_enable=YES', 'rsa_cert_file=%s' % self.cert[0],
                      'rsa_private_key_file=%s' % self.cert[1],
                      'allow_anon_ssl=YES', 'force_local_logins_ssl=NO',
                      'force_local_data_ssl=NO', 'require_ssl_reuse=YES',
                      'ssl_tlsv1=YES', 'ssl_ciphers=HIGH']
        path = os.path.join(self.root, 'vsftpd.conf')
        with open(path, 'w') as f:
            f.write('\n'.join(lines) + '\n')
        return path

    def start(self) -> 'Vsftpd':
        binary = servers.require_binary('vsftpd', 'vsftpd')
        conf = self._config()
        self.proc = servers.Process(
            [binary, conf], name='vsftpd', port=self.port,
            log_path=os.path.join(self.root, 'vsftpd.stderr'))
        self.proc.start()
        return self

    def kill(self):
        """SIGKILL the server and its sessions (a crash)."""
        kill_tree(self.proc)
        servers.wait_for_port_closed(LOOPBACK, self.port)

    def stop(self):
        if self.proc is not None:
            for k in descendants(self.proc.pid or 0):
                try:
                    os.kill(k, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            self.proc.stop()

    def restart(self):
        self.kill()
        return self.start()

    def url(self, name, user=None, password=None, scheme='ftp'):
        auth = ''
        if user:
            auth = user + (':%s' % password if password is not None
                           else '') + '@'
        return '%s://%s%s:%d/%s' % (scheme, auth, LOOPBACK, self.port, name)

    def log_tail(self):
        path = os.path.join(self.root, 'vsftpd.log')
        if not os.path.exists(path):
            return ''
        with open(path, errors='replace') as f:
            return f.read()[-4000:]


class ServeFTP:
    """``python -m oslo_transfer.cmd.serve --ftp DIR`` as a subprocess."""

    def __init__(self, root, directory, user=None, password=None,
                 writable=False, extra=()):
        self.root = str(root)
        self.directory = str(directory)
        self.user = user
        self.password = password
        self.writable = writable
        self.extra = list(extra)
        self.port = servers.free_port()
        self.proc = None

    def argv(self):
        argv = [sys.executable, '-m', 'oslo_transfer.cmd.serve', '-v',
                '--ftp', self.directory,
                '--bind', '%s:%d' % (LOOPBACK, self.port)]
        if self.user:
            pw_file = os.path.join(self.root, 'serve-password')
            with open(pw_file, 'w') as f:
                f.write(self.password + '\n')
            os.chmod(pw_file, 0o600)
            argv += ['--user', self.user, '--password-file', pw_file]
        if self.writable:
            argv.append('--writable')
        return argv + self.extra

    def start(self) -> 'ServeFTP':
        os.makedirs(self.root, exist_ok=True)
        self.proc = servers.Process(
            self.argv(), name='oslo-transfer serve', port=self.port,
            log_path=os.path.join(self.root, 'serve.log'))
        self.proc.start()
        return self

    def kill(self):
        kill_tree(self.proc)
        servers.wait_for_port_closed(LOOPBACK, self.port)

    def stop(self):
        if self.proc is not None:
            self.proc.stop()

    def restart(self):
        self.kill()
        return self.start()

    def url(self, name, with_password=True):
        auth = ''
        if self.user:
            auth = self.user
            if with_password:
                auth += ':' + self.password
            auth += '@'
        return 'ftp://%s%s:%d/%s' % (auth, LOOPBACK, self.port, name)

    def log_tail(self):
        return self.proc.log_tail() if self.proc else ''


class spoofing_pyftpd:
    """In-process pyftpdlib that refuses EPSV and lies in PASV replies.

    ``with spoofing_pyftpd(directory) as srv: srv.url(name)``; PASV answers
    announce ``127.0.0.2`` (another loopback address where nothing
    listens), so a client that follows the announced address fails.
    """

    announced = '127.0.0.2'

    def __init__(self, directory):
        self.directory = str(directory)

    def __enter__(self):
        from pyftpdlib import authorizers
        from pyftpdlib import handlers
        from pyftpdlib import servers as ftpservers

        auth = authorizers.DummyAuthorizer()
        auth.add_anonymous(self.directory, perm='elr')
        cmds = dict(handlers.FTPHandler.proto_cmds)
        cmds.pop('EPSV', None)
        handler = type('SpoofHandler', (handlers.FTPHandler,), {
            'authorizer': auth, 'masquerade_address': self.announced,
            'proto_cmds': cmds})
        self.server = ftpservers.FTPServer((LOOPBACK, 0), handler)
        self.port = self.server.socket.getsockname()[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={'timeout': 0.2, 'handle_exit': False}, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.ioloop.call_later(0, self._stop)
        self.thread.join(10)

    def _stop(self):
        self.server.close_all()

    def url(self, name):
        return 'ftp://%s:%d/%s' % (LOOPBACK, self.port, name)


class HostileFTP:
    """A scripted FTP control connection on 127.0.0.1 (no data channel).

    :param replies: ``{COMMAND: bytes}``: the raw reply to each command
        verb (``b"213 ..."``, CRLF added); a callable ``reply(send)`` may
        instead write as much as it likes through ``send(bytes)`` and
        returns when done.  Unknown commands get ``502``.
    :param banner: the raw greeting.
    """

    def __init__(self, replies, banner=b'220 hostile'):
        self.replies = dict(replies)
        self.banner = banner
        self.sent = 0
        self.commands = []
        owner = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                self.send(owner.banner + b'\r\n')
                while True:
                    line = self.rfile.readline(4096)
                    if not line:
                        return
                    verb = line.split(b' ', 1)[0].strip().upper().decode()
                    owner.commands.append(verb)
                    reply = owner.replies.get(verb, b'502 not here')
                    try:
                        if callable(reply):
                            reply(self.send)
                        else:
                            self.send(reply + b'\r\n')
                    except OSError:
                        return

            def send(self, data):
                self.wfile.write(data)
                owner.sent += len(data)

        self.server = socketserver.ThreadingTCPServer((LOOPBACK, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]

    def __enter__(self):
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={'poll_interval': 0.05},
                                       daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def url(self, name, userinfo='u:pw-5e0b'):
        return 'ftp://%s@%s:%d/%s' % (userinfo, LOOPBACK, self.port, name)


class Tmpfs:
    """A small tmpfs mounted on ``path`` (root only); see :meth:`umount`."""

    def __init__(self, path, size='8m'):
        self.path = str(path)
        self.size = size
        self.mounted = False

    def mount(self) -> 'Tmpfs':
        os.makedirs(self.path, exist_ok=True)
        res = subprocess.run(['mount', '-t', 'tmpfs', '-o',
                              'size=%s,mode=0755' % self.size, 'tmpfs',
                              self.path], capture_output=True, text=True)
        if res.returncode:
            raise RuntimeError('cannot mount a tmpfs on %s (tests need '
                               'root): %s' % (self.path, res.stderr))
        self.mounted = True
        return self

    def umount(self):
        if self.mounted:
            subprocess.run(['umount', '-l', self.path], capture_output=True)
            self.mounted = False


class SmallExt4(Tmpfs):
    """A small ext4 file system (an image on a loop device) on ``path``.

    A local disk file system, so durable downloads into it are written
    with O_DIRECT (tmpfs is not): the disk-full path of that writer.
    """

    def mount(self) -> 'SmallExt4':
        from tests.functional import servers
        mkfs = servers.require_binary('mkfs.ext4', 'e2fsprogs')
        os.makedirs(self.path, exist_ok=True)
        image = self.path.rstrip('/') + '.img'
        with open(image, 'wb') as f:
            f.truncate(int(self.size.rstrip('m')) * 1024 * 1024)
        res = subprocess.run([mkfs, '-q', '-F', '-m', '0', image],
                             capture_output=True, text=True)
        if res.returncode:
            raise RuntimeError('mkfs.ext4 failed: %s' % res.stderr)
        res = subprocess.run(['mount', '-o', 'loop', image, self.path],
                             capture_output=True, text=True)
        if res.returncode:
            raise RuntimeError('cannot loop-mount %s on %s (tests need root '
                               'and a loop device): %s'
                               % (image, self.path, res.stderr))
        self.mounted = True
        return self


def make_shared_base(prefix: str) -> str:
    """A 0755 folder under /tmp that a local user can traverse."""
    import tempfile
    base = tempfile.mkdtemp(prefix=prefix, dir='/tmp')
    os.chmod(base, 0o755)
    return base


def remove_tree(path):
    shutil.rmtree(path, ignore_errors=True)
