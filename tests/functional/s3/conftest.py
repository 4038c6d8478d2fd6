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

"""moto's standalone S3 server (``moto_server``) on loopback.

One server per session, started from this interpreter (``python -m
moto.server``, what the ``moto_server`` script runs) on a free port and
stopped by its PID; its request log (one line per request, query string
included) lets tests count what reached the server.  Each test uses
buckets and keys of its own.
"""

import itertools
import os
import re
import sys

import pytest

from tests.functional import servers

_n = itertools.count()


class MotoServer:
    """A running moto server: its endpoint, a boto3 client, its log."""

    def __init__(self, proc):
        self.proc = proc
        self.port = proc.port
        self.endpoint = 'http://127.0.0.1:%d' % self.port
        import boto3
        self.client = boto3.client(
            's3', endpoint_url=self.endpoint, region_name='us-east-1',
            aws_access_key_id='test-key', aws_secret_access_key='test-secret')

    def options(self, **extra) -> dict:
        """``[oslo_transfer_s3]`` for this server."""
        opts = {'endpoint_url': self.endpoint,
                'access_key_id': 'test-key',
                'secret_access_key': 'test-secret'}
        opts.update(extra)
        return opts

    def bucket(self) -> str:
        name = 'b%d-%d' % (os.getpid(), next(_n))
        self.client.create_bucket(Bucket=name)
        return name

    def put(self, bucket, key, data) -> str:
        self.client.put_object(Bucket=bucket, Key=key, Body=data)
        return 's3://%s/%s' % (bucket, key)

    def get(self, bucket, key) -> bytes:
        return self.client.get_object(Bucket=bucket, Key=key)['Body'].read()

    def log_lines(self) -> list:
        with open(self.proc.log_path, 'rb') as f:
            return f.read().decode('utf-8', 'replace').splitlines()

    def requests_matching(self, pattern) -> list:
        """The first group of ``pattern`` in each request line it matches.

        Request lines read ``PUT /BUCKET/KEY?uploadId=U&partNumber=N
        HTTP/1.1``.
        """
        rx = re.compile(pattern)
        out = []
        for line in self.log_lines():
            if '"' in line:
                m = rx.search(line.split('"')[1])
                if m:
                    out.append(m.group(1))
        return out


def _start(tmp_path_factory):
    try:
        import boto3  # noqa: F401
        import moto.server  # noqa: F401
    except ImportError as exc:
        pytest.fail('moto_server is not installed: pip install '
                    '"moto[server]" boto3 (test-requirements.txt): %s' % exc,
                    pytrace=False)
    port = servers.free_port()
    log = tmp_path_factory.mktemp('moto') / 'moto.log'
    proc = servers.Process([sys.executable, '-m', 'moto.server', '-H',
                            '127.0.0.1', '-p', port], name='moto_server',
                           port=port, log_path=str(log),
                           startup_timeout=60.0)
    proc.start()
    return proc


@pytest.fixture(scope='session')
def moto(tmp_path_factory):
    """The session's moto server (:class:`MotoServer`)."""
    proc = _start(tmp_path_factory)
    try:
        yield MotoServer(proc)
    finally:
        proc.stop()


class RestartableMoto(MotoServer):
    """moto's S3 app served from a thread of this process, on one port.

    :meth:`stop` closes the listening socket (a client then meets a
    refused connection) and :meth:`start` listens again on the same port
    with the same buckets and multipart uploads: moto keeps them in this
    process, where a ``moto_server`` restarted in a new process would
    have lost them.  Every request line is recorded (:attr:`requests`).
    """

    def __init__(self):
        from moto.moto_server import werkzeug_app
        self.app = werkzeug_app.DomainDispatcherApplication(
            werkzeug_app.create_backend_app)
        self.requests = []
        self.port = servers.free_port()
        self._server = self._thread = None
        self.start()
        self.endpoint = 'http://127.0.0.1:%d' % self.port
        import boto3
        self.client = boto3.client(
            's3', endpoint_url=self.endpoint, region_name='us-east-1',
            aws_access_key_id='test-key', aws_secret_access_key='test-secret')

    def _recorded(self, environ, start_response):
        query = environ.get('QUERY_STRING')
        self.requests.append('%s %s%s' % (
            environ['REQUEST_METHOD'], environ['PATH_INFO'],
            '?' + query if query else ''))
        return self.app(environ, start_response)

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self):
        import threading
        from werkzeug import serving
        self._server = serving.make_server('127.0.0.1', self.port,
                                           self._recorded, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name='moto-in-process', daemon=True)
        self._thread.start()

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = self._thread = None

    def requests_matching(self, pattern, requests=None) -> list:
        """The first group of ``pattern`` in each recorded request line."""
        rx = re.compile(pattern)
        return [m.group(1) for m in map(
            rx.search, self.requests if requests is None else requests)
            if m]


@pytest.fixture
def restartable_moto():
    """A :class:`RestartableMoto` for one test."""
    try:
        import moto.moto_server.werkzeug_app  # noqa: F401
    except ImportError as exc:
        pytest.fail('moto[server] is not installed (test-requirements.txt): '
                    '%s' % exc, pytrace=False)
    server = RestartableMoto()
    try:
        yield server
    finally:
        server.stop()
