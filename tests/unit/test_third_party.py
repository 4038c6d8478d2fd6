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

"""A driver shipped by another distribution registers by entry point only.

The test installs (on a private sys.path entry) a distribution that lives
outside oslo_transfer and declares ``echo`` in ``oslo_transfer.drivers``;
nothing in oslo_transfer names it.
"""

import hashlib
import json
import os
import subprocess
import sys
import textwrap

DRIVER = textwrap.dedent('''
    from oslo_config import cfg
    from oslo_transfer import driver

    OPTS = [cfg.IntOpt('repeat', default=1000)]

    class EchoDriver(driver.Driver):
        """echo://WORD: WORD repeated [oslo_transfer_echo] repeat times."""
        name = 'echo'
        schemes = ('echo',)
        capabilities = driver.Capability.READ | driver.Capability.RANGED_READ

        @classmethod
        def list_opts(cls):
            return OPTS

        def _data(self, location):
            word = location.url.split('://', 1)[1].encode()
            return word * self.options.repeat

        def stat(self, location, ctx):
            return driver.Stat(size=len(self._data(location)),
                               validator='echo', ranges=True)

        def read(self, location, offset, length, ctx):
            data = self._data(location)
            end = len(data) if length is None else offset + length
            yield data[offset:end]
''')


def _install(tmp_path):
    site = tmp_path / 'site'
    site.mkdir()
    (site / 'echo_transfer_driver.py').write_text(DRIVER)
    info = site / 'echo_transfer_driver-1.0.dist-info'
    info.mkdir()
    (info / 'METADATA').write_text('Metadata-Version: 2.1\n'
                                   'Name: echo-transfer-driver\n'
                                   'Version: 1.0\n')
    (info / 'entry_points.txt').write_text(
        '[oslo_transfer.drivers]\n'
        'echo = echo_transfer_driver:EchoDriver\n')
    (info / 'RECORD').write_text('')
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [str(site), os.getcwd(), env.get('PYTHONPATH', '')])
    return env


def _cli(env, *args):
    return subprocess.run([sys.executable, '-m', 'oslo_transfer.cmd.main',
                           *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_entry_point_driver_is_listed_and_used(tmp_path):
    env = _install(tmp_path)
    out = _cli(env, 'drivers', '--json')
    assert out.returncode == 0, out.stderr
    rows = {r['name']: r for r in json.loads(out.stdout)}
    assert rows['echo']['schemes'] == ['echo']
    assert 'ranged_read' in rows['echo']['capabilities']
    conf = tmp_path / 'echo.conf'
    conf.write_text('[oslo_transfer_echo]\nrepeat = 3000\n')
    dest = tmp_path / 'out'
    want = b'hello' * 3000
    out = _cli(env, '--config-file', str(conf), 'copy', 'echo://hello',
               str(dest), '--checksum',
               'sha256:' + hashlib.sha256(want).hexdigest(), '--json')
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res['driver'] == 'echo'
    assert dest.read_bytes() == want


def test_without_the_distribution_the_scheme_is_unknown(tmp_path):
    out = _cli(dict(os.environ), 'copy', 'echo://hello',
               str(tmp_path / 'out'))
    assert out.returncode == 1
    assert 'no installed driver can read echo' in out.stderr
