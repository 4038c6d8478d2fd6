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

"""The default selector's rules, with test drivers standing in for NFS,
iSCSI and BitTorrent so that those drivers only have to register."""

import pytest

from oslo_transfer import driver
from oslo_transfer import exceptions
from oslo_transfer import fixture
from oslo_transfer import locations
from oslo_transfer import selector
from oslo_transfer import testing
from oslo_transfer import transfer as transfer_mod

Cap = driver.Capability

HTTP = fixture.make_driver_class(
    name='web', schemes=('http', 'https'),
    capabilities=Cap.READ | Cap.WRITE | Cap.RANGED_READ)
NFS = fixture.make_driver_class(
    name='nfsish', schemes=('nfs',),
    capabilities=Cap.READ | Cap.RANGED_READ | Cap.BLOCK_ACCESS |
    Cap.SAME_NETWORK_ONLY)


def _p2p_accepts(self, loc, ctx):
    return loc.scheme in ('http', 'https') and ctx.torrent is not None


P2P = fixture.make_driver_class(
    name='swarm', schemes=('torrent',), capabilities=Cap.READ |
    Cap.PEER_TO_PEER | Cap.COPY_TO_PATH, accepts=_p2p_accepts)


def plan(urls, hints=None, torrent=None, drivers=(HTTP, NFS, P2P), **over):
    conf = testing.make_conf({('oslo_transfer', k): v
                              for k, v in over.items()}, drivers)
    with transfer_mod.Transfer(conf, drivers=list(drivers)) as t:
        return t.plan(locations.Source(urls=urls, torrent=torrent),
                      hints=hints)


def order(p):
    return [(c.driver, c.url.split(':')[0]) for c in p.candidates]


def test_same_network_prefers_block_access():
    p = plan(['http://h/img', 'nfs://h/exp/img'],
             selector.Hints(same_network=True))
    assert order(p) == [('nfsish', 'nfs'), ('web', 'http')]
    assert 'same network' in p.candidates[0].reason


def test_site_labels_mean_same_network():
    p = plan(['http://h/img', 'nfs://h/exp/img'],
             selector.Hints(source_site='dc1', dest_site='dc1'))
    assert p.candidates[0].driver == 'nfsish'


def test_isolated_drops_same_network_only():
    p = plan(['http://h/img', 'nfs://h/exp/img'],
             selector.Hints(same_network=False))
    assert order(p) == [('web', 'http')]
    assert any(d[1] == 'nfsish' and 'same-network-only' in d[2]
               for d in p.dropped)


def test_unknown_topology_counts_as_isolated():
    p = plan(['http://h/img', 'nfs://h/exp/img'])
    assert order(p) == [('web', 'http')]


def test_hints_never_drop_the_only_location():
    p = plan(['nfs://h/exp/img'], selector.Hints(same_network=False))
    assert order(p) == [('nfsish', 'nfs')]
    assert 'only way' in p.candidates[0].reason


def test_many_peers_with_metadata_rank_p2p_first():
    p = plan(['http://h/img'], selector.Hints(peers=40), torrent=b'meta')
    assert order(p) == [('swarm', 'http'), ('web', 'http')]
    assert 'p2p_min_peers' in p.candidates[0].reason


def test_one_peer_keeps_http_first():
    p = plan(['http://h/img'], selector.Hints(peers=1), torrent=b'meta')
    assert order(p) == [('web', 'http'), ('swarm', 'http')]


def test_no_metadata_no_p2p():
    p = plan(['http://h/img'], selector.Hints(peers=40))
    assert order(p) == [('web', 'http')]


def test_p2p_min_peers_is_configurable():
    p = plan(['http://h/img'], selector.Hints(peers=3), torrent=b'm',
             p2p_min_peers=3)
    assert p.candidates[0].driver == 'swarm'


def test_disabled_driver_is_dropped():
    p = plan(['http://h/img'], selector.Hints(peers=40), torrent=b'm',
             disabled_drivers=['swarm'])
    assert order(p) == [('web', 'http')]
    assert any('disabled' in d[2] for d in p.dropped)


def test_callers_order_within_a_tier():
    p = plan(['https://b/img', 'http://a/img'])
    assert [c.url for c in p.candidates] == ['https://b/img', 'http://a/img']


def test_no_driver_for_scheme():
    with pytest.raises(exceptions.NoDriverFound) as ei:
        plan(['gopher://h/x'])
    assert 'gopher' in str(ei.value)


def test_plan_never_shows_passwords():
    p = plan(['http://u:s3cret@h/img'])
    assert 's3cret' not in p.explain()
    assert 's3cret' not in str(p.to_dict())


def test_selector_plugin_is_replaceable():
    conf = testing.make_conf({('oslo_transfer', 'selector'): 'nope'})
    with pytest.raises(exceptions.NoDriverFound) as ei:
        transfer_mod.Transfer(conf, drivers=[HTTP])
    assert 'selector' in str(ei.value)
