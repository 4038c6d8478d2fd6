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

"""``Driver.location_opts()``: typed, checked ``Location.options``."""

from oslo_config import cfg
import pytest

from oslo_transfer._drivers import s3
from oslo_transfer import driver
from oslo_transfer import exceptions
from oslo_transfer import locations
from oslo_transfer import testing
from oslo_transfer import transfer as transfer_mod


class _Opts(driver.Driver):
    """A driver with a configured option and a location-only one."""

    name = 'optsdemo'
    schemes = ('optsdemo',)
    capabilities = driver.Capability.READ

    @classmethod
    def list_opts(cls):
        return [cfg.IntOpt('window', default=4, min=1, max=64)]

    @classmethod
    def location_opts(cls):
        return [cfg.IntOpt('window', min=1, max=64),
                cfg.StrOpt('mode', default='fast', choices=['fast', 'safe']),
                cfg.StrOpt('passphrase', secret=True,
                           choices=['open-sesame'])]


def _drv(cls=_Opts, **conf):
    return cls(testing.make_conf(
        {('oslo_transfer_%s' % cls.name, k): v
         for k, v in conf.items()}, [cls]))


def _loc(**options):
    return locations.Location('optsdemo://u:S3CR3T@host/x', options=options)


def test_values_come_from_the_location_then_the_group_then_the_default():
    drv = _drv(window=8)
    lo = drv.location_options(_loc())
    assert (lo.window, lo.mode, lo.passphrase) == (8, 'fast', None)
    lo = drv.location_options(_loc(window='16', mode='safe'))
    assert (lo.window, lo.mode) == (16, 'safe')      # converted by type


@pytest.mark.parametrize('options,words', [
    ({'window': 0}, ["'window'", '0', 'greater than or equal to 1']),
    ({'window': 'many'}, ["'window'", "'many'"]),
    ({'mode': 'slow'}, ["'mode'", "'slow'", 'fast', 'safe']),
    ({'colour': 'red', 'size': 1}, ["'colour', 'size'",
                                    'mode, passphrase, window']),
])
def test_a_bad_location_option_is_a_value_error_naming_it(options, words):
    with pytest.raises(exceptions.InvalidLocation) as info:
        _drv().location_options(_loc(**options))
    assert isinstance(info.value, ValueError)
    msg = str(info.value)
    assert msg.startswith('optsdemo://u:***@host/x: '), msg
    for w in words:
        assert w in msg, msg
    assert 'S3CR3T' not in msg


def test_a_secret_location_option_never_shows_its_value():
    with pytest.raises(exceptions.InvalidLocation) as info:
        _drv().location_options(_loc(passphrase='hunter2-wrong'))
    assert "'passphrase'" in str(info.value)
    assert 'hunter2' not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_a_driver_without_location_opts_takes_none():
    class Plain(driver.Driver):
        name = 'plain'
    with pytest.raises(exceptions.InvalidLocation, match='takes: none'):
        Plain(testing.make_conf({}, [])).location_options(_loc(window=1))
    assert vars(Plain(None).location_options(
        locations.Location('plain://h/x'))) == {}


def test_location_options_stay_out_of_repr():
    loc = locations.Location('s3://b/k', options={'endpoint_url':
                                                  'http://10.1.2.3:9000'})
    assert '10.1.2.3' not in repr(loc) and 'options' not in repr(loc)


# -- the s3 driver ------------------------------------------------------------

def _s3(**conf):
    return s3.S3Driver(testing.make_conf(
        {('oslo_transfer_s3', k): v for k, v in conf.items()},
        [s3.S3Driver]))


def test_s3_endpoint_region_and_style_per_location():
    drv = _s3(endpoint_url='http://10.0.0.5:7480')
    own = locations.Location('s3://img/k', options={
        'endpoint_url': 'https://minio.example:9000',
        'addressing_style': 'virtual'})
    assert drv.policy_urls(own) == ['https://img.minio.example:9000']
    assert drv.origin(own) == 'https://img.minio.example:9000'
    assert drv.policy_urls(locations.Location('s3://img/k')) == [
        'http://10.0.0.5:7480']
    aws = locations.Location('s3://img/k', options={
        'region_name': 'eu-west-1'})
    assert _s3().policy_urls(aws) == [
        'https://img.s3.eu-west-1.amazonaws.com']


@pytest.mark.parametrize('options,words', [
    ({'endpoint_url': 'ftp://10.0.0.5/'}, ["'endpoint_url'", 'ftp']),
    ({'endpoint_url': 'not a url'}, ["'endpoint_url'"]),
    ({'addressing_style': 'sideways'}, ["'addressing_style'", 'sideways']),
    ({'verify': False}, ["'verify'", 'addressing_style, endpoint_url, '
                                     'region_name']),
])
def test_s3_bad_location_options_refused_by_plan_before_any_io(options,
                                                               words):
    conf = testing.make_conf({}, [s3.S3Driver])
    loc = locations.Location('s3://AKID:SECRETKEY@b/k', options=options)
    with transfer_mod.Transfer(conf, drivers=[s3.S3Driver]) as t:
        with pytest.raises(exceptions.InvalidLocation) as info:
            t.plan(loc)
    # refused as the caller's mistake, not as a URL policy verdict
    assert type(info.value) is exceptions.InvalidLocation
    msg = str(info.value)
    assert 's3://AKID:***@b/k' in msg, msg
    assert 'SECRETKEY' not in msg
    for w in words:
        assert w in msg, msg


class _Other(_Opts):
    """Another driver of the same scheme that takes no location options."""

    name = 'optsother'

    @classmethod
    def location_opts(cls):
        return []


def test_plan_drops_a_driver_that_does_not_take_a_name():
    conf = testing.make_conf({}, [_Opts, _Other])
    loc = locations.Location('optsdemo://host/x', options={'mode': 'safe'})
    with transfer_mod.Transfer(conf, drivers=[_Other, _Opts]) as t:
        plan = t.plan(loc)
    assert [c.driver for c in plan.candidates] == ['optsdemo']
    assert [(d[1], d[2]) for d in plan.dropped if d[1] == 'optsother'] == [
        ('optsother', "the optsother driver takes no Location option "
                      "'mode' (it takes: none)")]


def test_plan_refuses_a_name_no_driver_takes():
    conf = testing.make_conf({}, [_Other])
    loc = locations.Location('optsdemo://u:pw@host/x', options={'mode': 1})
    with transfer_mod.Transfer(conf, drivers=[_Other]) as t:
        with pytest.raises(exceptions.InvalidLocation) as info:
            t.plan(loc)
    assert type(info.value) is exceptions.InvalidLocation
    assert str(info.value) == (
        "optsdemo://u:***@host/x: the optsother driver takes no Location "
        "option 'mode' (it takes: none)")
