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

"""What Glance and Nova meet over SFTP (OpenSSH): digests, signature,
cancel, and the errors a service must see as they are."""

import hashlib
import os

from cryptography.hazmat.primitives.asymmetric import rsa
import pytest

from oslo_transfer import driver as driver_mod
from oslo_transfer import exceptions
from oslo_transfer import transfer as transfer_mod
from tests.functional import conftest as fconf
from tests.functional import doc_glance

MiB = fconf.MiB


def test_glance_example_over_sftp(sshd, sftp_conf, remote_dir, tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    src = fconf.make_data_file(tmp_path, 'img.raw', 2 * MiB + 3)
    target = os.path.join(remote_dir, 'img')
    with transfer_mod.Transfer(sftp_conf(), drivers=['sftp']) as t:
        bad = doc_glance.SignatureVerifier(
            key.public_key(), doc_glance.sign(key, b'not the image'))
        with pytest.raises(exceptions.VerificationFailed):
            doc_glance.add_image(t, src.path, sshd.url(target),
                                 verifier=bad)
        assert os.listdir(remote_dir) == []
        good = doc_glance.SignatureVerifier(
            key.public_key(), doc_glance.sign(key, src.data))
        with open(src.path, 'rb') as f:
            _, size, md5, sha512, _ = doc_glance.add_image(
                t, f, sshd.url(target), image_size=src.size, verifier=good)
    assert fconf.file_equals(target, src.data)
    assert os.listdir(remote_dir) == ['img']
    assert size == src.size
    assert md5 == hashlib.md5(src.data).hexdigest()
    assert sha512 == hashlib.sha512(src.data).hexdigest()


def test_cancelled_upload_keeps_part(sshd, sftp_conf, remote_dir, tmp_path):
    """drivers/sftp.rst: an interrupted upload keeps NAME.part, always."""
    src = fconf.make_data_file(tmp_path, 'img.raw', 6 * MiB)
    target = os.path.join(remote_dir, 'img')
    with transfer_mod.Transfer(sftp_conf(), drivers=['sftp']) as t:
        for _ in range(3):
            token = driver_mod.CancelToken()

            def progress(done, total):
                if done >= 2 * MiB:
                    token.cancel('the caller gave up')

            with pytest.raises(exceptions.Cancelled):
                t.upload(src.path, sshd.url(target),
                         checksum=src.checksum(), progress=progress,
                         cancel=token)
            assert os.listdir(remote_dir) == ['img.part']
        r = t.upload(src.path, sshd.url(target), checksum=src.checksum())
    assert r.bytes_resumed > 0
    assert fconf.file_equals(target, src.data)
    assert os.listdir(remote_dir) == ['img']


def test_data_that_cancels_keeps_part(sshd, sftp_conf, remote_dir):
    """A service's data that stops with Cancelled leaves NAME.part too.

    (Its import task was aborted.)  The connection is still open here, so
    only the rule keeps the file.
    """
    target = os.path.join(remote_dir, 'img')

    def chunks():
        yield os.urandom(MiB)
        yield os.urandom(MiB)
        raise exceptions.Cancelled('the import task was aborted')

    with transfer_mod.Transfer(sftp_conf(), drivers=['sftp']) as t:
        with pytest.raises(exceptions.Cancelled, match='task was aborted'):
            t.upload(chunks(), sshd.url(target))
    assert os.listdir(remote_dir) == ['img.part']
    assert os.path.getsize(target + '.part') == MiB


def test_unknown_host_key_on_existing_destination(sshd, put, sftp_conf,
                                                  dest, tmp_path):
    """Not DestinationExists: the host-key error the stat hit."""
    empty = tmp_path / 'known_hosts'
    empty.write_text('')
    df = put(4096)
    with open(dest, 'wb') as f:
        f.write(b'an older image')
    c = sftp_conf(oslo_transfer_sftp={'known_hosts_file': str(empty)})
    with transfer_mod.Transfer(c, drivers=['sftp']) as t:
        with pytest.raises(exceptions.AuthenticationFailed) as ei:
            t.copy(sshd.url(df.path), dest)
    assert 'host key of [127.0.0.1]:%d is unknown' % sshd.port in str(
        ei.value)
    assert not isinstance(ei.value, exceptions.DestinationExists)
    fconf.assert_only_dest(dest, b'an older image')
