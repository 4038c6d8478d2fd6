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

"""What Glance and Nova rely on, with the memory driver: digests and a
verifier in one pass, fast failover, context, state and logging."""

import hashlib
import logging
import os
import threading

from oslo_config import cfg
from oslo_context import context as context_mod
import pytest

import oslo_transfer
from oslo_transfer.engine import digests as digests_mod
from oslo_transfer.engine import progress as progress_mod
from oslo_transfer.engine import retry as retry_mod
from oslo_transfer.engine import stream as stream_mod
from oslo_transfer.engine import verified
from oslo_transfer import exceptions
from oslo_transfer import fixture as transfer_fixture
from oslo_transfer import opts

MiB = 1024 * 1024


class Recorder:
    """A verifier that keeps what it was fed; ``ok`` decides verify()."""

    def __init__(self, ok=True):
        self.ok = ok
        self.fed = bytearray()
        self.verified = 0

    def update(self, data):
        assert isinstance(data, bytes)
        self.fed += data

    def verify(self):
        self.verified += 1
        if not self.ok:
            raise RuntimeError('InvalidSignature')


@pytest.fixture
def fix():
    f = transfer_fixture.TransferFixture(schemes=('memory',), retries=3,
                                         retry_backoff=0.01)
    f.setUp()
    yield f
    f.cleanUp()


# -- digests and verifier -------------------------------------------------

def test_digests_one_pass_and_verifier_fed_once():
    feed = digests_mod.Feed(Recorder())
    d = digests_mod.Digests(('md5', 'sha512'), None, feed)
    d.update(b'abc')
    # A new attempt re-hashes what is held: the verifier is not fed twice.
    d2 = digests_mod.Digests(('md5', 'sha512'), None, feed)
    d2.update(b'abcdef')
    assert feed.verifier.fed == b'abcdef'
    assert d2.hexdigests() == {'md5': hashlib.md5(b'abcdef').hexdigest(),
                               'sha512': hashlib.sha512(b'abcdef')
                               .hexdigest()}
    assert d2.algorithm == 'md5'


def test_algorithms():
    assert digests_mod.algorithms(None, 'sha256') == ('sha256',)
    assert digests_mod.algorithms(None, None) == ()
    assert digests_mod.algorithms(('MD5', 'SHA-512', 'md5'), None) == (
        'md5', 'sha512')
    with pytest.raises(ValueError, match='unknown checksum algorithm'):
        digests_mod.algorithms(('md5', 'crc'), None)


def test_upload_reports_size_and_digests(fix):
    data = os.urandom(MiB + 5)
    rec = Recorder()
    r = fix.transfer.upload(iter([data[:100], data[100:]]), 'memory://img',
                            hash_algos=('md5', 'sha512'), verifier=rec)
    assert fix.store.get('memory://img') == data
    assert r.size == len(data)
    assert r.digests == {'md5': hashlib.md5(data).hexdigest(),
                         'sha512': hashlib.sha512(data).hexdigest()}
    assert bytes(rec.fed) == data and rec.verified == 1


def test_failed_verify_commits_nothing(fix):
    data = os.urandom(MiB)
    with pytest.raises(exceptions.VerificationFailed) as ei:
        fix.transfer.upload(data, 'memory://img', verifier=Recorder(False))
    assert isinstance(ei.value, exceptions.ChecksumMismatch)
    assert 'memory://img: the verifier refused the data (RuntimeError: '\
        'InvalidSignature); nothing was committed' in str(ei.value)
    assert 'memory://img' not in fix.store


# -- retries and failover ---------------------------------------------------

def test_policy_for_call_and_candidate(fix):
    p = retry_mod.RetryPolicy.for_call(fix.transfer.conf, retries=7,
                                       backoff=2)
    assert (p.retries, p.backoff) == (7, 2.0)
    assert p.for_candidate(last=True) is p
    q = p.for_candidate(last=False)
    assert (q.retries, q.backoff) == (1, retry_mod.QUICK_DELAY)
    for bad in ({'retries': -1}, {'retries': 1.5}, {'backoff': -1}):
        with pytest.raises(ValueError):
            retry_mod.RetryPolicy.for_call(fix.transfer.conf, **bad)


def test_failing_first_location_gets_one_quick_retry(fix, tmp_path):
    fix.store.put('memory://b', b'x' * 1000)
    fix.store.fail('stat', times=100, url='memory://a')
    r = fix.transfer.copy(oslo_transfer.Source(urls=['memory://a',
                                                     'memory://b']),
                          str(tmp_path / 'out'), retries=5, retry_backoff=5)
    assert r.url == 'memory://b'
    assert fix.store.calls['stat'] == 2 + 1


def test_raised_candidate_failure_logged_once_at_info(fix, tmp_path,
                                                      caplog):
    caplog.set_level(logging.INFO, logger='oslo_transfer')
    with pytest.raises(exceptions.SourceNotFound):
        fix.transfer.copy(oslo_transfer.Source(urls=['memory://a',
                                                     'memory://b']),
                          str(tmp_path / 'out'))
    failed = [(r.levelname, r.getMessage()) for r in caplog.records
              if 'failed' in r.getMessage()]
    assert [lvl for lvl, _ in failed] == ['WARNING', 'INFO'], failed
    assert 'memory://b' in failed[1][1]


# -- progress context -----------------------------------------------------

def test_progress_runs_in_the_callers_context(fix, tmp_path):
    fix.store.put('memory://img', os.urandom(2 * MiB))
    ctx = context_mod.RequestContext(request_id='req-abc')
    _clear_context()  # (a new RequestContext makes itself current)
    seen = []

    def progress(done, total):
        cur = context_mod.get_current()
        seen.append((threading.current_thread().name,
                     cur and cur.request_id))

    fix.transfer.copy('memory://img', str(tmp_path / 'out'),
                      progress=progress, context=ctx)
    assert seen and {rid for _, rid in seen} == {'req-abc'}
    assert context_mod.get_current() is None


def test_in_context_puts_back_the_threads_context():
    mine = context_mod.RequestContext(request_id='req-mine')
    other = context_mod.RequestContext(request_id='req-other',
                                       overwrite=False)
    mine.update_store()
    wrapped = progress_mod.in_context(
        lambda d, t: context_mod.get_current().request_id, other)
    assert wrapped(1, 2) == 'req-other'
    assert context_mod.get_current() is mine
    with pytest.raises(TypeError, match='update_store'):
        progress_mod.in_context(lambda d, t: None, object())
    _clear_context()  # leave this thread as the other tests expect it


def _clear_context():
    context_mod._request_store.__dict__.pop('context', None)


# -- waiters ----------------------------------------------------------------

def test_verified_record_trusted_while_the_file_is_unchanged(tmp_path):
    p = str(tmp_path / 'f')
    with open(p, 'wb') as f:
        f.write(b'data')
    verified.remember(p, {'sha256': 'aa'})
    assert verified.lookup(p) == {'sha256': 'aa'}
    with open(p, 'ab') as f:
        f.write(b'more')
    assert verified.lookup(p) == {}


# -- state ------------------------------------------------------------------

def test_state_dir_follows_the_services_state_path():
    conf = cfg.ConfigOpts()
    conf.register_opt(cfg.StrOpt('state_path', default='/var/lib/nova'))
    conf([])
    opts.register_opts(conf)
    assert conf.oslo_transfer.state_dir == '/var/lib/nova/oslo_transfer'
    conf.set_override('state_path', '/srv/x', group='oslo_transfer')
    assert conf.oslo_transfer.state_dir == '/srv/x/oslo_transfer'
    plain = cfg.ConfigOpts()
    plain([])
    opts.register_opts(plain)
    assert plain.oslo_transfer.state_dir == \
        '/var/lib/oslo_transfer/oslo_transfer'


def test_state_dir_that_cannot_be_created_warns_once(tmp_path, caplog):
    blocker = tmp_path / 'file'
    blocker.write_text('not a directory')
    conf = cfg.ConfigOpts()
    conf([])
    opts.register_opts(conf)
    conf.set_override('state_dir', str(blocker / 'state'),
                      group='oslo_transfer')
    src = tmp_path / 'src'
    src.write_bytes(b'x' * 100)
    caplog.set_level(logging.DEBUG, logger='oslo_transfer.engine.stream')
    for _ in range(3):
        m = stream_mod.UploadMarker(
            conf, oslo_transfer.Location('ftp://h/x'), 100, None,
            stream_mod.DataSource(str(src), 10))
        m.create()
        assert m.path is None
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1
    assert 'cannot keep upload markers in %s' % (blocker / 'state') in \
        warned[0].getMessage()
