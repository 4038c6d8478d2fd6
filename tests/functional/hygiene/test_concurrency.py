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

"""Many copies in one process, and two processes on one destination.

* 64 copies submitted at once to one ``Transfer`` (64 executor workers, so
  they all run together), from nginx, vsftpd and local files, to 64
  destinations: every one completes and verifies, and nothing is left
  beside the destinations.
* Two ``oslo-transfer copy`` processes copy the same source to the same
  destination at once.  DESIGN.md, "One writer per destination": the
  second waits for the first's lock, then finds the verified destination
  and returns with zero bytes moved; meanwhile the destination is either
  absent or complete, never a part of the data.
"""

import json
import os
import subprocess
import sys
import threading
import time

from oslo_transfer import fixture
from tests.functional import conftest as fconf

MiB = fconf.MiB
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


def test_64_concurrent_copies_all_complete_and_verify(web, ftp, files,
                                                      tmp_path):
    sources = []
    for i in range(64):
        kind = ('http', 'http', 'ftp', 'file')[i % 4]
        name = 'conc-%02d.bin' % i
        size = MiB + i * 4099
        if kind == 'http':
            df = files(web.docroot, name, size)
            sources.append((web.url(df.name), df))
        elif kind == 'ftp':
            df = files(ftp.anon_root, name, size)
            sources.append((ftp.url(df.name), df))
        else:
            df = files(tmp_path / 'src', name, size)
            sources.append((df.path, df))
    out = tmp_path / 'out'
    out.mkdir()
    with fixture.TransferFixture(drivers=['http', 'ftp', 'file'],
                                 executor_workers=64,
                                 io_timeout=30.0) as fix:
        handles = [(fix.transfer.submit(url, str(out / df.name),
                                        checksum=df.checksum()), df)
                   for url, df in sources]
        results = [(h.result(timeout=300), df) for h, df in handles]
    for res, df in results:
        assert res.digest == df.sha256
        assert res.bytes_transferred == df.size
        assert fconf.file_equals(str(out / df.name), df.data)
    assert sorted(os.listdir(out)) == sorted(df.name for _, df in sources)


def _copy_process(url, dest, checksum):
    return subprocess.Popen(
        [sys.executable, '-c',
         'import sys; from oslo_transfer.cmd.main import main; '
         'sys.exit(main())',
         'copy', url, dest, '--checksum', checksum, '--json',
         '--no-progress'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)


def _watch(dest, data, stop, seen):
    """Whenever ``dest`` exists, it must be the whole data."""
    while not stop.is_set():
        if os.path.exists(dest):
            seen.append(fconf.file_equals(dest, data))
        time.sleep(0.01)


def test_two_processes_one_destination(web, files, tmp_path):
    src = files(web.docroot, 'two-procs.bin', 6 * MiB)
    url = web.url(src.name, 'slow')         # 4 MB/s: the first takes ~1.5 s
    out = tmp_path / 'out'
    out.mkdir()
    dest = str(out / 'image.raw')
    stop, seen = threading.Event(), []
    watcher = threading.Thread(target=_watch,
                               args=(dest, src.data, stop, seen))
    watcher.start()
    first = second = None
    try:
        first = _copy_process(url, dest, src.checksum())
        deadline = time.monotonic() + 30
        while fconf.correct_bytes(fconf.part_path(dest), src.data) < MiB:
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, 'the first copy never began'
            time.sleep(0.02)
        # The first holds the lock and has bytes on disk: now the second.
        second = _copy_process(url, dest, src.checksum())
        outs = [p.communicate(timeout=120) for p in (first, second)]
    finally:
        stop.set()
        watcher.join()
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate()
    for p, (out_, err) in zip((first, second), outs):
        assert p.returncode == 0, err.decode()[-2000:]
    r1, r2 = [json.loads(o.decode().strip().splitlines()[-1])
              for o, _ in outs]
    assert r1['bytes_transferred'] == src.size
    assert r1['digest'] == src.sha256
    # The second waited, then found the verified destination.
    assert r2['bytes_transferred'] == 0 and r2['bytes_resumed'] == 0
    assert r2['digest'] == src.sha256
    assert r2['driver'] is None
    fconf.assert_only_dest(dest, src.data)
    # Whenever the destination was there, it was the whole data.
    assert seen and all(seen), seen.count(False)
