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

"""The writer and URL-policy parts of the driver contract (issue 20).

``Writer.commit(ctx)`` is retried on retryable errors and followed by
``abort(ctx)`` when it finally fails; old argument-less writers still work,
with a DeprecationWarning; ``abort`` after a cancel gets a usable context;
``ctx.upload_state`` survives between attempts; the URL policy judges the
servers a driver names in ``policy_urls``; a token stays with its key
pair.
"""

import warnings

import pytest

from oslo_transfer import driver
from oslo_transfer.engine import commit as commit_mod
from oslo_transfer import exceptions
from oslo_transfer import locations
from oslo_transfer import testing
from oslo_transfer import transfer as transfer_mod

Cap = driver.Capability


class _Writer(driver.Writer):
    def __init__(self, owner):
        self.owner = owner

    def commit(self, ctx):
        self.owner.calls.append(('commit', ctx.cancel.cancelled))
        if self.owner.commit_errors:
            raise self.owner.commit_errors.pop(0)

    def abort(self, ctx):
        self.owner.calls.append(('abort', ctx.cancel.cancelled))


class _OldWriter(driver.Writer):
    def __init__(self, owner):
        self.owner = owner

    def commit(self):
        self.owner.calls.append(('old-commit', None))

    def abort(self):
        self.owner.calls.append(('old-abort', None))


class FakeDriver(driver.Driver):
    name = 'fake'
    schemes = ('fake',)
    capabilities = Cap.WRITE | Cap.UPLOAD_STATE
    writer_class = _Writer
    #: what policy_urls() names
    servers = None

    def __init__(self, conf):
        super().__init__(conf)
        self.calls = []
        self.commit_errors = []
        self.write_errors = []
        self.states = []

    def policy_urls(self, location):
        if self.servers is not None:
            return list(self.servers)
        return super().policy_urls(location)

    def write(self, location, chunks, ctx, offset=0, size=None):
        self.states.append(dict(ctx.upload_state))
        for _ in chunks:
            pass
        ctx.upload_state['parts'] = ctx.upload_state.get('parts', 0) + 1
        ctx.save_upload_state()
        if self.write_errors:
            raise self.write_errors.pop(0)
        return self.writer_class(self)


def _transfer(tmp_path, driver_class=FakeDriver, **g):
    conf = testing.make_conf({('oslo_transfer', k): v for k, v in dict(
        {'retries': 2, 'retry_backoff': 0.0,
         'state_dir': str(tmp_path / 'state')}, **g).items()},
        [driver_class])
    return transfer_mod.Transfer(conf, drivers=[driver_class])


def test_retryable_commit_error_is_retried(tmp_path):
    with _transfer(tmp_path) as t:
        drv = t.driver('fake')
        drv.commit_errors = [exceptions.ConnectionFailed('refused')]
        r = t.upload(b'data', 'fake://h/x')
    assert r.driver == 'fake'
    assert drv.calls == [('commit', False), ('commit', False)]


def test_failed_commit_is_aborted_and_raised(tmp_path):
    with _transfer(tmp_path) as t:
        drv = t.driver('fake')
        drv.commit_errors = [exceptions.PermissionDenied('no: fake://h/x')]
        with pytest.raises(exceptions.PermissionDenied, match='no: '):
            t.upload(b'data', 'fake://h/x')
    assert drv.calls == [('commit', False), ('abort', False)]


def test_commit_retries_end_with_abort(tmp_path):
    with _transfer(tmp_path, retries=1) as t:
        drv = t.driver('fake')
        drv.commit_errors = [exceptions.ConnectionFailed('refused')] * 3
        with pytest.raises(exceptions.ConnectionFailed):
            t.upload(b'data', 'fake://h/x')
    assert drv.calls == [('commit', False)] * 2 + [('abort', False)]


def test_abort_after_cancel_gets_a_live_context(tmp_path):
    token = driver.CancelToken()
    token.cancel()
    ctx = driver.Context(cancel=token)
    owner = FakeDriver.__new__(FakeDriver)
    owner.calls = []
    commit_mod.abort(_Writer(owner), ctx, 'fake://h/x')
    assert owner.calls == [('abort', False)]


def test_old_writer_signature_still_works_with_a_warning(tmp_path):
    class OldDriver(FakeDriver):
        name = 'fake'
        writer_class = _OldWriter

    commit_mod._takes_context.cache_clear()
    with _transfer(tmp_path, OldDriver) as t:
        drv = t.driver('fake')
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            t.upload(b'data', 'fake://h/x')
    assert drv.calls == [('old-commit', None)]
    assert any(issubclass(w.category, DeprecationWarning) and
               'commit(ctx)' in str(w.message) for w in caught), caught


def test_upload_state_is_kept_between_attempts(tmp_path):
    src = tmp_path / 'src'
    src.write_bytes(b'x' * 1000)
    with _transfer(tmp_path) as t:
        drv = t.driver('fake')
        drv.write_errors = [exceptions.ConnectionFailed('reset')]
        t.upload(str(src), 'fake://h/x', checksum=_sha(b'x' * 1000))
    assert drv.states == [{}, {'parts': 1}]
    # Done: the record is gone.
    assert not list((tmp_path / 'state' / 'uploads').iterdir())


def test_upload_state_survives_a_new_transfer(tmp_path):
    src = tmp_path / 'src'
    src.write_bytes(b'y' * 1000)
    ck = _sha(b'y' * 1000)
    with _transfer(tmp_path, retries=0) as t:
        t.driver('fake').write_errors = [exceptions.ConnectionFailed('x')]
        with pytest.raises(exceptions.ConnectionFailed):
            t.upload(str(src), 'fake://h/x', checksum=ck)
    with _transfer(tmp_path) as t:
        t.upload(str(src), 'fake://h/x', checksum=ck)
        assert t.driver('fake').states == [{'parts': 1}]


def _sha(data):
    import hashlib
    return 'sha256:' + hashlib.sha256(data).hexdigest()


def test_policy_judges_the_servers_the_driver_names(tmp_path):
    class Elsewhere(FakeDriver):
        name = 'fake'
        capabilities = Cap.READ | Cap.WRITE
        servers = ['http://10.1.2.3:9000']

    with _transfer(tmp_path, Elsewhere, denied_networks=['10.0.0.0/8']) \
            as t:
        with pytest.raises(exceptions.URLNotAllowed,
                           match=r'10\.1\.2\.3.*denied'):
            t.plan('fake://bucket/key')
    with _transfer(tmp_path, Elsewhere,
                   denied_networks=['192.168.0.0/16']) as t:
        plan = t.plan('fake://10.9.9.9/key')
        assert [c.driver for c in plan.candidates] == ['fake']
        assert t.driver('fake').origin(
            locations.Location('fake://b/k')) == 'http://10.1.2.3:9000'


def test_token_stays_with_its_key_pair():
    own = locations.Location('s3://b/k', credentials=('AK', 'SK'))
    creds = own.effective_credentials('CONF-AK', 'CONF-SK', token='CONF-T')
    assert (creds.username, creds.password, creds.token) == ('AK', 'SK',
                                                             None)
    url = locations.Location('s3://AK:SK@b/k')
    assert url.effective_credentials('C', 'C', token='CONF-T').token is None
    conf = locations.Location('s3://b/k')
    creds = conf.effective_credentials('CONF-AK', 'CONF-SK', token='CONF-T')
    assert creds.token == 'CONF-T' and creds.username == 'CONF-AK'
    with_token = locations.Location(
        's3://b/k', credentials={'username': 'AK', 'password': 'SK',
                                 'token': 'T'})
    assert with_token.effective_credentials(token='CONF-T').token == 'T'
