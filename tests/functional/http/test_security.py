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

"""TLS verification, credentials and secrets that must never leak."""

import json
import logging
import os

import pytest

import oslo_transfer
from oslo_transfer import exceptions as exc
from tests.functional import conftest as fconf
from tests.functional.http import nginx as nginx_mod

MiB = fconf.MiB
USER, PASSWORD = nginx_mod.USER, nginx_mod.PASSWORD
TOKEN = 'gAAAAA-token-never-in-logs-91c2'


def _stop_server_at_a_third(server, size):
    """A progress callback that stops ``server`` once a third arrived."""
    stopped = []

    def progress(done, total):
        if done > size / 3 and not stopped:
            stopped.append(done)
            server.stop()
    return progress


# -- TLS ----------------------------------------------------------------------


def test_self_signed_certificate_refused_by_default(nginx, serve, dest,
                                                    make_conf):
    src = serve(MiB)
    url = nginx.url(src.name, tls=True)
    with pytest.raises(exc.TransferError) as ei:
        oslo_transfer.copy(url, dest, conf=make_conf(
            oslo_transfer={'retries': 0}))
    msg = str(ei.value).lower()
    assert 'certificate' in msg and 'verif' in msg, str(ei.value)
    assert isinstance(ei.value, (exc.ConnectionFailed,
                                 exc.AuthenticationFailed))
    assert not ei.value.retryable
    fconf.assert_nothing_left(dest)


def test_self_signed_certificate_accepted_with_ca_file(nginx, serve, dest,
                                                       make_conf):
    src = serve(2 * MiB)
    conf = make_conf(oslo_transfer_http={'ca_file': nginx.cert_file})
    r = oslo_transfer.copy(nginx.url(src.name, tls=True), dest,
                           checksum=src.checksum(), conf=conf)
    fconf.assert_only_dest(dest, src.data)
    assert r.url.startswith('https://')


def test_insecure_option_skips_verification(nginx, serve, dest, make_conf):
    src = serve(MiB)
    conf = make_conf(oslo_transfer_http={'insecure': True})
    oslo_transfer.copy(nginx.url(src.name, tls=True), dest,
                       checksum=src.checksum(), conf=conf)
    fconf.assert_only_dest(dest, src.data)


def test_open_over_tls_with_ca_file(nginx, serve, make_conf):
    src = serve(MiB)
    conf = make_conf(oslo_transfer_http={'ca_file': nginx.cert_file})
    with oslo_transfer.open(nginx.url(src.name, tls=True), offset=10,
                            length=1000, conf=conf) as reader:
        assert reader.read() == src.data[10:1010]


# -- credentials --------------------------------------------------------------

def test_basic_auth_from_url_userinfo(nginx, serve, dest):
    src = serve(MiB)
    url = nginx.url(src.name, 'private', userinfo='%s:%s' % (USER,
                                                             PASSWORD))
    r = oslo_transfer.copy(url, dest, checksum=src.checksum())
    fconf.assert_only_dest(dest, src.data)
    assert PASSWORD not in r.url
    assert PASSWORD not in json.dumps(r.to_dict())
    assert 'auth=%s' % USER in nginx.settled_requests_for(src.name)[-1]


def test_basic_auth_from_location(nginx, serve, dest):
    src = serve(MiB)
    loc = oslo_transfer.Location(nginx.url(src.name, 'private'),
                                 credentials=(USER, PASSWORD))
    assert PASSWORD not in repr(loc)
    r = oslo_transfer.copy(loc, dest, checksum=src.checksum())
    fconf.assert_only_dest(dest, src.data)
    assert PASSWORD not in json.dumps(r.to_dict())


def test_location_credentials_win_over_url_userinfo(nginx, serve, dest):
    src = serve(1000)
    url = nginx.url(src.name, 'private', userinfo='%s:wrong' % USER)
    loc = oslo_transfer.Location(url, credentials=(USER, PASSWORD))
    oslo_transfer.copy(loc, dest, checksum=src.checksum())
    fconf.assert_only_dest(dest, src.data)


def test_token_header_is_sent(badserver, dest):
    from tests.functional.http import badserver as bad
    data = os.urandom(1000)
    badserver.add('tok', bad.Resource(data))
    loc = oslo_transfer.Location(badserver.url('tok'),
                                 credentials={'token': TOKEN},
                                 headers={'X-Image-Meta': 'yes'})
    oslo_transfer.copy(loc, dest)
    gets = badserver.requests_for('tok', 'GET')
    assert gets[-1].headers.get('x-auth-token') == TOKEN
    assert gets[-1].headers.get('x-image-meta') == 'yes'


def test_wrong_password_is_masked_everywhere(nginx, serve, dest, make_conf,
                                             caplog):
    src = serve(1000)
    url = nginx.url(src.name, 'private', userinfo='%s:%s-bad' % (USER,
                                                                 PASSWORD))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(exc.AuthenticationFailed) as ei:
        oslo_transfer.copy(url, dest, conf=make_conf(
            oslo_transfer={'retries': 1, 'retry_backoff': 0}))
    assert PASSWORD not in str(ei.value)
    assert PASSWORD not in repr(ei.value)
    assert PASSWORD not in (ei.value.url or '')
    assert '401' in str(ei.value)
    assert '127.0.0.1:%d' % nginx.port in str(ei.value)
    _assert_not_logged(caplog, PASSWORD)
    fconf.assert_nothing_left(dest)


def test_password_never_logged_nor_stored(own_nginx, dest, make_conf,
                                          caplog):
    """A resumed transfer with credentials in the URL, logs at DEBUG.

    The password must not appear in any log record, exception, control
    file, Plan or Result.
    """
    src = fconf.make_data_file(own_nginx.docroot, 'img.raw', 6 * MiB)
    url = own_nginx.url(src.name, 'private',
                        userinfo='%s:%s' % (USER, PASSWORD))
    conf = make_conf(oslo_transfer={'retries': 1, 'retry_backoff': 0})
    caplog.set_level(logging.DEBUG)
    progress = _stop_server_at_a_third(own_nginx, src.size)

    # /slow/ (limit_rate) takes the credentials too and ignores them.
    slow = url.replace('/private/', '/slow/')
    with pytest.raises(exc.ConnectionFailed) as ei:
        oslo_transfer.copy(slow, dest, progress=progress, conf=conf)
    assert PASSWORD not in str(ei.value)
    with open(fconf.ctl_path(dest)) as f:
        assert PASSWORD not in f.read()

    own_nginx.restart(rate='0')
    plan = oslo_transfer.plan(slow, conf=conf)
    assert PASSWORD not in repr(plan)
    assert PASSWORD not in json.dumps(plan.to_dict())
    assert PASSWORD not in plan.explain()
    r = oslo_transfer.copy(slow, dest, checksum=src.checksum(), conf=conf)
    assert r.bytes_resumed > 0
    fconf.assert_only_dest(dest, src.data)
    assert PASSWORD not in json.dumps(r.to_dict())
    assert PASSWORD not in repr(r)
    _assert_not_logged(caplog, PASSWORD)
    assert any('127.0.0.1:%d' % own_nginx.port in rec.getMessage()
               for rec in caplog.records), 'nothing was logged at all'


def test_token_never_logged(nginx, dest, make_conf, caplog):
    caplog.set_level(logging.DEBUG)
    loc = oslo_transfer.Location(nginx.url('img', 'forbidden'),
                                 credentials={'token': TOKEN})
    with pytest.raises(exc.PermissionDenied) as ei:
        oslo_transfer.copy(loc, dest, conf=make_conf(
            oslo_transfer={'retries': 0}))
    assert TOKEN not in str(ei.value)
    _assert_not_logged(caplog, TOKEN)


def _assert_not_logged(caplog, secret):
    for rec in caplog.records:
        text = rec.getMessage()
        if rec.exc_info:
            import traceback
            text += ''.join(traceback.format_exception(*rec.exc_info))
        assert secret not in text, 'secret in log record %s:%d: %s' % (
            rec.name, rec.lineno, text)
    assert secret not in caplog.text


# -- signed URLs: secrets in the query ---------------------------------------

S3_SIG = 'f00dSECRETs3signature1c2b'
S3_CRED = 'AKIASECRETCRED7'
SWIFT_SIG = 'da39SECRETswiftsig77'
AZURE_SIG = 'Zm9vSECRETazure+sig/x='


def _signed(url):
    import urllib.parse
    return url + '?' + urllib.parse.urlencode([
        ('X-Amz-Algorithm', 'AWS4-HMAC-SHA256'),
        ('X-Amz-Credential', S3_CRED + '/20261201/us-east-1/s3/aws4'),
        ('X-Amz-Signature', S3_SIG),
        ('temp_url_sig', SWIFT_SIG), ('temp_url_expires', '1999999999'),
        ('sv', '2022-11-02'), ('sig', AZURE_SIG)])


def _assert_no_query_secret(text, where):
    import urllib.parse
    for s in (S3_SIG, S3_CRED, SWIFT_SIG, AZURE_SIG):
        for form in (s, urllib.parse.quote(s, safe=''),
                     urllib.parse.quote_plus(s)):
            assert form not in text, '%s shows %s: %s' % (where, form, text)


def test_unreachable_signed_url_masks_the_query(dest, make_conf, caplog):
    """urllib3's error text carries the path and query: mask them."""
    url = _signed('http://127.0.0.1:1/img')
    caplog.set_level(logging.DEBUG)
    with pytest.raises(exc.ConnectionFailed) as ei:
        oslo_transfer.copy(url, dest, conf=make_conf(
            oslo_transfer={'retries': 1, 'retry_backoff': 0}))
    assert '127.0.0.1:1' in str(ei.value)
    _assert_no_query_secret(str(ei.value), 'the exception')
    _assert_no_query_secret(repr(ei.value), 'repr of the exception')
    _assert_no_query_secret(ei.value.url or '', 'exception.url')
    assert any(r.levelno >= logging.WARNING for r in caplog.records), \
        'the retry was not logged'
    for secret in (S3_SIG, S3_CRED, SWIFT_SIG, AZURE_SIG):
        _assert_not_logged(caplog, secret)
    fconf.assert_nothing_left(dest)


def test_signed_url_masked_in_state_plan_and_result(own_nginx, dest,
                                                    make_conf, caplog):
    """An interrupted, resumed copy from a signed URL, logs at DEBUG."""
    src = fconf.make_data_file(own_nginx.docroot, 'signed.raw', 6 * MiB)
    url = _signed(own_nginx.url(src.name, 'slow'))
    conf = make_conf(oslo_transfer={'retries': 1, 'retry_backoff': 0})
    caplog.set_level(logging.DEBUG)
    progress = _stop_server_at_a_third(own_nginx, src.size)

    with pytest.raises(exc.ConnectionFailed) as ei:
        oslo_transfer.copy(url, dest, progress=progress, conf=conf)
    _assert_no_query_secret(str(ei.value), 'the exception')
    with open(fconf.ctl_path(dest)) as f:
        _assert_no_query_secret(f.read(), 'the control file')

    own_nginx.restart(rate='0')
    plan = oslo_transfer.plan(url, conf=conf)
    _assert_no_query_secret(repr(plan), 'the Plan')
    _assert_no_query_secret(json.dumps(plan.to_dict()), 'the Plan')
    _assert_no_query_secret(plan.explain(), 'the Plan')
    r = oslo_transfer.copy(url, dest, checksum=src.checksum(), conf=conf)
    assert r.bytes_resumed > 0
    fconf.assert_only_dest(dest, src.data)
    _assert_no_query_secret(json.dumps(r.to_dict()), 'the Result')
    _assert_no_query_secret(repr(r), 'the Result')
    assert 'temp_url_expires=1999999999' in r.url
    for secret in (S3_SIG, S3_CRED, SWIFT_SIG, AZURE_SIG):
        _assert_not_logged(caplog, secret)


def test_a_reason_phrase_that_echoes_the_token_is_masked(badserver, dest,
                                                         make_conf, caplog):
    from tests.functional.http import badserver as bad
    res = badserver.add('img', bad.Resource(os.urandom(1000)))
    res.faults.append(bad.Status(401, sticky=True, echo='X-Auth-Token'))
    secret_header = 'hdr-secret-5f1c0e'
    loc = oslo_transfer.Location(
        badserver.url('img', userinfo='me:pw-4e2a9b'),
        credentials={'token': TOKEN},
        headers={'Authorization': 'Bearer ' + secret_header})
    caplog.set_level(logging.DEBUG)
    with pytest.raises(exc.AuthenticationFailed) as ei:
        oslo_transfer.copy(loc, dest, conf=make_conf(
            oslo_transfer={'retries': 0}))
    got = [r for r in badserver.requests_for('img', 'GET')]
    assert got and got[-1].headers.get('x-auth-token') == TOKEN
    assert 'HTTP 401 bad X-Auth-Token: ***' in str(ei.value), str(ei.value)
    for secret in (TOKEN, secret_header, 'pw-4e2a9b'):
        assert secret not in str(ei.value)
        _assert_not_logged(caplog, secret)
    fconf.assert_nothing_left(dest)


@pytest.mark.parametrize('value,why', [
    ('5, 6', 'multiple unmatching values'),        # urllib3 refuses it
    ('1000, 1000, 7', 'multiple unmatching'),
    ('\u00b2', 'invalid Content-Length'),          # isdigit() says yes
    ('-1', 'invalid Content-Length'),
    ('9' * 23, 'invalid Content-Length'),           # past 2**63
])
def test_a_hostile_content_length_is_a_clear_error(badserver, dest,
                                                   make_conf, value, why):
    from tests.functional.http import badserver as bad
    res = badserver.add('img', bad.Resource(os.urandom(1000)))
    res.raw_headers = {'Content-Length': value}
    with pytest.raises(exc.ProtocolError) as ei:
        oslo_transfer.copy(badserver.url('img', userinfo='u:pw-91ac'), dest,
                           conf=make_conf(oslo_transfer={'retries': 3}))
    assert why in str(ei.value), str(ei.value)
    assert not ei.value.retryable
    assert 'pw-91ac' not in str(ei.value)
    # not retried: the same request gets the same answer
    assert len(badserver.requests_for('img', 'HEAD')) == 1
    fconf.assert_nothing_left(dest)


# -- redirects ----------------------------------------------------------------

def _other_host_server():
    from tests.functional.http import badserver as bad
    return bad.BadServer(host='127.0.0.2').start()


def test_redirect_into_denied_network_never_reaches_it(badserver, dest,
                                                       make_conf):
    from tests.functional.http import badserver as bad
    target = _other_host_server()
    try:
        target.add('img', bad.Resource(os.urandom(1000)))
        badserver.add('go', bad.Resource(b'', redirect=target.url('img')))
        conf = make_conf(oslo_transfer={'retries': 0,
                                        'denied_networks': '127.0.0.2/32'})
        with pytest.raises(exc.URLNotAllowed) as ei:
            oslo_transfer.copy(badserver.url('go'), dest, conf=conf)
        assert '127.0.0.2' in str(ei.value)
        assert target.log == [], 'a request reached the denied network'
        assert badserver.requests_for('go'), 'the origin was never asked'
    finally:
        target.stop()
    fconf.assert_nothing_left(dest)


@pytest.mark.parametrize('spelling', [
    # urllib3 reads "\\" as the end of the authority (host DENIED), the
    # standard library's urlsplit as part of the userinfo (host ALLOWED)
    'http://{denied}\\@{allowed}/img',
    # a tab: urlsplit drops it, urllib3 keeps it in the host
    'http://{denied}\t@{allowed}/img',
    'http://x@{denied}@{allowed}/img',
])
def test_redirect_spelled_for_two_parsers_never_reaches_the_denied_host(
        badserver, dest, make_conf, spelling):
    from tests.functional.http import badserver as bad
    target = _other_host_server()
    try:
        target.add('img', bad.Resource(os.urandom(1000)))
        badserver.add('img', bad.Resource(os.urandom(1000)))
        denied = '%s:%d' % (target.host, target.port)
        allowed = '%s:%d' % (badserver.host, badserver.port)
        badserver.add('go', bad.Resource(b'', redirect=spelling.format(
            denied=denied, allowed=allowed)))
        conf = make_conf(oslo_transfer={'retries': 0,
                                        'denied_networks': '127.0.0.2/32'})
        with pytest.raises(exc.URLNotAllowed) as ei:
            oslo_transfer.copy(badserver.url('go'), dest, conf=conf)
        assert 'malformed' in str(ei.value), str(ei.value)
        assert target.log == [], 'a request reached the denied network'
        assert badserver.requests_for('go'), 'the origin was never asked'
        assert not badserver.requests_for('img'), 'the URL was guessed at'
    finally:
        target.stop()
    fconf.assert_nothing_left(dest)


def test_redirect_is_sent_as_the_policy_read_it(badserver, dest, make_conf):
    # A well-formed but unusual spelling (upper-case host, a port with
    # leading zeros) reaches the host and port the policy judged.
    from tests.functional.http import badserver as bad
    data = os.urandom(3000)
    badserver.add('img', bad.Resource(data))
    badserver.add('go', bad.Resource(b'', redirect='http://LOCALHOST:%05d/img'
                                     % badserver.port))
    conf = make_conf(oslo_transfer={'retries': 0,
                                    'denied_networks': '127.0.0.2/32'})
    oslo_transfer.copy(badserver.url('go'), dest, conf=conf)
    fconf.assert_only_dest(dest, data)
    assert badserver.requests_for('img', 'GET')


def test_redirect_to_another_host_drops_credentials(badserver, dest):
    from tests.functional.http import badserver as bad
    data = os.urandom(5000)
    target = _other_host_server()
    try:
        target.add('img', bad.Resource(data))
        badserver.add('go', bad.Resource(b'', redirect=target.url('img')))
        for creds in ((USER, PASSWORD), {'token': TOKEN}):
            loc = oslo_transfer.Location(badserver.url('go'),
                                         credentials=creds,
                                         headers={'X-Image-Meta': 'yes'})
            oslo_transfer.copy(loc, dest, if_exists='replace')
            fconf.assert_only_dest(dest, data)
            first = badserver.requests_for('go')[-1].headers
            assert 'authorization' in first or 'x-auth-token' in first
            for req in target.requests_for('img'):
                assert 'authorization' not in req.headers, req.headers
                assert 'x-auth-token' not in req.headers, req.headers
                assert 'x-image-meta' not in req.headers, req.headers
        assert target.requests_for('img', 'GET')
    finally:
        target.stop()


@pytest.fixture
def tls_badserver(tls_cert):
    """A badserver that speaks TLS and plain HTTP on one port."""
    import ssl

    from tests.functional.http import badserver as bad
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*tls_cert)
    server = bad.BadServer(ssl_context=ctx).start()
    yield server
    server.stop()


@pytest.mark.parametrize('creds', [(USER, PASSWORD), {'token': TOKEN}],
                         ids=['basic', 'token'])
def test_redirect_from_https_to_http_drops_credentials(tls_badserver,
                                                       tls_cert, dest,
                                                       make_conf, creds):
    """Same host and port, scheme downgraded: no credentials in clear."""
    from tests.functional.http import badserver as bad
    data = os.urandom(5000)
    srv = tls_badserver
    srv.add('plain', bad.Resource(data))
    srv.add('secure', bad.Resource(b'', redirect=srv.url('plain')))
    loc = oslo_transfer.Location(srv.url('secure', tls=True),
                                 credentials=creds,
                                 headers={'X-Image-Meta': 'yes'})
    conf = make_conf(oslo_transfer_http={'ca_file': tls_cert[0]})
    oslo_transfer.copy(loc, dest, conf=conf)
    fconf.assert_only_dest(dest, data)
    secure = srv.requests_for('secure')
    assert secure and all(r.tls for r in secure)
    assert any(k in secure[0].headers
               for k in ('authorization', 'x-auth-token'))
    plain = srv.requests_for('plain')
    assert plain and not any(r.tls for r in plain)
    for req in plain:
        assert 'authorization' not in req.headers, req.headers
        assert 'x-auth-token' not in req.headers, req.headers
        assert 'x-image-meta' not in req.headers, req.headers


def test_token_header_authorization_sends_bearer(badserver, dest,
                                                 make_conf):
    from tests.functional.http import badserver as bad
    data = os.urandom(1000)
    badserver.add('tok', bad.Resource(data))
    loc = oslo_transfer.Location(badserver.url('tok'),
                                 credentials={'token': TOKEN})
    conf = make_conf(oslo_transfer_http={'token_header': 'Authorization'})
    oslo_transfer.copy(loc, dest, conf=conf)
    fconf.assert_only_dest(dest, data)
    reqs = badserver.requests_for('tok')
    assert reqs
    for req in reqs:
        assert req.headers.get('authorization') == 'Bearer %s' % TOKEN
        assert 'x-auth-token' not in req.headers
