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

"""``oslo-transfer demo``: the library's main job on an embedded origin.

Generates a VM-image-like file (data blocks and holes), serves it over HTTP
on 127.0.0.1 from a small range-capable origin started in this process,
copies it with :func:`oslo_transfer.copy` and a sha256 checksum, and prints
the plan with its reasons, the throughput and the digest.  Needs no system
package and no configuration.
"""

import hashlib
import http.server
import os
import shutil
import sys
import tempfile
import threading

from oslo_transfer.cmd import copy as copy_cmd


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


def make_image(path, size, seed=b'oslo.transfer demo'):
    """A file like a VM image: data blocks with holes; returns sha256 hex."""
    block = 4 * 1024 * 1024
    h = hashlib.sha256()
    pattern = hashlib.sha512(seed).digest() * (block // 64)
    with open(path, 'wb') as f:
        pos = 0
        i = 0
        while pos < size:
            n = min(block, size - pos)
            if i % 4 == 3:
                f.seek(n, os.SEEK_CUR)
                h.update(bytes(n))
            else:
                data = (i.to_bytes(8, 'big') + pattern)[:n]
                f.write(data)
                h.update(data)
            pos += n
            i += 1
        f.truncate(size)
    return h.hexdigest()


def register(sub):
    p = sub.add_parser('demo', help='generate an image, serve it on '
                                    '127.0.0.1, copy and verify it')
    p.add_argument('--size', type=copy_cmd.parse_rate, default='256M',
                   help='image size (default 256M)')
    p.add_argument('--dir', help='work directory (default: a temporary '
                                 'one, removed afterwards)')
    p.set_defaults(func=run)


def run(args):
    work = args.dir or tempfile.mkdtemp(prefix='oslo-transfer-demo-')
    os.makedirs(work, exist_ok=True)
    try:
        src = os.path.join(work, 'origin-image.raw')
        dst = os.path.join(work, 'copy-image.raw')
        for p in (dst, dst + '.part', dst + '.part.ctl'):
            if os.path.exists(p):
                os.unlink(p)
        print('generating a %s image in %s ...' % (
            copy_cmd._human(args.size), work))
        digest = make_image(src, args.size)
        server, url = serve_file(src)
        print('origin: %s (embedded HTTP server with Range support)' % url)
        try:
            with args.make_transfer() as t:
                bar = None
                if sys.stderr.isatty():
                    bar = copy_cmd.ProgressBar()
                plan = t.plan(url, dst)
                print(plan.explain())
                result = t.copy(url, dst, checksum='sha256:%s' % digest,
                                progress=bar)
                if bar is not None:
                    bar.close()
        finally:
            server.shutdown()
            server.server_close()
        st = os.stat(dst)
        print('copied %s to %s via %s in %.2fs: %s/s' % (
            copy_cmd._human(result.bytes_transferred), dst, result.driver,
            result.elapsed, copy_cmd._human(result.throughput)))
        print('verified %s %s (size %d, %s allocated: sparse)' % (
            result.algorithm, result.digest, st.st_size,
            copy_cmd._human(st.st_blocks * 512)))
        return 0
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
