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

"""SFTP beside ``scp`` and FTP beside ``curl``, same file, one run.

Starts an OpenSSH ``sshd`` (its own host key, a client key made for the
run) and a ``vsftpd`` (anonymous, read-only) on 127.0.0.1, writes one file
of random bytes (``--size``, default 512M) and downloads it with:

* ``scp`` / ``curl -o``: the references (no verification, no fsync);
* the same followed by ``sync FILE`` (the durability ``copy`` gives),
  and followed by ``openssl dgst -sha256 FILE`` (the verification it
  gives, with the fastest sha256 here: coreutils' ``sha256sum`` takes
  four times as long; the like-for-like reference of the ``fsync=false``
  row);
* ``oslo-transfer copy --checksum sha256:...``: what a user runs (engine,
  ``.part`` file, journal, fsync, rename; one connection, the drivers'
  ``max_segments`` default);
* the same with ``[oslo_transfer] fsync = false``: the durability of the
  references (data left in the page cache), verification kept;
* the same with 4 parallel segments (``max_segments = 0``, the engine's
  default of 4), to show why one is the default;
* SFTP only: ``scp -c aes128-gcm@openssh.com``, the cipher our client
  negotiates (paramiko has no chacha20-poly1305, which ``scp`` picks by
  default): like-for-like on the cipher, for information;
* ``driver read() -> file``: the driver alone, one ``read()`` from 0 to
  the end written to a file (no engine, no verification), in a child
  process like the others.

Each tool runs ``--repeat`` times (default 3), alternating the order; the
destination is removed and dirty pages are flushed (untimed) before every
run, and every output is checked against the source's sha256.  Each run is
one process measured by ``/usr/bin/time -v`` (wall time, peak RSS).
Results: a table on stdout, ``benchmarks/results/ftp_sftp.json`` and
``ftp_sftp.png``.  Targets of the issue: SFTP <= 1.2x scp, FTP <= 1.1x
curl, peak RSS <= 100 MiB.

Usage (as root, from the top of the source tree)::

    python benchmarks/ftp_sftp/run.py --size 512M --repeat 5
"""

import argparse
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

from benchmarks import benchlib  # noqa: E402


def driver_loop(args) -> int:
    """Child mode: one driver read() of ``args.url`` into ``args.dest``."""
    from oslo_config import cfg

    import oslo_transfer
    from oslo_transfer import driver
    from oslo_transfer import locations

    conf = cfg.ConfigOpts()
    conf([], project='oslo_transfer', default_config_files=[args.conf],
         default_config_dirs=[])
    t0 = time.monotonic()
    with oslo_transfer.Transfer(conf) as t:
        loc = locations.Location(args.url)
        drv = t.driver(loc.scheme)
        fd = os.open(args.dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                     0o644)
        try:
            for chunk in drv.read(loc, 0, None, driver.Context()):
                os.write(fd, chunk)
        finally:
            os.close(fd)
    print(json.dumps({'elapsed': time.monotonic() - t0}))
    return 0


def _write_conf(path, sections):
    with open(path, 'w') as f:
        for group, values in sections.items():
            f.write('[%s]\n' % group)
            for k, v in values.items():
                f.write('%s = %s\n' % (k, v))
    return path


def _prepare(dest):
    def before(_name):
        for p in (dest, dest + '.part', dest + '.part.ctl',
                  dest + '.part.lock'):
            if os.path.lexists(p):
                os.unlink(p)
        benchlib.sync()
    return before


def _checker(dest, digest):
    def check(name, run):
        got = benchlib.sha256_of(dest)
        if got != digest:
            sys.exit('%s produced a wrong file (sha256 %s)' % (name, got))
        if name.startswith(('oslo-transfer', 'driver')):
            run.internal = json.loads(run.stdout.strip().splitlines()[-1])[
                'elapsed']
    return check


def _internal(runs):
    import statistics
    for name, rs in runs.items():
        inner = [getattr(r, 'internal', None) for r in rs]
        if all(x is not None for x in inner):
            print('  %-40s median %.3fs inside the process (without '
                  'interpreter start-up)' % (name, statistics.median(inner)))


def _ours(ours, conf, url, dest, digest, segments=None):
    argv = ours + ['--config-file', conf, 'copy', url, dest, '--checksum',
                   'sha256:' + digest, '--json', '--no-progress']
    if segments:
        argv += ['--segments', str(segments)]
    return argv


def scenario(title, reference, ref_argv, url, dest, digest, size, conf,
             repeat, ours, sync_bin, parallel_conf, nofsync_conf,
             extra=None):
    me = os.path.abspath(__file__)
    tools = {
        reference: ref_argv,
        reference + ' && sync FILE': [
            'sh', '-c', '"$@" && "%s" "%s"' % (sync_bin, dest), 'sh'] +
        ref_argv,
        reference + ' && openssl sha256 FILE': [
            'sh', '-c', '"$@" && "%s" dgst -sha256 "%s" >/dev/null'
            % (benchlib.require('openssl'), dest), 'sh'] + ref_argv,
        'oslo-transfer copy (sha256)': _ours(ours, conf, url, dest, digest),
        'oslo-transfer copy, fsync=false': _ours(ours, nofsync_conf, url,
                                                 dest, digest),
        'oslo-transfer copy, 4 segments': _ours(ours, parallel_conf, url,
                                                dest, digest, 4),
        'driver read() -> file': [sys.executable, me, '--driver-loop',
                                  '--url', url, '--dest', dest, '--conf',
                                  conf],
    }
    tools.update(extra or {})
    print('\n%s: %d runs each' % (title, repeat))
    runs = benchlib.alternate(tools, repeat, _prepare(dest),
                              _checker(dest, digest))
    rows = benchlib.summarize(title, runs, size, reference)
    _internal(runs)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--size', default='512M')
    p.add_argument('--repeat', type=int, default=3)
    p.add_argument('--only', choices=('sftp', 'ftp'))
    p.add_argument('--driver-loop', action='store_true',
                   help=argparse.SUPPRESS)
    p.add_argument('--url', help=argparse.SUPPRESS)
    p.add_argument('--dest', help=argparse.SUPPRESS)
    p.add_argument('--conf', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.driver_loop:
        return driver_loop(args)
    if args.repeat < 3:
        p.error('--repeat must be at least 3')

    from tests.functional.ftp import ftpservers
    from tests.functional.sftp import sshd as sshd_mod

    scp = benchlib.require('scp')
    curl = benchlib.require('curl')
    sync_bin = benchlib.require('sync')
    ours = benchlib.oslo_transfer_cmd()
    size = benchlib.parse_size(args.size)

    # sshd reads the key files as root, vsftpd needs a root-owned,
    # world-readable anonymous root: a 0755 folder under /tmp.
    work = ftpservers.make_shared_base('oslo-transfer-bench-')
    servers = []
    scenarios = {}
    try:
        data = os.path.join(work, 'data')
        os.makedirs(data)
        os.chmod(data, 0o755)
        src = benchlib.random_file(os.path.join(data, 'big.raw'), size)
        digest = benchlib.sha256_of(src)     # also warms the page cache
        out = os.path.join(work, 'out')
        os.makedirs(out)
        dest = os.path.join(out, 'big.raw')

        key = os.path.join(work, 'id_ed25519')
        auth = os.path.join(work, 'authorized_keys')
        with open(auth, 'w') as f:
            f.write(sshd_mod.keygen(key) + '\n')
        sshd = sshd_mod.Sshd(os.path.join(work, 'sshd'), auth,
                             password_auth=False).start()
        servers.append(sshd)
        known = os.path.join(work, 'known_hosts')
        with open(known, 'w') as f:
            f.write(sshd.known_hosts_line())
        vroot = os.path.join(work, 'vsftpd')
        os.makedirs(vroot)
        vsftpd = ftpservers.Vsftpd(vroot, data).start()
        servers.append(vsftpd)
        sections = {
            'oslo_transfer': {'state_path': os.path.join(work, 'state')},
            'oslo_transfer_sftp': {
                'known_hosts_file': known, 'key_file': key,
                'username': 'root', 'allow_agent': 'false',
                'look_for_keys': 'false'}}
        conf = _write_conf(os.path.join(work, 'bench.conf'), sections)
        sections['oslo_transfer_sftp'] = dict(
            sections['oslo_transfer_sftp'], max_segments=0)
        sections['oslo_transfer_ftp'] = {'max_segments': 0}
        parallel_conf = _write_conf(os.path.join(work, 'parallel.conf'),
                                    sections)
        del sections['oslo_transfer_ftp']
        sections['oslo_transfer_sftp'] = dict(
            sections['oslo_transfer_sftp'], max_segments=1)
        sections['oslo_transfer'] = dict(sections['oslo_transfer'],
                                         fsync='false')
        nofsync_conf = _write_conf(os.path.join(work, 'nofsync.conf'),
                                   sections)
        human = benchlib.human(size)
        if args.only in (None, 'sftp'):
            scp_argv = [scp, '-q', '-P', str(sshd.port), '-i', key,
                        '-o', 'UserKnownHostsFile=%s' % known,
                        '-o', 'StrictHostKeyChecking=yes',
                        '-o', 'BatchMode=yes']
            where = ['root@127.0.0.1:%s' % src, dest]
            scenarios['SFTP from OpenSSH sshd, %s' % human] = scenario(
                'SFTP from OpenSSH sshd, %s' % human, 'scp',
                scp_argv + where, sshd.url(src), dest, digest, size, conf,
                args.repeat, ours, sync_bin, parallel_conf, nofsync_conf,
                extra={'scp -c aes128-gcm@openssh.com':
                       scp_argv + ['-c', 'aes128-gcm@openssh.com'] + where})
        if args.only in (None, 'ftp'):
            scenarios['FTP from vsftpd, %s' % human] = scenario(
                'FTP from vsftpd, %s' % human, 'curl -o',
                [curl, '-s', '-S', '-o', dest, vsftpd.url('big.raw')],
                vsftpd.url('big.raw'), dest, digest, size, conf,
                args.repeat, ours, sync_bin, parallel_conf, nofsync_conf)
    finally:
        for s in reversed(servers):
            try:
                s.stop()
            except Exception as exc:  # noqa: report and go on
                print('could not stop %r: %s' % (s, exc))
        shutil.rmtree(work, ignore_errors=True)
    benchlib.save('ftp_sftp', scenarios)
    return 0


if __name__ == '__main__':
    sys.exit(main())
