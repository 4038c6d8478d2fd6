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

"""``open()`` streaming reads and ``upload()`` by PUT to nginx's dav module."""

import hashlib
import io
import os

import pytest

import oslo_transfer
from oslo_transfer import exceptions as exc
from tests.functional import conftest as fconf
from tests.functional.http import badserver as bad

MiB = fconf.MiB


# -- open() -------------------------------------------------------------------

def test_open_iterate_whole_object(nginx, serve):
    src = serve(3 * MiB + 11)
    with oslo_transfer.open(nginx.url(src.name),
                            checksum=src.checksum()) as reader:
        got = b''.join(reader)
    assert got == src.data


def test_open_read_n(nginx, serve):
    src = serve(2 * MiB + 7)
    parts = []
    with oslo_transfer.open(nginx.url(src.name)) as reader:
        while True:
            b = reader.read(100000)
            if not b:
                break
            assert len(b) <= 100000
            parts.append(b)
    assert b''.join(parts) == src.data


@pytest.mark.parametrize('offset,length', [(0, 10), (MiB + 3, 5000),
                                           (123, None), (2 * MiB - 1, 1)])
def test_open_range(nginx, serve, offset, length):
    src = serve(2 * MiB)
    with oslo_transfer.open(nginx.url(src.name), offset=offset,
                            length=length) as reader:
        got = reader.read()
    end = None if length is None else offset + length
    assert got == src.data[offset:end]
    line = [ln for ln in nginx.requests_for(src.name)
            if ln.startswith('GET')][-1]
    assert 'range=bytes=%d-' % offset in line, line


def test_open_checksum_mismatch_raises_from_final_read(nginx, serve):
    src = serve(2 * MiB)
    wrong = 'sha256:' + hashlib.sha256(b'nope').hexdigest()
    got = []
    with pytest.raises(exc.ChecksumMismatch) as ei:
        with oslo_transfer.open(nginx.url(src.name),
                                checksum=wrong) as reader:
            for chunk in reader:
                got.append(chunk)
    assert src.sha256 in str(ei.value)
    # Every byte before the end was delivered; the error came at the end.
    assert sum(len(c) for c in got) >= src.size - 4 * MiB
    assert b''.join(got) == src.data[:len(b''.join(got))]


def test_open_checksum_matches_with_read_n(nginx, serve):
    src = serve(MiB + 1)
    with oslo_transfer.open(nginx.url(src.name),
                            checksum=src.checksum('md5')) as reader:
        data = b''
        while True:
            b = reader.read(4096 * 3)
            if not b:
                break
            data += b
    assert data == src.data


def test_open_not_found(nginx):
    url = nginx.url('nothing-here')
    with pytest.raises(exc.SourceNotFound) as ei:
        with oslo_transfer.open(url) as reader:
            reader.read()
    assert url in str(ei.value)


def test_open_resumes_after_a_cut(badserver, make_conf):
    data = os.urandom(3 * MiB)
    badserver.add('cut', bad.Resource(data, faults=[bad.Truncate(MiB)]))
    conf = make_conf(oslo_transfer={'retries': 2, 'retry_backoff': 0})
    with oslo_transfer.open(badserver.url('cut'), conf=conf,
                            checksum='sha256:' + hashlib.sha256(
                                data).hexdigest()) as reader:
        got = b''.join(reader)
    assert got == data
    gets = badserver.requests_for('cut', 'GET')
    assert len(gets) == 2
    assert gets[1].range == 'bytes=%d-' % MiB or \
        gets[1].range.startswith('bytes=%d-' % MiB), gets[1].range


def test_open_source_changed_mid_stream(badserver, make_conf):
    """A cut, then a new version: the reader must not splice the two."""
    old, new = os.urandom(2 * MiB), os.urandom(2 * MiB)
    badserver.add('img', bad.Resource(old, faults=[
        bad.Truncate(MiB), bad.Replace(new, '"v2"')]))
    conf = make_conf(oslo_transfer={'retries': 2, 'retry_backoff': 0})
    got = b''
    with pytest.raises(exc.TransferError):
        with oslo_transfer.open(badserver.url('img'), conf=conf) as reader:
            for chunk in reader:
                got += chunk
    assert got == old[:len(got)]


# -- upload() ---------------------------------------------------------------

def _uploaded(nginx, name):
    return os.path.join(nginx.upload_dir, name)


def test_upload_from_path(nginx, tmp_path):
    src = fconf.make_data_file(tmp_path, 'up.raw', 5 * MiB + 3)
    url = nginx.url('images/a/up.raw', 'dav')
    r = oslo_transfer.upload(src.path, url, checksum=src.checksum())
    assert fconf.file_equals(_uploaded(nginx, 'images/a/up.raw'), src.data)
    assert r.bytes_transferred == src.size
    assert r.digest == src.sha256
    assert r.url == url


def test_upload_from_file_object(nginx, tmp_path):
    src = fconf.make_data_file(tmp_path, 'up.raw', 2 * MiB)
    url = nginx.url('fobj.raw', 'dav')
    with open(src.path, 'rb') as f:
        oslo_transfer.upload(f, url, size=src.size,
                             checksum=src.checksum('md5'))
    assert fconf.file_equals(_uploaded(nginx, 'fobj.raw'), src.data)


def test_upload_from_iterable_of_unknown_size(nginx):
    data = os.urandom(3 * MiB + 5)
    chunks = (data[i:i + 100000] for i in range(0, len(data), 100000))
    url = nginx.url('iter.raw', 'dav')
    r = oslo_transfer.upload(chunks, url,
                             checksum='sha256:' + hashlib.sha256(
                                 data).hexdigest())
    assert fconf.file_equals(_uploaded(nginx, 'iter.raw'), data)
    assert r.bytes_transferred == len(data)


def test_upload_checksum_mismatch_never_completes(nginx, tmp_path):
    src = fconf.make_data_file(tmp_path, 'up.raw', 3 * MiB)
    url = nginx.url('bad-upload.raw', 'dav')
    wrong = 'sha256:' + hashlib.sha256(b'x').hexdigest()
    with pytest.raises(exc.ChecksumMismatch) as ei:
        oslo_transfer.upload(src.path, url, checksum=wrong)
    assert src.sha256 in str(ei.value)
    assert not os.path.exists(_uploaded(nginx, 'bad-upload.raw'))

    with pytest.raises(exc.ChecksumMismatch):
        oslo_transfer.upload(io.BytesIO(src.data), url, checksum=wrong)
    assert not os.path.exists(_uploaded(nginx, 'bad-upload.raw'))


def test_upload_to_forbidden_location(nginx, tmp_path, make_conf):
    src = fconf.make_data_file(tmp_path, 'up.raw', 1000)
    url = nginx.url('x.raw', 'forbidden')
    with pytest.raises(exc.PermissionDenied) as ei:
        oslo_transfer.upload(src.path, url,
                             conf=make_conf(oslo_transfer={'retries': 0}))
    assert url in str(ei.value)


def test_copy_http_to_http(nginx, serve):
    """copy() with a URL destination streams from one to the other."""
    src = serve(2 * MiB)
    url = nginx.url('copied/c.raw', 'dav')
    oslo_transfer.copy(nginx.url(src.name), url, checksum=src.checksum())
    assert fconf.file_equals(_uploaded(nginx, 'copied/c.raw'), src.data)


def test_copy_local_file_to_http(nginx, tmp_path):
    src = fconf.make_data_file(tmp_path, 'local.raw', MiB)
    url = nginx.url('from-local.raw', 'dav')
    oslo_transfer.copy(src.path, url, checksum=src.checksum())
    assert fconf.file_equals(_uploaded(nginx, 'from-local.raw'), src.data)


# -- PUT framing and the held-back last chunk -------------------------------

def _puts(nginx, name):
    return nginx.wait_for_requests(name, 'PUT')


def test_upload_of_known_size_sends_content_length(nginx, tmp_path):
    src = fconf.make_data_file(tmp_path, 'cl.raw', 2 * MiB + 5)
    for i, data in enumerate((src.path, io.BytesIO(src.data))):
        name = 'sized-%d-%d.raw' % (os.getpid(), i)
        oslo_transfer.upload(data, nginx.url(name, 'dav'),
                             checksum=src.checksum())
        assert fconf.file_equals(_uploaded(nginx, name), src.data)
        put = _puts(nginx, name)[-1]
        assert nginx.field(put, 'cl') == str(src.size), put
        assert nginx.field(put, 'te') == '-', put


def test_upload_of_unknown_size_is_chunked(nginx):
    data = os.urandom(MiB + 9)
    chunks = (data[i:i + 65536] for i in range(0, len(data), 65536))
    name = 'chunked-%d.raw' % os.getpid()
    oslo_transfer.upload(chunks, nginx.url(name, 'dav'))
    assert fconf.file_equals(_uploaded(nginx, name), data)
    put = _puts(nginx, name)[-1]
    assert nginx.field(put, 'te') == 'chunked', put
    assert nginx.field(put, 'cl') == '-', put


def test_sized_upload_with_wrong_checksum_never_completes(nginx, tmp_path):
    """A PUT with Content-Length and a wrong checksum leaves nothing.

    nginx completes a PUT whose body arrived whole, so only holding the
    last chunk back keeps a corrupt upload off the server.
    """
    src = fconf.make_data_file(tmp_path, 'up.raw', 3 * MiB + 1)
    wrong = 'sha256:' + hashlib.sha256(b'x').hexdigest()
    for i, data in enumerate((src.path, io.BytesIO(src.data))):
        name = 'bad-sized-%d-%d.raw' % (os.getpid(), i)
        with pytest.raises(exc.ChecksumMismatch):
            oslo_transfer.upload(data, nginx.url(name, 'dav'),
                                 size=src.size, checksum=wrong)
        # nginx logs the PUT once it is done with it (file stored or not).
        puts = _puts(nginx, name)
        assert puts, 'nginx never logged the PUT'
        assert not os.path.exists(_uploaded(nginx, name)), \
            'a corrupt upload completed on the server'
        for put in puts:
            assert nginx.field(put, 'cl') == str(src.size), put
            assert put.split(' ')[2] not in ('200', '201', '204'), put


def test_upload_longer_than_announced_never_completes(nginx):
    """Data longer than the announced size leaves nothing on the server.

    With Content-Length the server stores the first ``size`` bytes as a
    whole object unless the last of them is never sent.
    """
    data = os.urandom(2 * MiB)
    name = 'too-long-%d.raw' % os.getpid()
    chunks = iter([data[:MiB], data[MiB:]])
    with pytest.raises(exc.SizeMismatch):
        oslo_transfer.upload(chunks, nginx.url(name, 'dav'), size=MiB)
    puts = _puts(nginx, name)
    assert puts, 'nginx never logged the PUT'
    assert not os.path.exists(_uploaded(nginx, name)), \
        'the first MiB was stored as the whole object'
    assert puts[-1].split(' ')[2] not in ('200', '201', '204'), puts
