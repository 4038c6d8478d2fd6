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

"""``oslo-transfer drivers``: usable drivers first, then why the others
are not."""

import json

from oslo_transfer.cmd import main
from oslo_transfer import exceptions
from oslo_transfer import transfer as transfer_mod


def test_unavailable_and_unloadable_drivers_say_why(monkeypatch, capsys):
    real_load = transfer_mod.Transfer._load_drivers

    def load(self, wanted):
        drivers = real_load(self, wanted)
        self.load_failures['broken'] = ImportError('no module named x')
        for drv in drivers:
            if drv.name == 'http':
                def missing():
                    raise exceptions.MissingDependency('requests is gone')
                drv.check_available = missing
        return drivers
    monkeypatch.setattr(transfer_mod.Transfer, '_load_drivers', load)
    rc = main.main(['drivers', '--json'])
    rows = json.loads(capsys.readouterr().out)
    assert rc == 0
    status = [(r['name'], r['status']) for r in rows]
    assert ('http', 'unavailable: requests is gone') in status
    assert status[-1] == ('broken', 'failed to load: no module named x')
    ok = [r for r in rows if r['status'] == 'ok']
    assert rows[:len(ok)] == ok         # the usable ones first
    assert {'file', 'ftp'} <= {r['name'] for r in ok}
    file_row = next(r for r in ok if r['name'] == 'file')
    assert 'zero_copy' in file_row['capabilities']
    rc = main.main(['drivers'])
    lines = capsys.readouterr().out.splitlines()
    assert ['http', '-', 'unavailable:', 'requests', 'is', 'gone'] in [
        line.split() for line in lines]
