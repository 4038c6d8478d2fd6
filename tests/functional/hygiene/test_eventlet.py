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

"""oslo.transfer under ``eventlet.monkey_patch()``.

nova-compute and cinder-volume still run monkey-patched in many clouds:
every "thread" is a green thread of one hub, and a library call that
never gives the hub back stalls the whole service (its RPC heartbeats
included).  Each scenario runs in a child process
(:mod:`.green_child`), so that the patching never reaches this one; a
green thread there ticks every 10 ms during the scenario and notes the
copy's progress on disk at each tick.  The tests assert that the ticks
kept coming while a large copy ran (the ticker saw the ``.part`` at many
sizes between empty and whole: no timing involved; a copy that kept the
hub would let it tick only before and after) and that ``copy``,
``submit``, cancel and eight green threads copying to one destination
behave as without eventlet.  ``benchmarks/eventlet/run.py`` reports the
worst gap between two ticks during a 1 GiB copy.
"""

import hashlib
import json
import os
import subprocess
import sys

from tests.functional import conftest as fconf

MiB = fconf.MiB
#: the large copies (the benchmark copies 1 GiB)
BIG = 256 * MiB
#: progress samples the ticker must see during a large copy
MID_SAMPLES = 8
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


def big_file(path, size) -> str:
    """Write ``size`` random bytes to ``path``; returns their sha256."""
    h = hashlib.sha256()
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, 'wb') as f:
        left = size
        while left:
            block = os.urandom(min(16 * MiB, left))
            h.update(block)
            f.write(block)
            left -= len(block)
    return h.hexdigest()


def green(scenario, *args, config=None) -> dict:
    """Run :mod:`.green_child` ``scenario``; its JSON report."""
    argv = [sys.executable, '-m', 'tests.functional.hygiene.green_child',
            scenario] + [str(a) for a in args]
    if config:
        argv += ['--config-file', str(config)]
    p = subprocess.run(argv, cwd=REPO, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out['patched'], 'eventlet did not patch the child'
    return out


def ticks_kept_coming(report):
    """The ticker ran many times while the copy was under way."""
    assert report['mid_samples'] >= MID_SAMPLES, report


def one_checkpoint(tmp_path):
    """A config whose copies never wait for a checkpoint.

    (Waiting for one gives the hub a turn: without it, only the engine's
    own yields do.)
    """
    return fconf.write_conf_file(tmp_path / 'green.conf', {
        'oslo_transfer': {'checkpoint_bytes': 4 * BIG}})


def test_copy_of_large_file_leaves_the_hub_running(tmp_path):
    digest = big_file(tmp_path / 'src' / 'big.raw', BIG)
    dest = tmp_path / 'out' / 'big.raw'
    dest.parent.mkdir()
    report = green('copy', tmp_path / 'src' / 'big.raw', dest,
                   '--checksum', 'sha256:' + digest,
                   config=one_checkpoint(tmp_path))
    assert report['result']['digest'] == digest
    ticks_kept_coming(report)


def test_copy_by_http_leaves_the_hub_running(web, tmp_path):
    digest = big_file(os.path.join(web.docroot, 'green-big.raw'), BIG)
    dest = tmp_path / 'out' / 'big.raw'
    dest.parent.mkdir()
    try:
        report = green('copy', web.url('green-big.raw'), dest,
                       '--checksum', 'sha256:' + digest,
                       config=one_checkpoint(tmp_path))
    finally:
        os.unlink(os.path.join(web.docroot, 'green-big.raw'))
    assert report['result']['digest'] == digest
    assert report['result']['driver'] == 'http'
    ticks_kept_coming(report)


def test_submit(web, files, tmp_path):
    src = files(web.docroot, 'green-submit.bin', 8 * MiB)
    dest = tmp_path / 'out' / 'img'
    dest.parent.mkdir()
    report = green('submit', web.url(src.name), dest,
                   '--checksum', src.checksum())
    assert report['result']['digest'] == src.sha256
    assert fconf.file_equals(str(dest), src.data)


def test_cancel(web, files, tmp_path):
    src = files(web.docroot, 'green-cancel.bin', 32 * MiB)
    dest = tmp_path / 'out' / 'img'
    dest.parent.mkdir()
    # /slow/: 4 MB/s, so the copy is in the middle when it is cancelled.
    report = green('cancel', web.url(src.name, 'slow'), dest)
    assert report['progressed'] > 0
    assert report['raised'] == 'Cancelled', report
    # within the I/O timeout (60 s by default), in fact at once
    assert report['cancel_seconds'] < 60, report
    assert not dest.exists()
    assert 'img.part' in report['left'] and 'img.part.ctl' in report['left']


def test_eight_green_threads_one_destination(web, files, tmp_path):
    src = files(web.docroot, 'green-same.bin', 24 * MiB)
    dest = tmp_path / 'out' / 'img'
    dest.parent.mkdir()
    report = green('same-dest', web.url(src.name), dest, 8,
                   '--checksum', src.checksum())
    assert report['errors'] == []
    results = report['results']
    assert len(results) == 8
    assert all(r['digest'] == src.sha256 for r in results), results
    # one writer moved the bytes; the seven others waited, then found the
    # verified destination
    moved = sorted(r['bytes_transferred'] for r in results)
    assert moved == [0] * 7 + [src.size], moved
    fconf.assert_only_dest(str(dest), src.data)
