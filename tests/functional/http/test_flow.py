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

"""Flow control against nginx: class shares and order, refusals.

Shares and order come from byte counts (``Transfer.stats()``), never from
times.
"""

import os
import threading

from oslo_config import cfg
import pytest

import oslo_transfer
from oslo_transfer import exceptions as exc
from oslo_transfer import Hints
from oslo_transfer import opts
from tests.functional import conftest as fconf

MiB = 1024 * 1024
LIMIT = 8 * MiB


def _transfer(**options):
    conf = cfg.ConfigOpts()
    conf([], project='oslo_transfer', default_config_files=[],
         default_config_dirs=[])
    opts.register_opts(conf)
    for k, v in options.items():
        conf.set_override(k, v, group='oslo_transfer')
    return oslo_transfer.Transfer(conf, drivers=['http'])


def _record(t):
    """The classes of the bytes the scheduler let pass, in order."""
    seen = []
    account = t.scheduler.account

    def record(nbytes, cls='normal', origin=None):
        seen.append((cls, nbytes))
        account(nbytes, cls, origin)

    t.scheduler.account = record
    return seen


def _while_active(seen, cls):
    """Bytes per class from the first to the last grant of ``cls``."""
    idx = [i for i, (c, _) in enumerate(seen) if c == cls]
    got = {}
    for c, n in seen[idx[0]:idx[-1] + 1]:
        got[c] = got.get(c, 0) + n
    return got


def test_an_interactive_copy_gets_its_weight_beside_six_background(
        nginx, serve, tmp_path):
    bg_files = [serve(16 * MiB) for _ in range(6)]
    fresh = serve(16 * MiB)
    t = _transfer(origin_rate_limit=LIMIT, executor_workers=8)
    try:
        flowing = threading.Event()

        def progress(done, total):
            if done:
                flowing.set()

        handles = [t.submit(nginx.url(f.name), str(tmp_path / f.name),
                            checksum='sha256:' + f.sha256,
                            hints=Hints(priority='background'),
                            progress=progress)
                   for f in bg_files]
        assert flowing.wait(30)
        origin = 'http://127.0.0.1:%d' % nginx.port
        seen = _record(t)
        out = tmp_path / 'interactive'
        res = t.copy(nginx.url(fresh.name), str(out),
                     checksum='sha256:' + fresh.sha256,
                     hints=Hints(priority='interactive', deadline=600))
        assert res.size == fresh.size
        assert fconf.file_equals(str(out), fresh.data)
        still = sum(not h.done() for h in handles)
        got = _while_active(list(seen), 'interactive')
        got_i, got_b = got.get('interactive', 0), got.get('background', 0)
        stats = t.stats()
    finally:
        for h in handles:
            h.cancel()
        t.close()
    assert still == 6        # the background copies were all running
    assert got_i == fresh.size
    # interactive 8 : background 1, per class: while it was active, the
    # interactive copy got at least its weight's share (8/9) of the bytes
    # under the shared limit, give or take one chunk (the unit of a
    # grant); first come first served would have given it about 1/7 ...
    chunk = max(n for c, n in seen if c == 'background')
    share = got_i / (got_i + got_b)
    assert share >= 8 / 9 - chunk / (got_i + got_b), (got_i, got_b)
    # ... and the background class was not starved meanwhile
    assert got_b > 0
    cls = stats['classes']['interactive']
    assert (cls['completed'], cls['missed'], cls['refused']) == (1, 0, 0)
    assert origin in stats['origins']


def test_a_deadline_the_origin_limit_cannot_meet_is_refused(
        nginx, serve, tmp_path):
    f = serve(4 * MiB)
    t = _transfer(origin_rate_limit=MiB)
    dest = tmp_path / 'out' / 'image.raw'
    dest.parent.mkdir()
    try:
        with pytest.raises(exc.DeadlineUnreachable) as info:
            t.copy(nginx.url(f.name), str(dest),
                   hints=Hints(priority='interactive', deadline=2))
        # no deadline: the same copy is never refused
        t.copy(nginx.url(f.name), str(tmp_path / 'other'),
               hints=Hints(priority='interactive'))
        stats = t.stats()
    finally:
        t.close()
    e = info.value
    assert e.retryable
    assert e.estimate == pytest.approx(4.0, rel=0.01)
    msg = str(e)
    assert 'the deadline of 2.0s cannot be met' in msg
    assert '4194304 bytes to move' in msg
    assert 'origin_rate_limit' in msg and 'nothing was written' in msg
    assert os.listdir(dest.parent) == []     # no .part, .ctl nor lock
    assert stats['classes']['interactive']['refused'] == 1
    assert stats['classes']['interactive']['completed'] == 1


def _client_sockets(port) -> dict:
    """``{local port: (rcvbuf, rcv_wscale)}``: our connections to ``port``."""
    return {local: v for (local, peer), v in fconf.client_sockets().items()
            if peer == port}


def test_a_background_copy_reads_through_a_small_receive_buffer(
        nginx, serve, tmp_path):
    """Its sockets have a 256 KiB SO_RCVBUF (Linux shows it doubled)."""
    f = serve(3 * MiB)
    url = nginx.url(f.name)
    t = _transfer()
    try:
        before = _client_sockets(nginx.port)
        t.copy(url, str(tmp_path / 'bg'), checksum='sha256:' + f.sha256,
               hints=Hints(priority='background'))
        # (kept alive in the driver's pool after the copy)
        kept = _client_sockets(nginx.port)
        t.copy(url, str(tmp_path / 'normal'),
               checksum='sha256:' + f.sha256)
        after = _client_sockets(nginx.port)
    finally:
        t.close()
    background = [v for p, v in kept.items() if p not in before]
    normal = [v for p, v in after.items() if p not in kept]
    assert background, 'no connection of the background copy kept alive'
    assert normal, 'the normal copy reused a background connection'
    for rb, wscale in background:
        assert rb == 2 * 256 * 1024
        assert wscale <= 4          # set before connect(): a small window
    for rb, wscale in normal:       # autotuned: tcp_rmem's maximum
        assert rb != 2 * 256 * 1024
        assert wscale > max(w for _, w in background)
    assert fconf.file_equals(str(tmp_path / 'bg'), f.data)
