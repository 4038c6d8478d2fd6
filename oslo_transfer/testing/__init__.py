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

"""Test aids for driver authors, shipped with the library.

* :class:`DriverConformance` (:mod:`.conformance`): the contract's tests,
  a mixin a driver's test class runs against its real server;
* :mod:`.servers`: ``free_port``, ``wait_for_port``, ``require_binary``
  and :class:`~.servers.Process`, a server started in the foreground and
  stopped by its PID;
* :mod:`.files`: ``make_data_file`` and the ``assert_*`` checks of what a
  transfer leaves beside its destination (``assert_resumable``, ...).

The in-tree drivers' functional tests use the same.
"""

from oslo_transfer.testing.conformance import DriverConformance
from oslo_transfer.testing.conformance import make_conf
from oslo_transfer.testing.files import assert_nothing_left
from oslo_transfer.testing.files import assert_only_dest
from oslo_transfer.testing.files import assert_resumable
from oslo_transfer.testing.files import correct_bytes
from oslo_transfer.testing.files import make_data_file
from oslo_transfer.testing.servers import free_port
from oslo_transfer.testing.servers import Process
from oslo_transfer.testing.servers import require_binary
from oslo_transfer.testing.servers import wait_for_port

__all__ = ['DriverConformance', 'make_conf', 'free_port', 'wait_for_port',
           'require_binary', 'Process', 'make_data_file', 'assert_only_dest',
           'assert_resumable', 'assert_nothing_left', 'correct_bytes']
