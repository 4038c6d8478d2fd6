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

"""FTP replies from a hostile server, parsed strictly."""

import ftplib

import hypothesis
from hypothesis import strategies as st
import pytest

from oslo_transfer._drivers.ftp import replies
from oslo_transfer._drivers.ftp import session as ftp_session
from oslo_transfer import exceptions
from oslo_transfer import locations

LOC = locations.Location('ftp://alice:S3cret@192.0.2.5/f')

# What a server may send: any text (decoded with errors='replace'), and
# text built from the pieces that parsers trip on.
_REPLIES = st.one_of(
    st.text(max_size=120),
    st.builds(lambda code, parts: code + ''.join(parts),
              st.sampled_from(['213 ', '229 ', '227 ', '150 ', '211-',
                               '2\u00b913 ', '550 ']),
              st.lists(st.sampled_from([
                  '0', '9', '1', '255', '256', '65535', '65536',
                  '\u0663', '\u00b2', '_', ',', '.', '(', ')', '|', ' ',
                  '-', 'bytes', '99999999999999999999', '20240102030405',
                  '\n']), max_size=16)),
)


@pytest.mark.parametrize('text,code', [
    ('550 No such file', 550), ('226-Transfer', 226), ('421', 421),
    ('\u00b2\u00b2\u00b2 x', None), ('612 x', None), ('55 x', None),
    ('5500 x', None), ('', None), (None, None),
])
def test_code(text, code):
    assert replies.code(text) == code


@pytest.mark.parametrize('text,size', [
    ('213 0', 0), ('213 1048576', 1048576), ('213 1048576 ', 1048576),
    ('213 %d' % replies.MAX_SIZE, replies.MAX_SIZE),
])
def test_size(text, size):
    assert replies.size(text) == size


@pytest.mark.parametrize('text', [
    '213 -5', '213 1_000', '213 \u0663\u0664', '213 1e9', '213',
    '213 %d' % (replies.MAX_SIZE + 1), '200 5', '213 5 6',
])
def test_bad_size(text):
    with pytest.raises(replies.ReplyError) as ei:
        replies.size(text)
    assert 'SIZE' in str(ei.value)


def test_mdtm():
    assert replies.mdtm('213 20240102030405') == (
        1704164645.0, '20240102030405')
    assert replies.mdtm('213 20240102030405.250') == (
        1704164645.25, '20240102030405.250')
    for bad in ('213 yesterday', '213 20241302030405', '213 2024010203',
                '213 \u0662\u0660\u0662\u0664'):
        with pytest.raises(replies.ReplyError):
            replies.mdtm(bad)


@pytest.mark.parametrize('text,port', [
    ('229 Entering Extended Passive Mode (|||6446|)', 6446),
    ('229 ok (!!!21!)', 21),
    ('227 Entering Passive Mode (10,0,0,9,4,1)', 1025),
    ('227 =127,0,0,1,255,255', 65535),
])
def test_passive_ports(text, port):
    if text.startswith('229'):
        assert replies.epsv_port(text) == port
    else:
        assert replies.pasv(text)[1] == port


@pytest.mark.parametrize('text', [
    '229 (|||0|)', '229 (|||65536|)', '229 (|||\u0663|)', '229 (||6|)',
    '229 (|!|6|)', '227 (10,0,0,9,256,1)', '227 (10,0,0,9,0,0)',
    '227 (1,2,3)', '227 (\u0661,0,0,9,4,1)',
])
def test_bad_passive_replies(text):
    parse = replies.epsv_port if text.startswith('229') else replies.pasv
    with pytest.raises(replies.ReplyError):
        parse(text)


def test_size_of_150():
    assert replies.size_150('150 Opening BINARY (1234 bytes)') == 1234
    assert replies.size_150('150 Opening (\u0661 bytes)') is None
    assert replies.size_150('150 ok (%d bytes)' % (2 ** 64)) is None
    assert replies.size_150('125 Data connection open') is None


def test_a_reply_error_is_a_protocol_error():
    err = ftp_session.translate(replies.ReplyError('malformed SIZE reply'),
                                LOC, 'SIZE')
    assert type(err) is exceptions.ProtocolError
    assert not err.retryable
    assert 'S3cret' not in str(err)


class _Lines:
    """A control connection that sends the same line for ever."""

    def __init__(self, first, line):
        self.first, self.line, self.read = first, line, 0

    def getline(self):
        self.read += 1
        return self.first if self.read == 1 else self.line


class _Endless(ftp_session._ClientMixin, _Lines):
    pass


def test_an_endless_multi_line_reply_is_bounded():
    ctl = _Endless('211-Features:', ' MORE' * 10)
    with pytest.raises(replies.ReplyError) as ei:
        ctl.getmultiline()
    assert ctl.read == replies.MAX_REPLY_LINES + 1
    assert 'multi-line reply' in str(ei.value)
    ctl = _Endless('211-Features:', 'x' * 8000)
    with pytest.raises(replies.ReplyError):
        ctl.getmultiline()
    assert ctl.read * 8000 < 2 * replies.MAX_REPLY_BYTES


def test_a_multi_line_reply_ends_at_its_code():
    class Ctl(ftp_session._ClientMixin):
        def __init__(self):
            self.lines = iter(['211-Features:', ' SIZE', ' MDTM', '211 End'])

        def getline(self):
            return next(self.lines)

    assert Ctl().getmultiline() == '211-Features:\n SIZE\n MDTM\n211 End'


@hypothesis.given(_REPLIES)
def test_reply_parsers_take_anything(text):
    for parse, low, high in ((replies.size, 0, replies.MAX_SIZE),
                             (replies.epsv_port, 1, 65535),
                             (lambda t: replies.pasv(t)[1], 1, 65535)):
        try:
            value = parse(text)
        except replies.ReplyError:
            continue
        assert low <= value <= high
    try:
        replies.mdtm(text)
    except replies.ReplyError:
        pass
    value = replies.size_150(text)
    assert value is None or 0 <= value <= replies.MAX_SIZE
    code = replies.code(text)
    assert code is None or 100 <= code < 600
    assert isinstance(replies.features(text), set)


@hypothesis.given(_REPLIES)
def test_translate_takes_any_reply(text):
    for cls in (ftplib.error_perm, ftplib.error_temp, ftplib.error_reply,
                ftplib.error_proto, replies.ReplyError):
        err = ftp_session.translate(cls(text), LOC, 'RETR')
        assert isinstance(err, exceptions.TransferError)
        assert 'S3cret' not in str(err)
