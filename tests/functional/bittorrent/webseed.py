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

"""A web seed under test control: corrupt bytes, slow answers.

A small ``http.server`` subclass on 127.0.0.1 (a thread of the test
process).  It answers HEAD and GET with ``Range: bytes=A-B`` (206,
``Content-Range``, ``ETag``), like nginx, but every byte in
``[bad_start, bad_end)`` is inverted, and each answer waits ``delay``
seconds first.  ``bytes_sent`` counts body bytes.
"""

import http.server
import os
import re
import threading
import time


class WebSeed:
    """Serve ``path`` at ``/NAME`` with ``[bad_start, bad_end)`` inverted."""

    def __init__(self, path: str, bad_start: int = 0, bad_end: int = 0,
                 delay: float = 0.0):
        self.path = path
        self.delay = delay
        self.name = os.path.basename(path)
        self.bad = (bad_start, bad_end)
        self.bytes_sent = 0
        self.corrupt_sent = 0
        self._lock = threading.Lock()
        self.server = None
        self.thread = None

    @property
    def url(self) -> str:
        return 'http://127.0.0.1:%d/%s' % (self.server.server_address[1],
                                           self.name)

    def start(self) -> 'WebSeed':
        seed = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, *args):
                pass

            def _head(self, send_body):
                if self.path.split('?')[0] != '/' + seed.name:
                    self.send_error(404)
                    return
                size = os.path.getsize(seed.path)
                start, end = 0, size
                rng = self.headers.get('Range')
                m = re.match(r'^bytes=(\d+)-(\d*)$', rng or '')
                if m:
                    start = int(m.group(1))
                    end = int(m.group(2)) + 1 if m.group(2) else size
                    end = min(end, size)
                    self.send_response(206)
                    self.send_header('Content-Range', 'bytes %d-%d/%d'
                                     % (start, end - 1, size))
                else:
                    self.send_response(200)
                self.send_header('Content-Length', str(end - start))
                self.send_header('Accept-Ranges', 'bytes')
                self.send_header('ETag', '"corrupt-%d"' % size)
                self.end_headers()
                if send_body:
                    if seed.delay:
                        time.sleep(seed.delay)
                    self.wfile.write(seed.body(start, end))

            def do_HEAD(self):
                self._head(False)

            def do_GET(self):
                self._head(True)

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0),
                                                      Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       daemon=True)
        self.thread.start()
        return self

    def body(self, start, end) -> bytes:
        with open(self.path, 'rb') as f:
            f.seek(start)
            data = bytearray(f.read(end - start))
        lo, hi = max(start, self.bad[0]), min(end, self.bad[1])
        if lo < hi:
            for i in range(lo - start, hi - start):
                data[i] ^= 0xFF
        with self._lock:
            self.bytes_sent += len(data)
            self.corrupt_sent += max(0, hi - lo)
        return bytes(data)

    def stop(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(5)
