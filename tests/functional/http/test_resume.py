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

"""Interrupted transfers: server stopped, client killed, cancel, races.

``limit_rate`` on nginx's ``/slow/`` location makes a transfer last long
enough for the event to happen in the middle, deterministically: the test
acts when the progress callback (or the size of ``.part``) says so, never
after a sleep.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import oslo_transfer
from oslo_transfer import exceptions as exc
from tests.functional import conftest as fconf
from tests.functional.http import badserver as bad

MiB = fconf.MiB
CHILD = os.path.join(os.path.dirname(__file__), 'copy_child.py')
#: DESIGN.md: after a crash at most checkpoint_bytes (16 MiB by default,
#: all segments together) are sent again; plus one chunk (1 MiB) that a
#: segment may have written after its last checkpoint.
CHECKPOINT_BOUND = 16 * MiB
CHUNK = MiB


def _wait_until(predicate, timeout=60.0, what='condition'):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail('timed out waiting for %s' % what)
        time.sleep(0.01)


def _stop_at(server, fraction, size):
    """A progress callback that stops ``server`` once past ``fraction``."""
    state = {'stopped_at': None}

    def progress(done, total):
        if state['stopped_at'] is None and done > size * fraction:
            state['stopped_at'] = done
            server.stop()

    return progress, state


def _child(args, **kwargs):
    return subprocess.Popen([sys.executable, CHILD] + [str(a) for a in args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=os.path.dirname(os.path.dirname(
                                os.path.dirname(os.path.dirname(CHILD)))),
                            **kwargs)


def _child_result(proc, timeout=120):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, 'child failed (%s): %s %s' % (
        proc.returncode, out, err[-3000:])
    return json.loads(out.strip().splitlines()[-1])


# -- server stopped in the middle ---------------------------------------------

def test_resume_after_server_stopped(own_nginx, dest, make_conf):
    src = fconf.make_data_file(own_nginx.docroot, 'img.raw', 8 * MiB)
    url = own_nginx.url(src.name, 'slow')
    conf = make_conf(oslo_transfer={'retries': 1, 'retry_backoff': 0})
    progress, state = _stop_at(own_nginx, 1 / 3, src.size)

    with pytest.raises(exc.ConnectionFailed) as ei:
        oslo_transfer.copy(url, dest, checksum=src.checksum(),
                           progress=progress, conf=conf)
    assert state['stopped_at'] is not None
    assert url in str(ei.value) or '127.0.0.1:%d' % own_nginx.port in str(
        ei.value)
    ctl = fconf.assert_resumable(dest, size=src.size)
    held = sum(e - s for s, e in ctl['ranges'])
    assert held > 0, 'nothing recorded in %s: %s' % (
        fconf.ctl_path(dest), ctl)
    assert fconf.correct_bytes(fconf.part_path(dest), src.data,
                               block=1) >= held

    own_nginx.restart(rate='0')  # same port, same URL, no rate limit
    r = oslo_transfer.copy(url, dest, checksum=src.checksum(), conf=conf)

    fconf.assert_only_dest(dest, src.data)
    assert r.bytes_resumed == held
    assert r.bytes_transferred + r.bytes_resumed == src.size
    last_get = [line for line in own_nginx.requests_for(src.name)
                if line.startswith('GET')][-1]
    assert 'range=bytes=%d-' % held in last_get, last_get


def test_server_restarted_during_retry_backoff(own_nginx, dest, make_conf):
    """The same call survives the outage: retries resume by range."""
    src = fconf.make_data_file(own_nginx.docroot, 'img.raw', 8 * MiB)
    url = own_nginx.url(src.name, 'slow')
    conf = make_conf(oslo_transfer={'retries': 3, 'retry_backoff': 1})
    restarted = threading.Event()
    stopped = []

    def restart():
        own_nginx.rate = '0'
        own_nginx.start()
        restarted.set()

    def progress(done, total):
        if done > src.size / 3 and not stopped:
            stopped.append(done)
            own_nginx.stop()
            threading.Thread(target=restart).start()

    r = oslo_transfer.copy(url, dest, checksum=src.checksum(),
                           progress=progress, conf=conf)
    assert restarted.is_set()
    fconf.assert_only_dest(dest, src.data)
    # (nginx does not log the request cut by its fast shutdown.)
    gets = [line for line in own_nginx.requests_for(src.name)
            if line.startswith('GET')]
    # The retry asked for the rest, not for the whole object again.
    assert 'range=bytes=0-' not in gets[-1] and 'range=-' not in gets[-1], \
        gets
    assert r.bytes_transferred < src.size + 2 * MiB


# -- client killed in the middle ----------------------------------------------

SMALL_PIECES = {'segment_threshold': 0, 'segment_size': 4 * MiB}


@pytest.mark.parametrize('segments,size,options', [
    (1, 48 * MiB, {}),
    (1, 48 * MiB, SMALL_PIECES),
    (4, 64 * MiB, SMALL_PIECES),
], ids=['one-stream', 'one-stream-4MiB-pieces', 'four-segments'])
def test_resume_after_client_sigkill(own_nginx, dest, make_conf, segments,
                                     size, options):
    """SIGKILL the copying process; the rerun re-sends <= 16 MiB (+chunks).

    "Re-sent" is measured on disk: the bytes of ``.part`` that were
    already correct at the kill, minus what the rerun kept.
    """
    src = fconf.make_data_file(own_nginx.docroot, 'img.raw', size)
    own_nginx.restart(rate='16m')
    url = own_nginx.url(src.name, 'slow')
    conf = make_conf(oslo_transfer={'retries': 1, 'retry_backoff': 0,
                                    **options})
    conf_file = conf.default_config_files[0]
    args = [url, dest, '--checksum', src.checksum(), '--segments', segments,
            '--config-file', conf_file]
    part = fconf.part_path(dest)
    kill_at = CHECKPOINT_BOUND + 10 * MiB

    child = _child(args)
    try:
        _wait_until(lambda: (os.path.exists(part) and
                             os.stat(part).st_blocks * 512 >= kill_at) or
                    child.poll() is not None, what='.part to grow')
        assert child.poll() is None, 'the copy ended before the kill: %s' % (
            child.communicate())
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.communicate()

    assert not os.path.exists(dest)
    in_part = fconf.correct_bytes(part, src.data)
    assert in_part > CHECKPOINT_BOUND + segments * CHUNK, (
        'killed too early (%d bytes in .part): this run proves nothing'
        % in_part)

    own_nginx.restart(rate='0')
    r = _child_result(_child(args))

    # A kill during a checkpoint may leave the killed process's control
    # file temp (DEST.part.ctl.PID.tmp); test_stale_control_temp_is_removed
    # checks that separately.
    for name in fconf.files_beside(dest):
        if name.startswith('image.raw.part.ctl.%d.' % child.pid):
            os.unlink(os.path.join(os.path.dirname(dest), name))
    fconf.assert_only_dest(dest, src.data)
    resent = in_part - r['bytes_resumed']
    assert r['bytes_resumed'] > 0
    assert resent <= CHECKPOINT_BOUND + segments * CHUNK, (
        '%d bytes were in .part at the kill, only %d were kept'
        % (in_part, r['bytes_resumed']))
    assert r['bytes_transferred'] + r['bytes_resumed'] == size


def test_stale_control_temp_is_removed(nginx, serve, dest):
    """Leftovers of a process killed while it rewrote the control file."""
    src = serve(2 * MiB)
    url = nginx.url(src.name)
    with open(fconf.part_path(dest), 'wb') as f:
        f.write(src.data[:MiB])
    stale = fconf.ctl_path(dest) + '.999999.tmp'
    with open(stale, 'w') as f:
        f.write('{"version": 1, "sour')
    oslo_transfer.copy(url, dest, checksum=src.checksum())
    fconf.assert_only_dest(dest, src.data)


# -- two writers, one destination ---------------------------------------------

def test_two_processes_same_destination(nginx, serve, dest):
    src = serve(6 * MiB)
    url = nginx.url(src.name, 'slow')  # 4 MiB/s: they overlap
    args = [url, dest, '--checksum', src.checksum()]

    first = _child(args)
    second = _child(args)
    results = [_child_result(first), _child_result(second)]

    fconf.assert_only_dest(dest, src.data)
    moved = sorted(r['bytes_transferred'] for r in results)
    assert moved == [0, src.size], results
    for r in results:
        assert r['digest'] == src.sha256
    gets = [line for line in nginx.requests_for(src.name)
            if line.startswith('GET')]
    assert nginx.bytes_sent_for(src.name) == src.size, gets


# -- cancel -------------------------------------------------------------------

def test_cancel_running_transfer_then_resume(nginx, serve, dest, make_conf):
    src = serve(8 * MiB)
    conf = make_conf()
    with oslo_transfer.Transfer(conf) as t:
        h = t.submit(nginx.url(src.name, 'slow'), dest,
                     checksum=src.checksum())
        _wait_until(lambda: h.progress[0] > src.size / 3 or h.done(),
                    what='a third of the bytes')
        assert not h.done()
        h.cancel()
        with pytest.raises(exc.Cancelled):
            h.result(timeout=60)
        assert h.cancelled
        ctl = fconf.assert_resumable(dest, size=src.size)
        held = sum(e - s for s, e in ctl['ranges'])
        assert held > 0

        # Same bytes from the unthrottled location: size and checksum are
        # known, so the bytes held may be kept.
        r = t.copy(nginx.url(src.name), dest, checksum=src.checksum())
    fconf.assert_only_dest(dest, src.data)
    assert r.bytes_resumed == held
    assert r.bytes_transferred + r.bytes_resumed == src.size


def test_cancel_before_start(nginx, serve, dest, make_conf):
    src = serve(MiB)
    token = oslo_transfer.CancelToken()
    token.cancel()
    with oslo_transfer.Transfer(make_conf()) as t:
        h = t.submit(nginx.url(src.name), dest, cancel=token)
        with pytest.raises(exc.Cancelled):
            h.result(timeout=60)
    assert not os.path.exists(dest)


# -- source replaced between attempts -----------------------------------------

def _interrupted_copy(server, dest, src, conf):
    progress, state = _stop_at(server, 1 / 3, src.size)
    with pytest.raises(exc.ConnectionFailed):
        oslo_transfer.copy(server.url(src.name, 'slow'), dest,
                           progress=progress, conf=conf)
    assert state['stopped_at'] is not None
    fconf.assert_resumable(dest, size=src.size)


def test_source_replaced_restarts(own_nginx, dest, make_conf):
    src = fconf.make_data_file(own_nginx.docroot, 'img.raw', 8 * MiB)
    conf = make_conf(oslo_transfer={'retries': 0})
    _interrupted_copy(own_nginx, dest, src, conf)

    src.rewrite(os.urandom(src.size))  # same size, new mtime -> new ETag
    own_nginx.restart(rate='0')
    r = oslo_transfer.copy(own_nginx.url(src.name, 'slow'), dest,
                           checksum=src.checksum(), conf=conf)

    fconf.assert_only_dest(dest, src.data)
    assert r.bytes_resumed == 0
    assert r.bytes_transferred == src.size


def test_source_replaced_error_when_configured(own_nginx, dest, make_conf):
    src = fconf.make_data_file(own_nginx.docroot, 'img.raw', 8 * MiB)
    conf = make_conf(oslo_transfer={'retries': 0,
                                    'on_source_change': 'error'})
    _interrupted_copy(own_nginx, dest, src, conf)
    before = fconf.correct_bytes(fconf.part_path(dest), src.data)

    old = src.data
    src.rewrite(os.urandom(src.size))
    own_nginx.restart(rate='0')
    url = own_nginx.url(src.name, 'slow')
    with pytest.raises(exc.SourceChanged) as ei:
        oslo_transfer.copy(url, dest, conf=conf)
    assert url in str(ei.value)
    assert not ei.value.retryable
    # The partial data of the old version is kept, untouched.
    fconf.assert_resumable(dest)
    assert fconf.correct_bytes(fconf.part_path(dest), old) == before


@pytest.mark.parametrize('policy', ['restart', 'error'])
def test_source_replaced_between_two_requests(badserver, dest, make_conf,
                                              policy):
    """Within one call: the body is cut, then a new version is served."""
    old, new = os.urandom(4 * MiB), os.urandom(4 * MiB)
    badserver.add('img', bad.Resource(old, etag='"v1"', faults=[
        bad.Truncate(MiB + 100), bad.Replace(new, '"v2"')]))
    conf = make_conf(oslo_transfer={'retries': 2, 'retry_backoff': 0,
                                    'on_source_change': policy})
    url = badserver.url('img')
    if policy == 'restart':
        r = oslo_transfer.copy(url, dest, conf=conf)
        fconf.assert_only_dest(dest, new)
        assert r.bytes_resumed == 0
    else:
        with pytest.raises(exc.SourceChanged) as ei:
            oslo_transfer.copy(url, dest, conf=conf)
        assert url in str(ei.value)
        assert not os.path.exists(dest)
    # Never a mix of the two versions anywhere.
    part = fconf.part_path(dest)
    if os.path.exists(part):
        assert fconf.correct_bytes(part, new) == 0
