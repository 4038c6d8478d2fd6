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

"""The lazy-image soak: SIGKILL ``oslo-transfer nbd`` while a client reads.

Shared by the functional soak and ``benchmarks/soak/run.py`` (row
``lazy``).  An nginx origin serves a seeded image through its rate-limited
``/slow/`` location, with a 64 KiB blockmap as the trusted manifest; the
lazy-image fixtures (:mod:`tests.functional.lazy.conftest`) start
``oslo-transfer nbd`` and run the python3-libnbd client.  For each kill:

1. the export starts (no prefetch: only the client's reads fetch), and a
   client reads a seeded list of random ranges over 4 connections;
2. a seeded moment after the client connected, the command and its
   nbdkit are killed with SIGKILL (no clean-up runs), and the client's
   reads in flight fail: *cut* counts the reads that failed and had
   started before the kill (the client times each read, on the same
   monotonic clock), not those that failed at once after it;
3. the export starts again on the same cache and the client reads the
   same ranges again: every read must be the source's bytes (so must
   those that returned before the kill);
4. *refetched*: blocks the origin sent again that it had sent before the
   kill, against the bound of the present-map (the user guide's lazy
   page: a crash loses at most the last second's blocks): the blocks the
   origin sent in the last :data:`WINDOW` seconds before the kill, as an
   access-log watcher saw them.

At the end the export runs with its prefetch until the cache is complete
and renamed; then the cache must be the source, and nothing may be left
beside it (no ``.part``, map, control file or lock).
"""

import hashlib
import json
import os
import random
import subprocess
import threading
import time

from oslo_transfer import blockmap
from tests.functional.http import nginx as nginx_mod
from tests.functional.lazy import conftest as lconf
from tests.functional.soak import protocols

BLOCK = lconf.BLOCK
NAME = protocols.NAME
#: seconds before a kill whose blocks the present-map may lose: its flush
#: period (one second) plus the watcher's view of the log (a line appears
#: once nginx sent the block; the cache writes it a moment later)
WINDOW = 1.25


class _Watcher(threading.Thread):
    """Notes when each block first appears in nginx's access log."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.server = server
        self.seen = []          # (monotonic time, block)
        self._lines = 0
        self._halt = threading.Event()
        self._lock = threading.Lock()   # the thread and the soak both poll

    def poll(self):
        with self._lock:
            lines = self.server.requests_for(NAME)
            now = time.monotonic()
            if len(lines) < self._lines:    # a new log (nginx restarted)
                self._lines = 0
            for line in lines[self._lines:]:
                self.seen.extend((now, b) for b in lconf.blocks_of(
                    self.server, line))
            self._lines = len(lines)

    def run(self):
        while not self._halt.wait(0.02):
            self.poll()

    def stop(self):
        self._halt.set()
        self.join()
        self.poll()


class LazySoak:
    """One lazy image, its export killed ``kills`` times mid-read.

    :param workdir: where nginx, the cache and the logs go.
    :param size: bytes of the image.
    :param seed: seeds the image, the reads and the kill moments.
    :param reads: ranges the client reads per round.
    :param rate: nginx ``limit_rate`` per request (``/slow/``): slow
        enough that a kill lands while reads are in flight.  nginx lets a
        request send one second's worth at once (``rate * (t + 1)``), so
        the rate must stay under the largest read (1 MiB): at 2 MB/s and
        more no read of a 48-read round was ever cut.
    :param kill_after: the kill comes this many seconds (seeded, uniform)
        after the client connected.
    """

    name = 'lazy'
    single_version = True

    def __init__(self, workdir, size, seed, kills, reads=48, rate='512k',
                 kill_after=(0.05, 0.5), log=None):
        self.workdir = str(workdir)
        self.size = size
        self.seed = seed
        self.kills = kills
        self.nreads = reads
        self.rate = rate
        self.kill_after = kill_after
        self.log = log or (lambda msg: None)
        self.data = protocols.seeded_bytes(size, seed)
        self.cache = os.path.join(self.workdir, 'cache', NAME)
        self._n = 0

    def _export(self, *options):
        self._n += 1
        return lconf.Export.build(
            self.url, self.cache,
            os.path.join(self.workdir, 'nbd-%d.sock' % self._n),
            os.path.join(self.workdir, 'nbd-%d.log' % self._n),
            '--blockmap', self.blockmap, *options).start()

    def _reads(self, rng):
        out = []
        for _ in range(self.nreads):
            n = rng.choice([4096, 64 * 1024, 200 * 1024, 1024 * 1024])
            out.append((rng.randrange(0, self.size - n), n))
        return out

    def _sha(self, off, n):
        return hashlib.sha256(self.data[off:off + n]).hexdigest()

    def run(self) -> dict:
        report = {'protocol': self.name, 'size': self.size, 'kills': []}
        started = time.monotonic()
        base = os.path.join(self.workdir, 'nginx')
        server = nginx_mod.Nginx(os.path.join(base, 'prefix'),
                                 os.path.join(base, 'docroot'),
                                 os.path.join(base, 'upload'), rate=self.rate)
        path = os.path.join(server.docroot, NAME)
        protocols.write_file(path, self.data)
        self.blockmap = os.path.join(self.workdir, NAME + '.blockmap')
        with open(self.blockmap, 'wb') as f:
            f.write(blockmap.make_blockmap(path, BLOCK))
        os.makedirs(os.path.dirname(self.cache), exist_ok=True)
        server.start()
        watcher = _Watcher(server)
        watcher.start()
        try:
            self.url = server.url(NAME, location='slow')
            rng = random.Random(self.seed)
            for k in range(self.kills):
                report['kills'].append(self._round(k, rng, watcher))
            # The rest at full speed: only the end state is looked at.
            server.restart(rate='0')   # 0: no limit_rate
            self._complete(report)
        finally:
            watcher.stop()
            server.stop()
        report['elapsed'] = time.monotonic() - started
        report['served'] = len(watcher.seen) * BLOCK
        kills = report['kills']
        report['lost_total'] = sum(k['lost'] for k in kills)
        report['lost_max'] = max([k['lost'] for k in kills] or [0])
        report['over_bound'] = [k for k in kills if k['lost'] > k['bound']]
        return report

    def _round(self, k, rng, watcher):
        exp = self._export('--no-prefetch')
        reads = self._reads(rng)
        client = subprocess.Popen(
            **lconf.client_call(exp.uri, reads, connections=4, times=True),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # The kill's moment counts from the client's connections, not from
        # its start (python3 and libnbd take a while to load).
        line = client.stderr.readline()
        if line != 'connected\n':
            client.kill()
            raise AssertionError('the NBD client did not connect: %s%s'
                                 % (line, client.communicate()[1]))
        time.sleep(rng.uniform(*self.kill_after))
        killed_at = time.monotonic()
        exp.kill()
        out, err = client.communicate(timeout=60)
        assert client.returncode == 0, err
        first = json.loads(out)['reads']
        # Cut: a read that started before the kill and failed (a read
        # started after it fails at once; it was never in flight).
        cut = sum(1 for g in first
                  if 'error' in g and g['start'] < killed_at)
        wrong = [r for r, g in zip(reads, first)
                 if 'sha256' in g and g['sha256'] != self._sha(*r)]
        watcher.poll()
        before = {b for _, b in watcher.seen}
        recent = {b for t, b in watcher.seen if t >= killed_at - WINDOW}
        mark = len(watcher.seen)
        exp = self._export('--no-prefetch')
        res = subprocess.run(**lconf.client_call(exp.uri, reads, 4),
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        got = json.loads(res.stdout)['reads']
        wrong += [r for r, g in zip(reads, got)
                  if g != {'sha256': self._sha(*r)}]
        assert exp.stop() == 0, exp.tail()
        time.sleep(0.3)                 # nginx logs after it answered
        watcher.poll()
        again = [b for _, b in watcher.seen[mark:] if b in before]
        entry = {'kill': k + 1, 'reads_wrong': len(wrong), 'reads_cut': cut,
                 'lost': len(set(again)) * BLOCK,
                 'bound': len(recent) * BLOCK,
                 'outside_window': len(set(again) - recent)}
        self.log('  kill %2d: %d of %d reads cut in flight; %d wrong (before '
                 'the kill or read again); %d blocks fetched again (bound: '
                 '%d sent in the last %.2fs)'
                 % (k + 1, cut, len(reads), len(wrong), len(set(again)),
                    len(recent), WINDOW))
        return entry

    def _complete(self, report):
        exp = self._export()            # with its prefetch
        deadline = time.monotonic() + 300
        while not os.path.exists(self.cache):
            assert exp.proc.poll() is None, exp.tail()
            assert time.monotonic() < deadline, exp.tail()
            time.sleep(0.1)
        assert exp.stop() == 0, exp.tail()
        report['reads_wrong'] = sum(k['reads_wrong'] for k in report['kills'])
        with open(self.cache, 'rb') as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        report['digest'] = digest
        report['digest_ok'] = digest == hashlib.sha256(self.data).hexdigest()
        report['leftovers'] = sorted(
            n for n in os.listdir(os.path.dirname(self.cache)) if n != NAME)
