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

"""A class's receive buffer: the Context value, the sockets, the HTTP pools.

Real loopback sockets: the kernel reports the buffer (``SO_RCVBUF``, which
Linux doubles) and the window scale the handshake fixed (``TCP_INFO``), so
a buffer set after ``connect()`` fails these tests.
"""

import http.server
import socket
import threading

import pytest

import oslo_transfer
from oslo_transfer._drivers import _common
from oslo_transfer import driver
from oslo_transfer.engine import throttle

I, N, B = throttle.INTERACTIVE, throttle.NORMAL, throttle.BACKGROUND
KiB = 1024
CAP = 256 * KiB
BODY = bytes(range(256)) * 4096          # 1 MiB


def _rcvbuf(sock) -> int:
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def _rcv_wscale(sock) -> int:
    """The window scale this end announced in the handshake."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    assert info[5] & 4, 'no window scaling on loopback?'   # TCPI_OPT_WSCALE
    return info[6] >> 4                                     # rcv_wscale


# -- the Context -------------------------------------------------------------

def test_only_the_background_class_has_a_receive_buffer():
    sched = throttle.Scheduler()
    assert [driver.Context(scheduler=sched, priority=c).receive_buffer
            for c in (I, N, B)] == [None, None, CAP]
    # no scheduler, or one class for all (fifo): the kernel's autotuning
    assert driver.Context(priority=B).receive_buffer is None
    fifo = throttle.Scheduler(mode='fifo')
    assert driver.Context(scheduler=fifo, priority=B).receive_buffer is None
    # a class's policy sets it
    own = throttle.Scheduler(policies={
        N: throttle.ClassPolicy(receive_buffer=64 * KiB)})
    assert driver.Context(scheduler=own, priority=N).receive_buffer == \
        64 * KiB


def test_a_lent_class_takes_the_lenders_buffer():
    sched = throttle.Scheduler()
    job = sched.job(B)
    ctx = driver.Context(scheduler=sched, priority=B, job=job)
    assert ctx.receive_buffer == CAP
    job.borrow(I)              # an interactive copy waits for this one
    assert ctx.receive_buffer is None
    job.give_back(I)
    assert ctx.receive_buffer == CAP


# -- the sockets -------------------------------------------------------------

@pytest.fixture
def listener():
    srv = socket.create_server(('127.0.0.1', 0))
    yield srv.getsockname()
    srv.close()


def test_the_buffer_is_set_before_connect(listener):
    plain = _common.create_connection(listener, 5)
    capped = _common.create_connection(listener, 5, CAP)
    try:
        assert _rcvbuf(capped) == 2 * CAP          # (Linux doubles it)
        assert _rcvbuf(plain) != 2 * CAP
        # the window scale follows the buffer only if it was set before
        # the handshake (tcp_rmem's maximum of several MiB: 7 or more)
        assert _rcv_wscale(capped) < _rcv_wscale(plain)
        assert _rcv_wscale(capped) <= 4
    finally:
        plain.close()
        capped.close()


# -- the HTTP driver's pools -------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    peers = None

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.peers.append(self.client_address[1])
        rng = self.headers.get('Range')
        body, status = BODY, 200
        if rng:
            first, last = rng.split('=')[1].split('-')
            body = BODY[int(first):int(last) + 1]
            status = 206
        self.send_response(status)
        if rng:
            self.send_header('Content-Range', 'bytes %s-%s/%d'
                             % (first, last, len(BODY)))
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    handler = type('Handler', (_Handler,), {'peers': []})
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield 'http://127.0.0.1:%d/o' % srv.server_address[1], handler.peers
    srv.shutdown()
    srv.server_close()


def _idle_sockets(drv, cap):
    """The sockets kept alive in the sessions of ``cap``'s pool."""
    socks = []
    for session in drv._sessions(cap)._free:
        pm = session.get_adapter('http://x').poolmanager
        for key in pm.pools.keys():
            for conn in list(pm.pools[key].pool.queue):
                if conn is not None and conn.sock is not None:
                    socks.append(conn.sock)
    return socks


def test_capped_and_autotuned_connections_never_mix(server):
    url, peers = server
    with oslo_transfer.Transfer(drivers=['http']) as t:
        drv = t.driver('http')
        loc = oslo_transfer.Location(url)

        def read(cls):
            ctx = driver.Context(scheduler=t.scheduler, priority=cls)
            data = b''.join(drv.read(loc, 0, 4096, ctx))
            assert data == BODY[:4096]
            return peers[-1]

        first = read(N)
        bg = read(B)
        assert bg != first, 'a background read reused an autotuned socket'
        assert read(N) == first, 'keep-alive lost (or capped socket reused)'
        assert read(B) == bg, 'keep-alive lost for the capped pool'
        assert read(I) == first
        [capped] = _idle_sockets(drv, CAP)
        [plain] = _idle_sockets(drv, None)
        assert _rcvbuf(capped) == 2 * CAP
        assert _rcvbuf(plain) != 2 * CAP
        assert _rcv_wscale(capped) < _rcv_wscale(plain)


def test_a_capped_read_hands_over_a_buffer_at_a_time(server):
    """So that a paced consumer stops the sender within one buffer."""
    url, _peers = server
    with oslo_transfer.Transfer(drivers=['http']) as t:
        drv = t.driver('http')
        loc = oslo_transfer.Location(url)
        sizes = {}
        for cls in (N, B):
            ctx = driver.Context(scheduler=t.scheduler, priority=cls)
            chunks = list(drv.read(loc, 0, len(BODY), ctx))
            assert b''.join(chunks) == BODY
            sizes[cls] = max(len(c) for c in chunks)
    assert sizes == {N: len(BODY), B: CAP}
