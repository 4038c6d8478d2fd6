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

"""oslo.transfer under ``eventlet.monkey_patch()``, as nova-compute runs it.

Run as a child process (monkey patching must not leak into the test
process): ``python -m tests.functional.hygiene.green_child SCENARIO ARGS``
prints one JSON object on stdout.

While the scenario runs, a green thread ticks every ``TICK`` seconds and
counts its ticks; the report gives the ticks, the ticks expected in the
elapsed time, and the worst gap between two ticks: how long the library
kept the hub (every other green thread of the service) waiting.  At each
tick it also notes the bytes allocated to ``DEST.part`` (the copy's
progress on disk): ``mid_samples`` counts the distinct sizes it saw while
the copy was under way, which is how often the copy let the hub run,
independent of how busy the machine is.

Scenarios:

``copy SRC DEST [--checksum C]``
    one ``Transfer.copy``;
``submit SRC DEST [--checksum C]``
    ``Transfer.submit`` and ``handle.result()``;
``cancel SRC DEST``
    ``Transfer.submit`` of a slow source, ``handle.cancel()`` once bytes
    arrived; the report says what ``result()`` raised and how long the
    cancel took;
``same-dest SRC DEST N [--checksum C]``
    N green threads copy SRC to the same DEST at once.
"""

import eventlet

eventlet.monkey_patch()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

#: the ticker's period, in seconds
TICK = 0.01


class Ticker:
    """A green thread that ticks every :data:`TICK` seconds."""

    def __init__(self, watch=None):
        self.watch = watch
        self.seen = set()
        self.ticks = 0
        self.worst = 0.0
        self.started = None
        self.stopped = None
        self._running = False
        self._thread = None

    def __enter__(self):
        self._running = True
        self.started = time.monotonic()
        self._thread = eventlet.spawn(self._run)
        eventlet.sleep(0)
        return self

    def _run(self):
        last = time.monotonic()
        while self._running:
            eventlet.sleep(TICK)
            now = time.monotonic()
            self.ticks += 1
            self.worst = max(self.worst, now - last)
            last = now
            if self.watch:
                try:
                    blocks = os.stat(self.watch).st_blocks
                except FileNotFoundError:
                    continue
                if blocks:
                    self.seen.add(blocks)

    def __exit__(self, *exc):
        self._running = False
        self._thread.wait()
        self.stopped = time.monotonic()

    def report(self) -> dict:
        elapsed = self.stopped - self.started
        return {'ticks': self.ticks, 'expected_ticks': int(elapsed / TICK),
                'worst_gap': round(self.worst, 4),
                'elapsed': round(elapsed, 3),
                'mid_samples': len(self.seen)}


def _transfer(args):
    from oslo_config import cfg

    from oslo_transfer import transfer
    conf = cfg.ConfigOpts()
    conf([], project='oslo_transfer_tests',
         default_config_files=[args.config_file] if args.config_file
         else [], default_config_dirs=[])
    return transfer.Transfer(conf)


def _result(res) -> dict:
    return {'bytes_transferred': res.bytes_transferred,
            'bytes_resumed': res.bytes_resumed, 'digest': res.digest,
            'driver': res.driver}


def copy(args, t):
    with Ticker(args.dest + '.part') as ticker:
        res = t.copy(args.source, args.dest, checksum=args.checksum)
    return dict(ticker.report(), result=_result(res))


def submit(args, t):
    with Ticker(args.dest + '.part') as ticker:
        handle = t.submit(args.source, args.dest, checksum=args.checksum)
        res = handle.result(timeout=300)
    return dict(ticker.report(), result=_result(res))


def cancel(args, t):
    from oslo_transfer import exceptions
    with Ticker() as ticker:
        handle = t.submit(args.source, args.dest)
        deadline = time.monotonic() + 60
        while handle.progress[0] == 0 and time.monotonic() < deadline:
            eventlet.sleep(0.01)
        progressed = handle.progress[0]
        t0 = time.monotonic()
        handle.cancel()
        try:
            handle.result(timeout=60)
            raised = None
        except exceptions.TransferError as exc:
            raised = type(exc).__name__
        took = time.monotonic() - t0
    out = os.path.dirname(os.path.abspath(args.dest))
    return dict(ticker.report(), progressed=progressed, raised=raised,
                cancel_seconds=round(took, 3), left=sorted(os.listdir(out)))


def same_dest(args, t):
    results, errors = [], []

    def one():
        try:
            results.append(_result(t.copy(args.source, args.dest,
                                          checksum=args.checksum)))
        except Exception as exc:  # noqa: reported
            errors.append('%s: %s' % (type(exc).__name__, exc))

    with Ticker() as ticker:
        pool = eventlet.GreenPool()
        for _ in range(args.n):
            pool.spawn(one)
        pool.waitall()
    return dict(ticker.report(), results=results, errors=errors)


SCENARIOS = {'copy': copy, 'submit': submit, 'cancel': cancel,
             'same-dest': same_dest}


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument('scenario', choices=sorted(SCENARIOS))
    p.add_argument('source')
    p.add_argument('dest')
    p.add_argument('n', type=int, nargs='?', default=8)
    p.add_argument('--checksum')
    p.add_argument('--config-file')
    args = p.parse_args(argv)
    t = _transfer(args)
    try:
        out = SCENARIOS[args.scenario](args, t)
    finally:
        t.close()
    out['patched'] = eventlet.patcher.is_monkey_patched('thread')
    print(json.dumps(out), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
