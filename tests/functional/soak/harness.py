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

"""The kill-and-resume soak: one copy, killed and restarted many times.

Shared by the functional soak (``tests/functional/soak/``: small files, a
few kills) and ``benchmarks/soak/run.py`` (256 MiB, 20 kills, 5 server
restarts).  For one protocol (:mod:`.protocols` starts its real server):

1. a seeded schedule of *events* at byte offsets of the copy: ``kill``
   (SIGKILL of the copying process, then a new one) and ``restart`` (the
   server is stopped and started again while the copy runs; for ``file``,
   the source is replaced instead);
2. ``oslo-transfer copy SRC DEST --json`` runs as a subprocess; the
   harness follows its progress by the bytes allocated to ``DEST.part``
   (random data: no holes but the unwritten ranges) and fires each event
   once the run has prepared its ``.part`` (a new control file) and
   progress passed the event's offset;
3. after each kill it reads the state left on disk: the ranges that the
   control file records as held must hold the source's bytes (the journal
   never claims a byte it does not have), and the correct bytes outside
   them are the ones the next run fetches again (*lost*), which DESIGN.md
   bounds by the checkpoint interval plus one chunk per segment in
   flight;
4. at the end: the destination's sha256, the Result of the last run, the
   bytes the server sent where its log tells, and anything left beside
   ``DEST`` (there must be nothing: no ``.part``, lock or control file).

A run that exits by itself with an error (not killed) is recorded with its
message and started again; the soak gives up after ``max_failures``.
"""

import dataclasses
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

MiB = 1024 * 1024
#: granularity of the on-disk comparison (random data: no zero block)
BLOCK = 64 * 1024
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


@dataclasses.dataclass
class Event:
    """Something the soak does once progress passes ``offset``."""

    offset: int
    kind: str          # 'kill' or 'restart'
    done: bool = False


def schedule(size: int, kills: int, restarts: int, seed: int) -> list:
    """``kills`` + ``restarts`` events at seeded offsets, in order.

    Offsets are uniform in [2 %, 98 %] of ``size``, so that each falls
    inside a copy and not at its very start or end.
    """
    rng = random.Random(seed)
    events = [Event(int(rng.uniform(0.02, 0.98) * size), 'kill')
              for _ in range(kills)]
    events += [Event(int(rng.uniform(0.02, 0.98) * size), 'restart')
               for _ in range(restarts)]
    return sorted(events, key=lambda e: e.offset)


def allocated(path: str) -> int:
    """Bytes allocated to ``path`` (0 if it does not exist)."""
    try:
        return os.stat(path).st_blocks * 512
    except FileNotFoundError:
        return 0


def inode(path: str):
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def held_ranges(ctl_path: str) -> list:
    """The ranges the control file records as held (none if unreadable)."""
    try:
        with open(ctl_path) as f:
            return [tuple(r) for r in json.load(f).get('ranges', [])]
    except (OSError, ValueError):
        return []


def _holes(ranges, size):
    pos = 0
    for s, e in sorted(ranges):
        if s > pos:
            yield pos, s
        pos = max(pos, e)
    if pos < size:
        yield pos, size


def _matching_blocks(f, start, end, versions):
    """Bytes of ``[start, end)`` of ``f`` equal to one of ``versions``."""
    good = 0
    pos = start
    while pos < end:
        n = min(4 * MiB, end - pos)
        data = os.pread(f.fileno(), n, pos)
        if not data:
            break
        view = memoryview(data)
        for off in range(0, len(data), BLOCK):
            piece = view[off:off + BLOCK]
            at = pos + off
            if any(piece == memoryview(v)[at:at + len(piece)]
                   for v in versions):
                good += len(piece)
        pos += len(data)
    return good


def inspect_after_kill(dest: str, versions: list) -> dict:
    """What a killed run left: held bytes, and correct bytes not held.

    :param versions: the source's contents the ``.part`` may hold (one,
        except for a replaced ``file`` source).
    :returns: ``{'held', 'held_correct', 'lost'}``: bytes the control file
        records, how many of those are the source's bytes, and the correct
        bytes outside them (written, not recorded: fetched again).
    """
    part = dest + '.part'
    size = len(versions[0])
    ranges = held_ranges(dest + '.part.ctl')
    held = sum(e - s for s, e in ranges)
    if not os.path.exists(part):
        return {'held': held, 'held_correct': 0, 'lost': 0}
    with open(part, 'rb') as f:
        held_ok = sum(_matching_blocks(f, s, e, versions) for s, e in ranges)
        lost = sum(_matching_blocks(f, s, e, versions)
                   for s, e in _holes(ranges, size))
    return {'held': held, 'held_correct': held_ok, 'lost': lost}


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(4 * MiB), b''):
            h.update(block)
    return h.hexdigest()


def write_conf(path: str, sections: dict) -> str:
    with open(path, 'w') as f:
        for group, values in sections.items():
            f.write('[%s]\n' % group)
            for key, value in values.items():
                if isinstance(value, bool):
                    value = 'true' if value else 'false'
                elif isinstance(value, (list, tuple)):
                    value = ','.join(str(v) for v in value)
                f.write('%s = %s\n' % (key, value))
            f.write('\n')
    return path


def command() -> list:
    """How to run ``oslo-transfer`` with this interpreter and tree."""
    return [sys.executable, '-c',
            'import sys; from oslo_transfer.cmd.main import main; '
            'sys.argv[0] = "oslo-transfer"; sys.exit(main())']


class Soak:
    """One protocol's soak.

    :param proto: a started :class:`~.protocols.Protocol`.
    :param workdir: where ``DEST`` and the config file go.
    :param options: ``[oslo_transfer]`` options for the copies (checkpoint
        interval, retries...).
    :param run_timeout: seconds one run may take before the soak fails.
    """

    def __init__(self, proto, workdir, options=None, run_timeout=300.0,
                 max_failures=10, log=None):
        self.proto = proto
        self.workdir = str(workdir)
        self.out = os.path.join(self.workdir, 'out')
        os.makedirs(self.out, exist_ok=True)
        self.dest = os.path.join(self.out, 'image.raw')
        self.options = {'retries': 8, 'retry_backoff': 0.2,
                        'io_timeout': 20.0,
                        'state_path': os.path.join(self.workdir, 'state')}
        self.options.update(options or {})
        self.run_timeout = run_timeout
        self.max_failures = max_failures
        self.log = log or (lambda msg: None)
        sections = {'oslo_transfer': self.options}
        for group, values in proto.conf_sections().items():
            sections.setdefault(group, {}).update(values)
        self.conf_file = write_conf(
            os.path.join(self.workdir, 'soak.conf'), sections)

    # -- one run --------------------------------------------------------------

    def _argv(self):
        argv = command() + ['--config-file', self.conf_file, 'copy',
                            self.proto.url, self.dest, '--json',
                            '--no-progress'] + self.proto.copy_args()
        return argv

    def _start(self, n):
        err = open(os.path.join(self.workdir, 'run-%03d.stderr' % n), 'wb')
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [ROOT] + [p for p in os.environ.get('PYTHONPATH', '').split(
                os.pathsep) if p]))
        popen = subprocess.Popen(self._argv(), stdout=subprocess.PIPE,
                                 stderr=err, stdin=subprocess.DEVNULL,
                                 cwd=ROOT, env=env)
        err.close()
        return popen

    def _stderr(self, n, limit=2000):
        path = os.path.join(self.workdir, 'run-%03d.stderr' % n)
        with open(path, 'rb') as f:
            return f.read()[-limit:].decode('utf-8', 'replace')

    def run(self, events) -> dict:
        """Copy until done, firing ``events``; returns the report."""
        part, ctl = self.dest + '.part', self.dest + '.part.ctl'
        report = {'protocol': self.proto.name, 'size': self.proto.size,
                  'kills': [], 'restarts': [], 'failures': [], 'runs': 0}
        pending = list(events)
        started = time.monotonic()
        self._restarting = None
        n = 0
        while True:
            n += 1
            report['runs'] = n
            ctl_before = inode(ctl)
            popen = self._start(n)
            t0 = time.monotonic()
            prepared = False
            killed = False
            while popen.poll() is None:
                if time.monotonic() - t0 > self.run_timeout:
                    popen.kill()
                    popen.wait()
                    raise AssertionError(
                        '%s: run %d took more than %.0fs; stderr:\n%s'
                        % (self.proto.name, n, self.run_timeout,
                           self._stderr(n)))
                if not prepared:
                    # The run has opened and prepared .part once it wrote
                    # its control file (a new file each time).
                    cur = inode(ctl)
                    prepared = cur is not None and cur != ctl_before
                if prepared and pending:
                    ev = pending[0]
                    now = allocated(part)
                    if now >= ev.offset:
                        pending.pop(0)
                        if ev.kind == 'kill':
                            self._kill(popen, n, now, report)
                            killed = True
                            break
                        self._restart(n, now, report)
                        continue
                time.sleep(0.002)
            if killed:
                continue
            out, _ = popen.communicate()
            self._wait_restart()
            rc = popen.returncode
            line = out.decode('utf-8', 'replace').strip().splitlines()
            if rc == 0 and line:
                report['result'] = json.loads(line[-1])
                break
            report['failures'].append({'run': n, 'rc': rc,
                                       'stderr': self._stderr(n, 600)})
            self.log('  run %d failed (exit %s): %s' % (
                n, rc, self._stderr(n, 300).strip().splitlines()[-1:]))
            if len(report['failures']) > self.max_failures:
                raise AssertionError('%s: %d runs failed; last:\n%s' % (
                    self.proto.name, len(report['failures']),
                    self._stderr(n)))
        self._wait_restart()
        report['unfired'] = len(pending)
        report['elapsed'] = time.monotonic() - started
        self._final(report)
        return report

    def _kill(self, popen, n, now, report):
        os.kill(popen.pid, signal.SIGKILL)
        popen.wait()
        state = inspect_after_kill(self.dest, self.proto.versions())
        state.update(run=n, at=now)
        report['kills'].append(state)
        self.log('  kill %2d at %7.1f MiB (run %d): held %.1f MiB, lost '
                 '%.1f MiB%s' % (
                     len(report['kills']), now / MiB, n, state['held'] / MiB,
                     state['lost'] / MiB,
                     '' if state['held_correct'] == state['held'] else
                     ', %d HELD BYTES WRONG' % (state['held'] -
                                                state['held_correct'])))

    def _restart(self, n, now, report):
        """Restart the server in a thread; the soak goes on meanwhile.

        (Kills keep firing while a server comes back, and a copy that a
        server let finish during its shutdown is not waited for.)
        """
        self._wait_restart()
        entry = {'run': n, 'at': now}
        report['restarts'].append(entry)
        self.log('  restart %d at %7.1f MiB (run %d)' % (
            len(report['restarts']), now / MiB, n))

        def restart():
            t = time.monotonic()
            try:
                entry['what'] = self.proto.restart()
            except Exception as exc:  # noqa: reported, the soak fails
                entry['error'] = '%s: %s' % (type(exc).__name__, exc)
            entry['seconds'] = time.monotonic() - t

        self._restarting = threading.Thread(target=restart, daemon=True)
        self._restarting.start()

    def _wait_restart(self):
        if self._restarting is not None:
            self._restarting.join()
            self._restarting = None

    def _final(self, report):
        res = report['result']
        digest = sha256_file(self.dest)
        report['digest'] = digest
        report['digest_ok'] = digest in self.proto.digests()
        report['latest'] = digest == self.proto.digests()[-1]
        report['result_digest_ok'] = res.get('digest') in (None, digest)
        report['leftovers'] = sorted(
            n for n in os.listdir(self.out) if n != 'image.raw')
        report['served'] = self.proto.served_bytes()
        kills = report['kills']
        report['lost_total'] = sum(k['lost'] for k in kills)
        report['lost_max'] = max([k['lost'] for k in kills] or [0])
        report['held_wrong'] = sum(k['held'] - k['held_correct']
                                   for k in kills
                                   if self.proto.single_version)


def bound_per_kill(options: dict, segments: int) -> int:
    """DESIGN.md's bound on the bytes one crash costs.

    ``checkpoint_bytes`` (all segments together) plus one chunk per
    segment in flight, written after the last checkpoint's snapshot.
    """
    ckpt = int(options.get('checkpoint_bytes', 16 * MiB))
    chunk = int(options.get('chunk_size', MiB))
    return ckpt + segments * chunk
