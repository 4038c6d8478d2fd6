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

"""``stat`` of servers that refuse HEAD, and ``If-Range`` on ranged reads."""

import email.utils
import hashlib
import os

import pytest

import oslo_transfer
from oslo_transfer import exceptions as exc
from tests.functional import conftest as fconf
from tests.functional.http import badserver as bad

MiB = fconf.MiB


def _sha(data):
    return 'sha256:' + hashlib.sha256(data).hexdigest()


# -- stat when HEAD is refused ----------------------------------------------

@pytest.mark.parametrize('status', [403, 400, 405])
def test_head_refused_stat_by_ranged_get(badserver, dest, make_conf,
                                         status):
    """S3 presigned GET URLs answer 403 to HEAD: ask by GET bytes=0-0."""
    data = os.urandom(2 * MiB + 17)
    badserver.add('presigned', bad.Resource(data, head_status=status))
    conf = make_conf(oslo_transfer={'retries': 0})
    plan = oslo_transfer.plan(badserver.url('presigned'), conf=conf)
    assert plan.candidates
    r = oslo_transfer.copy(badserver.url('presigned'), dest,
                           checksum=_sha(data), conf=conf)
    fconf.assert_only_dest(dest, data)
    assert r.size == len(data)
    heads = badserver.requests_for('presigned', 'HEAD')
    assert heads and all(h.status == status for h in heads)
    probes = [g for g in badserver.requests_for('presigned', 'GET')
              if g.range == 'bytes=0-0']
    assert probes and probes[0].status == 206


def test_head_refused_ranged_open(badserver, make_conf):
    data = os.urandom(MiB)
    badserver.add('presigned', bad.Resource(data, head_status=403))
    conf = make_conf(oslo_transfer={'retries': 0})
    with oslo_transfer.open(badserver.url('presigned'), offset=1000,
                            length=5000, conf=conf) as reader:
        assert reader.read() == data[1000:6000]


def test_forbidden_for_get_too_is_permission_denied(badserver, dest,
                                                    make_conf):
    badserver.add('nope', bad.Resource(os.urandom(1000), head_status=403,
                                       faults=[bad.Status(403,
                                                          sticky=True)]))
    with pytest.raises(exc.PermissionDenied) as ei:
        oslo_transfer.copy(badserver.url('nope'), dest, conf=make_conf(
            oslo_transfer={'retries': 0}))
    assert '403' in str(ei.value)
    fconf.assert_nothing_left(dest)


# -- If-Range ---------------------------------------------------------------

def _ranged_gets(server, path):
    return [g for g in server.requests_for(path, 'GET')
            if g.range and g.range != 'bytes=0-0']


def test_ranged_read_sends_if_range_with_the_etag(badserver):
    data = os.urandom(MiB)
    badserver.add('img', bad.Resource(data, etag='"strong-1"'))
    with oslo_transfer.open(badserver.url('img'), offset=10,
                            length=1000) as reader:
        assert reader.read() == data[10:1010]
    gets = _ranged_gets(badserver, 'img')
    assert gets, 'no ranged GET'
    for g in gets:
        assert g.headers.get('if-range') == '"strong-1"', g.headers


def test_weak_etag_if_range_falls_back_to_last_modified(badserver):
    """A weak ETag may not go into If-Range; Last-Modified may."""
    data = os.urandom(MiB)
    res = badserver.add('weak', bad.Resource(data, etag='W/"weak-1"'))
    with oslo_transfer.open(badserver.url('weak'), offset=10,
                            length=1000) as reader:
        assert reader.read() == data[10:1010]
    lm = email.utils.formatdate(res.last_modified, usegmt=True)
    gets = _ranged_gets(badserver, 'weak')
    assert gets, 'no ranged GET'
    for g in gets:
        assert g.headers.get('if-range') == lm, g.headers
        assert 'W/' not in g.headers.get('if-range', '')


def test_weak_etag_source_replaced_is_not_spliced(badserver, make_conf):
    """The date in If-Range protects a resume from a weak-ETag server."""
    old, new = os.urandom(2 * MiB), os.urandom(2 * MiB)
    badserver.add('weak', bad.Resource(old, etag='W/"a"', faults=[
        bad.Truncate(MiB), bad.Replace(new, 'W/"a"')]))
    conf = make_conf(oslo_transfer={'retries': 2, 'retry_backoff': 0})
    got = b''
    with pytest.raises(exc.TransferError):
        with oslo_transfer.open(badserver.url('weak'), conf=conf) as reader:
            for chunk in reader:
                got += chunk
    assert got == old[:len(got)]
