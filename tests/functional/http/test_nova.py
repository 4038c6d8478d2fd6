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

"""Nova's image cache against nginx: failover, waiters, request context.

The guide's example (``tests/functional/doc_nova.py``) runs here.
"""

import hashlib
import json
import logging
import os
import threading

from oslo_context import context as context_mod
import pytest

import oslo_transfer
from oslo_transfer.engine import verified
from oslo_transfer import exceptions
from tests.functional import conftest as fconf
from tests.functional import doc_nova

MiB = fconf.MiB


@pytest.fixture
def transfer(make_conf):
    """The defaults a service has: retries 5, backoff 1 s."""
    t = oslo_transfer.Transfer(make_conf(oslo_transfer={
        'retries': 5, 'retry_backoff': 1.0}))
    yield t
    t.close()


def _hits(nginx, location, name):
    """Requests that reached ``/location/name`` (HEAD and GET)."""
    return [ln for ln in nginx.settled_requests_for(name)
            if ln.split(' ')[1] == '/%s/%s' % (location, name)]


def _image(src, nginx):
    return {'id': src.name, 'size': src.size, 'os_hash_algo': 'sha512',
            'os_hash_value': hashlib.sha512(src.data).hexdigest(),
            'locations': [{'url': nginx.url(src.name, 'unavailable')},
                          {'url': nginx.url(src.name)}]}


def test_copy_fails_over_after_one_quick_retry(nginx, serve, transfer,
                                               tmp_path):
    """Before: 1+2+4+8+16 s of retries on a 503 primary (6 requests)."""
    src = serve(2 * MiB)
    source = oslo_transfer.Source(urls=[nginx.url(src.name, 'unavailable'),
                                        nginx.url(src.name)])
    (tmp_path / 'out').mkdir()
    dest = str(tmp_path / 'out' / 'img')
    r = transfer.copy(source, dest, checksum=src.checksum())
    assert r.url == nginx.url(src.name)
    assert len(r.attempts) == 1 and '503' in r.attempts[0][2]
    assert len(_hits(nginx, 'unavailable', src.name)) == 2
    fconf.assert_only_dest(dest, src.data)


def test_open_fails_over_after_one_quick_retry(nginx, serve, transfer):
    src = serve(MiB + 5)
    source = oslo_transfer.Source(urls=[nginx.url(src.name, 'unavailable'),
                                        nginx.url(src.name)])
    with transfer.open(source, checksum=src.checksum()) as reader:
        assert reader.read() == src.data
    assert len(_hits(nginx, 'unavailable', src.name)) == 2


def test_last_location_gets_the_calls_retries(nginx, serve, transfer,
                                              tmp_path):
    src = serve(4096)
    dest = str(tmp_path / 'img')
    with pytest.raises(exceptions.ProtocolError) as ei:
        transfer.copy(nginx.url(src.name, 'unavailable'), dest,
                      retries=2, retry_backoff=0.05)
    assert '503' in str(ei.value)
    assert len(_hits(nginx, 'unavailable', src.name)) == 3
    fconf.assert_nothing_left(dest)
    with pytest.raises(exceptions.ProtocolError):
        transfer.open(nginx.url(src.name, 'unavailable'), retries=1,
                      retry_backoff=0.05)
    assert len(_hits(nginx, 'unavailable', src.name)) == 5
    with pytest.raises(ValueError, match='retries must be'):
        transfer.copy(nginx.url(src.name), dest, retries=-1)


def test_guide_example_eight_threads_one_download(nginx, serve, transfer,
                                                  tmp_path, caplog):
    """One thread downloads; seven wait and take its verified digest."""
    src = serve(8 * MiB + 3)
    image = _image(src, nginx)
    base = tmp_path / '_base'
    base.mkdir()
    seen = {}
    errors = []

    def boot(i):
        ctx = context_mod.RequestContext(request_id='req-%d' % i)
        calls = seen.setdefault(i, [])

        def progress(done, total):
            current = context_mod.get_current()
            calls.append((done, total, current and current.request_id))

        try:
            doc_nova.fetch_to_base(transfer, ctx, image, str(base),
                                   progress=progress)
        except Exception as exc:  # noqa: reported below
            errors.append(exc)

    # (another test of this process may have left a context current here)
    before = context_mod.get_current()
    caplog.set_level(logging.DEBUG, logger='oslo_transfer.engine.download')
    threads = [threading.Thread(target=boot, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    dest = str(base / src.name)
    fconf.assert_only_dest(dest, src.data)
    assert oct(os.stat(dest).st_mode & 0o777) == '0o644'
    # One download: the seven others moved nothing.
    assert src.size <= nginx.bytes_sent_for(src.name) < 2 * src.size
    not_read = [r for r in caplog.records if 'not read again' in r.message]
    assert len(not_read) == 7
    for i, calls in seen.items():
        assert calls, 'thread %d got no progress' % i
        assert calls[-1][:2] == (src.size, src.size)
        assert {c[2] for c in calls} == {'req-%d' % i}
    # the callbacks' contexts never leak into the calling thread
    assert context_mod.get_current() is before


def test_digest_kept_with_the_file(nginx, serve, transfer, tmp_path,
                                   caplog):
    """Another process trusts the xattr while size, mtime, inode hold."""
    src = serve(MiB)
    dest = str(tmp_path / 'img')
    transfer.copy(nginx.url(src.name), dest, checksum=src.checksum())
    rec = json.loads(os.getxattr(dest, verified.XATTR))
    st = os.stat(dest)
    assert rec == {'key': [st.st_size, st.st_mtime_ns, st.st_ino],
                   'digests': {'sha256': src.sha256}}
    caplog.set_level(logging.DEBUG, logger='oslo_transfer.engine.download')
    verified._KNOWN.clear()  # as in another process
    r = transfer.copy(nginx.url(src.name), dest, checksum=src.checksum())
    assert r.bytes_transferred == 0 and r.digest == src.sha256
    assert any('not read again' in m for m in caplog.messages)
    # Rewritten in place, same size: the record no longer holds.
    with open(dest, 'r+b') as f:
        f.write(b'X')
    verified._KNOWN.clear()
    with pytest.raises(exceptions.DestinationExists) as ei:
        transfer.copy(nginx.url(src.name), dest, checksum=src.checksum())
    assert 'differs from %s' % src.sha256 in str(ei.value)
