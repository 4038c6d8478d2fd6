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

"""The one strict URL parse that the policy and the transports share."""

import ipaddress
import urllib.parse

import hypothesis
from hypothesis import strategies as st
import pytest
import urllib3.util

from oslo_transfer import driver
from oslo_transfer import exceptions
from oslo_transfer import locations


@pytest.mark.parametrize('url,why', [
    ('http://127.0.0.2:80\\@127.0.0.1:1/x', "'\\\\'"),
    ('http://127.0.0.2:80\t@127.0.0.1/x', "'\\t'"),
    ('http://h/a b', "' '"),
    ('http://h/x\r\nHost: evil', "'\\r'"),
    ('http://a@b@c/x', "more than one '@'"),
    ('http://h%41st/x', 'host name'),
    ('http://h\u00e9/x', 'host name'),
    ('http://h:0/x', 'port'),
    ('http://h:65536/x', 'port'),
    ('http://h:8O/x', 'port'),
    ('http://h:\u0661/x', 'port'),
    ('http://[::1/x', 'IPv6'),
    ('http://[::1]x/y', 'after the IPv6'),
    ('http://[fe80::1%25eth0]/x', 'zone'),
    ('http://us[er@h/x', 'user name or password'),
    ('http://@/x', 'no host'),
    ('http:x/y://z', 'expected http://'),
    ('1http://h/x', 'no scheme'),
])
def test_malformed_urls_are_refused_with_the_reason(url, why):
    with pytest.raises(exceptions.InvalidLocation) as ei:
        locations.parse_url(url)
    assert why in str(ei.value)
    assert 'malformed URL' in str(ei.value)


def test_a_refused_url_keeps_its_password_masked():
    with pytest.raises(exceptions.InvalidLocation) as ei:
        locations.parse_url('http://u:hunter2@h:99999/x')
    assert 'hunter2' not in str(ei.value)
    assert 'hunter2' not in (ei.value.url or '')


@pytest.mark.parametrize('url,canonical', [
    ('HTTP://User:Pw@LOCALHOST:0080/A?b=C#d',
     'http://User:Pw@localhost:80/A?b=C#d'),
    ('https://[::FFFF:127.0.0.1]:443/x', 'https://[::ffff:127.0.0.1]:443/x'),
    ('ftp://u:p%40ss@h/x', 'ftp://u:p%40ss@h/x'),
    ('http://h:/x', 'http://h/x'),
    ('nbd+unix:///?socket=/run/x.sock', 'nbd+unix:///?socket=/run/x.sock'),
    ('http://h/caf\u00e9.raw', 'http://h/caf\u00e9.raw'),
    ('/var/lib/x', '/var/lib/x'),
])
def test_canonical_form(url, canonical):
    assert locations.canonical_url(url) == canonical


def test_canonical_form_without_userinfo():
    assert (locations.canonical_url('http://u:pw@H:1/x', userinfo=False) ==
            'http://h:1/x')
    loc = locations.Location('http://u:pw@H:1/x')
    assert loc.without_userinfo() == 'http://h:1/x'


def test_location_parts_use_the_strict_parse():
    with pytest.raises(exceptions.InvalidLocation):
        locations.Location('http://a\\@b/x').parts()
    p = locations.Location('sftp://me:pw@Host:2222/srv/x').parts()
    assert (p.username, p.password, p.hostname, p.port, p.path) == (
        'me', 'pw', 'host', 2222, '/srv/x')


def test_join_url_refuses_what_urljoin_would_drop():
    base = 'http://h/a/b'
    assert locations.join_url(base, '../c?d') == 'http://h/c?d'
    with pytest.raises(exceptions.InvalidLocation):
        locations.join_url(base, 'http://x\t@h/y')


def test_context_default_check_url_is_the_strict_parse():
    ctx = driver.Context()
    assert ctx.check_url('HTTP://H/x') == 'http://h/x'
    with pytest.raises(exceptions.InvalidLocation):
        ctx.check_url('http://a\\@b/x')


def test_policy_refuses_malformed_before_resolving(monkeypatch):
    def no_dns(*args, **kwargs):
        raise AssertionError('getaddrinfo called for %r' % (args,))

    monkeypatch.setattr(locations.socket, 'getaddrinfo', no_dns)
    p = locations.URLPolicy([], ['10.0.0.0/8'])
    with pytest.raises(exceptions.URLNotAllowed) as ei:
        p.check('http://10.0.0.1:80\\@example.com/x')
    assert 'malformed' in str(ei.value)
    # with no policy at all a malformed URL is refused too
    with pytest.raises(exceptions.URLNotAllowed):
        locations.URLPolicy().check('http://a@b@c/x')


def test_policy_returns_the_canonical_url():
    p = locations.URLPolicy([], ['10.0.0.0/8'])
    assert p.check('HTTP://127.0.0.1:0080/x') == 'http://127.0.0.1:80/x'


# -- properties ---------------------------------------------------------------

# Pieces that make parsers disagree: separators, look-alikes, escapes.
_PIECES = st.sampled_from([
    '127.0.0.1', '127.0.0.2', 'localhost', 'h', ':', '@', '\\', '/', '?',
    '#', '[', ']', '::1', '%', '%40', '%2F', '\t', ' ', '\n', '80', '0',
    '65536', 'user', 'pw', '.', '\u00e9', '\uff0f', '\uff20', ';', '&',
])
_URLS = st.builds(lambda scheme, parts: scheme + '://' + ''.join(parts),
                  st.sampled_from(['http', 'https', 'ftp', 'sftp', 'HTTP']),
                  st.lists(_PIECES, max_size=12))


def _host_port(url):
    """What urllib3 (the HTTP transport) will connect to."""
    p = urllib3.util.parse_url(url)
    host = (p.host or '').strip('[]').lower()
    return host, p.port


@hypothesis.given(_URLS)
def test_accepted_urls_name_one_host_to_every_parser(url):
    try:
        parts = locations.parse_url(url)
    except exceptions.InvalidLocation:
        return
    canonical = locations.canonical_url(url)
    assert _host_port(canonical) == ((parts.hostname or ''), parts.port)
    split = urllib.parse.urlsplit(canonical)
    assert (split.hostname, split.port) == (parts.hostname, parts.port)
    assert locations.parse_url(canonical) == parts


@hypothesis.given(st.text(max_size=80))
def test_any_text_parses_or_raises_invalid_location(text):
    try:
        locations.parse_url(text)
    except exceptions.InvalidLocation:
        pass


@hypothesis.given(_URLS)
def test_the_policy_never_returns_a_url_into_a_denied_network(url):
    policy = locations.URLPolicy([], ['127.0.0.2/32'])
    try:
        allowed = policy.check(url)
    except (exceptions.URLNotAllowed, exceptions.ConnectionFailed):
        return
    host, _port = _host_port(allowed)
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return          # a name, resolved and judged by the policy
    assert addr != ipaddress.ip_address('127.0.0.2'), allowed
