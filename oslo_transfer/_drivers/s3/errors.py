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

"""botocore's errors translated into :mod:`oslo_transfer.exceptions`."""

from oslo_transfer import exceptions

_NOT_FOUND = {'NoSuchKey', 'NoSuchBucket', 'NotFound', 'NoSuchUpload', '404'}
_AUTH = {'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'InvalidToken',
         'ExpiredToken', 'InvalidClientTokenId',
         'AuthorizationHeaderMalformed'}
_RETRY = {'SlowDown', 'RequestTimeout', 'InternalError', 'ServiceUnavailable',
          'RequestTimeTooSkewed', 'Throttling', 'ThrottlingException',
          # a part's bytes did not match its CRC32: damaged on the way
          'BadDigest'}


def translate(exc: Exception, masked: str) -> exceptions.TransferError:
    """The exception to raise (``from exc``) for a boto3 error."""
    from botocore import exceptions as boto_exc
    if isinstance(exc, exceptions.TransferError):
        return exc
    if isinstance(exc, boto_exc.ClientError):
        return _client_error(exc, masked)
    if isinstance(exc, (boto_exc.NoCredentialsError,
                        boto_exc.PartialCredentialsError)):
        return exceptions.AuthenticationFailed(
            '%s: no S3 credentials (a Location\'s credentials, the URL\'s '
            'user name and password, or [oslo_transfer_s3] access_key_id '
            'and secret_access_key): %s' % (masked, exc), url=masked)
    if isinstance(exc, (boto_exc.ReadTimeoutError,
                        boto_exc.ConnectTimeoutError)):
        return exceptions.TransferTimeout('%s: %s' % (masked, exc),
                                          url=masked)
    if isinstance(exc, boto_exc.ParamValidationError):
        return exceptions.InvalidLocation('%s: %s' % (masked, exc),
                                          url=masked)
    if isinstance(exc, (boto_exc.BotoCoreError, OSError)):
        return exceptions.ConnectionFailed('%s: %s' % (masked, exc),
                                           url=masked)
    return exceptions.ProtocolError('%s: %s' % (masked, exc), url=masked,
                                    retryable=False)


def _client_error(exc, masked):
    err = exc.response.get('Error', {})
    code = str(err.get('Code', ''))
    status = exc.response.get('ResponseMetadata', {}).get('HTTPStatusCode')
    msg = '%s: %s %s (%s)' % (masked, status, code,
                              err.get('Message') or 'no message')
    if code in _NOT_FOUND or status == 404:
        return exceptions.SourceNotFound(msg, url=masked)
    if code == 'PreconditionFailed' or status == 412:
        return exceptions.SourceChanged(msg, url=masked)
    if code in _AUTH or status == 401:
        return exceptions.AuthenticationFailed(msg, url=masked)
    if code == 'AccessDenied' or status == 403:
        return exceptions.PermissionDenied(msg, url=masked)
    if code in _RETRY or (status or 0) >= 500:
        return exceptions.ProtocolError(msg, url=masked, retryable=True)
    return exceptions.ProtocolError(msg, url=masked, retryable=False)
