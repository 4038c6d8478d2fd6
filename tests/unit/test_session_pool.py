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

"""The session pool and leases of the ftp, sftp, nfs and iscsi drivers."""

import itertools
import threading

import pytest

from oslo_transfer._drivers import _common


class Session:
    ids = itertools.count()

    def __init__(self, alive=True):
        self.id = next(self.ids)
        self.alive = alive
        self.closed = False


def _pool(**kw):
    closed = []

    def close(s):
        s.closed = True
        closed.append(s)

    pool = _common.SessionPool(close=close,
                               is_alive=lambda s: s.alive, **kw)
    return pool, closed


def _two_way_pool(**kw):
    """A pool whose clean sessions say goodbye and others are destroyed."""
    ended = []
    pool = _common.SessionPool(
        close=lambda s: ended.append(('goodbye', s)),
        destroy=lambda s: ended.append(('destroyed', s)), **kw)
    return pool, ended


def test_reuse_after_release():
    pool, _ = _pool()
    a = pool.acquire('k', Session)
    pool.release('k', a)
    assert pool.acquire('k', Session) is a
    assert pool.acquire('k', Session) is not a


def test_keys_are_separate():
    pool, _ = _pool()
    a = pool.acquire('alice', Session)
    pool.release('alice', a)
    assert pool.acquire('bob', Session) is not a


def test_max_idle():
    pool, closed = _pool(max_idle=2)
    sessions = [pool.acquire('k', Session) for _ in range(3)]
    for s in sessions:
        pool.release('k', s)
    assert pool.idle_count('k') == 2
    assert closed == [sessions[2]]


def test_stale_sessions_are_closed():
    pool, closed = _pool(max_idle_seconds=0.0)
    a = pool.acquire('k', Session)
    pool.release('k', a)
    b = pool.acquire('k', Session)
    assert b is not a and closed == [a]


def test_dead_sessions_are_skipped():
    pool, closed = _pool()
    a = pool.acquire('k', Session)
    b = pool.acquire('k', Session)
    pool.release('k', a)
    pool.release('k', b)
    b.alive = False
    assert pool.acquire('k', Session) is a
    assert closed == [b]


def test_lease_discards_on_error():
    pool, closed = _pool()
    with pytest.raises(RuntimeError):
        with pool.lease('k', Session) as s:
            raise RuntimeError('protocol state unknown')
    assert closed == [s]
    assert pool.idle_count() == 0
    with pool.lease('k', Session) as s2:
        pass
    assert pool.idle_count('k') == 1 and not s2.closed


def test_close_all():
    pool, closed = _pool()
    a = pool.acquire('k', Session)
    b = pool.acquire('k', Session)
    pool.release('k', a)
    pool.close_all()
    assert closed == [a]
    pool.release('k', b)            # in use during close_all: closed now
    assert closed == [a, b]


def test_threads_never_share_a_session():
    pool, _ = _pool(max_idle=8)
    in_use = set()
    lock = threading.Lock()
    errors = []

    def worker():
        for _ in range(200):
            with pool.lease('k', Session) as s:
                with lock:
                    if s.id in in_use:
                        errors.append(s.id)
                    in_use.add(s.id)
                with lock:
                    in_use.discard(s.id)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_unclean_stale_and_dead_sessions_are_destroyed_not_closed():
    pool, ended = _two_way_pool(max_idle=1, max_idle_seconds=60)
    a, b, c = Session(), Session(), Session()
    pool.release('k', a)
    pool.release('k', b)            # over max_idle, clean: goodbye
    pool.discard(c)                 # after an error: destroyed
    assert ended == [('goodbye', b), ('destroyed', c)]
    pool.max_idle_seconds = 0.0
    assert pool.take('k') is None   # stale: destroyed, not reused
    assert ended[-1] == ('destroyed', a)
    pool.release('k', b)
    pool.close_all()
    assert ended[-1] == ('goodbye', b)


def test_a_lease_gives_back_once_and_destroys_a_broken_session():
    pool, ended = _two_way_pool()
    a = Session()
    a.broken = False
    lease = _common.Lease(pool, 'k', a)
    lease.release()
    lease.release()                 # once only
    assert pool.idle_count('k') == 1 and ended == []
    assert pool.take('k') is a
    a.broken = True
    _common.Lease(pool, 'k', a).release()
    assert ended == [('destroyed', a)] and pool.idle_count() == 0


def test_a_lease_dropped_unreleased_destroys_its_session():
    pool, ended = _two_way_pool()
    a = Session()
    lease = _common.Lease(pool, 'k', a)
    del lease
    assert ended == [('destroyed', a)] and pool.take('k') is None
