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

"""A real nginx on 127.0.0.1, configured from a file under a temp folder.

One server block serves ``docroot`` under several locations, each a variant
that a test needs:

==================  ========================================================
``/``               plain static files (Range, ETag, Last-Modified)
``/noranges/``      the same files with ``max_ranges 0``: Range is ignored,
                    200 and the whole body instead of 206
``/slow/``          the same files with ``limit_rate`` (per connection)
``/dav/``           ``upload_dir``: GET, and PUT/DELETE/MKCOL by the dav
                    module
``/private/``       the same files behind ``auth_basic`` (``USER``/
                    ``PASSWORD``)
``/forbidden/``     always 403
``/error/``         always 500
``/unavailable/``   always 503
``/redirect/X``     302 to ``/X``
``/loop/``          redirects to itself forever
==================  ========================================================

With ``tls=True`` a second server block on ``tls_port`` serves ``/`` and
``/dav/`` over HTTPS with a self-signed certificate for ``127.0.0.1``
(``cert_file``).
The access log (``access_log``) records method, URI, status, Range header,
body bytes sent, basic-auth user and the request's Content-Length and
Transfer-Encoding headers, one request per line, for assertions
(:meth:`Nginx.field`).

nginx runs in the foreground (``daemon off``) and is stopped by SIGTERM to
its master PID (fast shutdown: open connections are cut, which is what the
"server stopped mid-transfer" tests want).
"""

import os
import subprocess
import time

from tests.functional import servers

USER = 'glance'
#: A password that must never appear in a message or a log line.
PASSWORD = 'Zq9-n0t-in-logs-Xw7'

_CONF = """\
daemon off;
master_process on;
worker_processes 1;
user root;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;

events {{
    worker_connections 512;
}}

http {{
    default_type application/octet-stream;
    types {{ }}
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 30s;
    server_tokens off;
    client_body_temp_path {prefix}/client_body_temp;
    proxy_temp_path {prefix}/proxy_temp;
    fastcgi_temp_path {prefix}/fastcgi_temp;
    uwsgi_temp_path {prefix}/uwsgi_temp;
    scgi_temp_path {prefix}/scgi_temp;
    log_format transfer '$request_method $uri $status '
                        'range=$http_range sent=$body_bytes_sent '
                        'auth=$remote_user cl=$http_content_length '
                        'te=$http_transfer_encoding';
    access_log {prefix}/access.log transfer;

    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {docroot};

        location / {{
        }}
        location /noranges/ {{
            alias {docroot}/;
            max_ranges 0;
        }}
        location /slow/ {{
            alias {docroot}/;
            limit_rate {rate};
        }}
        location /dav/ {{
            alias {upload_dir}/;
            dav_methods PUT DELETE MKCOL;
            create_full_put_path on;
            client_max_body_size 0;
            dav_access user:rw group:r all:r;
        }}
        location /private/ {{
            alias {docroot}/;
            auth_basic "oslo.transfer tests";
            auth_basic_user_file {prefix}/htpasswd;
        }}
        location /forbidden/ {{
            return 403;
        }}
        location /error/ {{
            return 500;
        }}
        location /unavailable/ {{
            return 503;
        }}
        location /redirect/ {{
            rewrite ^/redirect/(.*)$ /$1 redirect;
        }}
        location /loop/ {{
            rewrite ^ /loop/again redirect;
        }}
    }}
{tls_server}}}
"""

_TLS_SERVER = """
    server {{
        listen 127.0.0.1:{tls_port} ssl;
        server_name localhost;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {docroot};
        location / {{
        }}
        location /dav/ {{
            alias {upload_dir}/;
            dav_methods PUT DELETE MKCOL;
            create_full_put_path on;
            client_max_body_size 0;
            dav_access user:rw group:r all:r;
        }}
    }}
"""


def make_htpasswd(path, user: str, password: str):
    """Write an htpasswd file (apr1 hash made by ``openssl passwd``)."""
    openssl = servers.require_binary('openssl', 'openssl')
    hashed = subprocess.run([openssl, 'passwd', '-apr1', '-stdin'],
                            input=password.encode(), check=True,
                            capture_output=True).stdout.decode().strip()
    with open(path, 'w') as f:
        f.write('%s:%s\n' % (user, hashed))


def make_self_signed_cert(directory) -> tuple:
    """Create a self-signed certificate for ``127.0.0.1``.

    :returns: ``(cert_file, key_file)``; the certificate is its own CA.
    """
    openssl = servers.require_binary('openssl', 'openssl')
    cert = os.path.join(str(directory), 'cert.pem')
    key = os.path.join(str(directory), 'key.pem')
    subprocess.run([openssl, 'req', '-x509', '-newkey', 'rsa:2048',
                    '-nodes', '-keyout', key, '-out', cert, '-days', '2',
                    '-subj', '/CN=127.0.0.1',
                    '-addext', 'subjectAltName=IP:127.0.0.1',
                    '-addext', 'basicConstraints=critical,CA:TRUE'],
                   check=True, capture_output=True)
    return cert, key


class Nginx:
    """An nginx instance; :meth:`start`, :meth:`stop`, :meth:`restart`.

    The port stays the same across restarts, so URLs (and the resume
    state that names them) stay valid.

    :param prefix: folder for the config, logs, pid and temp paths.
    :param docroot: folder served at ``/`` (and the variants).
    :param upload_dir: folder behind ``/dav/``.
    :param rate: ``limit_rate`` of ``/slow/`` (nginx syntax, ``4m``).
    :param tls: also serve HTTPS on ``tls_port``.
    """

    def __init__(self, prefix, docroot, upload_dir=None, rate: str = '4m',
                 tls: bool = False, cert=None):
        self.binary = servers.require_binary('nginx', 'nginx')
        self.prefix = str(prefix)
        self.docroot = str(docroot)
        self.upload_dir = str(upload_dir or os.path.join(self.prefix,
                                                         'upload'))
        self.rate = rate
        self.tls = tls
        self.cert_file, self.key_file = cert or (None, None)
        self.port = None
        self.tls_port = None
        self.process = None
        for d in (self.prefix, self.docroot, self.upload_dir):
            os.makedirs(d, exist_ok=True)
        self.conf_path = os.path.join(self.prefix, 'nginx.conf')
        self.access_log = os.path.join(self.prefix, 'access.log')
        self.error_log = os.path.join(self.prefix, 'error.log')
        make_htpasswd(os.path.join(self.prefix, 'htpasswd'), USER, PASSWORD)
        if tls and cert is None:
            self.cert_file, self.key_file = make_self_signed_cert(
                self.prefix)

    # -- config --------------------------------------------------------------

    def write_conf(self):
        tls_server = ''
        if self.tls:
            tls_server = _TLS_SERVER.format(tls_port=self.tls_port,
                                            cert=self.cert_file,
                                            key=self.key_file,
                                            docroot=self.docroot,
                                            upload_dir=self.upload_dir)
        with open(self.conf_path, 'w') as f:
            f.write(_CONF.format(prefix=self.prefix, port=self.port,
                                 docroot=self.docroot,
                                 upload_dir=self.upload_dir, rate=self.rate,
                                 tls_server=tls_server))

    # -- life cycle ----------------------------------------------------------

    def start(self, attempts: int = 3) -> 'Nginx':
        """Start; on the first start pick free ports (retry if taken)."""
        fixed = self.port is not None
        for attempt in range(1 if fixed else attempts):
            if not fixed:
                self.port = servers.free_port()
                self.tls_port = servers.free_port() if self.tls else None
            self.write_conf()
            self.process = servers.Process(
                [self.binary, '-c', self.conf_path, '-p', self.prefix,
                 '-e', self.error_log],
                name='nginx', port=self.port,
                log_path=os.path.join(self.prefix, 'stdout.log'))
            try:
                self.process.start()
            except servers.ProcessExited:
                if fixed or attempt == attempts - 1 or \
                        'in use' not in self.process.log_tail():
                    raise
                continue
            if self.tls:
                servers.wait_for_port(servers.LOOPBACK, self.tls_port,
                                      process=self.process)
            return self
        raise AssertionError('unreachable')

    def stop(self):
        """SIGTERM the master (fast shutdown) and wait until it is gone."""
        if self.process is not None:
            self.process.stop()

    def restart(self, rate: str | None = None) -> 'Nginx':
        """Stop, optionally change ``limit_rate``, start on the same port."""
        self.stop()
        if rate is not None:
            self.rate = rate
        return self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    # -- helpers for tests ---------------------------------------------------

    def url(self, name: str = '', location: str = '', userinfo: str = '',
            tls: bool = False) -> str:
        """URL of ``name`` under ``location`` (``slow``, ``dav``...)."""
        path = '/'.join(p.strip('/') for p in (location, name) if p)
        host = '127.0.0.1:%d' % (self.tls_port if tls else self.port)
        if userinfo:
            host = '%s@%s' % (userinfo, host)
        return '%s://%s/%s' % ('https' if tls else 'http', host, path)

    def access_lines(self) -> list:
        """The access log, one string per request (oldest first)."""
        if not os.path.exists(self.access_log):
            return []
        with open(self.access_log) as f:
            return [line.rstrip('\n') for line in f]

    def requests_for(self, name: str) -> list:
        """Access log lines whose URI ends with ``/name``."""
        return [line for line in self.access_lines()
                if line.split(' ')[1].endswith('/' + name)]

    def wait_for_requests(self, name: str, method: str,
                          timeout: float = 10.0) -> list:
        """Access log lines of ``method`` for ``name``, once there is one.

        nginx writes the line after it sent the answer, so a client may
        see the answer before the line is in the log.
        """
        deadline = time.monotonic() + timeout
        while True:
            lines = [ln for ln in self.requests_for(name)
                     if ln.startswith(method + ' ')]
            if lines or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)

    def settled_requests_for(self, name: str, quiet: float = 0.3,
                             timeout: float = 10.0) -> list:
        """``requests_for(name)`` once the lines stopped coming.

        Waits for a first line, then until no new one came for ``quiet``
        seconds: nginx logs after it answered (see
        :meth:`wait_for_requests`).
        """
        deadline = time.monotonic() + timeout
        lines, since = self.requests_for(name), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            now = self.requests_for(name)
            if now != lines:
                lines, since = now, time.monotonic()
            elif lines and time.monotonic() - since >= quiet:
                break
        return lines

    @staticmethod
    def field(line: str, name: str) -> str:
        """The value of ``name=`` in an access log line (``-``: none)."""
        for f in line.split(' '):
            if f.startswith(name + '='):
                return f[len(name) + 1:]
        raise KeyError(name)

    def bytes_sent_for(self, name: str) -> int:
        """Body bytes nginx sent for ``name`` (all requests)."""
        total = 0
        for line in self.requests_for(name):
            for field in line.split(' '):
                if field.startswith('sent='):
                    total += int(field[5:])
        return total

    def __repr__(self):
        return '<Nginx port=%s pid=%s>' % (self.port, self.process and
                                           self.process.pid)
