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

"""Uploads as an HTTP PUT sees them: what reaches ``Driver.write()``.

HTTP PUT has no commit: whatever the driver was handed has gone to the
server.  When a checksum is given the engine must hold the last chunk back
until the digest matches, so a recording driver that keeps every chunk it
was given (not only what it committed) shows whether a corrupt upload
could complete.
"""

import hashlib
import io

import pytest

from oslo_transfer import exceptions
from oslo_transfer import fixture
from oslo_transfer import testing
from oslo_transfer import transfer as transfer_mod
from tests.unit import fakes

MiB = 1024 * 1024
CHUNK = 64 * 1024


class _Recorder:
    def __init__(self):
        self.chunks = []
        self.raised = None


def _recording_driver(recorder):
    base = fixture.make_driver_class(name='rec', schemes=('rec',),
                                     capabilities=fakes.ENGINE_CAPS)

    class RecordingDriver(base):
        """Records each chunk as it is handed over, like a PUT sends it."""

        def write(self, location, chunks, ctx, offset=0, size=None):
            try:
                for c in chunks:
                    recorder.chunks.append(bytes(c))
            except exceptions.TransferError as exc:
                recorder.raised = exc
                raise
            return super().write(location, iter(recorder.chunks), ctx,
                                 offset=offset, size=size)

    return RecordingDriver


def _transfer(recorder):
    drv = _recording_driver(recorder)
    conf = testing.make_conf({('oslo_transfer', 'chunk_size'): CHUNK,
                              ('oslo_transfer', 'retry_backoff'): 0.0},
                             [drv])
    return transfer_mod.Transfer(conf, drivers=[drv])


def _sha(b):
    return 'sha256:' + hashlib.sha256(b).hexdigest()


@pytest.mark.parametrize('kind', ['iterable', 'file', 'sized-iterable'])
def test_last_chunk_never_reaches_the_driver_on_mismatch(kind):
    payload = fakes.data(MiB + 123)
    rec = _Recorder()
    chunks = [payload[i:i + CHUNK] for i in range(0, len(payload), CHUNK)]
    data = io.BytesIO(payload) if kind == 'file' else iter(chunks)
    size = len(payload) if kind != 'iterable' else None
    with _transfer(rec) as t:
        with pytest.raises(exceptions.ChecksumMismatch):
            t.upload(data, 'rec://up', size=size, checksum=_sha(b'other'))
    sent = b''.join(rec.chunks)
    n = len(sent)
    assert rec.raised is not None, 'the mismatch did not reach the writer'
    assert n < len(payload), 'every byte went out before the check'
    # What went out is a prefix that stops before the final chunk.
    assert len(payload) - n >= len(chunks[-1]), (n, len(payload))
    assert hashlib.sha256(sent).digest() == hashlib.sha256(
        payload[:n]).digest(), 'the bytes handed over are not a prefix'


def test_all_chunks_reach_the_driver_when_the_digest_matches():
    payload = fakes.data(MiB + 123)
    rec = _Recorder()
    chunks = [payload[i:i + CHUNK] for i in range(0, len(payload), CHUNK)]
    with _transfer(rec) as t:
        res = t.upload(iter(chunks), 'rec://up', checksum=_sha(payload))
    assert b''.join(rec.chunks) == payload
    assert rec.raised is None
    assert res.bytes_transferred == len(payload)


def test_data_longer_than_announced_stops_before_the_announced_size():
    # With a Content-Length, the first `size` bytes make a complete object
    # on the server: they must never all be handed over.
    payload = fakes.data(MiB + 123)
    size = MiB
    rec = _Recorder()
    chunks = [payload[i:i + CHUNK] for i in range(0, len(payload), CHUNK)]
    with _transfer(rec) as t:
        with pytest.raises(exceptions.SizeMismatch) as ei:
            t.upload(iter(chunks), 'rec://up', size=size)
    assert 'announced' in str(ei.value)
    assert len(b''.join(rec.chunks)) < size
