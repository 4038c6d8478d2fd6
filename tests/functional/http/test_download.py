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

"""Downloads from a real nginx: checksums, segments, redirects, if_exists."""

import os
import stat

import pytest

import oslo_transfer
from oslo_transfer import exceptions as exc
from tests.functional import conftest as fconf

MiB = fconf.MiB


@pytest.mark.parametrize('algo', ['sha256', 'md5', 'sha512'])
def test_download_verified(nginx, serve, dest, algo):
    src = serve(3 * MiB + 17)
    url = nginx.url(src.name)
    calls = []

    r = oslo_transfer.copy(url, dest, checksum=src.checksum(algo),
                           progress=lambda d, t: calls.append((d, t)))

    fconf.assert_only_dest(dest, src.data)
    assert r.bytes_transferred == src.size
    assert r.bytes_resumed == 0
    assert r.size == src.size
    assert r.driver == 'http'
    assert r.url == url
    assert r.algorithm == algo
    assert r.digest == getattr(src, algo)
    assert r.plan.candidates[0].driver == 'http'
    assert r.plan.candidates[0].reason
    assert calls and calls[-1] == (src.size, src.size)


def test_download_glance_os_hash_pair(nginx, serve, dest):
    src = serve(2 * MiB)
    r = oslo_transfer.copy(nginx.url(src.name), dest,
                           checksum={'os_hash_algo': 'sha512',
                                     'os_hash_value': src.sha512})
    fconf.assert_only_dest(dest, src.data)
    assert (r.algorithm, r.digest) == ('sha512', src.sha512)


def test_download_without_checksum_reports_sha256(nginx, serve, dest):
    src = serve(1 * MiB + 1)
    r = oslo_transfer.copy(nginx.url(src.name), dest)
    fconf.assert_only_dest(dest, src.data)
    assert (r.algorithm, r.digest) == ('sha256', src.sha256)


def test_download_parallel_segments(nginx, serve, dest, make_conf):
    src = serve(9 * MiB + 5)
    conf = make_conf(oslo_transfer={'segment_threshold': 0,
                                    'segment_size': MiB})
    r = oslo_transfer.copy(nginx.url(src.name), dest,
                           checksum=src.checksum(), segments=4, conf=conf)
    fconf.assert_only_dest(dest, src.data)
    assert r.bytes_transferred == src.size
    ranged = [line for line in nginx.requests_for(src.name)
              if line.startswith('GET') and ' 206 ' in line]
    # 9 MiB + 5 bytes in 1 MiB pieces: at least 10 ranged requests.
    assert len(ranged) >= 10, nginx.requests_for(src.name)


def test_download_empty_file(nginx, serve, dest):
    src = serve(0)
    r = oslo_transfer.copy(nginx.url(src.name), dest,
                           checksum=src.checksum())
    fconf.assert_only_dest(dest, b'')
    assert r.size == 0


def test_download_follows_redirect(nginx, serve, dest):
    src = serve(MiB)
    oslo_transfer.copy(nginx.url(src.name, 'redirect'), dest,
                       checksum=src.checksum())
    fconf.assert_only_dest(dest, src.data)


def test_redirect_loop_is_capped(nginx, dest):
    url = nginx.url('x', 'loop')
    with pytest.raises(exc.TransferError) as ei:
        oslo_transfer.copy(url, dest)
    assert 'redirect' in str(ei.value).lower()
    assert '127.0.0.1:%d' % nginx.port in str(ei.value)
    fconf.assert_nothing_left(dest)
    # max_redirects = 5 by default: a handful of requests, not hundreds.
    assert len(nginx.requests_for('again')) <= 10


def test_mode_is_applied(nginx, serve, dest):
    src = serve(4096)
    oslo_transfer.copy(nginx.url(src.name), dest, checksum=src.checksum(),
                       mode=0o640)
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o640


def test_existing_matching_destination_is_kept(nginx, serve, dest):
    src = serve(2 * MiB)
    url = nginx.url(src.name)
    oslo_transfer.copy(url, dest, checksum=src.checksum())
    ino = os.stat(dest).st_ino
    before = len(nginx.requests_for(src.name))

    r = oslo_transfer.copy(url, dest, checksum=src.checksum())

    assert r.bytes_transferred == 0
    assert r.digest == src.sha256
    assert os.stat(dest).st_ino == ino
    gets = [line for line in nginx.requests_for(src.name)[before:]
            if line.startswith('GET')]
    assert gets == []
    fconf.assert_only_dest(dest, src.data)


def test_existing_different_destination(nginx, serve, dest):
    src = serve(MiB)
    url = nginx.url(src.name)
    with open(dest, 'wb') as f:
        f.write(b'something else entirely')

    with pytest.raises(exc.DestinationExists) as ei:
        oslo_transfer.copy(url, dest, checksum=src.checksum())
    assert dest in str(ei.value)
    with open(dest, 'rb') as f:
        assert f.read() == b'something else entirely'

    with pytest.raises(exc.DestinationExists):
        oslo_transfer.copy(url, dest, checksum=src.checksum(),
                           if_exists='error')

    r = oslo_transfer.copy(url, dest, checksum=src.checksum(),
                           if_exists='replace')
    assert r.bytes_transferred == src.size
    fconf.assert_only_dest(dest, src.data)


def test_transfer_object_with_conf(nginx, serve, dest, make_conf):
    src = serve(MiB)
    conf = make_conf(oslo_transfer={'chunk_size': 65536})
    with oslo_transfer.Transfer(conf) as t:
        plan = t.plan(nginx.url(src.name), dest)
        assert plan.candidates[0].driver == 'http'
        r = t.copy(nginx.url(src.name), dest, checksum=src.checksum())
    assert r.driver == 'http'
    fconf.assert_only_dest(dest, src.data)


def test_source_with_several_locations_falls_back(nginx, serve, dest,
                                                  make_conf):
    src = serve(MiB)
    conf = make_conf(oslo_transfer={'retries': 0})
    source = oslo_transfer.Source(urls=[nginx.url('missing-' + src.name),
                                        nginx.url(src.name)],
                                  size=src.size, checksum=src.checksum())
    r = oslo_transfer.copy(source, dest, conf=conf)
    fconf.assert_only_dest(dest, src.data)
    assert r.url == nginx.url(src.name)
    assert r.attempts and 'missing-' in r.attempts[0][0]
