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

"""A hostile FTP server: every reply gets a clear error, nothing escapes.

The server is a scripted control connection on loopback
(:class:`ftpservers.HostileFTP`), so that each reply is exactly the bytes
the test names.
"""

import time

import pytest

import oslo_transfer
from oslo_transfer import exceptions as exc
from tests.functional import conftest as fconf
from tests.functional.ftp import ftpservers

LOGIN = {'USER': b'331 password', 'PASS': b'230 in', 'TYPE': b'200 binary',
         'FEAT': b'211 no features', 'QUIT': b'221 bye'}


def _copy(srv, dest, make_conf, retries=0):
    return oslo_transfer.copy(srv.url('img'), dest, conf=make_conf(
        oslo_transfer={'retries': retries}))


@pytest.mark.parametrize('size', [
    b'213 \xd9\xa3\xd9\xa4',                 # Arabic-Indic digits (UTF-8)
    b'213 \xc2\xb2',                         # a superscript two
    b'213 1_000',                            # int() takes underscores
    b'213 -5',
    b'213 ' + str(2 ** 64).encode(),
])
def test_a_malformed_size_is_a_protocol_error(dest, make_conf, size):
    with ftpservers.HostileFTP(dict(LOGIN, SIZE=size)) as srv:
        with pytest.raises(exc.ProtocolError) as ei:
            _copy(srv, dest, make_conf, retries=3)
    assert 'malformed SIZE reply' in str(ei.value), str(ei.value)
    assert not ei.value.retryable
    assert 'pw-5e0b' not in str(ei.value)
    assert srv.commands.count('SIZE') == 1, 'a malformed reply was retried'
    fconf.assert_nothing_left(dest)


def test_a_latin1_banner_is_read(dest, make_conf):
    # ftplib decodes replies as strict UTF-8: a Latin-1 banner raised
    # UnicodeDecodeError out of the library.
    with ftpservers.HostileFTP(dict(LOGIN, SIZE=b'550 no such file'),
                               banner=b'220 Willkommen, Gr\xfc\xdfe') as srv:
        with pytest.raises(exc.SourceNotFound):
            _copy(srv, dest, make_conf)
    assert srv.commands[:2] == ['USER', 'PASS']
    fconf.assert_nothing_left(dest)


def test_an_endless_feature_list_is_cut_short(dest, make_conf):
    def endless(send):
        send(b'211-Features:\r\n')
        for _ in range(100000):
            send(b' MORE-FEATURES-THAN-ANYONE-NEEDS\r\n')

    with ftpservers.HostileFTP(dict(LOGIN, FEAT=endless)) as srv:
        with pytest.raises(exc.ProtocolError) as ei:
            _copy(srv, dest, make_conf)
    assert 'multi-line reply' in str(ei.value), str(ei.value)
    # the client stopped reading once the reply passed the bound (the
    # server only noticed when its socket buffers filled)
    assert srv.sent < 100000 * 35
    fconf.assert_nothing_left(dest)


def _trickle(first, line, interval=0.25, lines=400):
    """A multi-line reply sent a line every ``interval`` seconds."""
    def reply(send):
        send(first + b'\r\n')
        for _ in range(lines):
            time.sleep(interval)
            send(line + b'\r\n')
        send(first[:3] + b' end\r\n')
    return reply


@pytest.mark.parametrize('verb', ['FEAT', 'SIZE'])
def test_a_trickled_reply_ends_at_total_timeout(dest, make_conf, verb):
    """A line every 0.25 s: each read is within io_timeout, the call is not.

    Before, the login (FEAT) or the stat (SIZE) ran for as long as the
    server trickled (400 lines: 100 s).
    """
    code = b'211' if verb == 'FEAT' else b'213'
    script = dict(LOGIN, SIZE=b'213 100', MDTM=b'213 20240101000000')
    script[verb] = _trickle(code + b'-here it comes', b' one more line')
    total, io = 2.0, 1.0
    with ftpservers.HostileFTP(script) as srv:
        started = time.monotonic()
        with pytest.raises(exc.TransferError) as ei:
            oslo_transfer.copy(srv.url('img'), dest, conf=make_conf(
                oslo_transfer={'total_timeout': total, 'io_timeout': io,
                               'retries': 3, 'retry_backoff': 0.1}))
        took = time.monotonic() - started
    e = ei.value
    assert type(e) is exc.TransferTimeout, repr(e)
    assert 'ran out of time ([oslo_transfer] total_timeout)' in str(e)
    assert not e.retryable
    assert 'pw-5e0b' not in str(e)
    # Loosely: the deadline, an I/O timeout, and room for a busy machine.
    assert took < total + io + 5, took
    assert srv.commands.count(verb) == 1, 'retried past the deadline'
    fconf.assert_nothing_left(dest)
