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


"""An SSH server that trickles its banner, a line every quarter second.

Each line arrives well within ``io_timeout``; SSH allows lines before
the version line, and paramiko reads up to 100 of them.  The server is a
scripted TCP listener on loopback (no SSH behind it): what matters is what
the client does while it waits.
"""

import socket
import threading
import time

import pytest

from oslo_transfer import exceptions as exc
from oslo_transfer import transfer as transfer_mod
from tests.functional import conftest as fconf


class TricklingBanner:
    """Accepts connections and sends a pre-banner line every 0.25 s."""

    def __init__(self, lines=400, interval=0.25):
        self.lines, self.interval = lines, interval
        self.sock = socket.create_server(('127.0.0.1', 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        #: lines sent on each connection until the client went away
        self.sent = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            threading.Thread(target=self._trickle, args=(conn,),
                             daemon=True).start()

    def _trickle(self, conn):
        sent = 0
        with conn:
            for _ in range(self.lines):
                if self._stop.wait(self.interval):
                    break
                try:
                    conn.sendall(b'please wait\r\n')
                except OSError:
                    break
                sent += 1
        self.sent.append(sent)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def _conf(make_conf, tmp_path, **opts):
    known = tmp_path / 'known_hosts'
    known.write_text('')
    return make_conf(oslo_transfer=opts,
                     oslo_transfer_sftp={'known_hosts_file': str(known)})


def test_a_cancel_ends_a_login_whose_banner_trickles(make_conf, tmp_path,
                                                     dest):
    """Before, a cancel waited for paramiko's own timeout (io_timeout)."""
    io = 30.0
    conf = _conf(make_conf, tmp_path, io_timeout=io, retries=0)
    with TricklingBanner() as srv, transfer_mod.Transfer(conf) as t:
        url = 'sftp://user:pw-3c4d@127.0.0.1:%d/img' % srv.port
        handle = t.submit(url, dest)
        while not srv.accepted:
            time.sleep(0.05)
        time.sleep(0.5)
        handle.cancel()
        with pytest.raises(exc.Cancelled) as ei:
            handle.result(timeout=120)
        # The client went away when cancelled, not after paramiko had
        # read its 100 lines (25 s) or io_timeout (30 s) had passed.
        while len(srv.sent) < srv.accepted:
            time.sleep(0.05)
        assert srv.accepted == 1
        assert srv.sent[0] < 50, srv.sent
    assert 'pw-3c4d' not in str(ei.value)
    fconf.assert_nothing_left(dest)
