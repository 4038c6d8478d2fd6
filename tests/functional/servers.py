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

"""Re-exports :mod:`oslo_transfer.testing.servers` (shipped there)."""

from oslo_transfer.testing.servers import free_port  # noqa: F401
from oslo_transfer.testing.servers import LOOPBACK  # noqa: F401
from oslo_transfer.testing.servers import port_open  # noqa: F401
from oslo_transfer.testing.servers import Process  # noqa: F401
from oslo_transfer.testing.servers import ProcessExited  # noqa: F401
from oslo_transfer.testing.servers import require_binary  # noqa: F401
from oslo_transfer.testing.servers import wait_for_port  # noqa: F401
from oslo_transfer.testing.servers import wait_for_port_closed  # noqa: F401

__all__ = ['free_port', 'wait_for_port', 'wait_for_port_closed', 'port_open',
           'require_binary', 'Process', 'ProcessExited']
