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
import os
import shutil
import sys
import tempfile

from oslo_transfer.cmd import copy as copy_cmd


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
        from oslo_transfer.cmd import _demo_origin
        server, url = _demo_origin.serve_file(src)
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
