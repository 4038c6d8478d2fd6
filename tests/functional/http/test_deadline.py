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

"""``[oslo_transfer] total_timeout`` against servers that trickle.

A byte every quarter of a second keeps every read within ``io_timeout``;
before, such a server held a copy for as long as it cared to.  Each call
must end with a non-retryable ``TransferTimeout`` soon after
``total_timeout`` (the times are asserted loosely: the machine is noisy),
keep resumable state as a cancel keeps it, and leave the caller's cancel
token alone.
"""

import hashlib
import os
import time

import pytest

import oslo_transfer
from oslo_transfer import exceptions as exc
from oslo_transfer import transfer as transfer_mod
from tests.functional import conftest as fconf
from tests.functional.http import badserver as bad

MiB = fconf.MiB

TOTAL = 2.0
IO = 1.0
#: what a call may take at most: the deadline, one I/O timeout for the
#: operation in flight, and room for a loaded machine
LIMIT = TOTAL + IO + 5.0


def _conf(make_conf, **extra):
    return make_conf(oslo_transfer=dict(
        total_timeout=TOTAL, io_timeout=IO, retries=5, retry_backoff=0.1,
        segment_threshold=0, segment_size=MiB, **extra))


def _assert_out_of_time(e, url_masked=None):
    assert type(e) is exc.TransferTimeout, repr(e)
    assert 'ran out of time ([oslo_transfer] total_timeout)' in str(e)
    assert not e.retryable
    if url_masked:
        assert 'pw-0d1e' not in str(e)


@pytest.mark.parametrize('what', ['head', 'body'])
def test_a_trickled_get_ends_at_the_deadline(badserver, dest, make_conf,
                                             what):
    data = os.urandom(4 * MiB)
    badserver.add('slow', bad.Resource(data, faults=[
        bad.Trickle(what, 0.25, sticky=True)]))
    url = badserver.url('slow', 'user:pw-0d1e')
    with transfer_mod.Transfer(_conf(make_conf)) as t:
        started = time.monotonic()
        handle = t.submit(url, dest, segments=1)
        with pytest.raises(exc.TransferError) as ei:
            handle.result(timeout=60)
        took = time.monotonic() - started
    _assert_out_of_time(ei.value, url)
    assert took < LIMIT, took
    # The deadline cancelled the call's own token, not the caller's.
    assert handle.cancelled is False
    assert not os.path.exists(dest)
    if what == 'head':
        # Not a byte arrived: nothing is left.
        fconf.assert_nothing_left(dest)
    # One request, never a retry past the deadline.
    assert len(badserver.requests_for('slow', 'GET')) == 1


def test_a_trickled_body_keeps_what_was_held(badserver, dest, make_conf):
    data = os.urandom(4 * MiB)
    res = badserver.add('slow', bad.Resource(data, faults=[
        bad.Truncate(MiB)]))
    url = badserver.url('slow')
    ck = 'sha256:' + hashlib.sha256(data).hexdigest()
    with pytest.raises(exc.ProtocolError):
        oslo_transfer.copy(url, dest, checksum=ck, segments=1,
                           conf=make_conf(oslo_transfer={'retries': 0}))
    held = sum(e - s for s, e in fconf.assert_resumable(dest)['ranges'])
    assert held >= MiB // 2
    res.faults = [bad.Trickle('body', 0.25, sticky=True)]
    started = time.monotonic()
    with pytest.raises(exc.TransferError) as ei:
        oslo_transfer.copy(url, dest, checksum=ck, segments=1,
                           conf=_conf(make_conf))
    _assert_out_of_time(ei.value)
    assert time.monotonic() - started < LIMIT
    # Kept as a cancel keeps it: the bytes held before are still held.
    ctl = fconf.assert_resumable(dest)
    assert sum(e - s for s, e in ctl['ranges']) >= held
    res.faults = []
    result = oslo_transfer.copy(url, dest, checksum=ck, segments=1,
                                conf=make_conf())
    fconf.assert_only_dest(dest, data)
    assert result.bytes_resumed >= held


def test_a_trickled_head_request_ends_at_the_deadline(badserver, dest,
                                                      make_conf):
    """``stat`` (HEAD) waits for headers that trickle in."""
    data = os.urandom(MiB)
    badserver.add('slowhead', bad.Resource(data))
    real = badserver.respond

    def respond(h, req):
        if req.method == 'HEAD':
            h.slow_head = 0.25
        return real(h, req)

    badserver.respond = respond
    started = time.monotonic()
    with pytest.raises(exc.TransferError) as ei:
        oslo_transfer.copy(badserver.url('slowhead'), dest,
                           conf=_conf(make_conf))
    _assert_out_of_time(ei.value)
    assert time.monotonic() - started < LIMIT
    fconf.assert_nothing_left(dest)


def test_open_ends_at_the_deadline(badserver, make_conf):
    data = os.urandom(2 * MiB)
    badserver.add('slowopen', bad.Resource(data, faults=[
        bad.Trickle('body', 0.25, sticky=True)]))
    started = time.monotonic()
    with pytest.raises(exc.TransferError) as ei:
        with oslo_transfer.open(badserver.url('slowopen'),
                                conf=_conf(make_conf)) as reader:
            reader.read()
    _assert_out_of_time(ei.value)
    assert time.monotonic() - started < LIMIT


def test_a_cancel_is_still_a_cancel(badserver, dest, make_conf):
    """With a total_timeout set, the caller's cancel is ``Cancelled``."""
    data = os.urandom(2 * MiB)
    badserver.add('slowc', bad.Resource(data, faults=[
        bad.Trickle('head', 0.25, sticky=True)]))
    conf = make_conf(oslo_transfer=dict(total_timeout=30, io_timeout=IO))
    with transfer_mod.Transfer(conf) as t:
        handle = t.submit(badserver.url('slowc'), dest)
        time.sleep(0.5)
        started = time.monotonic()
        handle.cancel()
        with pytest.raises(exc.Cancelled):
            handle.result(timeout=60)
        assert time.monotonic() - started < IO + 5
    assert handle.cancelled is True
