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

"""Admission of deadlines: refuse at once what cannot be met.

A transfer with a deadline (``Hints(deadline=...)``) is judged after
``stat`` (its size is known) and before its ``.part`` exists.  It is
admitted only if every admitted deadline stays feasible under
earliest-deadline-first at the capacity its class can count on::

    C_k = C x (1 - sum of the minimum shares of the classes below k
                   that have transfers running)

where a class's minimum share is its weight over the sum of the weights
(what the scheduler keeps for it whoever else waits: the lower classes
are paced to it while a higher class moves bytes) and ``C`` is
:meth:`Scheduler.capacity
<oslo_transfer.engine.throttle.Scheduler.capacity>`: the highest 1 s rate
through the newcomer's bottleneck (``shared_bottleneck``) over the last
30 s, never lowered by pacing, or the configured limits when lower.

The transfers of class ``k`` share ``C_k`` with those of the classes
above (the scheduler serves those first; only the lower classes' minimum
shares are out of reach), so the newcomer of class ``k`` is judged:

* at its own class: the EDF schedule of the admitted transfers of class
  ``k`` and above, with it, at ``C_k``: it must finish by its deadline
  and no admitted transfer of class ``k`` may miss because of it;
* at each lower class ``j``: the EDF schedule of class ``j`` and above,
  with it, at ``C_j``: no admitted transfer of class ``j`` may miss
  because of it (judging only the bytes of the newcomer's class and above
  would let a newcomer with an earlier deadline make them miss).

Only the transfers that share the newcomer's bottleneck count; an
admitted transfer already late blocks nobody.  Transfers queued by
``submit()`` and not started yet count when their size is known before
their ``stat`` (a :class:`~oslo_transfer.locations.Source` with a
``size``): their bytes are due by their deadlines, but the newcomer is
not refused for making one of them late (each is judged when it
starts).  With no throughput
history, only the configured limits (and the transfer's own ``rate``)
can make a deadline impossible.  A transfer without a deadline is never
refused, and a deadline never cancels a running transfer.
"""

import dataclasses

from oslo_transfer.engine import throttle
from oslo_transfer import exceptions

__all__ = ['Estimate', 'capacities', 'check', 'edf', 'judge',
           'judge_classes']


@dataclasses.dataclass
class Estimate:
    """Why a newcomer is admitted or refused (figures for the message)."""

    admitted: bool
    finish: float            # seconds from now the newcomer would finish
    capacity: float          # bytes/s it was judged at (C_k)
    how: str                 # where C came from
    ahead: int               # bytes of admitted transfers due before it
    victim: str | None = None    # an admitted transfer it would make miss
    victim_cls: str | None = None   # the class of the victim


def edf(jobs, capacity, now):
    """Finish times under earliest-deadline-first at ``capacity``.

    :param jobs: ``[(deadline, bytes, name)]``.
    :returns: ``[(deadline, finish, bytes_ahead, name)]`` in EDF order.
    """
    t = now
    ahead = 0
    out = []
    for d, b, name in sorted(jobs, key=lambda j: j[0]):
        ahead_before = ahead
        ahead += b
        t += b / capacity
        out.append((d, t, ahead_before, name))
    return out


def judge(new_deadline, new_bytes, admitted, capacity, now, how='',
          rate=0, watch=None) -> Estimate:
    """The decision at one capacity (pure: tests give the figures).

    :param admitted: ``[(deadline, remaining_bytes, name)]`` of the
        transfers already admitted with a deadline.
    :param capacity: C_k in bytes/s; 0: unknown.
    :param rate: the newcomer's own rate limit (0: none).
    :param watch: the names of the admitted transfers that must not miss
        because of the newcomer (default: all of them).
    """
    own = new_bytes / rate if rate else 0.0
    if not capacity:
        finish = own
        return Estimate(finish <= new_deadline - now, finish, rate, how
                        or 'its own rate limit', 0)
    before = {name: f <= d for d, f, _, name in edf(admitted, capacity,
                                                    now)}
    after = edf(list(admitted) + [(new_deadline, new_bytes, None)],
                capacity, now)
    finish = ahead = None
    victim = None
    for d, f, a, name in after:
        if name is None:
            finish, ahead = f - now, a
        elif f > d and before.get(name) and (
                watch is None or name in watch):
            victim = name
    finish = max(finish, own)
    ok = finish <= new_deadline - now and victim is None
    return Estimate(ok, finish, capacity, how, ahead, victim)


def capacities(c, weights, running) -> dict:
    """``{class: C_k}``.

    ``c`` less the minimum shares of the classes below ``k`` in
    ``running``.
    """
    total = sum(weights.values())
    out = {}
    for k in throttle.CLASSES:
        lower = [j for j in running if throttle.rank(j) > throttle.rank(k)]
        out[k] = c * (1 - sum(weights[j] for j in lower) / total)
    return out


def judge_classes(cls, new_deadline, new_bytes, admitted, caps, now,
                  how='', rate=0, queued=()) -> Estimate:
    """The decision for a newcomer of class ``cls`` (see the module).

    :param admitted: ``[(class, deadline, remaining_bytes, name)]``.
    :param caps: ``{class: C_k}`` (:func:`capacities`).
    :param queued: the names in ``admitted`` of transfers queued and not
        judged yet: their bytes count, but the newcomer is not refused
        for making one of them late (each is judged when it starts).
    """
    mine = None
    for level in throttle.CLASSES[throttle.rank(cls):]:
        r = throttle.rank(level)
        jobs = [(d, b, n) for c, d, b, n in admitted
                if throttle.rank(c) <= r]
        watch = {n for c, d, b, n in admitted
                 if c == level and n not in queued}
        est = judge(new_deadline, new_bytes, jobs, caps[level], now, how,
                    rate, watch)
        if mine is None:
            mine = est
            if not est.admitted:
                break
        elif est.victim is not None:
            mine.admitted = False
            mine.victim = est.victim
            break
    if mine.victim is not None:
        mine.victim_cls = next(c for c, d, b, n in admitted
                               if n == mine.victim)
    return mine


def check(sched, job, size_left, name):
    """Admit ``job`` or raise DeadlineUnreachable.

    :param job: a :class:`~oslo_transfer.engine.throttle.Job`.
    :param size_left: the bytes it still has to move.
    :param name: the source as shown in the message (masked).
    """
    if job.deadline is None or not sched.admission:
        return
    now = sched.clock()
    cap, how = sched.capacity(job.origin)
    with sched._cond:
        others = [j for j in sched.jobs if j is not job and
                  sched.same_bottleneck(j.origin, job.origin)]
        running = {j.cls for j in others}
        admitted = [(j.cls, j.deadline, max(0, j.remaining()), id(j))
                    for j in others
                    if j.deadline is not None and j.remaining is not None]
        # submitted copies not started yet whose size is known (a
        # Source's size): their bytes are due too (their origin is not
        # known yet: they share any bottleneck)
        queued = sched.queued_load()
    caps = capacities(cap, sched.weights, running)
    est = judge_classes(job.cls, job.deadline, size_left,
                        admitted + queued, caps, now, how, job.rate,
                        {n for _c, _d, _b, n in queued})
    if est.admitted:
        return
    left = job.deadline - now
    if est.victim is not None and est.finish <= left:
        why = ('it would make an admitted %s transfer miss its deadline '
               'under earliest-deadline-first' % est.victim_cls)
    else:
        why = 'estimated %.1fs' % est.finish
    eff = caps[job.cls]
    share = 1 - eff / cap if cap else 0
    if eff:
        figures = ('%d bytes to move after %d bytes due earlier, at '
                   '%.0f bytes/s (%s%s)' % (
                       size_left, est.ahead, eff, how,
                       ', less %.0f%% kept for lower classes' % (share * 100)
                       if share > 1e-9 else ''))
    else:
        figures = '%d bytes at its rate limit of %d bytes/s' % (
            size_left, job.rate)
    raise exceptions.DeadlineUnreachable(
        '%s: the deadline of %.1fs cannot be met (%s: %s); nothing was '
        'written' % (name, left, why, figures), url=name,
        estimate=est.finish, deadline=left)
