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
earliest-deadline-first at::

    C_eff = C x (1 - sum of the minimum shares of the classes below the
                     newcomer's that have transfers running)

where a class's minimum share is its weight over the sum of the weights
(what the scheduler keeps for it whoever else waits) and ``C`` is
:meth:`Scheduler.capacity
<oslo_transfer.engine.throttle.Scheduler.capacity>`: the highest 1 s rate
through the newcomer's bottleneck (``shared_bottleneck``) over the last
30 s, never sampled while pacing, or the configured limits when lower.
The EDF schedule holds every admitted transfer that shares that
bottleneck, whatever its class: judging only the bytes of the newcomer's
class and above would let a newcomer with an earlier deadline make an
admitted transfer miss.  An admitted transfer already late blocks
nobody.

With no throughput history, only the configured limits (and the
transfer's own ``rate``) can make a deadline impossible.  A transfer
without a deadline is never refused, and a deadline never cancels a
running transfer.
"""

import dataclasses

from oslo_transfer.engine import throttle
from oslo_transfer import exceptions

__all__ = ['Estimate', 'check', 'edf', 'judge']


@dataclasses.dataclass
class Estimate:
    """Why a newcomer is admitted or refused (figures for the message)."""

    admitted: bool
    finish: float            # seconds from now the newcomer would finish
    capacity: float          # bytes/s it was judged at (C_eff)
    how: str                 # where C came from
    ahead: int               # bytes of admitted transfers due before it
    victim: str | None = None    # an admitted transfer it would make miss


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
          rate=0) -> Estimate:
    """The decision for one newcomer (pure: tests give the figures).

    :param admitted: ``[(deadline, remaining_bytes, name)]`` of the
        transfers already admitted with a deadline.
    :param capacity: C_eff in bytes/s; 0: unknown.
    :param rate: the newcomer's own rate limit (0: none).
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
        elif f > d and before.get(name):
            victim = name
    finish = max(finish, own)
    ok = finish <= new_deadline - now and victim is None
    return Estimate(ok, finish, capacity, how, ahead, victim)


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
    mine = throttle.rank(job.cls)
    with sched._cond:
        others = [j for j in sched.jobs if j is not job and
                  sched.same_bottleneck(j.origin, job.origin)]
        lower = {j.cls for j in others if throttle.rank(j.cls) > mine}
        admitted = [(j.deadline, max(0, j.remaining()), id(j))
                    for j in others
                    if j.deadline is not None and j.remaining is not None]
    share = sum(sched.weights[c] for c in lower) / sum(
        sched.weights.values())
    eff = cap * (1 - share)
    est = judge(job.deadline, size_left, admitted, eff, now, how, job.rate)
    if est.admitted:
        return
    left = job.deadline - now
    if est.victim is not None and est.finish <= left:
        why = ('it would make an admitted transfer miss its deadline under '
               'earliest-deadline-first')
    else:
        why = 'estimated %.1fs' % est.finish
    if eff:
        figures = ('%d bytes to move after %d bytes due earlier, at '
                   '%.0f bytes/s (%s%s)' % (
                       size_left, est.ahead, eff, how,
                       ', less %.0f%% kept for lower classes' % (share * 100)
                       if share else ''))
    else:
        figures = '%d bytes at its rate limit of %d bytes/s' % (
            size_left, job.rate)
    raise exceptions.DeadlineUnreachable(
        '%s: the deadline of %.1fs cannot be met (%s: %s); nothing was '
        'written' % (name, left, why, figures), url=name,
        estimate=est.finish, deadline=left)
