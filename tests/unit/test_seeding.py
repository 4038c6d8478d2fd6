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

"""Seeding through the contract: ``Result.seeding`` and ``Transfer.seed``.

The engine and the ``Transfer`` know a peer-to-peer driver only by its
capability and the :class:`~oslo_transfer.driver.Seeding` it returns; these
tests use in-memory drivers, no BitTorrent.
"""

import logging

import pytest

import oslo_transfer
from oslo_transfer import driver
from oslo_transfer import exceptions
from oslo_transfer import fixture
from oslo_transfer import testing
from oslo_transfer import transfer as transfer_mod
from tests.unit import fakes

Cap = driver.Capability


class _Seeding(driver.Seeding):
    def __init__(self, path, size=0):
        super().__init__('ab' * 20, path, size, listen_port=6881)
        self.stopped = False

    def wait(self, timeout=None):
        return self.stopped

    def stop(self):
        self.stopped = True

    @property
    def reason(self):
        return 'stopped by the caller' if self.stopped else None


def _sharing_driver(after_commit):
    cls = fixture.make_driver_class(name='share', schemes=('share',))
    cls.after_commit = lambda self, loc, path, ctx: after_commit(path)
    return cls


def _copy(tmp_path, cls):
    payload = fakes.data(100000)
    cls.store.put('share://img', payload)
    dest = tmp_path / 'img'
    with _transfer(cls) as t:
        result = t.copy('share://img', str(dest))
    assert dest.read_bytes() == payload
    return result


def test_result_carries_the_seeding_of_after_commit(tmp_path):
    handles = []

    def share(path):
        handles.append(_Seeding(path))
        return handles[-1]
    result = _copy(tmp_path, _sharing_driver(share))
    assert result.seeding is handles[0]
    assert result.seeding.path == str(tmp_path / 'img')
    assert 'seeding' not in result.to_dict()


def test_a_driver_that_does_not_seed_leaves_it_none(tmp_path):
    cls = fixture.make_driver_class(name='plain', schemes=('plain',))
    payload = fakes.data(1000)
    cls.store.put('plain://x', payload)
    with _transfer(cls) as t:
        assert t.copy('plain://x', str(tmp_path / 'x')).seeding is None


def test_a_failing_after_commit_does_not_fail_the_copy(tmp_path, caplog):
    def share(path):
        raise RuntimeError('no session today')
    with caplog.at_level(logging.ERROR):
        result = _copy(tmp_path, _sharing_driver(share))
    assert result.seeding is None
    assert 'after_commit of share failed' in caplog.text


def test_after_commit_must_return_a_seeding(tmp_path, caplog):
    result = _copy(tmp_path, _sharing_driver(lambda path: True))
    assert result.seeding is None
    assert 'returned True, not a Seeding' in caplog.text


def test_seeding_is_a_public_name():
    assert oslo_transfer.Seeding is driver.Seeding
    assert 'Seeding' in oslo_transfer.__all__


# -- Transfer.seed ------------------------------------------------------------

class _PeerDriver(fixture.MemoryDriver):
    name = 'peer'
    schemes = ('peer',)
    store = fixture.MemoryStore()
    capabilities = Cap.READ | Cap.PEER_TO_PEER
    calls = []

    def seed(self, path, torrent, ctx, seconds=None, peers=(), verify=True):
        if isinstance(torrent, str):
            torrent = ctx.check_url(torrent)
        type(self).calls.append((path, torrent, seconds, peers, verify))
        return _Seeding(path)


class _MissingPeerDriver(_PeerDriver):
    name = 'lonely'

    def check_available(self):
        raise exceptions.MissingDependency('libpeer is not installed')


def _transfer(*classes, **overrides):
    conf = testing.make_conf(
        {('oslo_transfer', k): v for k, v in overrides.items()}, classes)
    return transfer_mod.Transfer(conf, drivers=list(classes))


def test_seed_goes_to_the_peer_to_peer_driver(tmp_path):
    _PeerDriver.calls = []
    data = tmp_path / 'image.raw'
    data.write_bytes(b'z' * 10)
    plain = fixture.make_driver_class(name='plain', schemes=('plain',))
    with _transfer(plain, _PeerDriver) as t:
        seeding = t.seed(data, b'metadata', seconds=30,
                         peers=['10.0.0.2:6881'], verify=False)
    assert isinstance(seeding, driver.Seeding)
    assert seeding.path == str(data)
    assert _PeerDriver.calls == [(str(data), b'metadata', 30,
                                  ('10.0.0.2:6881',), False)]


def test_seed_hands_the_url_policy_to_the_driver(tmp_path):
    _PeerDriver.calls = []
    with _transfer(_PeerDriver, denied_networks=['10.0.0.0/8']) as t:
        with pytest.raises(exceptions.URLNotAllowed):
            t.seed(str(tmp_path), 'http://10.1.2.3/x.torrent')
        t.seed(str(tmp_path), 'http://192.0.2.1/x.torrent')
    assert [c[1] for c in _PeerDriver.calls] == ['http://192.0.2.1/x.torrent']


def test_seed_skips_an_unavailable_peer_to_peer_driver(tmp_path):
    _PeerDriver.calls = []
    with _transfer(_MissingPeerDriver, _PeerDriver) as t:
        t.seed(str(tmp_path), None)
        assert 'lonely' in t.unavailable
    assert len(_PeerDriver.calls) == 1


def test_seed_without_a_peer_to_peer_driver_says_why(tmp_path):
    plain = fixture.make_driver_class(name='plain', schemes=('plain',))
    with _transfer(plain, _MissingPeerDriver) as t:
        with pytest.raises(exceptions.NoDriverFound) as err:
            t.seed(str(tmp_path), None)
    assert 'no installed peer-to-peer driver can seed' in str(err.value)
    assert 'lonely unavailable: libpeer is not installed' in str(err.value)
