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

"""The s3 driver: stat, ranged reads and uploads through boto3.

* ``s3://BUCKET/KEY`` names an object; the server is the configured
  endpoint (``[oslo_transfer_s3] endpoint_url``, Amazon S3 otherwise), and
  that endpoint is what :meth:`S3Driver.policy_urls` gives the URL policy
  and the per-origin connection cap.
* ``stat`` is a HEAD: the size, and the ETag as validator.  Reads are
  ranged GETs with ``If-Match`` on that ETag: an object replaced mid-read
  answers 412, raised as
  :class:`~oslo_transfer.exceptions.SourceChanged` (``[oslo_transfer]
  on_source_change`` then decides).
* A Location may name its own ``endpoint_url``, ``region_name`` and
  ``addressing_style`` (``Location.options``, :meth:`S3Driver.location_opts`).
* Credentials: a Location's (or the URL's) user name is the access key id,
  its password the secret access key, its token the session token; else
  the options of ``[oslo_transfer_s3]``; else boto3's own chain.
* Uploads: see :mod:`oslo_transfer._drivers.s3.upload`.
* boto3 clients fix their timeouts when they are made: each client gets
  ``[oslo_transfer] io_timeout``, and every call checks the transfer's
  deadline first.  botocore's own retries are off: the engine retries.
"""

import logging
import threading
import urllib.parse

from oslo_transfer._drivers.s3 import errors
from oslo_transfer._drivers.s3 import options
from oslo_transfer._drivers.s3 import upload
from oslo_transfer import driver
from oslo_transfer import exceptions
from oslo_transfer import locations

LOG = logging.getLogger(__name__)

Cap = driver.Capability
#: bytes per chunk of a GET body
READ_CHUNK = 1024 * 1024


def split(location) -> tuple:
    """``(bucket, key)`` of an ``s3://BUCKET/KEY`` location.

    :raises InvalidLocation: no bucket or no key.
    """
    parts = location.parts()
    bucket = parts.hostname
    key = urllib.parse.unquote(parts.path.lstrip('/'))
    if not bucket or not key:
        raise exceptions.InvalidLocation(
            '%s: an S3 URL is s3://BUCKET/KEY' % location.masked,
            url=location.masked)
    return bucket, key


class S3Driver(driver.Driver):
    """Objects of Amazon S3 and S3-compatible stores (boto3)."""

    name = 's3'
    schemes = ('s3',)
    capabilities = (Cap.READ | Cap.RANGED_READ | Cap.WRITE |
                    Cap.ATOMIC_COMMIT | Cap.UPLOAD_STATE)
    chunk_size = READ_CHUNK

    def __init__(self, conf):
        super().__init__(conf)
        self._clients = {}
        self._lock = threading.Lock()

    @classmethod
    def list_opts(cls):
        return options.OPTS

    @classmethod
    def location_opts(cls):
        """``endpoint_url``, ``region_name``, ``addressing_style``."""
        return options.LOCATION_OPTS

    def check_available(self):
        try:
            import boto3  # noqa: F401
        except ImportError as exc:
            raise exceptions.MissingDependency(
                'the s3 driver needs boto3 (pip install boto3): %s'
                % exc) from exc

    # -- the server ---------------------------------------------------------

    @staticmethod
    def _style(lo) -> str:
        if lo.addressing_style == 'auto':
            return 'path' if lo.endpoint_url else 'virtual'
        return lo.addressing_style

    @staticmethod
    def _endpoint(lo) -> str:
        return lo.endpoint_url or (
            'https://s3.%s.amazonaws.com' % lo.region_name)

    def policy_urls(self, location) -> list:
        """The endpoint, with the bucket in its host for virtual style.

        The location's own ``endpoint_url``, ``region_name`` and
        ``addressing_style`` (``Location.options``) win over the
        configured ones.
        """
        lo = self.location_options(location)
        endpoint = locations.canonical_url(self._endpoint(lo))
        if self._style(lo) != 'virtual':
            return [endpoint]
        bucket, _ = split(location)
        p = urllib.parse.urlsplit(endpoint)
        return [urllib.parse.urlunsplit(
            (p.scheme, '%s.%s' % (bucket, p.netloc), p.path, '', ''))]

    def credentials(self, location) -> locations.Credentials:
        """Access key id, secret and session token for ``location``."""
        o = self.options
        return location.effective_credentials(
            username=o.access_key_id, password=o.secret_access_key,
            token=o.session_token)

    def client(self, location, ctx):
        """A boto3 client for ``location``'s credentials (cached)."""
        creds = self.credentials(location)
        lo = self.location_options(location)
        key = (creds.username, creds.password, creds.token, ctx.io_timeout,
               lo.endpoint_url, lo.region_name, self._style(lo))
        with self._lock:
            c = self._clients.get(key)
            if c is None:
                c = self._clients[key] = self._new_client(creds,
                                                          ctx.io_timeout, lo)
        return c

    def _new_client(self, creds, io_timeout, lo):
        import boto3
        from botocore import config as boto_config
        o = self.options
        cfg = boto_config.Config(
            region_name=lo.region_name, signature_version='s3v4',
            connect_timeout=io_timeout, read_timeout=io_timeout,
            retries={'total_max_attempts': 1, 'mode': 'standard'},
            max_pool_connections=32,
            # Uploads carry a CRC32 of their bytes (upload.py), so the
            # signature need not cover them: no SHA-256 of every byte in
            # botocore (over TLS it skips it already), as boto3's own
            # uploads do with their trailing checksums.
            s3={'addressing_style': self._style(lo),
                'payload_signing_enabled': False},
            request_checksum_calculation='when_required',
            response_checksum_validation='when_required')
        verify = (o.ca_file or True) if o.verify else False
        return boto3.session.Session().client(
            's3', endpoint_url=lo.endpoint_url, verify=verify, config=cfg,
            aws_access_key_id=creds.username,
            aws_secret_access_key=creds.password,
            aws_session_token=creds.token if creds.username else None)

    def call(self, location, ctx, op, **kwargs):
        """``client.op(**kwargs)``, deadline checked, errors translated."""
        ctx.check_expiry()
        ctx.cancel.check()
        try:
            return getattr(self.client(location, ctx), op)(**kwargs)
        except Exception as exc:
            raise errors.translate(exc, location.masked) from exc

    # -- reads --------------------------------------------------------------

    def stat(self, location, ctx) -> driver.Stat:
        bucket, key = split(location)
        head = self.call(location, ctx, 'head_object', Bucket=bucket,
                         Key=key)
        modified = head.get('LastModified')
        return driver.Stat(size=head['ContentLength'],
                           validator=head.get('ETag'), ranges=True,
                           mtime=modified.timestamp() if modified else None)

    def read(self, location, offset, length, ctx):
        bucket, key = split(location)
        if length == 0:
            return
        kwargs = {'Bucket': bucket, 'Key': key}
        if offset or length is not None:
            end = '' if length is None else str(offset + length - 1)
            kwargs['Range'] = 'bytes=%d-%s' % (offset, end)
        if ctx.validator:
            kwargs['IfMatch'] = ctx.validator
        resp = self.call(location, ctx, 'get_object', **kwargs)
        body = resp['Body']
        key_cb = ctx.cancel.on_cancel(body.close)
        got = 0
        try:
            if length is None:
                length = resp['ContentLength']
            while got < length:
                ctx.cancel.check()
                try:
                    chunk = body.read(min(READ_CHUNK, length - got))
                except Exception as exc:
                    ctx.cancel.check()
                    raise errors.translate(exc, location.masked) from exc
                if not chunk:
                    break
                got += len(chunk)
                yield chunk
        finally:
            ctx.cancel.remove(key_cb)
            body.close()
        if got < length:
            raise exceptions.ProtocolError(
                '%s ended after %d of %d bytes' % (location.masked, got,
                                                   length),
                url=location.masked)

    # -- writes -------------------------------------------------------------

    def write(self, location, chunks, ctx, offset=0, size=None):
        if offset:
            raise exceptions.DestinationError(
                '%s: S3 objects are written whole (offset %d)'
                % (location.masked, offset), url=location.masked)
        return upload.Upload(self, location, ctx, size).run(chunks)

    def close(self):
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            try:
                c.close()
            except Exception:  # noqa: closing is best effort
                pass
