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

"""Sockets held by the HTTP driver of a long-lived Transfer.

Services call one ``Transfer`` from per-request threads; the sockets it
keeps open must not grow with the number of threads that ever called it.
"""

import os
import threading

import oslo_transfer

THREADS = 60
AT_ONCE = 10
IDLE = 2


def _sockets() -> int:
    """Open sockets of this process (``/proc/self/fd`` -> ``socket:``)."""
    n = 0
    for fd in os.listdir('/proc/self/fd'):
        try:
            if os.readlink('/proc/self/fd/%s' % fd).startswith('socket:'):
                n += 1
        except OSError:
            pass  # closed meanwhile (the listing's own fd)
    return n


def test_ended_threads_leave_no_sockets(nginx, serve, make_conf):
    src = serve(256 * 1024 + 3)
    url = nginx.url(src.name)
    conf = make_conf(oslo_transfer_http={'pool_connections': IDLE})
    before = _sockets()
    got, errors = [], []
    with oslo_transfer.Transfer(conf) as t:

        def one(barrier):
            try:
                barrier.wait(30)
                with t.open(url) as reader:
                    got.append(reader.read() == src.data)
            except Exception as exc:  # noqa: reported below
                errors.append(exc)

        for _batch in range(THREADS // AT_ONCE):
            barrier = threading.Barrier(AT_ONCE)
            threads = [threading.Thread(target=one, args=(barrier,))
                       for _ in range(AT_ONCE)]
            for th in threads:
                th.start()
            for th in threads:
                th.join(60)
        assert not errors, errors
        assert got == [True] * THREADS
        held = _sockets() - before
        # Each idle session keeps at most one keep-alive connection per
        # host (two while one is being released); a session per thread
        # kept 2 sockets for each of the 60 threads.
        assert held <= 2 * IDLE, '%d sockets still open after %d ended ' \
            'threads' % (held, THREADS)
    assert _sockets() - before <= 0, 'Transfer.close() left sockets open'


def test_sequential_threads_reuse_one_connection(nginx, serve, make_conf):
    """Keep-alive still works: one connection serves thread after thread."""
    src = serve(1000)
    url = nginx.url(src.name)
    with oslo_transfer.Transfer(make_conf()) as t:
        for _ in range(5):
            th = threading.Thread(target=lambda: t.open(url).read())
            th.start()
            th.join(30)
        before = _sockets()
        with t.open(url) as reader:
            assert reader.read() == src.data
        assert _sockets() - before <= 0, 'a new connection per request'
