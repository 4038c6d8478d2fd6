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

"""Uploads to S3: one PUT at commit, or a multipart upload kept resumable.

* Below ``multipart_threshold`` the bytes are held in memory and sent as
  one PUT in :meth:`PutWriter.commit` (``ATOMIC_COMMIT``: that is where the
  object appears, and a refused connection there is retried by the engine).
* From the threshold on, a multipart upload: parts of ``part_size`` go out
  ``upload_concurrency`` at a time while the chunks arrive, and
  :meth:`MultipartWriter.commit` completes the upload.
* ``ctx.upload_state`` records the bucket, key, upload id, part size,
  object size and each acknowledged part (number and ETag), saved after
  every part.  A later attempt (after a retryable error, or in a new
  process after a crash) with the same state lists the upload's parts at
  the server and does not send again a part whose ETag is the MD5 of the
  bytes it would send; every other part is sent again.
* A failure that is not retryable (the engine's checksum check, a refused
  key) aborts the multipart upload and empties the state; a retryable one
  (and a cancel) keeps both, so that the next attempt continues.
"""

import concurrent.futures
import hashlib
import logging
import threading

from oslo_transfer import driver
from oslo_transfer import exceptions

LOG = logging.getLogger(__name__)


class Upload:
    """One call of :meth:`S3Driver.write`."""

    def __init__(self, drv, location, ctx, size):
        from oslo_transfer._drivers.s3 import driver as s3_driver
        self.drv = drv
        self.loc = location
        self.ctx = ctx
        self.size = size
        self.bucket, self.key = s3_driver.split(location)
        o = drv.options
        self.threshold = o.multipart_threshold
        self.part_size = o.part_size
        self.concurrency = o.upload_concurrency
        self.origin = drv.origin(location)
        self.lock = threading.Lock()
        self.upload_id = None
        self.done = {}          # part number -> ETag, acknowledged
        self.kept = {}          # from the state: part number -> ETag
        self.sent_bytes = 0

    def run(self, chunks) -> driver.Writer:
        """Consume ``chunks``; return the writer to commit."""
        buf = bytearray()
        pool = futures = None
        number = 0
        try:
            for chunk in chunks:
                buf += chunk
                if self.upload_id is None and len(buf) >= self.threshold:
                    self._start()
                    pool = concurrent.futures.ThreadPoolExecutor(
                        self.concurrency, 'oslo-transfer-s3')
                    futures = set()
                while self.upload_id is not None and \
                        len(buf) >= self.part_size:
                    number += 1
                    part = bytes(buf[:self.part_size])
                    del buf[:self.part_size]
                    self._submit(pool, futures, number, part)
            if self.upload_id is None:
                return PutWriter(self, bytes(buf))
            if buf or not number:
                number += 1
                self._submit(pool, futures, number, bytes(buf))
            self._wait(futures, 0)
            return MultipartWriter(self, number)
        except BaseException as exc:
            if futures:
                for f in futures:
                    f.cancel()
                concurrent.futures.wait(futures)
            if self.upload_id is not None and not (
                    isinstance(exc, exceptions.TransferError) and
                    (exc.retryable or
                     isinstance(exc, exceptions.Cancelled))):
                self.abort(self.ctx)
            raise
        finally:
            if pool is not None:
                pool.shutdown(wait=True)

    # -- multipart ------------------------------------------------------

    def _state_matches(self, state) -> bool:
        return (state.get('bucket') == self.bucket and
                state.get('key') == self.key and
                state.get('part_size') == self.part_size and
                state.get('size') == self.size and
                bool(state.get('upload_id')))

    def _start(self):
        state = self.ctx.upload_state
        if self._state_matches(state):
            try:
                self.kept = self._listed(state['upload_id'])
                self.upload_id = state['upload_id']
                LOG.info('upload to %s continues multipart upload %s: %d '
                         'part(s) at the server', self.loc.masked,
                         self.upload_id, len(self.kept))
            except exceptions.SourceNotFound:
                LOG.info('upload to %s: multipart upload %s is gone; '
                         'starting again', self.loc.masked,
                         state['upload_id'])
        if self.upload_id is None:
            resp = self.drv.call(self.loc, self.ctx,
                                 'create_multipart_upload',
                                 Bucket=self.bucket, Key=self.key)
            self.upload_id = resp['UploadId']
        state.clear()
        state.update(bucket=self.bucket, key=self.key,
                     part_size=self.part_size, size=self.size,
                     upload_id=self.upload_id, parts={})
        self.ctx.save_upload_state()

    def _listed(self, upload_id) -> dict:
        parts, marker = {}, 0
        while True:
            resp = self.drv.call(self.loc, self.ctx, 'list_parts',
                                 Bucket=self.bucket, Key=self.key,
                                 UploadId=upload_id, PartNumberMarker=marker)
            for p in resp.get('Parts', ()):
                parts[p['PartNumber']] = (p['ETag'], p.get('Size'))
            if not resp.get('IsTruncated'):
                return parts
            marker = resp['NextPartNumberMarker']

    def _submit(self, pool, futures, number, data):
        kept = self.kept.get(number)
        if kept is not None and kept[1] == len(data) and \
                kept[0].strip('"') == hashlib.md5(
                    data, usedforsecurity=False).hexdigest():
            self._acknowledged(number, kept[0])
            return
        # At most `concurrency` parts in flight (memory: that many parts).
        self._wait(futures, self.concurrency - 1)
        futures.add(pool.submit(self._send, number, data))

    def _wait(self, futures, leave):
        while len(futures) > leave:
            finished, _ = concurrent.futures.wait(
                futures, return_when=concurrent.futures.FIRST_COMPLETED)
            for f in finished:
                futures.discard(f)
                f.result()

    def _send(self, number, data):
        with self.ctx.slot(self.origin):
            resp = self.drv.call(self.loc, self.ctx, 'upload_part',
                                 Bucket=self.bucket, Key=self.key,
                                 UploadId=self.upload_id,
                                 PartNumber=number, Body=data)
        with self.lock:
            self.sent_bytes += len(data)
        self._acknowledged(number, resp['ETag'])

    def _acknowledged(self, number, etag):
        with self.lock:
            self.done[number] = etag
            self.ctx.upload_state.setdefault('parts', {})[str(number)] = etag
            self.ctx.save_upload_state()

    def complete(self, ctx, count):
        parts = [{'PartNumber': n, 'ETag': self.done[n]}
                 for n in range(1, count + 1)]
        self.drv.call(self.loc, ctx, 'complete_multipart_upload',
                      Bucket=self.bucket, Key=self.key,
                      UploadId=self.upload_id,
                      MultipartUpload={'Parts': parts})

    def abort(self, ctx):
        """Abort the multipart upload (if any) and forget its state."""
        if self.upload_id is None:
            return
        try:
            self.drv.call(self.loc, ctx, 'abort_multipart_upload',
                          Bucket=self.bucket, Key=self.key,
                          UploadId=self.upload_id)
        except exceptions.SourceNotFound:
            pass
        finally:
            self.upload_id = None
            ctx.upload_state.clear()
            ctx.save_upload_state()


class PutWriter(driver.Writer):
    """A small object: one PUT, in :meth:`commit` (retried there)."""

    def __init__(self, up, data):
        self.up = up
        self.data = data
        self.bytes_written = len(data)

    def commit(self, ctx):
        up = self.up
        with ctx.slot(up.origin):
            up.drv.call(up.loc, ctx, 'put_object', Bucket=up.bucket,
                        Key=up.key, Body=self.data)

    def abort(self, ctx):
        self.data = b''


class MultipartWriter(driver.Writer):
    """Parts sent; :meth:`commit` completes, :meth:`abort` aborts."""

    def __init__(self, up, count):
        self.up = up
        self.count = count
        self.bytes_written = up.sent_bytes

    def commit(self, ctx):
        self.up.complete(ctx, self.count)

    def abort(self, ctx):
        self.up.abort(ctx)
