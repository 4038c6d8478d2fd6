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

"""Glance's uploads by PUT to nginx: size, md5, multihash, signature.

The guide's example (``tests/functional/doc_glance.py``) runs here.
"""

import hashlib
import io
import os

from cryptography.hazmat.primitives.asymmetric import rsa
import pytest

import oslo_transfer
from oslo_transfer import exceptions
from tests.functional import conftest as fconf
from tests.functional import doc_glance

MiB = fconf.MiB


@pytest.fixture(scope='module')
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def transfer(make_conf):
    t = oslo_transfer.Transfer(make_conf(oslo_transfer={'retries': 1,
                                                        'retry_backoff': 0.1}))
    yield t
    t.close()


def _uploaded(nginx, name):
    return os.path.join(nginx.upload_dir, name)


def _name(tag):
    return 'glance-%s-%d.raw' % (tag, os.getpid())


def test_guide_example_stores_what_glance_records(nginx, transfer, tmp_path,
                                                  rsa_key):
    src = fconf.make_data_file(tmp_path, 'img.raw', 3 * MiB + 17)
    verifier = doc_glance.SignatureVerifier(
        rsa_key.public_key(), doc_glance.sign(rsa_key, src.data))
    url = nginx.url(_name('ok'), 'dav')
    with open(src.path, 'rb') as image_file:
        loc, size, checksum, multihash, meta = doc_glance.add_image(
            transfer, image_file, url, verifier=verifier)
    assert fconf.file_equals(_uploaded(nginx, _name('ok')), src.data)
    assert (loc, size) == (url, src.size)
    assert checksum == hashlib.md5(src.data).hexdigest()
    assert multihash == hashlib.sha512(src.data).hexdigest()


def test_bad_signature_stores_nothing(nginx, transfer, tmp_path, rsa_key):
    src = fconf.make_data_file(tmp_path, 'img.raw', 2 * MiB + 5)
    name = _name('badsig')
    for data in (src.path, io.BytesIO(src.data),
                 iter([src.data[:MiB], src.data[MiB:]])):
        verifier = doc_glance.SignatureVerifier(
            rsa_key.public_key(), doc_glance.sign(rsa_key, b'other data'))
        with pytest.raises(exceptions.VerificationFailed) as ei:
            doc_glance.add_image(transfer, data, nginx.url(name, 'dav'),
                                 image_size=src.size, verifier=verifier)
        assert 'InvalidSignature' in str(ei.value)
        assert 'nothing was committed' in str(ei.value)
        assert not os.path.exists(_uploaded(nginx, name))


def test_upload_without_checksum_reports_default_digest(nginx, transfer):
    """Before: digest None and size None for an iterable."""
    data = os.urandom(MiB + 3)
    name = _name('default')
    r = transfer.upload(iter([data[:1000], data[1000:]]),
                        nginx.url(name, 'dav'))
    assert r.size == len(data)
    assert r.algorithm == 'sha256'
    assert r.digest == hashlib.sha256(data).hexdigest()
    assert r.digests == {'sha256': r.digest}


def test_checksum_and_hash_algos_together(nginx, transfer, tmp_path):
    src = fconf.make_data_file(tmp_path, 'img.raw', MiB)
    r = transfer.upload(src.path, nginx.url(_name('both'), 'dav'),
                        checksum=src.checksum('sha256'),
                        hash_algos=('md5', 'SHA-512'))
    assert r.digest == src.sha256 and r.algorithm == 'sha256'
    assert r.digests == {'sha256': src.sha256,
                         'md5': hashlib.md5(src.data).hexdigest(),
                         'sha512': hashlib.sha512(src.data).hexdigest()}


def test_unknown_hash_algo_is_refused_before_any_io(nginx, transfer):
    name = _name('unknown')
    with pytest.raises(ValueError, match='unknown checksum algorithm'):
        transfer.upload(b'abc', nginx.url(name, 'dav'),
                        hash_algos=('md5', 'nope'))
    assert nginx.requests_for(name) == []


def test_copy_result_has_digests(nginx, serve, transfer, tmp_path):
    src = serve(MiB + 1)
    r = transfer.copy(nginx.url(src.name), str(tmp_path / 'copy'),
                      hash_algos=('md5', 'sha512'))
    assert r.digests == {'md5': hashlib.md5(src.data).hexdigest(),
                         'sha512': hashlib.sha512(src.data).hexdigest()}
    assert r.digest == r.digests['md5']
    name = _name('copied')
    r = transfer.copy(nginx.url(src.name), nginx.url(name, 'dav'),
                      hash_algos=('sha512',))
    assert fconf.file_equals(_uploaded(nginx, name), src.data)
    assert r.digests == {'sha512': hashlib.sha512(src.data).hexdigest()}


def test_local_upload_with_bad_signature_leaves_nothing(transfer, tmp_path,
                                                        rsa_key):
    data = os.urandom(MiB + 7)
    dest = str(tmp_path / 'store' / 'img')
    os.mkdir(tmp_path / 'store')
    verifier = doc_glance.SignatureVerifier(
        rsa_key.public_key(), doc_glance.sign(rsa_key, b'x'))
    with pytest.raises(exceptions.VerificationFailed):
        transfer.upload(io.BytesIO(data), dest, verifier=verifier,
                        hash_algos=('md5', 'sha512'))
    assert os.listdir(tmp_path / 'store') == []
    verifier = doc_glance.SignatureVerifier(
        rsa_key.public_key(), doc_glance.sign(rsa_key, data))
    r = transfer.upload(io.BytesIO(data), dest, verifier=verifier,
                        hash_algos=('md5', 'sha512'))
    fconf.assert_only_dest(dest, data)
    assert r.digests['md5'] == hashlib.md5(data).hexdigest()
