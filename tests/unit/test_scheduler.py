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

"""The scheduler of DESIGN "Scheduling": slots and bytes by class."""

import threading
import time

import pytest

from oslo_transfer import driver
from oslo_transfer.engine import throttle
from oslo_transfer import exceptions
from oslo_transfer import fixture
from tests.unit import fakes

ORIGIN = 'http://origin:80'


def _hold(sched, origin, cls, started, release, order):
    with sched.slot(origin, cls):
        order.append(cls)
        started.set()
        release.wait(5)


def _start(target, *args):
    t = threading.Thread(target=target, args=args, daemon=True)
    t.start()
    return t


def test_a_freed_slot_goes_to_the_highest_class_waiting():
    sched = throttle.Scheduler()
    sched.limit = 1
    order = []
    first_in, free = threading.Event(), threading.Event()
    holder = _start(_hold, sched, ORIGIN, throttle.NORMAL, first_in, free,
                    order)
    assert first_in.wait(5)
    waiters = []
    # background first, then normal, then interactive: the order of
    # arrival is the reverse of the order of service
    for cls in (throttle.BACKGROUND, throttle.NORMAL, throttle.INTERACTIVE):
        ev = threading.Event()
        ev.set()
        waiters.append(_start(_hold, sched, ORIGIN, cls, threading.Event(),
                              ev, order))
        time.sleep(0.05)
    free.set()
    for t in [holder] + waiters:
        t.join(5)
    assert order == [throttle.NORMAL, throttle.INTERACTIVE, throttle.NORMAL,
                     throttle.BACKGROUND]


def test_earliest_deadline_first_within_a_class():
    sched = throttle.Scheduler()
    sched.limit = 1
    order = []
    lock = threading.Lock()

    def wait_for(name, deadline):
        with sched.slot(ORIGIN, throttle.NORMAL, deadline):
            with lock:
                order.append(name)

    with sched.slot(ORIGIN):
        now = time.monotonic()
        late = _start(wait_for, 'late', now + 100)
        time.sleep(0.05)
        soon = _start(wait_for, 'soon', now + 10)
        time.sleep(0.05)
    late.join(5)
    soon.join(5)
    assert order == ['soon', 'late']


def test_the_background_class_holds_one_connection_per_origin():
    sched = throttle.Scheduler()
    got = []
    with sched.slot(ORIGIN, throttle.BACKGROUND):
        t = _start(lambda: got.append(
            sched.slot(ORIGIN, throttle.BACKGROUND).__enter__()))
        t.join(0.3)
        assert not got            # waits for the first one
        # ... while another origin, or another class, goes at once
        with sched.slot('http://other:80', throttle.BACKGROUND):
            pass
        with sched.slot(ORIGIN, throttle.NORMAL):
            pass
    t.join(5)
    assert got


def test_background_bytes_pause_after_an_interactive_request():
    sched = throttle.Scheduler()
    t0 = time.monotonic()
    sched.consume(1024, throttle.BACKGROUND, ORIGIN)
    assert time.monotonic() - t0 < 0.1
    with sched.slot(ORIGIN, throttle.INTERACTIVE):
        pass
    t0 = time.monotonic()
    sched.consume(1024, throttle.BACKGROUND, ORIGIN)
    waited = time.monotonic() - t0
    assert 0.15 <= waited < 1.0
    # other origins and higher classes do not pause
    t0 = time.monotonic()
    sched.consume(1024, throttle.BACKGROUND, 'http://other:80')
    sched.consume(1024, throttle.NORMAL, ORIGIN)
    assert time.monotonic() - t0 < 0.1
    assert sched.policy(throttle.BACKGROUND).request_bytes == 256 * 1024


def test_a_cancel_ends_a_wait_for_a_slot():
    sched = throttle.Scheduler()
    sched.limit = 1
    token = driver.CancelToken()
    errors = []

    def waiter():
        try:
            with sched.slot(ORIGIN, cancel=token, poll=0.02):
                pass
        except exceptions.Cancelled as exc:
            errors.append(exc)

    with sched.slot(ORIGIN):
        t = _start(waiter)
        time.sleep(0.05)
        token.cancel()
        t.join(2)
    assert len(errors) == 1


def test_the_process_rate_goes_to_the_higher_class_first(monkeypatch):
    bucket = throttle.TokenBucket(1024 * 1024, burst=64 * 1024)
    monkeypatch.setattr(throttle, 'PROCESS_BUCKET', bucket)
    sched = throttle.Scheduler()
    done = {}

    def pump(cls):
        for _ in range(6):
            sched.consume(64 * 1024, cls)
        done[cls] = time.monotonic()

    low = _start(pump, throttle.BACKGROUND)
    high = _start(pump, throttle.INTERACTIVE)
    low.join(10)
    high.join(10)
    assert done[throttle.INTERACTIVE] < done[throttle.BACKGROUND]


def test_an_unknown_class_is_refused():
    with pytest.raises(ValueError, match='unknown scheduling class'):
        with throttle.Scheduler().slot(ORIGIN, 'urgent'):
            pass


def test_a_context_reaches_the_scheduler_with_its_class():
    calls = []

    class Spy:
        def slot(self, origin, cls, deadline, cancel):
            calls.append(('slot', origin, cls, deadline, cancel))
            return throttle.Scheduler().slot(origin, cls)

        def consume(self, nbytes, cls, origin, cancel):
            calls.append(('consume', nbytes, cls, origin, cancel))

    ctx = driver.Context(priority='background', scheduler=Spy(),
                         expires_at=123.0)
    with ctx.slot(ORIGIN):
        ctx.consume(10, ORIGIN)
    assert calls == [('slot', ORIGIN, 'background', 123.0, ctx.cancel),
                     ('consume', 10, 'background', ORIGIN, ctx.cancel)]
    # a Context no Transfer made waits for nothing
    with driver.Context().slot(ORIGIN):
        driver.Context().consume(10)


def test_copies_hold_normal_slots_of_the_process_scheduler(tmp_path,
                                                           monkeypatch):
    store = fixture.MemoryStore()
    payload = fakes.data(3 * 1024 * 1024)
    store.put('memory://a', payload)
    seen = []

    class Spy(throttle.Scheduler):
        def slot(self, origin, cls=throttle.NORMAL, deadline=None,
                 cancel=None, poll=0.2):
            seen.append((origin, cls))
            return super().slot(origin, cls, deadline, cancel, poll)

    with fakes.make_transfer(store, segments=2) as t:
        monkeypatch.setattr(throttle, 'SCHEDULER', Spy())
        t.copy('memory://a', str(tmp_path / 'out'),
               checksum=fakes.sha(payload))
    assert seen and set(seen) == {('memory://a', throttle.NORMAL)}
