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

"""``oslo-transfer nbd`` and ``oslo-transfer make-blockmap``.

``nbd SRC --cache PATH (--socket PATH | --port N [--bind ADDR])`` exports
a lazy image of SRC read-only over NBD through nbdkit's Python plugin,
with the process model of :mod:`oslo_transfer.lazy.nbd`: one line
``ready nbd+unix:///?socket=PATH`` (or ``ready nbd://ADDR:PORT``) on
stdout once clients may connect; SIGTERM (or SIGINT) stops it, exit
status 0 once the present-map is durable.

``make-blockmap IMG -o IMG.blockmap`` writes the sha256 blockmap of an
image (:mod:`oslo_transfer.blockmap`).
"""

import errno
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

from oslo_transfer import blockmap
from oslo_transfer.cmd import _args
from oslo_transfer import exceptions
from oslo_transfer import locations
from oslo_transfer import selector

#: seconds the command waits for a socket whose server is still exiting
_SOCKET_WAIT = 10.0


def register(sub) -> None:
    p = sub.add_parser('nbd', help='export a lazy image of SRC over NBD '
                                   '(nbdkit), fetched on demand')
    p.add_argument('source', metavar='SRC', help='URL or path of the image')
    p.add_argument('--also', action='append', default=[], metavar='URL',
                   help='another location of the same data (fallback)')
    p.add_argument('--cache', required=True, metavar='PATH',
                   help='where the image is cached (PATH.part until '
                        'complete, then PATH)')
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument('--socket', metavar='PATH',
                       help='serve on this Unix socket')
    where.add_argument('--port', type=_args.at_least(1), metavar='N',
                       help='serve on this TCP port')
    p.add_argument('--bind', default='127.0.0.1', metavar='ADDR',
                   help='address of --port (default 127.0.0.1)')
    p.add_argument('--checksum', metavar='ALGO:HEX',
                   help='digest of the whole image, checked before the '
                        'cache is renamed to PATH')
    p.add_argument('--blockmap', metavar='FILE|URL',
                   help='the image\'s blockmap (make-blockmap); a URL is '
                        'trusted only with --manifest-digest')
    p.add_argument('--torrent', metavar='FILE|URL',
                   help='BitTorrent metadata of the image: its piece '
                        'hashes verify the blocks (a URL is trusted only '
                        'with --manifest-digest)')
    p.add_argument('--manifest-digest', metavar='sha256:HEX',
                   help='sha256 of the --blockmap or --torrent file; '
                        'alone, use the URL.blockmap next to SRC that has '
                        'it')
    p.add_argument('--profile', metavar='FILE',
                   help='access profile: recorded during the first 60 s, '
                        'or fetched first when it matches the image')
    p.add_argument('--no-prefetch', action='store_true',
                   help='fetch only what clients read')
    p.add_argument('--peers', type=_args.at_least(1), default=1,
                   metavar='N', help='hosts fetching the same image at '
                                     'once, this one included; with '
                                     '--torrent and N >= [oslo_transfer] '
                                     'p2p_min_peers the image is read '
                                     'through the swarm')
    p.add_argument('--peer', action='append', default=[],
                   metavar='HOST:PORT',
                   help='BitTorrent: a peer to connect to (repeat); '
                        'without any, peers come from the metadata\'s '
                        'trackers or local discovery')
    p.add_argument('--nbdkit', default='nbdkit', metavar='PATH',
                   help='the nbdkit program (default: nbdkit on PATH)')
    p.set_defaults(func=run_nbd)

    p = sub.add_parser('make-blockmap',
                       help='write the sha256 blockmap of an image')
    p.add_argument('path', metavar='IMG', help='an image file')
    p.add_argument('-o', '--output', required=True, metavar='OUT',
                   help='where to write the blockmap ("-" for stdout)')
    p.add_argument('--block-size', type=_args.at_least(1),
                   default=blockmap.DEFAULT_BLOCK_SIZE, metavar='BYTES',
                   help='bytes per block: a power of two from 4096 to '
                        '64 MiB (default 65536)')
    p.set_defaults(func=run_make_blockmap)


# -- make-blockmap ---------------------------------------------------------

def run_make_blockmap(args) -> int:
    data = blockmap.make_blockmap(args.path, args.block_size)
    bm = blockmap.parse(data)
    if args.output == '-':
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return 0
    tmp = '%s.tmp-%d' % (args.output, os.getpid())
    with open(tmp, 'wb') as f:
        f.write(data)
    os.replace(tmp, args.output)
    zeros = sum(1 for i in range(bm.count) if bm.is_zero(i))
    print('%s: %d bytes in %d blocks of %d (%d zero), sha256 %s'
          % (args.output, bm.size, bm.count, bm.block_size, zeros,
             bm.sha256))
    return 0


# -- nbd ---------------------------------------------------------------------

def _manifest(args):
    """What ``attach(manifest=...)`` takes, from the options."""
    if args.blockmap and args.torrent:
        raise ValueError('--blockmap and --torrent are two manifests: '
                         'give one')
    given = args.blockmap or args.torrent
    if args.manifest_digest:
        return (given, args.manifest_digest) if given else \
            args.manifest_digest
    return given


def _check_socket(path):
    """Remove a stale socket file; wait for a server still exiting."""
    deadline = time.monotonic() + _SOCKET_WAIT
    while os.path.lexists(path):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)         # nobody listens: left by a kill
            return
        except OSError as exc:
            if exc.errno in (errno.ENOENT,):
                return
            raise
        finally:
            s.close()
        if time.monotonic() > deadline:
            raise exceptions.DestinationError(
                'another server listens on %s' % path)
        time.sleep(0.2)


def _listen_args(args):
    if args.socket:
        path = os.path.abspath(args.socket)
        _check_socket(path)
        return ['-U', path], 'nbd+unix:///?socket=%s' % path
    uri = 'nbd://%s:%d' % (_args.host_text(args.bind), args.port)
    return ['-i', args.bind, '-p', str(args.port)], uri


def run_nbd(args) -> int:
    from oslo_transfer.lazy import nbd

    nbdkit = shutil.which(args.nbdkit) or args.nbdkit
    nbd.check_python(nbdkit)
    source = locations.Source(urls=[args.source] + list(args.also))
    hints = selector.Hints(peers=args.peers,
                           peer_addresses=tuple(args.peer))
    with args.make_transfer() as t:
        prepared = nbd.prepare(t, source, checksum=args.checksum,
                               hints=hints, manifest=_manifest(args))
    listen, uri = _listen_args(args)
    folder = tempfile.mkdtemp(prefix='oslo-transfer-nbd-')
    try:
        spec = os.path.join(folder, 'spec.json')
        pidfile = os.path.join(folder, 'nbdkit.pid')
        nbd.write_spec(spec, nbd.spec_for(
            prepared, args.cache, prefetch=not args.no_prefetch,
            profile=args.profile, config_files=args.config_file,
            verbose=args.verbose))
        argv = ([nbdkit, '-f', '--exit-with-parent', '-r', '-P', pidfile] +
                (['-v'] if args.verbose >= 2 else []) + listen +
                ['python', nbd.PLUGIN, 'spec=' + spec])
        return _serve(argv, pidfile, uri, nbd.child_env())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if args.socket:
            _remove_socket(os.path.abspath(args.socket))


def _remove_socket(path):
    """nbdkit leaves its socket file behind: remove it (only a socket)."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


def _serve(argv, pidfile, uri, env) -> int:
    """Run nbdkit; announce it; forward signals; its exit status."""
    stopping = []
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=env)

    def forward(signum, frame):
        stopping.append(signum)
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)

    old = {s: signal.signal(s, forward)
           for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        announced = False
        while True:
            try:
                rc = child.wait(timeout=0.05)
                break
            except subprocess.TimeoutExpired:
                pass
            if not announced and os.path.exists(pidfile):
                announced = True
                print('ready %s' % uri, flush=True)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if stopping and rc in (0, -signal.SIGTERM):
        return 0
    return rc if rc >= 0 else 128 - rc
