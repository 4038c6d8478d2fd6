#!/usr/bin/env python3
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

"""iSCSI and NFS reads: ``oslo-transfer copy`` beside qemu-img and nfs-cp.

One data file (``--size``, default 1G) is both the backing store of a tgtd
LUN and a file of an nfs-ganesha export, both on 127.0.0.1.  In one run:

1. **iSCSI**: ``oslo-transfer copy iscsi://... DEST --checksum sha256:..``
   against ``qemu-img convert -O raw iscsi://... DEST`` (libiscsi inside
   qemu, 8 coroutines) and ``qemu-img convert`` followed by ``sync DEST``.
2. **NFS**: ``oslo-transfer copy nfs://... DEST --checksum ...`` against
   ``nfs-cp nfs://... DEST`` (libnfs' own tool) and ``nfs-cp && sync``.

oslo-transfer verifies the sha256 and makes DEST durable (fdatasync before
the rename); the reference tools do neither, so the ``&& sync FILE`` rows
are the like-for-like references for it.  Neither tool flushes at all:
``qemu-img convert`` opens its destination with its default cache mode,
``unsafe`` for ``convert`` (buffered writes, flush requests ignored), and
``nfs-cp`` writes with ``write(2)`` and closes; ``strace -f -e
trace=fsync,fdatasync,sync_file_range`` of either shows no call (qemu-img
7.2, libnfs 4.0 on Debian 12).  A fourth row, ``driver read ->
file``, is a Python process that reads through the driver alone (one
stream, default options) and writes DEST, neither verifying nor syncing:
the like-for-like row for the bare tools, which isolates the driver from
the engine and the command line.  ``oslo-transfer copy (sha256),
fsync=false`` is the command with ``[oslo_transfer] fsync = false``: it
verifies, but leaves DEST in the page cache as the tools do; its
like-for-like reference is the tool followed by ``openssl dgst -sha256
FILE`` (the check a user of the bare tool would run; coreutils'
``sha256sum`` takes four times as long here).  ``oslo-transfer copy (no
digest), fsync=false`` is the whole command doing what the bare tool
does: no ``--checksum``, ``default_digest = none`` and ``fsync = false``
(still through the engine: ``.part``, lock, control file, rename).  The
last row, ``dd oflag=direct conv=fdatasync (local disk)``, copies the
source file (warm in the page cache) to DEST with ``O_DIRECT`` 4 MiB writes
and an ``fdatasync``, no network and no hash: about the floor of any
durable copy to this disk, for reading the durable rows.  Targets of
issue 5: <= 1.0x the reference's time, <= 100 MiB peak RSS.

Each tool runs ``--repeat`` times (default 3), alternating the order; the
destination is removed and dirty pages are flushed (untimed) before every
run, and every output is checked against the source's sha256.  NFSv4 runs
in the host's namespace; ``--nfs-version 3`` re-runs the whole benchmark
in a private network namespace with its own rpcbind (NFSv3 needs one, and
rpcbind binds every address).  Results: stdout,
``benchmarks/results/nfs_iscsi.json`` (and ``.png`` with matplotlib).

Usage::

    python benchmarks/nfs_iscsi/run.py --size 1G [--repeat 3] [--nfs-version 4]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from benchmarks import benchlib  # noqa: E402
from benchmarks.http import run as http_bench  # noqa: E402
from tests.functional.iscsi import tgt  # noqa: E402
from tests.functional.nfs import ganesha as ganesha_mod  # noqa: E402

_IN_NS = 'OSLO_TRANSFER_BENCH_NETNS'
#: the local, durable write of the same bytes (no network, no hash)
DISK_FLOOR = 'dd oflag=direct conv=fdatasync (local disk)'


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--size', default='1G', help='object size')
    p.add_argument('--repeat', type=int, default=3)
    p.add_argument('--nfs-version', type=int, choices=(3, 4), default=4)
    p.add_argument('--workdir', default=None,
                   help='where the data and the copies live (default: a '
                        'temp dir under /var/tmp, removed afterwards)')
    p.add_argument('--skip-iscsi', action='store_true')
    p.add_argument('--skip-nfs', action='store_true')
    p.add_argument('--driver-read', nargs=2, metavar=('URL', 'DEST'),
                   help=argparse.SUPPRESS)  # the child of the 4th row
    args = p.parse_args(argv)
    if args.driver_read:
        return driver_read(*args.driver_read)
    if args.repeat < 3:
        p.error('--repeat must be at least 3')
    if args.nfs_version == 3 and not os.environ.get(_IN_NS):
        return _reexec_in_namespace(argv)

    qemu_img = benchlib.require('qemu-img')
    nfs_cp = benchlib.require('nfs-cp')
    sync_bin = benchlib.require('sync')
    ours = benchlib.oslo_transfer_cmd()
    size = benchlib.parse_size(args.size)

    own_dir = args.workdir is None
    work = args.workdir or tempfile.mkdtemp(prefix='oslo-transfer-bench-',
                                            dir='/var/tmp')
    export = os.path.join(work, 'export')
    out = os.path.join(work, 'out')
    os.makedirs(out, exist_ok=True)
    # created before ganesha starts: it caches attributes
    src = benchlib.random_file(os.path.join(export, 'big.raw'), size)
    print('data: %s in %s' % (benchlib.human(size), src))
    digest = benchlib.sha256_of(src)  # also warms the page cache
    in_ns = bool(os.environ.get(_IN_NS))
    target = tgt.Tgtd(os.path.join(work, 'tgtd'))
    nfsd = ganesha_mod.Ganesha(
        os.path.join(work, 'ganesha'), export,
        versions=(3, 4) if in_ns else (4,),
        nfs_port=2049 if in_ns else None, mnt_port=20048 if in_ns else None,
        bind=not in_ns)
    scenarios = {}
    try:
        if not args.skip_iscsi:
            target.start()
            iqn = target.add_target(src, name='bench')
            url = target.url(iqn)
            print('tgtd on 127.0.0.1:%d: %s' % (target.port, url))
            scenarios['iSCSI read, %s' % benchlib.human(size)] = run_one(
                'iSCSI', url, size, digest, args.repeat, out, ours,
                {'qemu-img convert': [qemu_img, 'convert', '-O', 'raw',
                                      url, '{dest}']},
                sync_bin, src)
        if not args.skip_nfs:
            nfsd.start()
            if args.nfs_version == 4:
                url = nfsd.url('big.raw', version=4)
                ref_url = 'nfs://127.0.0.1%s/big.raw?version=4&nfsport=%d' \
                    % (ganesha_mod.PSEUDO, nfsd.nfs_port)
            else:
                url = ref_url = 'nfs://127.0.0.1%s/big.raw' % export
            print('ganesha on 127.0.0.1:%d: %s' % (nfsd.nfs_port, url))
            scenarios['NFSv%d read, %s' % (args.nfs_version,
                                           benchlib.human(size))] = run_one(
                'NFSv%d' % args.nfs_version, url, size, digest, args.repeat,
                out, ours, {'nfs-cp': [nfs_cp, ref_url, '{dest}']},
                sync_bin, src)
    finally:
        target.stop()
        nfsd.stop()
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)
    benchlib.save('nfs_iscsi' if args.nfs_version == 4 else 'nfs3_iscsi',
                  scenarios)
    return 0


def run_one(title, url, size, digest, repeat, out, ours, reference,
            sync_bin, src):
    dest = os.path.join(out, 'copy.raw')
    (ref_name, ref_argv), = reference.items()
    ref_argv = [a.replace('{dest}', dest) for a in ref_argv]
    tools = {
        ref_name: ref_argv,
        ref_name + ' && sync FILE': ['sh', '-c', '"$@" && "%s" "%s"'
                                     % (sync_bin, dest), 'sh'] + ref_argv,
        ref_name + ' && openssl sha256 FILE': [
            'sh', '-c', '"$@" && "%s" dgst -sha256 "%s" >/dev/null'
            % (benchlib.require('openssl'), dest), 'sh'] + ref_argv,
        'oslo-transfer copy (sha256)': ours + [
            'copy', url, dest, '--checksum', 'sha256:' + digest,
            '--same-network', '--json', '--no-progress'],
        'oslo-transfer copy (sha256), fsync=false': ours + [
            '--config-file', http_bench._no_fsync_conf(out),
            'copy', url, dest, '--checksum', 'sha256:' + digest,
            '--same-network', '--json', '--no-progress'],
        'oslo-transfer copy (no digest), fsync=false': ours + [
            '--config-file', _bare_conf(out),
            'copy', url, dest, '--same-network', '--json', '--no-progress'],
        'driver read -> file': [sys.executable, os.path.abspath(__file__),
                                '--driver-read', url, dest],
        # No network: the source's bytes (in the page cache) written with
        # O_DIRECT and synced, one 4 MiB write after the other: about the
        # floor of any durable copy to this disk.
        DISK_FLOOR: [benchlib.require('dd'), 'if=' + src, 'of=' + dest,
                     'bs=4M', 'oflag=direct', 'conv=fdatasync',
                     'status=none'],
    }
    print('\n%s: %s, %d runs each' % (title, benchlib.human(size), repeat))
    runs = benchlib.alternate(tools, repeat, http_bench._prepare(dest),
                              http_bench._checker(dest, digest))
    rows = benchlib.summarize('%s read, %s' % (title, benchlib.human(size)),
                              runs, size, ref_name)
    http_bench._internal(runs)
    return rows


def _bare_conf(out):
    """``fsync = false`` and no digest: the work of the bare tools."""
    path = os.path.join(out, 'bare.conf')
    with open(path, 'w') as f:
        f.write('[oslo_transfer]\nfsync = false\ndefault_digest = none\n')
    return path


def driver_read(url, dest) -> int:
    """Read ``url`` through its driver alone and write ``dest``."""
    from oslo_transfer import driver as driver_mod
    from oslo_transfer import locations
    from oslo_transfer import testing
    if url.startswith('nfs:'):
        from oslo_transfer._drivers.nfs import NFSDriver as cls
    else:
        from oslo_transfer._drivers.iscsi import ISCSIDriver as cls
    drv = cls(testing.make_conf(drivers=[cls]))
    ctx = driver_mod.Context()
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for chunk in drv.read(locations.Location(url), 0, None, ctx):
            os.write(fd, chunk)
    finally:
        os.close(fd)
        drv.close()
    return 0


def _reexec_in_namespace(argv):
    """Run this script again as PID 1 of a private network namespace."""
    unshare = benchlib.require('unshare')
    inner = ('set -e; ip link set lo up; mount -t tmpfs tmpfs /run; '
             'mkdir -p /run/rpcbind /run/tgtd; rpcbind -f -w & '
             'for i in $(seq 50); do [ -S /run/rpcbind.sock ] && break; '
             'sleep 0.1; done; exec "$@"')
    env = dict(os.environ, **{_IN_NS: '1'})
    args = list(argv if argv is not None else sys.argv[1:])
    cmd = [unshare, '--net', '--pid', '--fork', '--mount-proc',
           '--kill-child', 'sh', '-c', inner, 'sh', sys.executable,
           os.path.abspath(__file__)] + args
    return subprocess.call(cmd, env=env)


if __name__ == '__main__':
    sys.exit(main())
