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

"""What a user sees when the server or the data is wrong.

Each test asserts the exception class, a message naming the URL, and the
state left on disk.  Misbehaving servers (ignored or wrong ranges,
truncated bodies) must never produce a corrupt destination.
"""

import hashlib
import os

import pytest

import oslo_transfer
from oslo_transfer import exceptions as exc
from tests.functional import conftest as fconf
from tests.functional.http import badserver as bad

MiB = fconf.MiB

FAST = {'retries': 1, 'retry_backoff': 0}


@pytest.fixture
def fast_conf(make_conf):
    """Few retries, no backoff: failures come back in milliseconds."""
    return make_conf(oslo_transfer=dict(FAST))


def test_checksum_mismatch_leaves_nothing(nginx, serve, dest):
    src = serve(3 * MiB)
    wrong = hashlib.sha256(b'another image').hexdigest()
    with pytest.raises(exc.ChecksumMismatch) as ei:
        oslo_transfer.copy(nginx.url(src.name), dest,
                           checksum='sha256:' + wrong)
    e = ei.value
    assert (e.expected, e.actual) == (wrong, src.sha256)
    assert wrong in str(e) and src.sha256 in str(e)
    assert nginx.url(src.name) in str(e)
    assert not e.retryable
    fconf.assert_nothing_left(dest)


def test_checksum_mismatch_with_segments_leaves_nothing(
        nginx, serve, dest, make_conf):
    src = serve(6 * MiB)
    conf = make_conf(oslo_transfer={'segment_threshold': 0,
                                    'segment_size': MiB})
    with pytest.raises(exc.ChecksumMismatch):
        oslo_transfer.copy(nginx.url(src.name), dest, segments=4,
                           checksum='md5:' + hashlib.md5(b'x').hexdigest(),
                           conf=conf)
    fconf.assert_nothing_left(dest)


def test_bad_checksum_argument_is_value_error(nginx, serve, dest):
    src = serve(10)
    with pytest.raises(ValueError):
        oslo_transfer.copy(nginx.url(src.name), dest, checksum='sha256:xyz')
    with pytest.raises(ValueError):
        oslo_transfer.copy(nginx.url(src.name), dest,
                           checksum='sha257:' + src.sha256)
    # A Source checksum that disagrees with checksum= fails before any I/O.
    before = len(nginx.requests_for(src.name))
    with pytest.raises(ValueError):
        oslo_transfer.copy(oslo_transfer.Source(
            urls=[nginx.url(src.name)], checksum='md5:' + src.md5), dest,
            checksum='md5:' + hashlib.md5(b'x').hexdigest())
    assert len(nginx.requests_for(src.name)) == before
    assert fconf.files_beside(dest) == []


def test_not_found(nginx, dest, fast_conf):
    url = nginx.url('no-such-image.raw')
    with pytest.raises(exc.SourceNotFound) as ei:
        oslo_transfer.copy(url, dest, conf=fast_conf)
    assert url in str(ei.value)
    assert '404' in str(ei.value)
    assert not ei.value.retryable
    fconf.assert_nothing_left(dest)
    # Not retried: one answer is final.
    assert len([line for line in nginx.requests_for('no-such-image.raw')
                if ' 404 ' in line]) == 1


def test_forbidden(nginx, dest, fast_conf):
    url = nginx.url('img', 'forbidden')
    with pytest.raises(exc.PermissionDenied) as ei:
        oslo_transfer.copy(url, dest, conf=fast_conf)
    assert isinstance(ei.value, exc.AuthenticationFailed)
    assert url in str(ei.value) and '403' in str(ei.value)
    fconf.assert_nothing_left(dest)


def test_server_error_is_retried_then_raised(nginx, dest, fast_conf):
    url = nginx.url('img500', 'error')
    with pytest.raises(exc.ProtocolError) as ei:
        oslo_transfer.copy(url, dest, conf=fast_conf)
    assert ei.value.retryable
    assert url in str(ei.value) and '500' in str(ei.value)
    fconf.assert_nothing_left(dest)
    # retries = 1: the first try and one retry.
    assert len(nginx.requests_for('img500')) == 2


def test_error_page_is_never_written_as_data(badserver, dest, fast_conf):
    data = os.urandom(MiB)
    badserver.add('flaky', bad.Resource(data, faults=[bad.Status(503)]))
    r = oslo_transfer.copy(badserver.url('flaky'), dest,
                           checksum='sha256:' + hashlib.sha256(
                               data).hexdigest(), conf=fast_conf)
    fconf.assert_only_dest(dest, data)
    assert r.bytes_transferred == len(data)


def test_missing_credentials(nginx, serve, dest, fast_conf):
    src = serve(100)
    url = nginx.url(src.name, 'private')
    with pytest.raises(exc.AuthenticationFailed) as ei:
        oslo_transfer.copy(url, dest, conf=fast_conf)
    assert not isinstance(ei.value, exc.PermissionDenied)
    assert url in str(ei.value) and '401' in str(ei.value)
    fconf.assert_nothing_left(dest)


def test_connection_refused(dest, fast_conf):
    from tests.functional import servers
    url = 'http://127.0.0.1:%d/img' % servers.free_port()
    with pytest.raises(exc.ConnectionFailed) as ei:
        oslo_transfer.copy(url, dest, conf=fast_conf)
    assert url in str(ei.value) or '127.0.0.1' in str(ei.value)
    fconf.assert_nothing_left(dest)


# -- servers that do not honour Range -----------------------------------------

def test_nginx_ignoring_range_with_segments(nginx, serve, dest, make_conf):
    """``max_ranges 0``: every ranged GET gets 200 and the whole body."""
    src = serve(6 * MiB + 3)
    conf = make_conf(oslo_transfer={'segment_threshold': 0,
                                    'segment_size': MiB})
    r = oslo_transfer.copy(nginx.url(src.name, 'noranges'), dest,
                           segments=4, checksum=src.checksum(), conf=conf)
    fconf.assert_only_dest(dest, src.data)
    assert r.size == src.size


def test_nginx_ignoring_range_on_resume(nginx, serve, dest):
    """A resume against a server that answers 200 to ``Range: bytes=N-``.

    The bytes already held must not be spliced with a body that starts at
    0: the result is the source, byte for byte.
    """
    src = serve(5 * MiB)
    url = nginx.url(src.name, 'noranges')
    # An interrupted earlier run: the first 2 MiB in .part, recorded.
    _fake_partial(dest, src, url, 2 * MiB, validator=None)

    oslo_transfer.copy(url, dest, checksum=src.checksum())
    fconf.assert_only_dest(dest, src.data)


def test_server_claiming_ranges_but_ignoring_them(badserver, dest,
                                                  make_conf):
    data = os.urandom(6 * MiB)
    badserver.add('ign', bad.Resource(data, faults=[
        bad.IgnoreRange(sticky=True)]))
    conf = make_conf(oslo_transfer={'segment_threshold': 0,
                                    'segment_size': MiB, **FAST})
    oslo_transfer.copy(badserver.url('ign'), dest, segments=4, conf=conf,
                       checksum='sha256:' + hashlib.sha256(data).hexdigest())
    fconf.assert_only_dest(dest, data)


@pytest.mark.parametrize('accept_ranges', [True, False],
                         ids=['ranges-advertised', 'no-ranges'])
@pytest.mark.parametrize('held', [0, 2 * MiB], ids=['fresh', 'resumed'])
def test_a_body_without_a_length_after_a_head_with_one(
        badserver, dest, make_conf, accept_ranges, held):
    """HEAD says the length; every GET answers 200 without one.

    One stream from the start must never ask a range (the engine's
    internal _StreamMode escaped to the caller before, from a request for
    ``bytes=0-(size-1)``): the copy completes, and the held bytes count
    as resumed.
    """
    data = os.urandom(6 * MiB)
    res = badserver.add('nolen', bad.Resource(
        data, accept_ranges=accept_ranges,
        faults=[bad.Truncate(held)] if held else []))
    ck = 'sha256:' + hashlib.sha256(data).hexdigest()
    if held:
        with pytest.raises(exc.ProtocolError):
            oslo_transfer.copy(badserver.url('nolen'), dest, checksum=ck,
                               segments=1, conf=make_conf(
                                   oslo_transfer={'retries': 0}))
        fconf.assert_resumable(dest)
    res.faults = [bad.IgnoreRange(sticky=True, length=False)]
    result = oslo_transfer.copy(badserver.url('nolen'), dest, checksum=ck,
                                segments=1, conf=make_conf(
                                    oslo_transfer=dict(FAST)))
    fconf.assert_only_dest(dest, data)
    assert result.bytes_resumed == held
    last = badserver.requests_for('nolen', 'GET')[-1]
    assert last.range is None and last.status == 200


def test_an_etag_that_changes_on_every_request(badserver, dest, make_conf):
    """Bounded restarts, then SourceChanged.

    Not ~3,900 requests and a RecursionError, as before.
    """
    data = os.urandom(4 * MiB)
    badserver.add('flux', bad.Resource(data, new_version_per_request=True))
    url = badserver.url('flux', 'user:pw-1f2e')
    with pytest.raises(exc.SourceChanged) as ei:
        oslo_transfer.copy(url, dest, conf=make_conf(
            oslo_transfer=dict(FAST, segment_threshold=0,
                               segment_size=MiB)))
    e = ei.value
    assert 'changed 4 times during the copy' in str(e), str(e)
    assert 'pw-1f2e' not in str(e)
    assert e.url == badserver.url('flux', 'user:***')
    assert len(badserver.log) < 40
    fconf.assert_nothing_left(dest)


@pytest.mark.parametrize('with_checksum', [True, False],
                         ids=['checksum', 'no-checksum'])
def test_wrong_content_range_never_corrupts(badserver, dest, make_conf,
                                            with_checksum):
    """A 206 whose Content-Range is not the range asked for.

    Acceptable outcomes: the correct bytes (the engine noticed and read
    another way) or a clear error with no destination.  Never a
    destination that differs from the source.
    """
    data = os.urandom(6 * MiB)
    badserver.add('wcr', bad.Resource(data, faults=[
        bad.WrongContentRange(shift=12345, sticky=True)]))
    conf = make_conf(oslo_transfer={'segment_threshold': 0,
                                    'segment_size': MiB, **FAST})
    ck = 'sha256:' + hashlib.sha256(data).hexdigest() if with_checksum \
        else None
    try:
        oslo_transfer.copy(badserver.url('wcr'), dest, segments=4,
                           checksum=ck, conf=conf)
    except exc.TransferError as e:
        assert not os.path.exists(dest)
        assert badserver.url('wcr') in str(e)
        assert 'range' in str(e).lower()
    else:
        fconf.assert_only_dest(dest, data)


def test_truncated_body_once_is_resumed(badserver, dest, make_conf):
    data = os.urandom(4 * MiB)
    badserver.add('cut', bad.Resource(data, faults=[
        bad.Truncate(MiB + 100)]))
    conf = make_conf(oslo_transfer={'retries': 2, 'retry_backoff': 0})
    r = oslo_transfer.copy(badserver.url('cut'), dest, conf=conf,
                           checksum='sha256:' + hashlib.sha256(
                               data).hexdigest())
    fconf.assert_only_dest(dest, data)
    gets = badserver.requests_for('cut', 'GET')
    assert len(gets) >= 2
    # The retry continued where the body was cut instead of from 0.
    assert gets[-1].range and not gets[-1].range.startswith('bytes=0-'), \
        [g.range for g in gets]
    assert r.bytes_transferred < len(data) + MiB


def test_truncated_body_every_time(badserver, dest, fast_conf):
    data = os.urandom(2 * MiB)
    badserver.add('cut', bad.Resource(data, faults=[
        bad.Truncate(1000, sticky=True)]))
    url = badserver.url('cut')
    with pytest.raises(exc.ProtocolError) as ei:
        oslo_transfer.copy(url, dest, conf=fast_conf,
                           checksum='sha256:' + hashlib.sha256(
                               data).hexdigest())
    assert ei.value.retryable
    assert url in str(ei.value)
    assert not os.path.exists(dest)
    # Whatever was kept for a later resume is a correct prefix.
    part = fconf.part_path(dest)
    if os.path.exists(part):
        ctl = fconf.assert_resumable(dest, size=len(data))
        held = sum(e - s for s, e in ctl['ranges'])
        assert fconf.correct_bytes(part, data, block=1) >= held


def test_truncated_body_without_content_length_check(badserver, dest,
                                                     fast_conf):
    """Even without a checksum a short body is not a success."""
    data = os.urandom(MiB)
    badserver.add('cut', bad.Resource(data, faults=[
        bad.Truncate(4096, sticky=True)]))
    with pytest.raises(exc.ConnectionFailed):
        oslo_transfer.copy(badserver.url('cut'), dest, conf=fast_conf)
    assert not os.path.exists(dest)


# -- helpers ------------------------------------------------------------------

def _fake_partial(dest, src, url, nbytes, validator):
    """Leave ``.part`` + control file as an interrupted run would.

    Uses the engine's own journal so the format stays the engine's.
    """
    from oslo_transfer.engine import journal

    with open(fconf.part_path(dest), 'wb') as f:
        f.write(src.data[:nbytes])
        f.truncate(src.size)
    os.chmod(fconf.part_path(dest), 0o600)
    j = journal.Journal(fconf.ctl_path(dest))
    j.source = url
    j.validator = validator
    j.size = src.size
    j.checksum = src.checksum()
    j.ranges.add(0, nbytes)
    j.save()
