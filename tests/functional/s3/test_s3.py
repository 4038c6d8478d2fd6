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

"""The s3 driver through the public API, against moto_server.

The URL policy judges the endpoint, errors name the object with secrets
masked, a source replaced mid-read follows ``on_source_change``, and
interrupted downloads and multipart uploads resume (the kills are
SIGKILLs of a child process, timed by what reached the disk or the upload
record, never by a sleep).
"""

import glob
import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

import oslo_transfer
from oslo_transfer._drivers import s3
from oslo_transfer import driver as driver_mod
from oslo_transfer import exceptions as exc
from oslo_transfer import locations
from oslo_transfer import testing
from tests.functional import conftest as fconf

MiB = fconf.MiB
CHILD = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'http',
                     'copy_child.py')
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))))


@pytest.fixture
def dest(tmp_path):
    d = tmp_path / 'dest'
    d.mkdir()
    return str(d / 'image.raw')


def _conf(make_conf, moto, s3_opts=None, **g):
    return make_conf(oslo_transfer={'retries': 0, **g},
                     oslo_transfer_s3=moto.options(**(s3_opts or {})))


def _copy(conf, source, dest, **kwargs):
    with oslo_transfer.Transfer(conf, drivers=[s3.S3Driver]) as t:
        return t.copy(source, dest, **kwargs)


# -- the URL policy judges the endpoint --------------------------------------

def test_denied_network_of_the_endpoint_refuses_before_connecting(
        moto, make_conf, dest):
    bucket = moto.bucket()
    url = moto.put(bucket, 'k', b'data')
    conf = _conf(make_conf, moto, denied_networks=['127.0.0.0/8'])
    before = len(moto.log_lines())
    with pytest.raises(exc.URLNotAllowed) as info:
        _copy(conf, url, dest)
    msg = str(info.value)
    assert moto.endpoint in msg and 'denied' in msg, msg
    assert len(moto.log_lines()) == before, 'the server was contacted'
    fconf.assert_nothing_left(dest)


def test_denied_other_network_leaves_s3_working(moto, make_conf, dest):
    # Before policy_urls, the bucket name was resolved as a host and
    # every s3:// copy failed once any denied network was set.
    bucket = moto.bucket()
    url = moto.put(bucket, 'k', b'data' * 1000)
    conf = _conf(make_conf, moto, denied_networks=['10.0.0.0/8'])
    r = _copy(conf, url, dest)
    assert r.driver == 's3'
    fconf.assert_only_dest(dest, b'data' * 1000)


def test_connection_slots_keyed_on_the_endpoint(moto, make_conf):
    conf = _conf(make_conf, moto)
    with oslo_transfer.Transfer(conf, drivers=[s3.S3Driver]) as t:
        drv = t.driver('s3')
        loc = locations.Location('s3://some-bucket/key')
        assert drv.origin(loc) == moto.endpoint
        assert drv.policy_urls(loc) == [moto.endpoint]


# -- errors ------------------------------------------------------------------

def test_missing_object(moto, make_conf, dest):
    bucket = moto.bucket()
    url = 's3://test-key:S3CR3TVALUE@%s/no-such-key' % bucket
    with pytest.raises(exc.SourceNotFound) as info:
        _copy(_conf(make_conf, moto), url, dest)
    msg = str(info.value)
    assert 'no-such-key' in msg and '404' in msg, msg
    assert 'S3CR3TVALUE' not in msg and '***' in msg, msg
    fconf.assert_nothing_left(dest)


def test_endpoint_refusing_connections(moto, make_conf, dest):
    port = fconf.free_port()
    conf = make_conf(oslo_transfer={'retries': 0}, oslo_transfer_s3=dict(
        moto.options(), endpoint_url='http://127.0.0.1:%d' % port))
    with pytest.raises(exc.ConnectionFailed) as info:
        _copy(conf, 's3://bucket/key', dest)
    assert '127.0.0.1:%d' % port in str(info.value), str(info.value)
    assert 'test-secret' not in str(info.value)
    fconf.assert_nothing_left(dest)


def test_upload_with_wrong_checksum_leaves_no_object(moto, make_conf,
                                                     tmp_path):
    src = fconf.make_data_file(tmp_path, 'src', 12 * MiB)
    bucket = moto.bucket()
    conf = _conf(make_conf, moto, s3_opts={'multipart_threshold': 5 * MiB,
                                           'part_size': 5 * MiB})
    with oslo_transfer.Transfer(conf, drivers=[s3.S3Driver]) as t:
        with pytest.raises(exc.ChecksumMismatch):
            t.upload(src.path, 's3://%s/obj' % bucket,
                     checksum='sha256:' + '0' * 64)
    assert 'Contents' not in moto.client.list_objects_v2(Bucket=bucket)
    # The multipart upload was aborted, not left to cost storage.
    assert not moto.client.list_multipart_uploads(
        Bucket=bucket).get('Uploads')
    assert not glob.glob(os.path.join(str(tmp_path), 'state',
                                      'oslo_transfer', 'uploads', '*'))


# -- commit meets a refused connection ----------------------------------------

class _StopsServerBeforeCommit(s3.S3Driver):
    """The s3 driver; the server stops once write() returned its writer.

    That is, after the last part was acknowledged and before the engine
    commits (the CompleteMultipartUpload, or the single PUT).
    """

    server = None

    def write(self, location, chunks, ctx, offset=0, size=None):
        writer = super().write(location, chunks, ctx, offset=offset,
                               size=size)
        self.server.stop()
        return writer


class _RestartOnCommitRetry(logging.Handler):
    """Starts the server again when the engine logs a commit retry."""

    def __init__(self, server):
        super().__init__(logging.WARNING)
        self.server = server
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())
        if not self.server.running:
            self.server.start()


@pytest.mark.parametrize('size,how', [(2 * MiB, 'PUT'),
                                      (12 * MiB + 7, 'multipart')])
def test_commit_refused_is_retried_until_the_server_is_back(
        restartable_moto, make_conf, tmp_path, size, how):
    server = restartable_moto
    src = fconf.make_data_file(tmp_path, 'src.raw', size)
    bucket = server.bucket()
    url = 's3://%s/image' % bucket
    conf = make_conf(
        oslo_transfer={'retries': 2, 'retry_backoff': 0.1},
        oslo_transfer_s3=server.options(multipart_threshold=5 * MiB,
                                        part_size=5 * MiB))
    drv = type('S3', (_StopsServerBeforeCommit,), {'server': server})
    retried = _RestartOnCommitRetry(server)
    commit_log = logging.getLogger('oslo_transfer.engine.commit')
    commit_log.addHandler(retried)
    try:
        with oslo_transfer.Transfer(conf, drivers=[drv]) as t:
            r = t.upload(src.path, url, checksum=src.checksum())
    finally:
        commit_log.removeHandler(retried)
    sent = list(server.requests)        # before this test's own reads
    # One refused commit, retried once the server was back.
    assert len(retried.messages) == 1, retried.messages
    msg = retried.messages[0]
    assert msg.startswith('commit of %s: ' % url), msg
    assert 'Could not connect' in msg and 'retry 1' in msg, msg
    assert 'test-secret' not in msg
    # The object is whole, and nothing else is left at the server.
    assert server.get(bucket, 'image') == src.data
    assert r.bytes_transferred == size and r.bytes_resumed == 0
    assert not server.client.list_multipart_uploads(
        Bucket=bucket).get('Uploads')
    # The refused attempt never reached the server; no byte went twice.
    obj = r'^(\w+) /%s/image' % bucket
    if how == 'PUT':
        assert server.requests_matching(obj + r'$', sent) == ['PUT'], sent
    else:
        parts = server.requests_matching(
            r'^PUT /%s/image\?.*partNumber=(\d+)' % bucket, sent)
        assert sorted(parts) == ['1', '2', '3'], parts
        assert server.requests_matching(
            obj + r'\?uploadId=[^&]+$', sent) == ['POST'], sent
    # Nothing left on disk: the upload record is gone.
    assert not glob.glob(os.path.join(str(tmp_path), 'state',
                                      'oslo_transfer', 'uploads', '*'))


# -- a source replaced during the read ---------------------------------------

def test_driver_read_raises_source_changed(moto, make_conf):
    bucket = moto.bucket()
    url = moto.put(bucket, 'k', b'one' * 1000)
    drv = s3.S3Driver(testing.make_conf(
        {('oslo_transfer_s3', k): v for k, v in moto.options().items()},
        [s3.S3Driver]))
    loc = locations.Location(url)
    ctx = driver_mod.Context()
    ctx.validator = drv.stat(loc, ctx).validator
    moto.put(bucket, 'k', b'two' * 1000)
    with pytest.raises(exc.SourceChanged) as info:
        b''.join(drv.read(loc, 10, 100, ctx))
    assert '412' in str(info.value) and url in str(info.value)


@pytest.mark.parametrize('mode', ['restart', 'error'])
def test_source_replaced_mid_copy(moto, make_conf, dest, mode):
    bucket = moto.bucket()
    old, new = os.urandom(8 * MiB), os.urandom(8 * MiB)
    url = moto.put(bucket, 'k', old)
    conf = _conf(make_conf, moto, on_source_change=mode, rate_limit=4 * MiB,
                 segment_threshold=0, segment_size=MiB, segments=2)
    replaced = []

    def progress(done, total):
        if done >= 2 * MiB and not replaced:
            replaced.append(done)
            moto.put(bucket, 'k', new)

    if mode == 'restart':
        _copy(conf, url, dest, progress=progress)
        fconf.assert_only_dest(dest, new)
    else:
        with pytest.raises(exc.SourceChanged) as info:
            _copy(conf, url, dest, progress=progress)
        assert 'changed' in str(info.value) and url in str(info.value)
        fconf.assert_resumable(dest, size=len(old))
    assert replaced


# -- interrupted transfers resume --------------------------------------------

def _child(args):
    return subprocess.Popen([sys.executable, CHILD] + [str(a) for a in args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)


def _result(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, 'child failed (%s): %s %s' % (
        proc.returncode, out, err[-3000:])
    return json.loads(out.strip().splitlines()[-1])


def _kill_when(child, predicate, what, timeout=300):
    deadline = time.monotonic() + timeout
    try:
        while not predicate():
            assert child.poll() is None, 'the child ended before the ' \
                'kill: %s' % (child.communicate(),)
            assert time.monotonic() < deadline, 'timed out: %s' % what
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.communicate()


def test_download_resumes_after_sigkill(moto, make_conf, dest):
    """256 MiB at --segments 4: the rerun re-fetches <= one checkpoint."""
    size, segments = 256 * MiB, 4
    data = os.urandom(size)
    bucket = moto.bucket()
    url = moto.put(bucket, 'image', data)
    conf = _conf(make_conf, moto, retries=1, rate_limit=48 * MiB)
    args = [url, dest, '--segments', segments, '--config-file',
            conf.default_config_files[0]]
    part = fconf.part_path(dest)
    bound = 16 * MiB + segments * MiB      # checkpoint_bytes + a chunk each
    child = _child(args)
    _kill_when(child, lambda: os.path.exists(part) and
               os.stat(part).st_blocks * 512 >= bound + 32 * MiB,
               '.part to grow')
    in_part = fconf.correct_bytes(part, data)
    assert in_part > bound, 'killed too early: this run proves nothing'

    conf2 = _conf(make_conf, moto, retries=1)
    r = _result(_child([url, dest, '--segments', segments, '--config-file',
                        conf2.default_config_files[0]]))
    for name in fconf.files_beside(dest):
        if '.ctl.%d.' % child.pid in name:
            os.unlink(os.path.join(os.path.dirname(dest), name))
    fconf.assert_only_dest(dest, data)
    assert r['driver'] == 's3'
    assert r['bytes_resumed'] > 0
    assert in_part - r['bytes_resumed'] <= bound, (
        '%d bytes were in .part at the kill, only %d were kept'
        % (in_part, r['bytes_resumed']))
    assert r['bytes_transferred'] + r['bytes_resumed'] == size


def _record_parts(state_dir) -> int:
    for path in glob.glob(os.path.join(state_dir, 'uploads', '*')):
        if path.endswith('.tmp'):
            continue
        try:
            with open(path) as f:
                state = json.load(f).get('upload_state', {})
        except (OSError, ValueError):
            continue
        return len(state.get('parts', {}))
    return 0


def test_multipart_upload_resumes_after_sigkill(moto, make_conf, tmp_path):
    """256 MiB, killed halfway: completed parts are not sent again."""
    size, part = 256 * MiB, 16 * MiB
    src = fconf.make_data_file(tmp_path, 'src.raw', size)
    bucket = moto.bucket()
    url = 's3://%s/image' % bucket
    opts = {'part_size': part, 'multipart_threshold': part}
    conf = _conf(make_conf, moto, s3_opts=opts, retries=1,
                 rate_limit=48 * MiB)
    state_dir = os.path.join(str(tmp_path), 'state', 'oslo_transfer')
    args = [src.path, url, '--checksum', src.checksum(), '--config-file',
            conf.default_config_files[0]]
    child = _child(args)
    _kill_when(child, lambda: _record_parts(state_dir) >= 8,
               'half of the parts')
    uploads = moto.client.list_multipart_uploads(Bucket=bucket)['Uploads']
    assert len(uploads) == 1
    upload_id = uploads[0]['UploadId']
    held = [p['PartNumber'] for p in moto.client.list_parts(
        Bucket=bucket, Key='image', UploadId=upload_id)['Parts']]
    assert len(held) >= 8, held

    conf2 = _conf(make_conf, moto, s3_opts=opts, retries=1)
    r = _result(_child([src.path, url, '--checksum', src.checksum(),
                        '--config-file', conf2.default_config_files[0]]))
    assert moto.get(bucket, 'image') == src.data
    sends = [int(m) for m in moto.requests_matching(
        r'^PUT /%s/image\?uploadId=%s&partNumber=(\d+) '
        % (bucket, upload_id))]
    for n in held:
        assert sends.count(n) == 1, 'part %d was sent %d times: %s' % (
            n, sends.count(n), sorted(sends))
    assert sorted(set(sends)) == list(range(1, size // part + 1)), sends
    assert r['bytes_resumed'] == len(held) * part, r
    assert r['bytes_transferred'] == size - len(held) * part, r
    assert not glob.glob(os.path.join(state_dir, 'uploads', '*'))
