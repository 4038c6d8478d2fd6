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

"""The event loop that the libnfs and libiscsi bindings share."""

import select
import socket
import threading

import pytest

from oslo_transfer._drivers import _common
from oslo_transfer import driver
from oslo_transfer import exceptions


class LoopError(Exception):
    def __init__(self, kind, reason):
        super().__init__(kind)
        self.kind, self.reason = kind, reason


class FakeLib:
    """A "library" on one end of a socket pair: it reads what comes."""

    def __init__(self, want=3):
        self.sock, self.peer = socket.socketpair()
        self.got = b''
        self.want = want
        self.fail = False

    def loop(self):
        return _common.ServiceLoop(
            self.sock.fileno, lambda: select.POLLIN, self.service,
            lambda kind, reason: LoopError(kind, reason))

    def service(self, revents):
        if self.fail:
            return -1
        if revents & select.POLLIN:
            self.got += self.sock.recv(100)
        return 0

    def done(self):
        return len(self.got) >= self.want


def test_runs_until_the_operation_is_done():
    lib = FakeLib(want=3)
    lib.peer.sendall(b'abc')
    lib.loop().run(lib.done, None, timeout=5)
    assert lib.got == b'abc'


def test_the_timeout_counts_time_without_socket_activity():
    lib = FakeLib(want=4)
    loop = lib.loop()
    loop.tick = 0.02
    stop = threading.Event()

    def trickle():
        # one byte every 0.1 s: the whole wait (0.4 s) exceeds the
        # timeout (0.3 s), but no silence does
        for b in b'abcd':
            if stop.wait(0.1):
                return
            lib.peer.sendall(bytes([b]))

    t = threading.Thread(target=trickle)
    t.start()
    try:
        loop.run(lib.done, None, timeout=0.3)
    finally:
        stop.set()
        t.join()
    assert lib.got == b'abcd'
    with pytest.raises(LoopError) as e:
        loop.run(lambda: False, None, timeout=0.1)
    assert e.value.kind == 'timeout'


def test_a_failed_service_and_a_missing_socket_are_the_librarys_errors():
    lib = FakeLib()
    lib.fail = True
    lib.peer.sendall(b'x')
    with pytest.raises(LoopError) as e:
        lib.loop().run(lib.done, None, timeout=5)
    assert e.value.kind == 'failed'
    loop = _common.ServiceLoop(lambda: -1, lambda: 0, lambda r: 0,
                               lambda kind, reason: LoopError(kind, reason))
    with pytest.raises(LoopError) as e:
        loop.run(lambda: False, None, timeout=5)
    assert e.value.kind == 'closed'


def test_cancel_is_seen_within_a_tick():
    lib = FakeLib()
    token = driver.CancelToken()
    token.cancel('stop')
    with pytest.raises(exceptions.Cancelled, match='stop'):
        lib.loop().run(lib.done, token, timeout=60)
