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

"""_utils.cooperate and _utils.offload, with and without eventlet.

Under ``eventlet.monkey_patch()`` a loop that never blocks keeps the hub
(every other green thread) until it ends, and so does a system call the
hub does not know (``fsync``).  The eventlet cases run in a child process
so that the patching never reaches the test process.
"""

import json
import os
import subprocess
import sys
import time
from unittest import mock

import pytest

from oslo_transfer import _utils

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

CHILD = r'''
import eventlet
eventlet.monkey_patch()
import json, os, time
from eventlet import patcher
from oslo_transfer import _utils

real_sleep = patcher.original('time').sleep
ticks = [0]
running = [True]

def ticker():
    while running[0]:
        eventlet.sleep(0.01)
        ticks[0] += 1

def ticks_during(func):
    g = eventlet.spawn(ticker)
    eventlet.sleep(0)
    before = ticks[0]
    func()
    n = ticks[0] - before
    running[0] = False
    g.wait()
    running[0] = True
    return n

def busy(step):
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        step()

out = {
    'busy_plain': ticks_during(lambda: busy(lambda: None)),
    'busy_cooperating': ticks_during(lambda: busy(_utils.cooperate)),
    'blocking_call': ticks_during(lambda: real_sleep(0.3)),
    'offloaded_call': ticks_during(lambda: _utils.offload(real_sleep, 0.3)),
    'offload_result': _utils.offload(lambda a, b: a + b, 2, 3),
}
try:
    _utils.offload(os.fsync, 999999)
except OSError as exc:
    out['offload_error'] = exc.errno
print(json.dumps(out))
'''


@pytest.fixture(scope='module')
def green_report():
    pytest.importorskip('eventlet')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [REPO, os.environ.get('PYTHONPATH', '')]))
    p = subprocess.run([sys.executable, '-c', CHILD], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_a_busy_loop_keeps_the_hub_unless_it_cooperates(green_report):
    # The child's control case: a loop that never blocks starves the hub.
    assert green_report['busy_plain'] == 0, green_report
    # The same loop calling cooperate() once per step lets it run.
    assert green_report['busy_cooperating'] > 0, green_report


def test_offload_runs_a_blocking_call_beside_the_hub(green_report):
    assert green_report['blocking_call'] == 0, green_report
    assert green_report['offloaded_call'] > 0, green_report
    assert green_report['offload_result'] == 5
    assert green_report['offload_error'] == 9        # EBADF, as raised


def test_without_green_threads_nothing_sleeps():
    with mock.patch.object(time, 'sleep') as sleep:
        for _ in range(1000):
            _utils.cooperate()
    sleep.assert_not_called()
    assert _utils.offload(lambda a: a * 2, 21) == 42
    with pytest.raises(OSError):
        _utils.offload(os.fsync, 999999)
