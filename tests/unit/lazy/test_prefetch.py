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

"""The prefetch's manners: on-demand reads overtake it, never wait for it."""

import threading
import time

import pytest

from oslo_transfer.engine import throttle
from oslo_transfer.lazy import prefetch as prefetch_mod
from tests.unit.lazy import helpers

KiB, BLOCK, URL = helpers.KiB, helpers.BLOCK, helpers.URL
DATA = helpers.image()


def _background(fix, **policy):
    fix.transfer.scheduler.policies[throttle.BACKGROUND] = \
        throttle.ClassPolicy(**policy)


def _class_bytes(fix):
    classes = fix.transfer.scheduler.stats()['classes']
    return {c: classes[c]['bytes'] for c in throttle.CLASSES}


def test_a_miss_is_noted_a_hit_is_not(fix, cache, bm):
    with helpers.attach(fix, cache, bm) as img:
        core = img._core
        assert core.last_miss is None
        img.pread(10, 0)
        first = core.last_miss
        assert first is not None
        img.pread(10, 100)                  # held: no miss
        assert core.last_miss == first
        img.pread(10, 5 * BLOCK)
        assert core.last_miss > first


def test_the_pause_and_the_read_size_follow_the_last_miss(fix, cache, bm):
    _background(fix, request_bytes=256 * KiB, yield_seconds=0.2)
    with helpers.attach(fix, cache, bm) as img:
        core = img._core
        pf = prefetch_mod.Prefetcher(core, sweep=True)
        now = 1000.0
        # no miss yet: no pause, reads of the class's request_bytes
        assert pf.pause_left(now) == 0
        assert pf._most(now) == 256 * KiB
        core.last_miss = now - 0.05
        assert pf.pause_left(now) == pytest.approx(0.15)
        assert pf._most(now) == core.unit == BLOCK     # one unit
        core.last_miss = now - 0.5
        assert pf.pause_left(now) == 0
        assert pf._most(now) == BLOCK
        core.last_miss = now - prefetch_mod.BUSY_SECONDS - 0.01
        assert pf._most(now) == 256 * KiB


def test_in_the_pause_after_a_miss_the_prefetch_claims_no_block(
        fix, cache, bm):
    # A pause of an hour: a prefetch that claimed blocks before waiting
    # it out would keep a reader of those blocks waiting for an hour.
    _background(fix, request_bytes=256 * KiB, yield_seconds=3600)
    with helpers.attach(fix, cache, bm) as img:
        core = img._core
        img.pread(10, 0)                     # a miss
        fix.store.reads.clear()
        img.prefetch(BLOCK, 8 * BLOCK)       # blocks 1-8, in the background
        assert core.prefetcher.pause_left() > 3000
        time.sleep(0.3)                      # (room for a wrong claim)
        with core._lock:
            assert not any(i in core._inflight for i in range(1, 9))
        assert fix.store.reads == []
        got = []
        reader = threading.Thread(target=lambda: got.append(
            img.pread(10, 4 * BLOCK)), daemon=True)
        reader.start()
        reader.join(20)
        assert got == [DATA[4 * BLOCK:4 * BLOCK + 10]]
        assert helpers.blocks_read(fix.store) == [4]
    # close() ended the pause: the prefetch thread is gone
    assert not core.prefetcher.alive


def test_a_reader_waiting_for_a_prefetched_block_lends_its_class(
        fix, cache, bm):
    _background(fix, request_bytes=256 * KiB, yield_seconds=0.0)
    with helpers.attach(fix, cache, bm) as img:
        core = img._core
        sched = fix.transfer.scheduler
        run = core.claim_run(0, 4 * BLOCK, job=sched.job(throttle.BACKGROUND))
        assert (run.next, run.last) == (0, 3)
        before = _class_bytes(fix)
        waits = core.request([2], throttle.INTERACTIVE, on_demand=True)
        # waited for, not fetched again, and not a miss
        assert list(waits) == [2] and fix.store.reads == []
        assert core.last_miss is None
        assert run.job.current_cls == throttle.INTERACTIVE
        core.fetch_claimed(run, throttle.BACKGROUND)
        assert waits[2].data == DATA[2 * BLOCK:3 * BLOCK]
        after = _class_bytes(fix)
        # the run's bytes went at the reader's class
        assert after[throttle.INTERACTIVE] - before[throttle.INTERACTIVE] \
            == 4 * BLOCK
        assert after[throttle.BACKGROUND] == before[throttle.BACKGROUND]


def test_a_run_nobody_waits_for_stays_in_the_background(fix, cache, bm):
    _background(fix, request_bytes=256 * KiB, yield_seconds=0.0)
    with helpers.attach(fix, cache, bm) as img:
        core = img._core
        sched = fix.transfer.scheduler
        run = core.claim_run(0, 4 * BLOCK, job=sched.job(throttle.BACKGROUND))
        before = _class_bytes(fix)
        core.fetch_claimed(run, throttle.BACKGROUND)
        after = _class_bytes(fix)
        assert after[throttle.BACKGROUND] - before[throttle.BACKGROUND] \
            == 4 * BLOCK
        assert after[throttle.INTERACTIVE] == before[throttle.INTERACTIVE]
