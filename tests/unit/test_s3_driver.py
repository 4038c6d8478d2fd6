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

"""The s3 driver without a server: URLs, policy URLs, credentials, errors,
and the selector's view of s3:// (the functional tests use moto_server)."""

from botocore import exceptions as boto_exc
import pytest

from oslo_transfer._drivers import s3
from oslo_transfer._drivers.s3 import driver as s3_driver
from oslo_transfer._drivers.s3 import errors
from oslo_transfer._drivers.s3 import upload
from oslo_transfer import driver
from oslo_transfer import exceptions
from oslo_transfer import locations
from oslo_transfer import testing
from oslo_transfer import transfer as transfer_mod

MiB = 1024 * 1024


def _driver(**opts):
    return s3.S3Driver(testing.make_conf(
        {('oslo_transfer_s3', k): v for k, v in opts.items()}, [s3.S3Driver]))


def _loc(url, **kw):
    return locations.Location(url, **kw)


def test_split():
    assert s3_driver.split(_loc('s3://bucket/a/b%20c')) == ('bucket',
                                                            'a/b c')
    with pytest.raises(exceptions.InvalidLocation, match='s3://BUCKET/KEY'):
        s3_driver.split(_loc('s3://bucket/'))


def test_policy_urls_name_the_endpoint_not_the_bucket():
    drv = _driver(endpoint_url='http://10.0.0.5:7480')
    assert drv.policy_urls(_loc('s3://localhost/k')) == [
        'http://10.0.0.5:7480']
    assert drv.origin(_loc('s3://other/k')) == 'http://10.0.0.5:7480'
    virtual = _driver(endpoint_url='https://rgw.example:443',
                      addressing_style='virtual')
    assert virtual.policy_urls(_loc('s3://img/k')) == [
        'https://img.rgw.example:443']
    aws = _driver(region_name='eu-west-1')
    assert aws.policy_urls(_loc('s3://img/k')) == [
        'https://img.s3.eu-west-1.amazonaws.com']


def test_credentials_mapping():
    drv = _driver(access_key_id='CONF-AK', secret_access_key='CONF-SK',
                  session_token='CONF-T')
    c = drv.credentials(_loc('s3://b/k'))
    assert (c.username, c.password, c.token) == ('CONF-AK', 'CONF-SK',
                                                 'CONF-T')
    c = drv.credentials(_loc('s3://b/k', credentials={
        'username': 'AK', 'password': 'SK', 'token': 'T'}))
    assert (c.username, c.password, c.token) == ('AK', 'SK', 'T')
    # The configured token never goes with another key pair.
    c = drv.credentials(_loc('s3://AK:SK@b/k'))
    assert (c.username, c.password, c.token) == ('AK', 'SK', None)


def _client_error(status, code):
    return boto_exc.ClientError(
        {'Error': {'Code': code, 'Message': 'msg'},
         'ResponseMetadata': {'HTTPStatusCode': status}}, 'GetObject')


@pytest.mark.parametrize('status,code,cls,retryable', [
    (404, 'NoSuchKey', exceptions.SourceNotFound, False),
    (412, 'PreconditionFailed', exceptions.SourceChanged, False),
    (403, 'AccessDenied', exceptions.PermissionDenied, False),
    (403, 'SignatureDoesNotMatch', exceptions.AuthenticationFailed, False),
    (503, 'SlowDown', exceptions.ProtocolError, True),
    (400, 'InvalidArgument', exceptions.ProtocolError, False),
])
def test_errors(status, code, cls, retryable):
    e = errors.translate(_client_error(status, code), 's3://b/k')
    assert type(e) is cls
    assert e.retryable is retryable
    assert 's3://b/k' in str(e) and code in str(e)


def test_connection_errors_are_retryable():
    e = errors.translate(boto_exc.EndpointConnectionError(
        endpoint_url='http://127.0.0.1:1/'), 's3://b/k')
    assert isinstance(e, exceptions.ConnectionFailed) and e.retryable
    e = errors.translate(boto_exc.ReadTimeoutError(
        endpoint_url='http://127.0.0.1:1/'), 's3://b/k')
    assert isinstance(e, exceptions.TransferTimeout)


def test_selector_treats_s3_like_http():
    conf = testing.make_conf({}, [s3.S3Driver])
    with transfer_mod.Transfer(conf, drivers=[s3.S3Driver]) as t:
        plan = t.plan('s3://bucket/key')
    reason = plan.candidates[0].reason
    assert plan.candidates[0].driver == 's3'
    assert 'application protocol' in reason
    assert 'parallel ranged segments' in reason


def test_options_listed_without_boto3_import():
    names = [o.name for o in s3.S3Driver.list_opts()]
    for name in ('endpoint_url', 'region_name', 'access_key_id',
                 'secret_access_key', 'session_token', 'addressing_style',
                 'verify', 'ca_file'):
        assert name in names
    secret = {o.name for o in s3.S3Driver.list_opts() if o.secret}
    assert secret == {'secret_access_key', 'session_token'}


# -- upload: parts, their size, their checksum ------------------------------

def test_parts_cut_any_chunk_sizes_into_whole_parts():
    data = bytes(range(256)) * 100          # 25600 bytes
    p = upload.Parts(7000)
    got = []
    for size in (1, 6999, 7001, 3, 11596):
        piece, data = data[:size], data[size:]
        got += [bytes(x) for x in p.add(piece)]
    rest = bytes(p.rest())
    assert [len(x) for x in got] == [7000, 7000, 7000] and len(rest) == 4600
    assert b''.join(got) + rest == bytes(range(256)) * 100


def test_parts_rest_is_empty_on_a_boundary():
    p = upload.Parts(4)
    assert [bytes(x) for x in p.add(b'abcdefgh')] == [b'abcd', b'efgh']
    assert p.rest() == b''


@pytest.mark.parametrize('size,part', [
    (None, 8 * MiB),                         # unknown: the option
    (8 * MiB * 10000, 8 * MiB),              # just fits
    (8 * MiB * 10000 + 1, 9 * MiB),          # one byte more: whole MiB up
    (100 * 1024 * MiB, 11 * MiB),            # 100 GiB: 10.24 MiB -> 11
])
def test_part_size_for_the_10000_part_limit(size, part):
    assert upload.part_size_for(size, 8 * MiB) == part
    if size:
        assert -(-size // part) <= upload.MAX_PARTS


def test_crc32_is_the_base64_big_endian_header_value():
    # zlib.crc32(b'hello') == 0x3610a686
    assert upload.crc32(b'hello') == 'NhCmhg=='
    assert upload.crc32(bytearray(b'hello')) == 'NhCmhg=='


def test_bad_digest_is_retried():
    e = errors.translate(_client_error(400, 'BadDigest'), 's3://b/k')
    assert isinstance(e, exceptions.ProtocolError) and e.retryable


def test_part_past_the_limit_is_refused_before_any_request():
    up = upload.Upload(_driver(endpoint_url='http://127.0.0.1:1'),
                       _loc('s3://b/k'), driver.Context(), None)
    up._number = upload.MAX_PARTS
    with pytest.raises(exceptions.DestinationError) as info:
        up._submit(bytearray(5))
    assert 'more than 10000 parts' in str(info.value)
    assert 's3://b/k' in str(info.value) and 'part_size' in str(info.value)
    assert up._number == upload.MAX_PARTS and not up._futures
