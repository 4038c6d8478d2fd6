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

"""Several locations of the same data read at once, from two real nginx.

Each mirror is an nginx of its own (its own origin, so its own connection
slots), serving the same bytes; ``limit_rate`` on ``/slow/`` (per
connection) makes one slower than the other.  The tests assert shares,
bytes per location and the state on disk, never times.
"""

import json
import os
import shutil
import time

import pytest

import oslo_transfer
from oslo_transfer import blockmap
from oslo_transfer import exceptions as exc
from tests.functional import conftest as fconf
from tests.functional.http import nginx as nginx_mod
from tests.functional.http import test_cli

MiB = fconf.MiB
SIZE = 24 * MiB


@pytest.fixture
def mirrors(tmp_path):
    """``mirrors(rate, rate, ...)`` -> started Nginx, one per rate."""
    made = []

    def make(*rates):
        for rate in rates:
            base = tmp_path / ('mirror%d' % len(made))
            made.append(nginx_mod.Nginx(base / 'prefix', base / 'docroot',
                                        base / 'upload', rate=rate).start())
        return made[-len(rates):]

    yield make
    for server in made:
        server.stop()


def _publish(servers, src, name='image'):
    """Put ``src``'s bytes on every server, each with its own mtime.

    (Distinct mtimes give distinct ETags: one validator per location.)
    """
    for i, server in enumerate(servers):
        path = os.path.join(server.docroot, name)
        shutil.copyfile(src.path, path)
        os.utime(path, (time.time(), 1_700_000_000 + i * 1000))


@pytest.fixture
def conf(make_conf):
    # Multi-source from 1 MiB on (the default threshold is 64 MiB).
    return make_conf(oslo_transfer={'segment_threshold': MiB,
                                    'retry_backoff': 0.0})


def test_a_rate_limited_mirror_gets_less(mirrors, tmp_path, dest, conf):
    # nginx's limit_rate lets each request send one second's worth at
    # once, so a slow mirror here is one far slower than the other:
    # proportions themselves are checked on a fake clock (unit tests).
    slow, fast = mirrors('256k', '4m')
    src = fconf.make_data_file(tmp_path, 'orig', SIZE)
    _publish([slow, fast], src)
    a, b = slow.url('image', 'slow'), fast.url('image')
    with oslo_transfer.Transfer(conf) as t:
        res = t.copy(oslo_transfer.Source(urls=[a, b]), dest,
                     checksum=src.checksum())
    fconf.assert_only_dest(dest, src.data)
    by = res.bytes_by_location
    assert set(by) == {a, b} and sum(by.values()) == SIZE
    assert by[a] < 0.25 * SIZE, by
    assert res.url == b and res.driver == 'http'
    assert res.attempts == []
    # Each origin sent at least what was kept from it, as ranged reads.
    for server, url in ((slow, a), (fast, b)):
        lines = server.settled_requests_for('image')
        gets = [ln for ln in lines if ln.startswith('GET ')]
        assert gets and all(' 206 ' in ln for ln in gets), gets
        assert server.bytes_sent_for('image') >= by[url]


def test_a_mirror_serving_corrupt_data_is_dropped_by_the_manifest(
        mirrors, tmp_path, dest, conf, caplog):
    bad, good = mirrors('4m', '4m')
    src = fconf.make_data_file(tmp_path, 'orig', SIZE)
    _publish([good], src)
    corrupt = fconf.make_data_file(tmp_path, 'other', SIZE)
    _publish([bad], corrupt)
    manifest = blockmap.make_blockmap(src.path, 256 * 1024)
    # The bad mirror is fast (no limit_rate): it surely reads first.
    a, b = bad.url('image'), good.url('image', 'slow')
    with oslo_transfer.Transfer(conf) as t:
        res = t.copy(oslo_transfer.Source(urls=[a, b]), dest,
                     manifest=manifest)
    fconf.assert_only_dest(dest, src.data)
    assert res.bytes_by_location == {a: 0, b: SIZE}
    [(url, driver, why)] = res.attempts
    assert (url, driver) == (a, 'http')
    assert 'that do not match block' in why and 'of the manifest' in why
    assert 'dropped, reading from %s' % b in caplog.text


def test_every_mirror_corrupt_is_a_checksum_mismatch(mirrors, tmp_path,
                                                     dest, conf):
    one, two = mirrors('4m', '4m')
    src = fconf.make_data_file(tmp_path, 'orig', SIZE)
    _publish([one], fconf.make_data_file(tmp_path, 'x', SIZE))
    _publish([two], fconf.make_data_file(tmp_path, 'y', SIZE))
    manifest = blockmap.make_blockmap(src.path, 256 * 1024)
    userinfo = '%s:%s' % (nginx_mod.USER, nginx_mod.PASSWORD)
    a = one.url('image', 'private', userinfo=userinfo)
    b = two.url('image')
    with oslo_transfer.Transfer(conf) as t:
        with pytest.raises(exc.ChecksumMismatch) as ei:
            t.copy(oslo_transfer.Source(urls=[a, b]), dest,
                   manifest=manifest)
    msg = str(ei.value)
    assert 'do not match block' in msg and 'of the manifest' in msg
    assert nginx_mod.PASSWORD not in msg
    assert '127.0.0.1:%d' % one.port in msg or \
        '127.0.0.1:%d' % two.port in msg
    # Nothing verified, nothing kept.
    fconf.assert_nothing_left(dest)


def _slow_pair(mirrors, tmp_path, size):
    """Two mirrors of ``size`` bytes at 256 KiB/s per connection.

    :returns: ``(one, two, source file, (url one, url two))``.
    """
    one, two = mirrors('256k', '256k')
    src = fconf.make_data_file(tmp_path, 'orig', size)
    _publish([one, two], src)
    return one, two, src, (one.url('image', 'slow'), two.url('image', 'slow'))


def _cancel_part_way(conf, source, dest, checksum, size):
    """Start a copy, cancel it once a third is held; returns the control."""
    with oslo_transfer.Transfer(conf) as t:
        h = t.submit(source, dest, checksum=checksum)
        deadline = time.monotonic() + 60
        while h.progress[0] < size / 3 and not h.done():
            assert time.monotonic() < deadline, 'no progress'
            time.sleep(0.01)
        assert not h.done()
        h.cancel()
        with pytest.raises(exc.Cancelled):
            h.result(timeout=60)
    ctl = fconf.assert_resumable(dest, size=size)
    assert sum(e - s for s, e in ctl['ranges']) > 0
    return ctl


def test_resume_checks_the_validator_of_each_location(mirrors, tmp_path,
                                                      dest, make_conf):
    # Slow enough to cancel in the middle: 8 MiB at 8 x 256 KiB/s.  Small
    # chunks, so that every piece is part held when the copy is
    # cancelled and both mirrors have holes to fill on resume.
    size = 8 * MiB
    one, two, src, (a, b) = _slow_pair(mirrors, tmp_path, size)
    source = oslo_transfer.Source(urls=[a, b])
    conf = make_conf(oslo_transfer={'segment_threshold': MiB,
                                    'chunk_size': 64 * 1024,
                                    'on_source_change': 'error'})
    ctl = _cancel_part_way(conf, source, dest, src.checksum(), size)
    held = sum(e - s for s, e in ctl['ranges'])
    # One validator per location, each that location's own.
    assert set(ctl['sources']) == {a, b}
    assert ctl['sources'][a] != ctl['sources'][b]

    # The second location changes: refused, the held bytes kept.
    path_b = os.path.join(two.docroot, 'image')
    old = os.stat(path_b).st_mtime
    os.utime(path_b, (time.time(), old + 10))
    with oslo_transfer.Transfer(conf) as t:
        with pytest.raises(exc.SourceChanged) as ei:
            t.copy(source, dest, checksum=src.checksum())
    assert str(ei.value).startswith(
        '%s changed since the partial copy was made (validator %s, now '
        % (b, ctl['sources'][b]))
    assert str(ei.value).endswith('%s.part is kept' % dest)
    assert fconf.assert_resumable(dest, size=size)['ranges'] == \
        ctl['ranges']

    # Back as it was: both validators match, the copy resumes.
    os.utime(path_b, (time.time(), old))
    with oslo_transfer.Transfer(conf) as t:
        res = t.copy(source, dest, checksum=src.checksum())
    fconf.assert_only_dest(dest, src.data)
    assert res.bytes_resumed == held
    assert sum(res.bytes_by_location.values()) == size - held
    assert all(n > 0 for n in res.bytes_by_location.values())


def test_a_resumed_copy_reads_each_missing_byte_about_once(mirrors,
                                                           tmp_path, dest,
                                                           make_conf):
    # A defect's shape (issue 17): on resume, 1 MiB chunks at 256 KiB/s
    # (a reader shows nothing for 4 s, then a whole chunk), holes of a
    # chunk or less, and idle workers on both mirrors at the end.  The
    # last hole used to go from one mirror to the other, read in full
    # each time, forever.  (The first copy reads small chunks, so that
    # it can be cancelled part way.)
    size = 8 * MiB
    one, two, src, (a, b) = _slow_pair(mirrors, tmp_path, size)
    source = oslo_transfer.Source(urls=[a, b])
    first = make_conf(oslo_transfer={'segment_threshold': MiB,
                                     'chunk_size': 64 * 1024})
    ctl = _cancel_part_way(first, source, dest, src.checksum(), size)
    conf = make_conf(oslo_transfer={'segment_threshold': MiB})
    held = sum(e - s for s, e in ctl['ranges'])
    # nginx logs a request once it ended: the cancelled ones first.
    for server in (one, two):
        server.settled_requests_for('image', quiet=1.0)
    before = one.bytes_sent_for('image') + two.bytes_sent_for('image')
    with oslo_transfer.Transfer(conf) as t:
        res = t.copy(source, dest, checksum=src.checksum())
    fconf.assert_only_dest(dest, src.data)
    assert res.bytes_resumed == held
    assert sum(res.bytes_by_location.values()) == size - held
    for server in (one, two):
        server.settled_requests_for('image', quiet=0.5)
    sent = one.bytes_sent_for('image') + two.bytes_sent_for('image') - before
    assert size - held <= sent <= 1.25 * (size - held), (sent, held)


def test_the_command_reads_also_at_once(mirrors, tmp_path, dest):
    one, two = mirrors('4m', '4m')
    src = fconf.make_data_file(tmp_path, 'orig', SIZE)
    _publish([one, two], src)
    a, b = one.url('image', 'slow'), two.url('image', 'slow')
    conf = fconf.write_conf_file(tmp_path / 'cli.conf', {
        'oslo_transfer': {'segment_threshold': MiB}})
    p = test_cli.run_cli('--config-file', conf, 'copy', a, dest, '--also', b,
                         '--checksum', src.checksum(), '--json',
                         '--no-progress')
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout)
    fconf.assert_only_dest(dest, src.data)
    assert set(res['bytes_by_location']) == {a, b}
    assert sum(res['bytes_by_location'].values()) == SIZE
    assert min(res['bytes_by_location'].values()) > 0
