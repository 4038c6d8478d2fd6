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

"""``total_timeout`` is a deadline for the whole call, wherever it blocks.

A driver blocked in one operation that never times out (a read that
waits, a server that trickles) kept a call alive past ``total_timeout``:
only the reads that came back checked the time.  The call's own token is
now cancelled at ``expires_at``; the caller's token is left alone.
"""

import json
import os
import threading
import time
import warnings

import pytest

from oslo_transfer import driver as driver_mod
from oslo_transfer.engine import scope as scope_mod
from oslo_transfer import exceptions
from oslo_transfer import fixture
from tests.unit import fakes

MiB = 1024 * 1024
URL = 'memory://user:s3cret-pw@store/img'
#: generous: the point is "soon after the deadline", not "for ever"
SOON = 10.0


def _out_of_time(e):
    assert type(e) is exceptions.TransferTimeout, repr(e)
    assert 'ran out of time ([oslo_transfer] total_timeout)' in str(e)
    assert not e.retryable
    assert 's3cret' not in str(e)


@pytest.fixture
def store():
    s = fixture.MemoryStore()
    yield s
    s.clear_faults()        # never leave a paused read behind


def test_a_read_that_waits_ends_at_the_deadline(store, tmp_path):
    store.put(URL, fakes.data(4 * MiB))
    store.pause_reads()
    out = str(tmp_path / 'out')
    with fakes.make_transfer(store, total_timeout=0.5, retries=5) as t:
        started = time.monotonic()
        handle = t.submit(URL, out)
        try:
            with pytest.raises(exceptions.TransferError) as ei:
                handle.result(timeout=SOON)
        finally:
            store.resume_reads()
    _out_of_time(ei.value)
    assert time.monotonic() - started < SOON
    assert handle.cancelled is False
    assert os.listdir(tmp_path) == []


def test_the_deadline_keeps_what_is_held(store, tmp_path):
    """Resumable state stays, as a cancel leaves it."""
    payload = fakes.data(4 * MiB)
    store.put(URL, payload)
    out = str(tmp_path / 'out')

    class _StopsAfterOneMiB(fixture.MemoryDriver):
        def chunks(self, data, start, end, ctx):
            for chunk in super().chunks(data, start, end, ctx):
                yield chunk
                start += len(chunk)
                if start >= MiB:
                    # Wait as a stuck server does; a cancel ends it.
                    while not ctx.cancel.wait(0.05):
                        pass
                    ctx.cancel.check()

    drv = fixture.make_driver_class(store, base=_StopsAfterOneMiB)
    with fakes.make_transfer(store, driver_class=drv, segments=1,
                             total_timeout=0.5) as t:
        with pytest.raises(exceptions.TransferError) as ei:
            t.copy(URL, out, checksum=fakes.sha(payload))
    _out_of_time(ei.value)
    with open(out + '.part.ctl') as f:
        held = sum(e - s for s, e in json.load(f)['ranges'])
    assert held >= MiB
    with fakes.make_transfer(store) as t:
        res = t.copy(URL, out, checksum=fakes.sha(payload))
    assert open(out, 'rb').read() == payload
    assert res.bytes_resumed == held


def test_open_ends_at_the_deadline(store):
    store.put(URL, fakes.data(4 * MiB))
    with fakes.make_transfer(store, total_timeout=0.5) as t:
        with t.open(URL) as reader:
            first = reader.read(64 * 1024)
            store.pause_reads()
            try:
                with pytest.raises(exceptions.TransferError) as ei:
                    reader.read()
            finally:
                store.resume_reads()
    assert first
    _out_of_time(ei.value)


class _StuckWriter(fixture.MemoryDriver):
    """An upload whose server stops taking bytes (honours a cancel)."""

    def write(self, location, chunks, ctx, offset=0, size=None):
        for _chunk in chunks:
            while not ctx.cancel.wait(0.05):
                pass
            ctx.cancel.check()
        return super().write(location, iter(()), ctx, offset, size)


def test_an_upload_ends_at_the_deadline(store):
    drv = fixture.make_driver_class(store, base=_StuckWriter)
    with fakes.make_transfer(store, driver_class=drv, total_timeout=0.5,
                             retries=3) as t:
        started = time.monotonic()
        with pytest.raises(exceptions.TransferError) as ei:
            t.upload(fakes.data(MiB), URL)
    _out_of_time(ei.value)
    assert time.monotonic() - started < SOON
    assert URL not in store


def test_a_cancel_before_the_deadline_stays_a_cancel(store, tmp_path):
    store.put(URL, fakes.data(MiB))
    store.pause_reads()
    with fakes.make_transfer(store, total_timeout=30) as t:
        handle = t.submit(URL, str(tmp_path / 'out'))
        time.sleep(0.2)
        handle.cancel('enough')
        with pytest.raises(exceptions.Cancelled) as ei:
            handle.result(timeout=SOON)
    assert type(ei.value) is exceptions.Cancelled
    assert handle.cancelled is True


# -- the scope itself ---------------------------------------------------------

def test_scope_cancels_its_token_not_the_callers():
    caller = driver_mod.CancelToken()
    ctx = driver_mod.Context(cancel=caller,
                             expires_at=time.monotonic() + 0.1)
    with scope_mod.CallScope(ctx) as scope:
        assert ctx.cancel is scope.token is not caller
        assert ctx.cancel.wait(SOON)
        assert scope.timed_out()
        err = scope.error(exceptions.Cancelled(ctx.cancel.reason))
        _out_of_time(err)
        # Errors that are not about the wait stay what they are.
        mismatch = exceptions.ChecksumMismatch('x')
        assert scope.error(mismatch) is mismatch
    assert not caller.cancelled


def test_scope_passes_the_callers_cancel_on():
    caller = driver_mod.CancelToken()
    ctx = driver_mod.Context(cancel=caller,
                             expires_at=time.monotonic() + 30)
    with scope_mod.CallScope(ctx) as scope:
        caller.cancel('stop it')
        assert scope.token.cancelled
        assert scope.token.reason == 'stop it'
        exc = exceptions.Cancelled('stop it')
        assert scope.error(exc) is exc


def test_scope_timer_ends_with_the_call():
    before = threading.active_count()
    for _ in range(20):
        ctx = driver_mod.Context(expires_at=time.monotonic() + 60)
        with scope_mod.CallScope(ctx):
            pass
    deadline = time.monotonic() + SOON
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() <= before


def test_scope_without_a_deadline_has_no_timer():
    before = threading.active_count()
    with scope_mod.CallScope(driver_mod.Context()) as scope:
        assert threading.active_count() == before
        assert not scope.timed_out()


def test_scope_exit_raises_the_timeout_for_a_cancel():
    ctx = driver_mod.Context(expires_at=time.monotonic())
    with pytest.raises(exceptions.TransferTimeout) as ei:
        with scope_mod.CallScope(ctx):
            ctx.cancel.wait(SOON)
            ctx.cancel.check()
    assert isinstance(ei.value.__cause__, exceptions.Cancelled)


# -- Context.deadline, renamed expires_at -------------------------------------

def test_context_deadline_is_a_deprecated_alias():
    with pytest.warns(DeprecationWarning, match='expires_at'):
        ctx = driver_mod.Context(deadline=12.5)
    assert ctx.expires_at == 12.5
    with pytest.warns(DeprecationWarning):
        assert ctx.deadline == 12.5
    with pytest.warns(DeprecationWarning):
        ctx.deadline = 3.0
    assert ctx.expires_at == 3.0
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert driver_mod.Context(expires_at=1.0).expires_at == 1.0


def test_check_expiry_raises_the_timeout_only_past_expires_at():
    driver_mod.Context().check_expiry()             # no limit: nothing
    driver_mod.Context(
        expires_at=time.monotonic() + 60).check_expiry()
    ctx = driver_mod.Context(expires_at=time.monotonic() - 0.01)
    with pytest.raises(exceptions.TransferTimeout) as ei:
        ctx.check_expiry()
    _out_of_time(ei.value)
    with pytest.raises(exceptions.TransferTimeout):
        ctx.timeout()
    with pytest.warns(DeprecationWarning, match='check_expiry'):
        with pytest.raises(exceptions.TransferTimeout):
            ctx.check_deadline()
