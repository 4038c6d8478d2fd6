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

"""The Glance guide's example: store an image as glance_store's add() does.

``doc/source/user/glance.rst`` includes this file; the functional tests
run it against nginx (WebDAV PUT) and OpenSSH (SFTP).
"""

from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric import utils
from cryptography.hazmat.primitives import hashes


def add_image(transfer, image_file, url, image_size=None,
              hashing_algo='sha512', verifier=None):
    """Store ``image_file`` at ``url``; what glance_store's ``add()`` returns.

    :param transfer: the service's ``oslo_transfer.Transfer``.
    :param image_file: the request body: a file object, a path or an
        iterable of bytes.
    :param url: where the image goes (``https://...``, ``sftp://...``).
    :param image_size: the size the client announced, if any.
    :param hashing_algo: ``[DEFAULT] hashing_algorithm`` of Glance.
    :param verifier: cursive's signature verifier, or None.
    :returns: ``(location, size, checksum, multihash, metadata)``.
    :raises oslo_transfer.exceptions.VerificationFailed: the signature
        does not match; nothing was stored.
    """
    result = transfer.upload(image_file, url, size=image_size,
                             hash_algos=('md5', hashing_algo),
                             verifier=verifier)
    return (url, result.size, result.digests['md5'],
            result.digests[hashing_algo], {})


class SignatureVerifier:
    """A stand-in for ``cursive.signature_utils.get_verifier()``.

    RSA-PSS over SHA-256, fed chunk by chunk, as cursive's verifiers are:
    ``update(bytes)`` for each chunk, ``verify()`` at the end, which
    raises ``cryptography.exceptions.InvalidSignature`` on a mismatch.
    """

    def __init__(self, public_key, signature):
        self._key = public_key
        self._signature = signature
        self._hash = hashes.Hash(hashes.SHA256())

    def update(self, data):
        self._hash.update(data)

    def verify(self):
        self._key.verify(self._signature, self._hash.finalize(),
                         padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                     salt_length=padding.PSS.MAX_LENGTH),
                         utils.Prehashed(hashes.SHA256()))


def sign(private_key, data):
    """The signature a user uploads as ``img_signature`` (for the tests)."""
    return private_key.sign(data,
                            padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                        salt_length=padding.PSS.MAX_LENGTH),
                            hashes.SHA256())
