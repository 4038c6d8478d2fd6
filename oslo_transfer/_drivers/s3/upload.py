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
  :meth:`MultipartWriter.commit` completes the upload.  Each byte is
  copied once on its way, into its part (:class:`Parts`); memory is
  about ``upload_concurrency + 1`` parts.  An object of known size that
  would need more than :data:`MAX_PARTS` parts gets larger parts
  (:func:`part_size_for`).
* Every part, and a single PUT, carries its CRC32
  (``x-amz-checksum-crc32``; a multipart upload is created with
  ``ChecksumAlgorithm=CRC32``): the server refuses bytes damaged on the
  way (``BadDigest``, retried).  The request signature then does not
  cover the payload (see the driver's client), as boto3's own uploads do;
  the server combines the parts' checksums instead of checksumming the
  whole object again.
* ``ctx.upload_state`` records the bucket, key, upload id, part size,
  object size, part checksum and each acknowledged part (number and
  ETag), saved after every part.  A later attempt (after a retryable
  error, or in a new process after a crash) with the same state lists the
  upload's parts at the server and does not send again a part whose ETag
  is the MD5 of the bytes it would send; every other part is sent again.
  State left by an upload of other parameters (another part size, an
  older release) is aborted at the server, best effort, and a new upload
  starts.
* A failure that is not retryable (the engine's checksum check, a refused
  key) aborts the multipart upload and empties the state; a retryable one
  (and a cancel) keeps both, so that the next attempt continues.
"""

import base64
import concurrent.futures
import hashlib
import logging
import threading
import zlib

from oslo_transfer import driver
from oslo_transfer import exceptions

LOG = logging.getLogger(__name__)

#: the part checksum sent with every part, and named at creation
CHECKSUM = 'CRC32'
#: S3's limit on the parts of one multipart upload
MAX_PARTS = 10000
MiB = 1024 * 1024


def part_size_for(size, configured: int) -> int:
    """``configured``, or more when ``size`` needs more than MAX_PARTS.

    Rounded up to whole MiB; an unknown ``size`` keeps ``configured``.
    """
    if size is None or size <= configured * MAX_PARTS:
        return configured
    need = -(-size // MAX_PARTS)
    return -(-need // MiB) * MiB


def crc32(data) -> str:
    """The base64 CRC32 of ``data``, as ``x-amz-checksum-crc32`` wants."""
    return base64.b64encode(zlib.crc32(data).to_bytes(4, 'big')).decode()


class Parts:
    """Cuts a stream of chunks into parts of ``size`` bytes.

    Each chunk is copied once, into a ``bytearray`` of the part's size
    (botocore takes it as a body as it is), whatever the chunk sizes.
    """

    def __init__(self, size: int):
        self.size = size
        self._buf = bytearray(size)
        self._fill = 0

    def add(self, chunk) -> list:
        """Take ``chunk``; return the parts it completed (often none)."""
        done = []
        view = memoryview(chunk).cast('B')
        while len(view):
            n = min(len(view), self.size - self._fill)
            self._buf[self._fill:self._fill + n] = view[:n]
            self._fill += n
            view = view[n:]
            if self._fill == self.size:
                done.append(self._buf)
                self._buf = bytearray(self.size)
                self._fill = 0
        return done

    def rest(self) -> bytearray:
        """The bytes of the last, shorter part (empty when none)."""
        buf, self._buf = self._buf, bytearray()
        del buf[self._fill:]
        self._fill = 0
        return buf


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
        self.part_size = part_size_for(size, o.part_size)
        self.concurrency = o.upload_concurrency
        self.origin = drv.origin(location)
        self.lock = threading.Lock()
        self.upload_id = None
        self.done = {}          # part number -> (ETag, CRC32), acknowledged
        self.kept = {}          # from the server: part number -> (ETag, size)
        self.sent_bytes = 0
        self._pool = None
        self._futures = set()
        self._number = 0

    def run(self, chunks) -> driver.Writer:
        """Consume ``chunks``; return the writer to commit."""
        parts = Parts(self.part_size)
        held, total = [], 0     # whole parts, before the choice of a PUT
        if self.size is not None and self.size >= self.threshold:
            self._start()
        try:
            for chunk in chunks:
                total += len(chunk)
                for part in parts.add(chunk):
                    if self.upload_id is None:
                        held.append(part)
                        if total >= self.threshold:
                            self._start()
                            self._submit_all(held)
                            held = []
                    else:
                        self._submit(part)
            last = parts.rest()
            if self.upload_id is None and total < self.threshold:
                held.append(last)
                return PutWriter(self, b''.join(held))
            if self.upload_id is None:
                self._start()
            self._submit_all(held)
            if last or not self._number:
                self._submit(last)
            self._wait(0)
            return MultipartWriter(self, self._number)
        except BaseException as exc:
            self._drop_pending()
            if self.upload_id is not None and not (
                    isinstance(exc, exceptions.TransferError) and
                    (exc.retryable or
                     isinstance(exc, exceptions.Cancelled))):
                self.abort(self.ctx)
            raise
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)

    def _drop_pending(self):
        for f in self._futures:
            f.cancel()
        concurrent.futures.wait(self._futures)

    # -- multipart ------------------------------------------------------

    def _state_matches(self, state) -> bool:
        return (state.get('bucket') == self.bucket and
                state.get('key') == self.key and
                state.get('part_size') == self.part_size and
                state.get('size') == self.size and
                state.get('checksum') == CHECKSUM and
                bool(state.get('upload_id')))

    def _start(self):
        state = self.ctx.upload_state
        if state.get('upload_id') and not self._state_matches(state):
            self._abort_stale(state)
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
                                 Bucket=self.bucket, Key=self.key,
                                 ChecksumAlgorithm=CHECKSUM)
            self.upload_id = resp['UploadId']
        state.clear()
        state.update(bucket=self.bucket, key=self.key,
                     part_size=self.part_size, size=self.size,
                     checksum=CHECKSUM, upload_id=self.upload_id, parts={})
        self.ctx.save_upload_state()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            self.concurrency, 'oslo-transfer-s3')

    def _abort_stale(self, state):
        """Abort the multipart upload of a state this upload cannot use."""
        LOG.info('upload to %s: multipart upload %s was started with other '
                 'parameters; aborting it and starting again',
                 self.loc.masked, state['upload_id'])
        try:
            self.drv.call(self.loc, self.ctx, 'abort_multipart_upload',
                          Bucket=state.get('bucket'), Key=state.get('key'),
                          UploadId=state['upload_id'])
        except exceptions.TransferError as exc:
            LOG.debug('upload to %s: aborting %s: %s', self.loc.masked,
                      state['upload_id'], exc)

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

    def _submit_all(self, parts):
        for part in parts:
            self._submit(part)

    def _submit(self, data):
        if self._number == MAX_PARTS:
            raise exceptions.DestinationError(
                '%s: more than %d parts of %d bytes; set [oslo_transfer_s3] '
                'part_size higher, or give the size' % (
                    self.loc.masked, MAX_PARTS, self.part_size),
                url=self.loc.masked)
        self._number += 1
        number = self._number
        kept = self.kept.get(number)
        if kept is not None and kept[1] == len(data) and \
                kept[0].strip('"') == hashlib.md5(
                    data, usedforsecurity=False).hexdigest():
            self._acknowledged(number, kept[0], crc32(data))
            return
        # At most `concurrency` parts in flight (memory: that many parts).
        self._wait(self.concurrency - 1)
        self._futures.add(self._pool.submit(self._send, number, data))

    def _wait(self, leave):
        while len(self._futures) > leave:
            finished, _ = concurrent.futures.wait(
                self._futures, return_when=concurrent.futures.FIRST_COMPLETED)
            for f in finished:
                self._futures.discard(f)
                f.result()

    def _send(self, number, data):
        crc = crc32(data)
        with self.ctx.slot(self.origin):
            resp = self.drv.call(self.loc, self.ctx, 'upload_part',
                                 Bucket=self.bucket, Key=self.key,
                                 UploadId=self.upload_id,
                                 PartNumber=number, Body=data,
                                 ChecksumCRC32=crc)
        with self.lock:
            self.sent_bytes += len(data)
        self._acknowledged(number, resp['ETag'], crc)

    def _acknowledged(self, number, etag, crc):
        with self.lock:
            self.done[number] = (etag, crc)
            self.ctx.upload_state.setdefault('parts', {})[str(number)] = etag
            self.ctx.save_upload_state()

    def complete(self, ctx, count):
        parts = [{'PartNumber': n, 'ETag': self.done[n][0],
                  'ChecksumCRC32': self.done[n][1]}
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
                        Key=up.key, Body=self.data,
                        ChecksumCRC32=crc32(self.data))

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
