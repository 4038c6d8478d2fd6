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

import pytest

from oslo_transfer import _utils
from oslo_transfer import checksum
from oslo_transfer import exceptions
from oslo_transfer import locations


@pytest.mark.parametrize('url,masked', [
    ('https://u:pw@h/x', 'https://u:***@h/x'),
    ('ftp://u:p%40ss@h:21/x', 'ftp://u:***@h:21/x'),
    ('https://h/x?token=abc&a=1', 'https://h/x?token=***&a=1'),
    ('https://u@h/x', 'https://u@h/x'),
    ('/var/lib/x', '/var/lib/x'),
    # S3 presigned URL
    ('https://s3/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256'
     '&X-Amz-Credential=AKIAX%2F20261201&X-Amz-Signature=5ec2e7',
     'https://s3/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256'
     '&X-Amz-Credential=***&X-Amz-Signature=***'),
    # Swift temporary URL
    ('https://swift/v1/AUTH_a/c/o?temp_url_sig=da39a3ee&temp_url_expires=9',
     'https://swift/v1/AUTH_a/c/o?temp_url_sig=***&temp_url_expires=9'),
    # Azure SAS
    ('https://acct.blob/c/b?sv=2022-11-02&sp=r&sig=Zm9v%2Bbar%3D',
     'https://acct.blob/c/b?sv=2022-11-02&sp=r&sig=***'),
    # "sig" inside a longer name is no secret
    ('https://h/x?design=a', 'https://h/x?design=a'),
])
def test_mask_url(url, masked):
    assert locations.mask_url(url) == masked


@pytest.mark.parametrize('name', ['sig', 'SIG', 'temp_url_sig',
                                  'X-Amz-Signature', 'X-Amz-Credential',
                                  'X-Amz-Security-Token', 'X-Goog-Signature',
                                  'api_key', 'token'])
def test_secret_query_keys(name):
    assert locations.is_secret_key(name)


@pytest.mark.parametrize('name', ['sv', 'sp', 'se', 'temp_url_expires',
                                  'X-Amz-Expires', 'X-Amz-Date', 'design',
                                  'multipart-manifest'])
def test_query_keys_that_are_no_secret(name):
    assert not locations.is_secret_key(name)


def test_credentials_precedence():
    loc = locations.Location('ftp://urluser:urlpw@h/x')
    c = loc.effective_credentials(username='confuser', password='confpw')
    assert (c.username, c.password) == ('urluser', 'urlpw')
    loc = locations.Location('ftp://urluser:urlpw@h/x',
                             credentials=('own', 'ownpw'))
    c = loc.effective_credentials(username='confuser', password='confpw')
    assert (c.username, c.password) == ('own', 'ownpw')
    loc = locations.Location('ftp://h/x')
    c = loc.effective_credentials(username='confuser', password='confpw')
    assert (c.username, c.password) == ('confuser', 'confpw')


def test_credentials_repr_hides_secrets():
    loc = locations.Location('https://h/x', credentials={'token': 'tok123',
                                                         'password': 'pw9'})
    assert 'tok123' not in repr(loc) and 'pw9' not in repr(loc)
    assert 'tok123' not in repr(loc.credentials)


def test_without_userinfo():
    loc = locations.Location('https://u:pw@[::1]:8443/x?y=1')
    assert loc.without_userinfo() == 'https://[::1]:8443/x?y=1'


def test_file_urls():
    assert locations.local_path('file:///a/b%20c') == '/a/b c'
    assert locations.Location('/a/b').scheme == 'file'
    with pytest.raises(exceptions.InvalidLocation):
        locations.local_path('file://remote/a')


@pytest.mark.parametrize('value,algo', [
    ('sha256:' + 'a' * 64, 'sha256'),
    ('MD5:' + 'B' * 32, 'md5'),
    ({'os_hash_algo': 'sha512', 'os_hash_value': 'c' * 128}, 'sha512'),
])
def test_checksum_parse(value, algo):
    assert checksum.parse(value).algorithm == algo


@pytest.mark.parametrize('bad', ['sha256', 'nope:00', 'sha256:xyz',
                                 'sha256:' + 'a' * 10])
def test_checksum_rejects(bad):
    with pytest.raises(ValueError):
        checksum.parse(bad)


def test_rangeset():
    r = _utils.RangeSet()
    r.add(10, 20)
    r.add(0, 5)
    r.add(5, 10)
    r.add(30, 40)
    assert list(r) == [(0, 20), (30, 40)]
    assert r.prefix() == 20
    assert r.holes(50) == [(20, 30), (40, 50)]
    assert r.covers(31, 39) and not r.covers(15, 25)
    r.add(15, 35)
    assert list(r) == [(0, 40)]


def test_policy_schemes_and_networks():
    p = locations.URLPolicy(['https'], ['127.0.0.0/8'])
    with pytest.raises(exceptions.URLNotAllowed):
        p.check('http://example.invalid/x')
    with pytest.raises(exceptions.URLNotAllowed) as ei:
        p.check('https://u:pw@127.0.0.1/x')
    assert 'pw' not in str(ei.value)
    assert 'denied' in str(ei.value)


@pytest.mark.parametrize('url', ['http://[::ffff:127.0.0.1]/x',
                                 'http://0.0.0.0/x', 'http://[::]/x'])
def test_policy_mapped_and_unspecified_addresses(url):
    p = locations.URLPolicy([], ['127.0.0.0/8', '::1/128'])
    with pytest.raises(exceptions.URLNotAllowed):
        p.check(url)


def test_checksum_dashed_names():
    assert checksum.parse('SHA-512:' + 'a' * 128).algorithm == 'sha512'


def test_policy_does_not_resolve_torrent_pseudo_host(monkeypatch):
    # torrent://metadata names no host; resolving "metadata" would fail (or
    # worse, hit a real host of that name).  The bittorrent driver names no
    # server for it (Driver.policy_urls); its web seeds and trackers are
    # checked by the driver one by one.  The scheme check never resolves.
    from oslo_transfer._drivers.bittorrent import driver as bt

    def no_dns(*args, **kwargs):
        raise AssertionError('getaddrinfo called for %r' % (args,))

    monkeypatch.setattr(locations.socket, 'getaddrinfo', no_dns)
    p = locations.URLPolicy([], ['10.0.0.0/8'])
    p.check_scheme('torrent://metadata')
    p.check('/var/lib/glance/images/x')
    drv = bt.BitTorrentDriver.__new__(bt.BitTorrentDriver)
    assert drv.policy_urls(locations.Location('torrent://metadata')) == []
    assert drv.policy_urls(locations.Location('http://h/x')) == [
        'http://h/x']
    with pytest.raises(AssertionError):
        p.check('http://metadata/x')
