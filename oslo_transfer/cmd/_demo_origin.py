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

"""The demo's embedded HTTP origin: one file, ranges and an ETag.

Imported by ``oslo-transfer demo`` only, so that other commands do not pay
for :mod:`http.server` at start-up.
"""

import http.server
import os
import threading


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """GET/HEAD of one file with single ``Range`` support and an ETag."""

    protocol_version = 'HTTP/1.1'
    path_on_disk = None

    def log_message(self, *args):
        pass

    def _headers(self, code, length, extra=()):
        st = os.stat(self.path_on_disk)
        self.send_response(code)
        self.send_header('Content-Length', str(length))
        self.send_header('Accept-Ranges', 'bytes')
        self.send_header('ETag', '"%x-%x"' % (st.st_mtime_ns, st.st_size))
        self.send_header('Content-Type', 'application/octet-stream')
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()

    def do_HEAD(self):
        if self.path != '/image.raw':
            self.send_error(404)
            return
        self._headers(200, os.path.getsize(self.path_on_disk))

    def do_GET(self):
        if self.path != '/image.raw':
            self.send_error(404)
            return
        size = os.path.getsize(self.path_on_disk)
        start, end = 0, size - 1
        code, extra = 200, ()
        rng = self.headers.get('Range')
        if rng and rng.startswith('bytes='):
            a, _, b = rng[6:].partition('-')
            start = int(a)
            end = min(int(b), size - 1) if b else size - 1
            if start >= size:
                self.send_response(416)
                self.send_header('Content-Range', 'bytes */%d' % size)
                self.send_header('Content-Length', '0')
                self.end_headers()
                return
            code = 206
            extra = [('Content-Range',
                      'bytes %d-%d/%d' % (start, end, size))]
        length = end - start + 1
        self._headers(code, length, extra)
        with open(self.path_on_disk, 'rb') as f:
            try:
                os.sendfile(self.wfile.fileno(), f.fileno(), start, length)
            except (BrokenPipeError, ConnectionResetError):
                pass


def serve_file(path):
    """Serve ``path`` as ``/image.raw`` on 127.0.0.1; returns (server, url)."""
    handler = type('Handler', (_RangeHandler,), {'path_on_disk': path})
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    return server, 'http://127.0.0.1:%d/image.raw' % server.server_port
