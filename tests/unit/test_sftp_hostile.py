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


"""SFTP attributes, answers and statuses from a hostile server.

Properties (hypothesis, the seeded ``ci`` profile; ``tools/fuzz.sh`` runs
them longer): whatever bytes a server sends as file attributes, as the
answer to a read or as a status, only the driver's documented errors come
out (a ``TransferError`` once translated: ``ProtocolError`` for what SFTP
does not allow, never ``ValueError``, ``OverflowError`` or
``struct.error``); a claimed count or length is never looped over,
waited for nor allocated beyond what arrived; a size of 2**63 or more is a
``ProtocolError`` from the engine's one size check.
"""

import struct

import hypothesis
from hypothesis import strategies as st
import paramiko
from paramiko import message as pmessage
import pytest

from oslo_transfer._drivers.sftp import attrs as attrs_mod
from oslo_transfer._drivers.sftp import driver as sftp_driver
from oslo_transfer._drivers.sftp import pipeline as pipe
from oslo_transfer._drivers.sftp import session as sftp_session
from oslo_transfer.engine import sizes
from oslo_transfer import exceptions
from oslo_transfer import locations

LOC = locations.Location('sftp://user:pw-77aa@host/img')
U32 = st.integers(min_value=0, max_value=2 ** 32 - 1)
U64 = st.integers(min_value=0, max_value=2 ** 64 - 1)


def _check_attrs(a):
    for name in ('st_uid', 'st_gid', 'st_mode', 'st_atime', 'st_mtime'):
        value = getattr(a, name)
        assert value is None or 0 <= value < 2 ** 32
    assert a.st_size is None or 0 <= a.st_size < 2 ** 64


# -- attributes ---------------------------------------------------------------

@hypothesis.given(data=st.binary(max_size=300))
def test_any_attribute_bytes_parse_or_are_bad_attributes(data):
    try:
        a = attrs_mod.parse(data)
    except attrs_mod.BadAttributes:
        return
    _check_attrs(a)
    # Every extended attribute came from the bytes: none from padding.
    assert sum(8 + len(k) + len(v) for k, v in a.attr.items()) <= len(data)


@hypothesis.given(flags=U32, count=U32, tail=st.binary(max_size=64))
def test_a_claimed_count_is_bounded_by_the_bytes(flags, count, tail):
    """Linear time: never more extended attributes than bytes allow."""
    data = struct.pack('>I', flags | attrs_mod.FLAG_EXTENDED)
    data += b'\0' * 36 + struct.pack('>I', count) + tail
    try:
        a = attrs_mod.parse(data)
    except attrs_mod.BadAttributes:
        return
    assert len(a.attr) <= len(data) // 8


def test_two_to_the_32_extended_attributes_in_an_empty_answer():
    """paramiko's parser loops 2**32 - 1 times on this (zero padding)."""
    data = struct.pack('>II', attrs_mod.FLAG_EXTENDED, 2 ** 32 - 1)
    with pytest.raises(attrs_mod.BadAttributes):
        attrs_mod.parse(data)


@hypothesis.given(size=st.none() | U64, uid=st.none() | U32,
                  mode=st.none() | U32, times=st.none() | st.tuples(U32, U32),
                  extended=st.dictionaries(st.binary(max_size=8),
                                           st.binary(max_size=8),
                                           max_size=3))
def test_what_paramiko_writes_parses_the_same(size, uid, mode, times,
                                              extended):
    """The same fields as paramiko's parser, for well-formed attributes."""
    a = paramiko.SFTPAttributes()
    if size is not None:
        a.st_size = size
    if uid is not None:
        a.st_uid, a.st_gid = uid, uid
    if mode is not None:
        a.st_mode = mode
    if times is not None:
        a.st_atime, a.st_mtime = times
    a.attr = {k.decode('latin-1'): v.decode('latin-1')
              for k, v in extended.items()}
    msg = pmessage.Message()
    a._pack(msg)
    blob = msg.asbytes()
    ours = attrs_mod.parse(blob)
    theirs = paramiko.SFTPAttributes._from_msg(pmessage.Message(blob))
    for name in ('st_size', 'st_uid', 'st_gid', 'st_mode', 'st_atime',
                 'st_mtime'):
        assert getattr(ours, name) == getattr(theirs, name), name


_SIZES = st.none() | U64 | st.sampled_from([2 ** 63 - 1, 2 ** 63,
                                           2 ** 64 - 1])


@hypothesis.given(size=_SIZES, mode=st.none() | U32, mtime=st.none() | U32)
def test_any_stat_is_a_stat_or_a_typed_error(size, mode, mtime):
    a = attrs_mod.Attributes()
    a.st_size, a.st_mode, a.st_mtime = size, mode, mtime
    try:
        st_ = sizes.checked_stat(sftp_driver.stat_result(a, LOC), LOC)
    except exceptions.TransferError as exc:
        assert 'pw-77aa' not in str(exc)
        if size is not None and size > 2 ** 63 - 1:
            assert isinstance(exc, (exceptions.ProtocolError,
                                    exceptions.SourceNotFound))
        return
    assert size is None or size <= 2 ** 63 - 1
    assert st_.size == size


def test_a_size_of_two_to_the_63_is_a_protocol_error():
    a = attrs_mod.parse(struct.pack('>IQ', attrs_mod.FLAG_SIZE, 2 ** 63))
    with pytest.raises(exceptions.ProtocolError) as ei:
        sizes.checked_stat(sftp_driver.stat_result(a, LOC), LOC)
    assert not ei.value.retryable
    assert 'pw-77aa' not in str(ei.value)


def test_bad_attributes_are_a_protocol_error():
    exc = attrs_mod.BadAttributes('the attributes end inside a field')
    err = sftp_session.translate(exc, LOC, 'stat')
    assert type(err) is exceptions.ProtocolError
    assert not err.retryable
    assert 'pw-77aa' not in str(err)


# -- read answers and statuses ------------------------------------------------

class ScriptedChannel:
    """Answers the first request with ``reply(rid)``, then nothing (EOF)."""

    def __init__(self, reply):
        self.reply = reply
        self.out = b''
        self.asked = 0

    def sendall(self, data):
        if not self.out and not self.asked:
            rid = struct.unpack_from('>IBI', data)[2]
            self.out = self.reply(rid)
        self.asked += 1

    def recv(self, n):
        got, self.out = self.out[:n], self.out[n:]
        return got


_EXPECTED = (pipe.PipelineError, pipe.StatusError, pipe.ShortFile, EOFError)


def _read(chan, length=4096):
    return b''.join(pipe.read(chan, b'h', 0, length, 4096, 1, 65536))


@hypothesis.given(length=U32, ptype=st.integers(min_value=0, max_value=255),
                  body=st.binary(max_size=200))
def test_any_answer_to_a_read_is_data_or_a_documented_error(length, ptype,
                                                            body):
    chan = ScriptedChannel(
        lambda rid: struct.pack('>IBI', length, ptype, rid) + body)
    try:
        data = _read(chan)
    except _EXPECTED as exc:
        if length > pipe.MAX_ANSWER or length < 5:
            # Refused from the header: the body was never waited for.
            assert isinstance(exc, pipe.PipelineError), repr(exc)
        err = sftp_session.translate(exc, LOC, 'read')
        assert isinstance(err, exceptions.TransferError)
        assert 'pw-77aa' not in str(err)
        return
    assert len(data) <= 4096


@hypothesis.given(code=U32, text=st.binary(max_size=64),
                  claimed=U32)
def test_any_status_is_a_typed_error(code, text, claimed):
    def reply(rid):
        body = struct.pack('>BII', pipe.FXP_STATUS, rid, code)
        body += struct.pack('>I', claimed) + text
        return struct.pack('>I', len(body)) + body
    try:
        _read(ScriptedChannel(reply))
    except _EXPECTED as exc:
        err = sftp_session.translate(exc, LOC, 'read')
        assert isinstance(err, exceptions.TransferError)
        if code == pipe.FX_EOF:
            return
        assert not err.retryable or isinstance(
            err, exceptions.ConnectionFailed)
        return
    raise AssertionError('a lone status answered a read of 4096 bytes')


def test_an_answer_claiming_four_gib_is_not_waited_for():
    chan = ScriptedChannel(
        lambda rid: struct.pack('>IBI', 2 ** 32 - 1, pipe.FXP_DATA, rid))
    with pytest.raises(pipe.PipelineError, match='4294967295'):
        _read(chan)
