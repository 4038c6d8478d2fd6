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


"""Flow control: class shares, EDF, admission, with a fake clock."""

import collections
import logging
import os
import threading

import pytest

from oslo_transfer.cmd import main as cmd_main
from oslo_transfer.engine import admission
from oslo_transfer.engine import throttle
from oslo_transfer import exceptions
from oslo_transfer import selector
from tests.unit import fakes

I, N, B = throttle.INTERACTIVE, throttle.NORMAL, throttle.BACKGROUND
ORIGIN = 'memory://a'
MiB = 1024 * 1024


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def _served(q, n):
    return [q.pop().cls for _ in range(n)]


# -- the fair queue: order and shares -------------------------------------

def test_a_higher_class_that_arrives_is_served_first():
    q = throttle.FairQueue(throttle.DEFAULT_WEIGHTS)
    for _ in range(3):
        q.add(B, 64)
    q.add(N, 64)
    q.add(I, 64)
    assert _served(q, 3) == [I, N, B]


def test_classes_that_all_wait_share_by_weight_and_none_starves():
    q = throttle.FairQueue(throttle.DEFAULT_WEIGHTS)
    for _ in range(200):
        for cls in (B, N, I):
            q.add(cls, 64)
    got = collections.Counter(_served(q, 130))
    # 8:4:1 per class, whatever the number of requests of each
    assert got[I] == pytest.approx(80, abs=2)
    assert got[N] == pytest.approx(40, abs=2)
    assert got[B] == pytest.approx(10, abs=2)


def test_weights_are_per_class_not_per_transfer():
    # six background transfers and one interactive: 8:1 between classes
    q = throttle.FairQueue(throttle.DEFAULT_WEIGHTS)
    for _ in range(50):
        for _t in range(6):
            q.add(B, 64)
        q.add(I, 64)
    got = collections.Counter(_served(q, 45))
    assert got[I] == 40 and got[B] == 5


def test_a_class_alone_takes_everything_and_saves_no_credit():
    q = throttle.FairQueue(throttle.DEFAULT_WEIGHTS)
    for _ in range(100):
        q.add(B, 64)
    assert _served(q, 50) == [B] * 50       # work-conserving
    for _ in range(20):
        q.add(I, 64)
    # background ran alone: it is not owed anything, nor is it punished
    # beyond its weight: 8 interactive for 1 background
    got = collections.Counter(_served(q, 18))
    assert got[I] == pytest.approx(16, abs=1)
    assert got[B] == pytest.approx(2, abs=1) and got[B] >= 1


def test_within_a_class_earliest_deadline_first_then_first_come():
    q = throttle.FairQueue(throttle.DEFAULT_WEIGHTS)
    a = q.add(N, 1, None)
    b = q.add(N, 1, 50.0)
    c = q.add(N, 1, 20.0)
    d = q.add(N, 1, None)
    assert [q.pop() for _ in range(4)] == [c, b, a, d]


def test_fifo_mode_is_first_come_whatever_the_class():
    q = throttle.FairQueue(None)
    reqs = [q.add(cls, 1, d) for cls, d in ((B, None), (I, 1.0), (N, None))]
    assert [q.pop() for _ in range(3)] == reqs


def test_the_bucket_grants_at_its_rate_on_a_fake_clock():
    clock = Clock()
    bucket = throttle.TokenBucket(1 * MiB, burst=256 * 1024, clock=clock)
    assert bucket.take(512 * 1024) == 0          # the burst, then a debt
    wait = bucket.take(1024)
    assert wait == pytest.approx(0.25, rel=0.01)
    clock.t += wait
    assert bucket.take(1024) == 0


# -- submitted transfers ----------------------------------------------------

def test_submitted_transfers_start_by_class_then_deadline():
    sched = throttle.Scheduler(workers=1)
    launched = []
    order = []

    def job(name):
        return lambda: order.append(name)

    sched.queue_job(job('first'), B, None, launched.append)
    for name, cls, d in (('bg', B, None), ('late', N, 90.0),
                         ('soon', N, 10.0), ('urgent', I, None)):
        sched.queue_job(job(name), cls, d, launched.append)
    assert len(launched) == 1               # one worker
    while launched:
        launched.pop(0)()
    assert order == ['first', 'urgent', 'soon', 'late', 'bg']


def test_a_higher_class_does_not_wait_for_a_worker_a_lower_one_holds():
    sched = throttle.Scheduler(workers=1, extra_workers=1)
    release = threading.Event()
    started = []

    def job(name):
        def run():
            started.append(name)
            release.wait(10)
        return run

    sched.queue_job(job('bg'), B)
    sched.queue_job(job('bg2'), B)
    sched.queue_job(job('i'), I)             # borrows the extra worker
    sched.queue_job(job('n'), N)             # none left: waits
    _until(lambda: len(started) == 2)
    assert started == ['bg', 'i']
    release.set()
    sched.drain()
    assert sorted(started) == ['bg', 'bg2', 'i', 'n']
    # without extra workers (an executor of the caller's), or in fifo
    # mode, the interactive transfer waits its turn
    for sched in (throttle.Scheduler(workers=1),
                  throttle.Scheduler(workers=1, extra_workers=1,
                                     mode='fifo')):
        release.clear()
        started.clear()
        sched.queue_job(job('bg'), B)
        sched.queue_job(job('i'), I)
        _until(lambda: started)
        assert started == ['bg']
        release.set()
        sched.drain()
        assert started == ['bg', 'i']


# -- admission --------------------------------------------------------------

def test_a_deadline_too_short_for_the_capacity_is_refused():
    est = admission.judge(105.0, 100 * MiB, [], 10 * MiB, 100.0)
    assert not est.admitted and est.finish == pytest.approx(10.0)
    est = admission.judge(111.0, 100 * MiB, [], 10 * MiB, 100.0)
    assert est.admitted


def test_a_newcomer_that_would_make_an_admitted_one_miss_is_refused():
    admitted = [(110.0, 50 * MiB, 'old')]
    # the newcomer's deadline is earlier: EDF serves it first; the old
    # one still finishes at 10 s
    ok = admission.judge(106.0, 50 * MiB, admitted, 10 * MiB, 100.0)
    assert ok.admitted and ok.finish == pytest.approx(5.0)
    # 10 MiB more would push the old one to 11 s: refused, although
    # the newcomer itself would make it
    bad = admission.judge(106.0, 60 * MiB, admitted, 10 * MiB, 100.0)
    assert not bad.admitted and bad.victim == 'old'
    assert bad.finish == pytest.approx(6.0)
    # judging only the newcomer's own bytes would have admitted it
    assert admission.judge(106.0, 60 * MiB, [], 10 * MiB, 100.0).admitted


def test_an_admitted_one_already_late_does_not_block_everyone():
    admitted = [(101.0, 100 * MiB, 'late')]
    est = admission.judge(200.0, 10 * MiB, admitted, 10 * MiB, 100.0)
    assert est.admitted


def test_without_capacity_only_the_transfers_own_rate_refuses():
    assert admission.judge(101.0, 100 * MiB, [], 0, 100.0).admitted
    est = admission.judge(101.0, 100 * MiB, [], 0, 100.0, rate=10 * MiB)
    assert not est.admitted and est.finish == pytest.approx(10.0)


def _check(sched, cls, deadline_in, size, rate=0):
    job = sched.job(cls, sched.clock() + deadline_in)
    job.rate = rate
    with job:
        admission.check(sched, job, size, 'memory://a/x')


def _flow(sched, clock, rate, seconds, cls=N, origin=ORIGIN, step=0.0625):
    """Bytes at ``rate`` for ``seconds`` on the fake clock, no pause.

    (The first second is no sample: the bytes began in it.)
    """
    for _ in range(int(round(seconds / step))):
        sched.account(int(rate * step), cls, origin)
        clock.t += step


def test_capacity_comes_from_the_limits_then_from_history():
    clock = Clock()
    sched = throttle.Scheduler(clock=clock)
    assert sched.capacity() == (0, 'no limit and no throughput history')
    _check(sched, N, 0.001, 10 ** 12)        # no limit, no history: admitted
    _flow(sched, clock, 20 * MiB, 3)
    assert sched.capacity(ORIGIN)[0] == pytest.approx(20 * MiB, rel=0.01)
    with pytest.raises(exceptions.DeadlineUnreachable):
        _check(sched, N, 1.0, 30 * MiB)
    clock.t += throttle.CAPACITY_WINDOW + 2      # history forgotten
    assert sched.capacity(ORIGIN)[0] == 0
    limited = throttle.Scheduler(rate=10 * MiB, origin_rate=5 * MiB,
                                 clock=clock)
    assert limited.capacity(ORIGIN) == (5 * MiB, 'origin_rate_limit')
    assert limited.capacity() == (10 * MiB, 'process_rate_limit')


def test_a_second_with_a_pause_is_no_sample_of_the_capacity():
    # A few small copies moved 2 MiB in their seconds: that measured the
    # demand, not the link.  Judged against it, a 30 MiB copy due in 2 s
    # was refused (the refusals of the first benchmark runs).
    clock = Clock()
    sched = throttle.Scheduler(clock=clock)
    for _ in range(3):
        _flow(sched, clock, 4 * MiB, 0.5)        # 2 MiB, then a pause
        clock.t += 0.5
    assert sched.capacity(ORIGIN) == (0, 'no limit and no throughput '
                                         'history')
    _check(sched, N, 2.0, 30 * MiB)              # no history: admitted
    # a whole busy second is a sample, however small the bytes before it
    _flow(sched, clock, 24 * MiB, 2)
    assert sched.capacity(ORIGIN)[0] == pytest.approx(24 * MiB, rel=0.01)
    _check(sched, N, 2.0, 30 * MiB)
    with pytest.raises(exceptions.DeadlineUnreachable,
                       match='the highest 1 s rate of the last 30 s'):
        _check(sched, N, 1.0, 30 * MiB)


def test_with_no_history_only_the_configured_limits_refuse():
    clock = Clock()
    sched = throttle.Scheduler(origin_rate=10 * MiB, clock=clock)
    job = sched.job(N, clock() + 2.0)
    job.origin = ORIGIN
    with job:
        admission.check(sched, job, 20 * MiB, 'memory://a/x')
    job = sched.job(N, clock() + 2.0)
    job.origin = ORIGIN
    with pytest.raises(exceptions.DeadlineUnreachable) as info:
        with job:
            admission.check(sched, job, 21 * MiB, 'memory://a/x')
    assert 'at 10485760 bytes/s (origin_rate_limit)' in str(info.value)
    assert 'estimated 2.1s' in str(info.value)


def test_a_newcomer_is_judged_with_the_lower_classes_deadlines():
    # an admitted background copy due in 10 s, 85 MiB at 10 MiB/s; an
    # interactive newcomer due earlier goes first under EDF: 20 MiB more
    # would make the background copy miss, although it meets its own
    clock = Clock()
    sched = throttle.Scheduler(rate=10 * MiB, clock=clock)
    with sched.job(B, clock() + 10.0) as bg:
        bg.remaining = lambda: 85 * MiB
        _check(sched, I, 2.0, 10 * MiB * 12 // 13)
        with pytest.raises(exceptions.DeadlineUnreachable,
                           match='make an admitted background transfer miss'):
            _check(sched, I, 5.0, 20 * MiB)
    _check(sched, I, 5.0, 20 * MiB)              # alone: admitted


def test_a_higher_newcomer_does_not_queue_behind_lower_classes_bytes():
    # the scheduler serves interactive before background (which keeps
    # only its minimum share): an admitted background copy due earlier
    # is not ahead of an interactive newcomer
    caps = admission.capacities(10 * MiB, throttle.DEFAULT_WEIGHTS, {B})
    assert caps[I] == pytest.approx(10 * MiB * 12 / 13)
    assert caps[B] == 10 * MiB
    admitted = [(B, 103.0, 25 * MiB, 'bg')]
    est = admission.judge_classes(I, 103.5, 8 * MiB, admitted, caps, 100.0)
    assert est.admitted and est.ahead == 0
    assert est.finish == pytest.approx(8 / (10 * 12 / 13))
    # a background newcomer with the same figures waits behind it
    est = admission.judge_classes(B, 103.2, 8 * MiB, admitted, caps, 100.0)
    assert not est.admitted and est.ahead == 25 * MiB


def test_the_bottleneck_decides_which_transfers_are_judged_together():
    clock = Clock()
    other = 'http://other:80'
    for bottleneck, refused in (('host', True), ('origin', False)):
        sched = throttle.Scheduler(clock=clock, bottleneck=bottleneck)
        _flow(sched, clock, 10 * MiB, 2, origin=other)
        _flow(sched, clock, 10 * MiB, 2, origin=ORIGIN)
        with sched.job(N, clock() + 10.0) as big:
            big.origin, big.remaining = other, lambda: 95 * MiB
            job = sched.job(N, clock() + 5.0)
            job.origin = ORIGIN
            with job:
                if refused:
                    with pytest.raises(exceptions.DeadlineUnreachable):
                        admission.check(sched, job, 40 * MiB, 'x')
                else:
                    admission.check(sched, job, 40 * MiB, 'x')
    with pytest.raises(ValueError, match='shared_bottleneck'):
        throttle.Scheduler(bottleneck='rack')
    store = fakes.fixture.MemoryStore()
    with fakes.make_transfer(store, shared_bottleneck='origin') as t:
        assert t.scheduler.bottleneck == 'origin'


def test_running_lower_classes_keep_their_minimum_share():
    clock = Clock()
    sched = throttle.Scheduler(rate=13 * MiB, clock=clock)
    _check(sched, I, 1.0, 13 * MiB)          # C = 13 MiB/s: just fits
    with sched.job(B, None):
        # a background copy runs: interactive may count on 12/13 of C
        with pytest.raises(exceptions.DeadlineUnreachable) as info:
            _check(sched, I, 1.0, 13 * MiB)
        assert '13631488 bytes/s' not in str(info.value)
        assert '12582912 bytes/s' in str(info.value)
        assert 'less 8% kept for lower classes' in str(info.value)
        _check(sched, I, 1.0, 12 * MiB)
    st = sched.stats()['classes']
    assert st[I]['refused'] == 1 and st[I]['completed'] == 2


def test_no_deadline_is_never_refused_and_fifo_admits_everything():
    clock = Clock()
    sched = throttle.Scheduler(rate=1, clock=clock)
    with sched.job(N, None) as job:
        admission.check(sched, job, 10 ** 12, 'x')
    fifo = throttle.Scheduler(rate=1, mode='fifo', clock=clock)
    _check(fifo, I, 1.0, 10 ** 12)


def test_a_late_finish_counts_as_missed_never_cancelled():
    clock = Clock()
    sched = throttle.Scheduler(clock=clock)
    with sched.job(I, clock() + 1.0) as job:
        job.origin = ORIGIN
        clock.t += 5                     # still running: nothing stops it
    st = sched.stats()
    assert st['classes'][I]['completed'] == 1
    assert st['classes'][I]['missed'] == 1
    assert st['origins'][ORIGIN]['missed'] == 1


# -- slots ------------------------------------------------------------------

def test_a_lower_holder_lends_its_slot_at_its_next_chunk():
    sched = throttle.Scheduler(limit=2)
    holding = threading.Barrier(3)
    go, stop = threading.Event(), threading.Event()
    got = []

    def background():
        with sched.slot(ORIGIN, B):
            holding.wait(5)
            go.wait(5)
            while not stop.is_set():
                sched.consume(1024, B, ORIGIN)
                stop.wait(0.01)

    threads = [threading.Thread(target=background, daemon=True)
               for _ in range(2)]
    for t in threads:
        t.start()
    holding.wait(5)

    def interactive():
        with sched.slot(ORIGIN, I):
            got.append(dict(sched.stats()['origins'][ORIGIN]))

    it = threading.Thread(target=interactive, daemon=True)
    it.start()
    it.join(0.3)
    assert not got                  # no chunk yet: no slot lent
    go.set()
    it.join(5)
    assert got and got[0]['active'] == 2   # one background kept its slot
    stop.set()
    for t in threads:
        t.join(5)
    assert sched.stats()['origins'][ORIGIN]['active'] == 0


def test_a_class_holding_no_slot_is_not_starved_by_higher_waiters():
    sched = throttle.Scheduler(limit=2)
    w_int = throttle._Waiter((0, float('inf'), 1), ORIGIN, I)
    w_bg = throttle._Waiter((2, float('inf'), 2), ORIGIN, B)
    sched._busy[ORIGIN] = 1
    sched._held[ORIGIN, I] = 1
    sched._waiting = [w_int, w_bg]
    assert sched._may_start(w_bg) and not sched._may_start(w_int)


# -- the Transfer -----------------------------------------------------------

def test_a_refused_copy_writes_nothing_and_is_counted(tmp_path):
    store = fakes.fixture.MemoryStore()
    store.put(ORIGIN, fakes.data(4 * MiB))
    with fakes.make_transfer(store, process_rate_limit=MiB) as t:
        out = tmp_path / 'out'
        with pytest.raises(exceptions.DeadlineUnreachable) as info:
            t.copy(ORIGIN, str(out), hints=selector.Hints(
                priority='interactive', deadline=1.0))
        exc = info.value
        assert exc.retryable and exc.estimate == pytest.approx(4.0)
        assert 'memory://a: the deadline of' in str(exc)
        assert '4194304 bytes to move' in str(exc)
        assert '1048576 bytes/s (process_rate_limit)' in str(exc)
        assert os.listdir(tmp_path) == []          # no .part, no lock
        st = t.stats()
        assert st['classes'][I]['refused'] == 1
        assert st['origins'][ORIGIN]['refused'] == 1
        # without a deadline: never refused
        h = t.submit(ORIGIN, str(out), hints=selector.Hints(
            priority='background'))
        assert h.result(30).size == 4 * MiB
        assert t.stats()['classes'][B]['completed'] == 1


def test_a_transfer_with_process_rate_limit_leaves_nothing_behind():
    before = {k: v for k, v in vars(throttle).items()
              if not k.startswith('__')}
    store = fakes.fixture.MemoryStore()
    with fakes.make_transfer(store, process_rate_limit=MiB,
                             origin_rate_limit=MiB) as t:
        assert t.scheduler.rate == MiB
    after = {k: v for k, v in vars(throttle).items()
             if not k.startswith('__')}
    assert after == before


def test_hints_check_priority_and_deadline():
    with pytest.raises(ValueError, match='priority must be one of'):
        selector.Hints(priority='urgent')
    with pytest.raises(ValueError, match='deadline'):
        selector.Hints(deadline=0)


def test_bad_class_weights_are_refused():
    with pytest.raises(ValueError, match='weight of normal'):
        throttle.parse_weights('normal:0')
    assert throttle.parse_weights('background:2')[B] == 2
    with pytest.raises(ValueError, match='unknown scheduling class'):
        throttle.parse_weights({'urgent': '1'})


def test_the_command_shows_the_class_with_v(tmp_path, caplog):
    src = tmp_path / 'src'
    src.write_bytes(b'x' * 1000)
    caplog.set_level(logging.INFO)
    rc = cmd_main.main(['copy', '-v', '--priority', 'background',
                        '--deadline', '60', str(src),
                        str(tmp_path / 'dst')])
    assert rc == 0
    assert 'class background, deadline in' in caplog.text


# (the background's pause after a higher class's request runs on the
# fake clock, which stands still)
NO_PAUSE = {B: throttle.ClassPolicy()}


# -- pacing ------------------------------------------------------------------

def _paced_rate(sched, cls, origin=ORIGIN):
    pacer = sched._pacers.get((sched._domain(origin), cls))
    return None if pacer is None else pacer.rate


def test_lower_classes_are_paced_while_a_higher_one_holds_a_slot():
    clock = Clock()
    sched = throttle.Scheduler(clock=clock, policies=NO_PAUSE)
    _flow(sched, clock, 9 * MiB, 3)                # C = 9 MiB/s
    sched.consume(1024, B, ORIGIN)
    assert _paced_rate(sched, B) is None         # nobody above: not paced
    with sched.slot(ORIGIN, I):
        sched.consume(1024, B, ORIGIN)           # within the pacer's burst
        # background's share beside interactive: 1 / (8 + 1) of C
        assert _paced_rate(sched, B) == pytest.approx(MiB, rel=0.01)
        sched.consume(1024, N, ORIGIN)
        assert _paced_rate(sched, N) == pytest.approx(9 * MiB * 4 / 12,
                                                      rel=0.01)
        sched.consume(1024, I, ORIGIN)
        assert _paced_rate(sched, I) is None
        # shared_bottleneck = host: another origin's bytes go through the
        # same NIC and are paced too
        sched._pacers.clear()
        sched.consume(1024, B, 'http://other:80')
        assert _paced_rate(sched, B, 'http://other:80') is not None
        # a local copy is never paced
        sched.consume(1024, B, throttle.LOCAL)
        assert (None, B) not in sched._pacers


def test_with_origin_bottlenecks_only_the_same_origin_is_paced():
    clock = Clock()
    sched = throttle.Scheduler(clock=clock, policies=NO_PAUSE,
                               bottleneck='origin')
    _flow(sched, clock, 9 * MiB, 3)
    _flow(sched, clock, 9 * MiB, 3, origin='http://other:80')
    with sched.slot(ORIGIN, I):
        sched.consume(1024, B, 'http://other:80')
        assert _paced_rate(sched, B, 'http://other:80') is None
        sched.consume(1024, B, ORIGIN)
        assert _paced_rate(sched, B) == pytest.approx(MiB, rel=0.01)


def test_the_capacity_is_never_sampled_while_pacing():
    clock = Clock()
    sched = throttle.Scheduler(clock=clock, policies=NO_PAUSE)
    _flow(sched, clock, 10 * MiB, 3)             # unpaced: C = 10 MiB/s
    with sched.slot(ORIGIN, I):
        for _ in range(32):                      # 2 s paced, at 4 MiB/s
            sched.consume(1024, B, ORIGIN)
            sched.account(MiB // 4, I, ORIGIN)
            clock.t += 0.0625
        assert _paced_rate(sched, B) == pytest.approx(10 * MiB / 9,
                                                      rel=0.01)
    clock.t += throttle.CAPACITY_WINDOW - 2      # the unpaced seconds left
    assert sched.capacity(ORIGIN)[0] == pytest.approx(10 * MiB, rel=0.01)
    clock.t += 4                                 # the paced ones too
    assert sched.capacity(ORIGIN)[0] == 0


def _pace_for(sched, clock, seconds, top_rate, step=0.125):
    """The top class moves ``top_rate`` while background is paced."""
    for _ in range(int(round(seconds / step))):
        sched.consume(1024, B, ORIGIN)
        sched.consume(int(top_rate * step), I, ORIGIN)
        clock.t += step


def test_pacing_that_does_not_help_stops_for_30_s():
    clock = Clock()
    sched = throttle.Scheduler(clock=clock, policies=NO_PAUSE)
    _flow(sched, clock, 12 * MiB, 3)
    with sched.slot(ORIGIN, B), sched.slot(ORIGIN, B), \
            sched.slot(ORIGIN, I):
        # unpaced, TCP gives interactive 1 of 3 connections: 4 MiB/s.
        # Paced, it stays at 4 MiB/s (a per-connection limit at the
        # server): after 2 s, pacing stops
        _pace_for(sched, clock, 1.0, 4 * MiB)
        assert sched._pacing['host'].top == I
        _pace_for(sched, clock, 1.2, 4 * MiB)
        assert sched._pacing['host'].top is None
        sched._pacers.clear()
        _pace_for(sched, clock, throttle.PACING_BACKOFF - 1, 4 * MiB)
        assert _paced_rate(sched, B) is None      # off for 30 s
        _pace_for(sched, clock, 1.5, 4 * MiB)
        assert _paced_rate(sched, B) is not None  # then tried again


def test_pacing_that_raises_the_higher_class_goes_on():
    clock = Clock()
    sched = throttle.Scheduler(clock=clock, policies=NO_PAUSE)
    _flow(sched, clock, 12 * MiB, 3)
    with sched.slot(ORIGIN, B), sched.slot(ORIGIN, B), \
            sched.slot(ORIGIN, I):
        # paced, interactive gets 10 MiB/s instead of TCP's 4
        _pace_for(sched, clock, 5.0, 10 * MiB)
        assert sched._pacing['host'].top == I
        assert _paced_rate(sched, B) is not None


def test_pacing_can_be_turned_off():
    clock = Clock()
    sched = throttle.Scheduler(clock=clock, policies=NO_PAUSE)
    sched.pacing = False
    _flow(sched, clock, 12 * MiB, 3)
    with sched.slot(ORIGIN, I):
        sched.consume(1024, B, ORIGIN)
    assert not sched._pacers


# -- a waiter lends its class to the holder ----------------------------------

def test_a_loan_raises_the_holder_to_the_waiters_class_until_it_ends():
    clock = Clock()
    sched = throttle.Scheduler(clock=clock)
    holder, waiter = sched.job(B), sched.job(I)
    loan = throttle.Loan(waiter)
    loan.lend(holder)
    loan.lend(holder)                            # once
    assert holder.current_cls == I and holder.lent == [I]
    loan.end()
    assert holder.current_cls == B and holder.lent == []
    # a lower waiter lends nothing; another scheduler's job is not seen
    throttle.Loan(sched.job(B)).lend(sched.job(N))
    other = throttle.Scheduler(clock=clock).job(B)
    throttle.Loan(waiter).lend(other)
    assert other.current_cls == B


def test_a_waiter_on_the_destination_lends_its_class(tmp_path):
    store = fakes.fixture.MemoryStore()
    store.put(ORIGIN, fakes.data(4 * MiB))
    dest = str(tmp_path / 'out')
    with fakes.make_transfer(store) as t:
        store.pause_reads()
        bg = t.submit(ORIGIN, dest, hints=selector.Hints(
            priority='background'))
        # The background copy reads, so it holds the lock (the lock file
        # alone exists before its flock, and a newcomer on an extra
        # worker could still take the lock first).
        _until(lambda: store.reads)
        [holder] = t.scheduler.jobs
        it = t.submit(ORIGIN, dest, hints=selector.Hints(
            priority='interactive'))
        _until(lambda: holder.current_cls == I)
        store.resume_reads()
        assert bg.result(30).size == 4 * MiB
        assert it.result(30).size == 4 * MiB
        assert holder.lent == []
        st = t.stats()['classes']
        # the holder's bytes all went at the waiter's class
        assert st[B]['bytes'] == 0 and st[I]['bytes'] >= 4 * MiB
    assert fakes.sha(open(dest, 'rb').read()) == fakes.sha(
        fakes.data(4 * MiB))


def _until(cond, timeout=10.0):
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if cond():
            return
        done.wait(0.01)
    raise AssertionError('never happened')


def test_close_runs_the_copies_still_queued(tmp_path):
    store = fakes.fixture.MemoryStore()
    store.put(ORIGIN, fakes.data(MiB))
    with fakes.make_transfer(store, executor_workers=1) as t:
        handles = [t.submit(ORIGIN, str(tmp_path / ('o%d' % i)))
                   for i in range(4)]
        t.close()
        assert all(h.done() for h in handles)
        assert [h.result(0).size for h in handles] == [MiB] * 4
