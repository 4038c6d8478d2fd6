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

"""Our SFTP download against ``scp``, our FTP download against ``curl``.

One run starts an OpenSSH sshd and a vsftpd on 127.0.0.1, writes one random
file (512 MiB by default) and downloads it with each tool in turn, the
order alternating between repeats.  Every download runs in a child process
whose peak RSS is measured by GNU time.  Ours is ``oslo_transfer.copy``
(engine, ``.part`` file, journal, rename) with the default settings except
``default_digest = none`` (scp and curl do not hash either);
``ours-sha256`` adds end-to-end verification; ``ours-1conn`` is one
connection (``segments = 1``); ``driver-loop`` is the driver alone, one
``read()`` written to a file (no engine).

Reported per tool: median and min wall time of the child process, median
time inside ``copy()`` for ours (without interpreter start-up), peak RSS,
and the ratio of the medians to the reference tool.

    python benchmarks/ftp_sftp/run.py --size 512M --repeats 3

Run it as root from the top of the source tree (needs sshd, vsftpd, scp,
curl).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, TOP)

MiB = 1024 * 1024


def parse_size(text):
    units = {'K': 1024, 'M': MiB, 'G': 1024 * MiB}
    text = text.upper().rstrip('B').rstrip('I')
    if text[-1:] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


# -- the child: one download with oslo.transfer ------------------------------

def child(args):
    from oslo_config import cfg

    import oslo_transfer

    conf = cfg.ConfigOpts()
    conf([], project='oslo_transfer', default_config_files=[args.conf],
         default_config_dirs=[])
    if args.loop:
        return driver_loop(conf, args)
    t0 = time.monotonic()
    with oslo_transfer.Transfer(conf) as t:
        res = t.copy(args.url, args.dest, checksum=args.checksum or None)
    seconds = time.monotonic() - t0
    print(json.dumps({'seconds': seconds, 'driver': res.driver,
                      'size': res.size}))


def driver_loop(conf, args):
    """The driver alone: one read() from 0 to the end into a file."""
    import oslo_transfer
    from oslo_transfer import driver
    from oslo_transfer import locations

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
    print(json.dumps({'seconds': time.monotonic() - t0}))


# -- the parent --------------------------------------------------------------

def run_child(argv):
    """Run argv; returns (wall seconds, peak RSS MiB, stdout).

    The peak RSS comes from GNU time (``%M``): a child of this Python
    process would inherit its maximum RSS across fork and exec.
    """
    t0 = time.monotonic()
    res = subprocess.run(['/usr/bin/time', '-f', 'RSS_KIB=%M'] + argv,
                         capture_output=True, text=True)
    wall = time.monotonic() - t0
    if res.returncode:
        raise RuntimeError('%s failed (%d): %s' % (argv[0], res.returncode,
                                                   res.stderr[-2000:]))
    rss = [line for line in res.stderr.splitlines()
           if line.startswith('RSS_KIB=')]
    return wall, int(rss[-1].split('=')[1]) / 1024.0, res.stdout


def write_conf(path, sections):
    with open(path, 'w') as f:
        for group, values in sections.items():
            f.write('[%s]\n' % group)
            for k, v in values.items():
                f.write('%s = %s\n' % (k, v))
    return path


def make_file(path, size):
    with open(path, 'wb') as f:
        left = size
        while left:
            n = min(left, 16 * MiB)
            f.write(os.urandom(n))
            left -= n


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--size', type=parse_size, default=512 * MiB)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--only', choices=('sftp', 'ftp'))
    p.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--url', help=argparse.SUPPRESS)
    p.add_argument('--dest', help=argparse.SUPPRESS)
    p.add_argument('--conf', help=argparse.SUPPRESS)
    p.add_argument('--checksum', help=argparse.SUPPRESS)
    p.add_argument('--loop', action='store_true', help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)

    from tests.functional.ftp import ftpservers
    from tests.functional.sftp import sshd as sshd_mod

    base = ftpservers.make_shared_base('oslo-transfer-bench-')
    servers = []
    try:
        data_dir = os.path.join(base, 'data')
        os.makedirs(data_dir)
        os.chmod(data_dir, 0o755)
        src = os.path.join(data_dir, 'big.bin')
        print('writing %d MiB of random data...' % (args.size // MiB),
              flush=True)
        make_file(src, args.size)
        import hashlib
        h = hashlib.sha256()
        with open(src, 'rb') as f:
            for block in iter(lambda: f.read(4 * MiB), b''):
                h.update(block)
        checksum = 'sha256:' + h.hexdigest()
        out_dir = os.path.join(base, 'out')
        os.makedirs(out_dir)
        state = os.path.join(base, 'state')

        key = os.path.join(base, 'id_ed25519')
        auth = os.path.join(base, 'authorized_keys')
        with open(auth, 'w') as f:
            f.write(sshd_mod.keygen(key) + '\n')
        sshd = sshd_mod.Sshd(os.path.join(base, 'sshd'), auth,
                             password_auth=False).start()
        servers.append(sshd)
        known = os.path.join(base, 'known_hosts')
        with open(known, 'w') as f:
            f.write(sshd.known_hosts_line())
        vroot = os.path.join(base, 'vsftpd')
        os.makedirs(vroot)
        vsftpd = ftpservers.Vsftpd(vroot, data_dir).start()
        servers.append(vsftpd)

        base_conf = {'oslo_transfer': {'state_path': state,
                                       'default_digest': 'none'},
                     'oslo_transfer_sftp': {
                         'known_hosts_file': known, 'key_file': key,
                         'username': 'root', 'allow_agent': 'false',
                         'look_for_keys': 'false'}}
        conf = write_conf(os.path.join(base, 'bench.conf'), base_conf)
        one = dict(base_conf)
        one['oslo_transfer'] = dict(base_conf['oslo_transfer'], segments=1)
        conf1 = write_conf(os.path.join(base, 'bench1.conf'), one)
        dest = os.path.join(out_dir, 'copy.bin')
        me = os.path.abspath(__file__)
        sftp_url = sshd.url(src)
        ftp_url = vsftpd.url('big.bin')

        def ours(url, cfile, ck=None, loop=False):
            argv = [sys.executable, me, '--child', '--url', url, '--dest',
                    dest, '--conf', cfile]
            if ck:
                argv += ['--checksum', ck]
            if loop:
                argv.append('--loop')
            return argv

        tools = {}
        if args.only in (None, 'sftp'):
            tools['sftp'] = [
                ('scp', ['scp', '-q', '-P', str(sshd.port), '-i', key,
                         '-o', 'UserKnownHostsFile=%s' % known,
                         '-o', 'StrictHostKeyChecking=yes',
                         '-o', 'BatchMode=yes',
                         'root@127.0.0.1:%s' % src, dest]),
                ('ours', ours(sftp_url, conf)),
                ('ours-1conn', ours(sftp_url, conf1)),
                ('ours-sha256', ours(sftp_url, conf, checksum)),
                ('driver-loop', ours(sftp_url, conf, loop=True)),
            ]
        if args.only in (None, 'ftp'):
            tools['ftp'] = [
                ('curl', ['curl', '-s', '-S', '-o', dest, ftp_url]),
                ('ours', ours(ftp_url, conf)),
                ('ours-1conn', ours(ftp_url, conf1)),
                ('ours-sha256', ours(ftp_url, conf, checksum)),
                ('driver-loop', ours(ftp_url, conf, loop=True)),
            ]

        results = {}
        for proto, entries in tools.items():
            for i in range(args.repeats):
                order = entries if i % 2 == 0 else list(reversed(entries))
                for name, argv in order:
                    if os.path.exists(dest):
                        os.unlink(dest)
                    wall, rss, out = run_child(argv)
                    inner = None
                    if out.strip().startswith('{'):
                        inner = json.loads(out.strip().splitlines()[-1])
                        inner = inner['seconds']
                    if os.path.getsize(dest) != args.size:
                        raise RuntimeError('%s %s: wrong size'
                                           % (proto, name))
                    results.setdefault((proto, name), []).append(
                        (wall, rss, inner))
                    print('  %-4s %-12s run %d: %6.2f s  (in copy: %s)  '
                          'RSS %5.1f MiB' % (proto, name, i + 1, wall,
                                             '%.2f s' % inner if inner
                                             else '-', rss), flush=True)
        report(results, tools, args)
    finally:
        for s in reversed(servers):
            try:
                s.stop()
            except Exception as exc:  # noqa: report and go on
                print('could not stop %r: %s' % (s, exc))
        shutil.rmtree(base, ignore_errors=True)


def report(results, tools, args):
    print()
    print('%d MiB, %d repeats, medians (ratio = ours / reference):'
          % (args.size // MiB, args.repeats))
    print('%-5s %-12s %9s %9s %10s %9s %9s %10s' % (
        'proto', 'tool', 'wall', 'min', 'in-copy', 'MiB/s', 'ratio',
        'peak RSS'))
    for proto, entries in tools.items():
        ref = statistics.median(w for w, _, _ in
                                results[(proto, entries[0][0])])
        for name, _argv in entries:
            runs = results[(proto, name)]
            wall = statistics.median(w for w, _, _ in runs)
            inner = [x for _, _, x in runs if x is not None]
            inner = statistics.median(inner) if inner else None
            rss = max(r for _, r, _ in runs)
            print('%-5s %-12s %8.2fs %8.2fs %10s %9.0f %8.2fx %7.1f MiB' % (
                proto, name, wall, min(w for w, _, _ in runs),
                '%.2fs' % inner if inner else '-',
                args.size / MiB / wall, wall / ref, rss))


if __name__ == '__main__':
    main()
