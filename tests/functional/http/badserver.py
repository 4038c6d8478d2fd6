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

"""A small HTTP/1.1 server that misbehaves on purpose.

nginx behaves; clients must also survive servers that do not.  Each
resource (:class:`Resource`) holds its bytes, its validator and a queue of
*faults*; every GET takes the next fault of the queue (none left: behave):

``Truncate(n)``
    announce the full ``Content-Length`` but send only ``n`` body bytes,
    then close the connection (a dropped connection / truncated body);
``WrongContentRange(shift)``
    answer a ranged GET with 206 and a ``Content-Range`` that starts
    ``shift`` bytes away from the requested start (with the bytes of that
    other range): a client that trusts its own offset writes them in the
    wrong place;
``IgnoreRange(length=True)``
    answer a ranged GET with 200 and the whole object; with
    ``length=False`` (any GET) the answer has no ``Content-Length`` and
    the body ends when the connection closes, as a server that streams
    what it generates answers;
``Replace(data, etag)``
    before answering, replace the content and the ETag (the source was
    replaced between two requests);
``Status(code)``
    answer with an error page of that status;
``Trickle(what, interval)``
    send the status line and headers (``what='head'``) or the body
    (``what='body'``) one byte every ``interval`` seconds, each byte well
    within any I/O timeout, until the client goes away.

A fault with ``sticky=True`` stays at the head of the queue (applies to
every later GET).  HEAD never takes a fault.  Every request is recorded in
``server.log`` as a :class:`Request` for assertions.

A resource may also answer every HEAD with an error (``head_status``, as
S3 presigned GET URLs answer 403) or every request with a 302
(``redirect``).  With ``ssl_context`` the server speaks TLS to a client
whose first byte is a TLS handshake and plain HTTP to the others, on the
same port: ``https://H:P/x`` and ``http://H:P/x`` have the same host and
port, so a redirect between them is a scheme change only.
"""

import dataclasses
import email.utils
import re
import socket
import socketserver
import threading
import time

__all__ = ['BadServer', 'Resource', 'Truncate', 'WrongContentRange',
           'IgnoreRange', 'Replace', 'Status', 'Trickle', 'Request']

_RANGE = re.compile(r'^bytes=(\d+)-(\d*)$')


@dataclasses.dataclass
class Truncate:
    nbytes: int
    sticky: bool = False


@dataclasses.dataclass
class WrongContentRange:
    shift: int = 4096
    sticky: bool = False


@dataclasses.dataclass
class IgnoreRange:
    sticky: bool = False
    length: bool = True


@dataclasses.dataclass
class Replace:
    data: bytes
    etag: str
    sticky: bool = False


@dataclasses.dataclass
class Status:
    code: int
    sticky: bool = False
    #: reason phrase that repeats the value of this request header (a
    #: server that echoes what it was sent)
    echo: str | None = None


@dataclasses.dataclass
class Trickle:
    what: str = 'body'
    interval: float = 0.25
    sticky: bool = False


@dataclasses.dataclass
class Resource:
    """Bytes served at one path, with a validator and a fault queue."""

    data: bytes
    etag: str | None = '"v1"'
    last_modified: float = dataclasses.field(default_factory=time.time)
    accept_ranges: bool = True
    faults: list = dataclasses.field(default_factory=list)
    #: answer HEAD with this status (and no validator) instead
    head_status: int | None = None
    #: answer every request with ``302 Location: redirect``
    redirect: str | None = None
    #: headers sent as they are (replacing ours of the same name), on
    #: HEAD and GET: a hostile server's Content-Length, say
    raw_headers: dict | None = None
    #: a new ETag (and Last-Modified) for every request, HEAD included:
    #: an object rewritten all the time
    new_version_per_request: bool = False
    #: requests answered so far (counts the versions above)
    served: int = 0

    def replace(self, data: bytes, etag: str):
        self.data = data
        self.etag = etag
        self.last_modified = time.time() + 1


@dataclasses.dataclass
class Request:
    method: str
    path: str
    headers: dict
    status: int = 0
    sent: int = 0
    fault: object = None
    tls: bool = False

    @property
    def range(self) -> str | None:
        return self.headers.get('range')


_REASONS = {200: 'OK', 206: 'Partial Content', 302: 'Found',
            304: 'Not Modified', 400: 'Bad Request',
            401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found',
            416: 'Range Not Satisfiable', 500: 'Internal Server Error',
            503: 'Service Unavailable'}


class _Handler(socketserver.StreamRequestHandler):

    tls = False
    #: seconds between the bytes of the head / of the body (Trickle)
    slow_head = None
    slow_body = None

    def _write(self, data, interval):
        if interval is None:
            self.wfile.write(data)
            return
        for i in range(len(data)):
            self.wfile.write(data[i:i + 1])
            self.wfile.flush()
            time.sleep(interval)

    def setup(self):
        ctx = self.server.owner.ssl_context
        if ctx is not None:
            self.request.settimeout(30)
            try:
                first = self.request.recv(1, socket.MSG_PEEK)
            except OSError:
                first = b''
            if first == b'\x16':  # a TLS handshake record
                self.request = ctx.wrap_socket(self.request,
                                               server_side=True)
                self.tls = True
        super().setup()

    def handle(self):
        # One request per connection (Connection: close) keeps it simple.
        try:
            line = self.rfile.readline(65537).decode('latin-1').strip()
            if not line:
                return
            method, path, _ = line.split(' ', 2)
            headers = {}
            while True:
                h = self.rfile.readline(65537).decode('latin-1')
                if h in ('\r\n', '\n', ''):
                    break
                k, _, v = h.partition(':')
                headers[k.strip().lower()] = v.strip()
            req = Request(method, path, headers, tls=self.tls)
            self.server.owner.log.append(req)
            self.server.owner.respond(self, req)
        except (ConnectionError, BrokenPipeError, socket.timeout):
            pass

    def send_head(self, req, status, headers, body_len, reason=None):
        """Send the status line and headers; ``body_len`` None: no length."""
        req.status = status
        lines = ['HTTP/1.1 %d %s' % (status,
                                     reason or _REASONS.get(status, 'X'))]
        headers = dict(headers)
        if body_len is not None and not any(
                k.lower() == 'content-length' for k in headers):
            headers['Content-Length'] = str(body_len)
        headers['Connection'] = 'close'
        headers['Date'] = email.utils.formatdate(usegmt=True)
        lines += ['%s: %s' % kv for kv in headers.items()]
        self._write(('\r\n'.join(lines) + '\r\n\r\n').encode('latin-1'),
                    self.slow_head)

    def send_body(self, req, body, limit=None):
        view = memoryview(body)
        if limit is not None:
            view = view[:limit]
        step = 256 * 1024
        for i in range(0, len(view), step):
            self._write(view[i:i + step], self.slow_body)
            req.sent += len(view[i:i + step])
        self.wfile.flush()


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


class BadServer:
    """The server; ``add(path, Resource)``, ``url(path)``, ``log``."""

    def __init__(self, host='127.0.0.1', ssl_context=None):
        self.ssl_context = ssl_context
        self.resources = {}
        self.log = []
        self._lock = threading.Lock()
        self._server = _Server((host, 0), _Handler)
        self._server.owner = self
        self.host, self.port = self._server.server_address
        self._thread = None

    def start(self) -> 'BadServer':
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={'poll_interval': 0.05},
                                        name='badserver', daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)

    def add(self, path: str, resource: Resource) -> Resource:
        self.resources['/' + path.lstrip('/')] = resource
        return resource

    def url(self, path: str, userinfo: str = '', tls: bool = False) -> str:
        host = '%s:%d' % (self.host, self.port)
        if userinfo:
            host = '%s@%s' % (userinfo, host)
        return '%s://%s/%s' % ('https' if tls else 'http', host,
                               path.lstrip('/'))

    def requests_for(self, path: str, method: str | None = None) -> list:
        path = '/' + path.lstrip('/')
        return [r for r in self.log if r.path == path and
                (method is None or r.method == method)]

    def _take_fault(self, res):
        with self._lock:
            if not res.faults:
                return None
            fault = res.faults[0]
            if not getattr(fault, 'sticky', False):
                res.faults.pop(0)
            return fault

    # -- the protocol --------------------------------------------------------

    def respond(self, h: _Handler, req: Request):
        res = self.resources.get(req.path.split('?', 1)[0])
        if res is None:
            body = b'not found\n'
            h.send_head(req, 404, {'Content-Type': 'text/plain'}, len(body))
            h.send_body(req, body)
            return
        if res.redirect is not None:
            h.send_head(req, 302, {'Location': res.redirect}, 0)
            return
        if req.method not in ('GET', 'HEAD'):
            h.send_head(req, 405, {}, 0)
            return
        with self._lock:
            res.served += 1
            if res.new_version_per_request:
                res.etag = '"v%d"' % res.served
                res.last_modified = time.time() + res.served
        if req.method == 'HEAD' and res.head_status is not None:
            h.send_head(req, res.head_status, {'Content-Type': 'text/html'},
                        0)
            return
        fault = self._take_fault(res) if req.method == 'GET' else None
        req.fault = fault
        if isinstance(fault, Replace):
            res.replace(fault.data, fault.etag)
            fault = None
        if isinstance(fault, Trickle):
            if fault.what == 'head':
                h.slow_head = fault.interval
            else:
                h.slow_body = fault.interval
        if isinstance(fault, Status):
            body = b'<html>error %d</html>\n' % fault.code
            reason = None
            if fault.echo:
                reason = 'bad %s: %s' % (fault.echo,
                                         req.headers.get(fault.echo.lower()))
            h.send_head(req, fault.code, {'Content-Type': 'text/html'},
                        len(body), reason)
            h.send_body(req, body)
            return
        data = res.data
        size = len(data)
        head = {'Content-Type': 'application/octet-stream',
                'Last-Modified': email.utils.formatdate(res.last_modified,
                                                        usegmt=True)}
        if res.etag:
            head['ETag'] = res.etag
        if res.accept_ranges:
            head['Accept-Ranges'] = 'bytes'
        start, end = 0, size
        status = 200
        rng = req.headers.get('range')
        if_range = req.headers.get('if-range')
        use_range = (rng and res.accept_ranges and
                     not isinstance(fault, IgnoreRange) and
                     (if_range is None or if_range == res.etag or
                      if_range == head['Last-Modified']))
        if use_range:
            m = _RANGE.match(rng)
            if m:
                start = int(m.group(1))
                end = int(m.group(2)) + 1 if m.group(2) else size
                end = min(end, size)
                if start >= size:
                    head['Content-Range'] = 'bytes */%d' % size
                    h.send_head(req, 416, head, 0)
                    return
                status = 206
        if status == 206 and isinstance(fault, WrongContentRange):
            length = end - start
            moved = start + fault.shift
            if moved < 0 or moved + length > size:
                moved = start - fault.shift
            start = min(max(0, moved), size - length)
            end = start + length
        if status == 206:
            head['Content-Range'] = 'bytes %d-%d/%d' % (start, end - 1,
                                                        size)
        head.update(res.raw_headers or {})
        unannounced = (isinstance(fault, IgnoreRange) and not fault.length
                       and req.method == 'GET')
        h.send_head(req, status, head,
                    None if unannounced else end - start)
        if req.method == 'HEAD':
            return
        limit = fault.nbytes if isinstance(fault, Truncate) else None
        h.send_body(req, memoryview(data)[start:end], limit)
        if limit is not None:
            # Cut the connection without a clean end of body.
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
