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

"""oslo.transfer: move large byte streams with the right protocol.

Scripts call :func:`copy`, :func:`open`, :func:`upload` and :func:`plan`;
services build a :class:`Transfer` on their ``ConfigOpts``.
"""

from oslo_transfer.api import copy
from oslo_transfer.api import open  # noqa: A004 shadows the builtin
from oslo_transfer.api import plan
from oslo_transfer.api import upload
from oslo_transfer.checksum import Checksum
from oslo_transfer.driver import CancelToken
from oslo_transfer import exceptions
from oslo_transfer.locations import Credentials
from oslo_transfer.locations import Location
from oslo_transfer.locations import Source
from oslo_transfer.result import Result
from oslo_transfer.selector import Hints
from oslo_transfer.selector import Plan
from oslo_transfer.transfer import Transfer
from oslo_transfer.transfer import TransferHandle

__all__ = ['copy', 'open', 'upload', 'plan', 'Transfer', 'TransferHandle',
           'Hints', 'Plan', 'Result', 'Source', 'Location', 'Credentials',
           'Checksum', 'CancelToken', 'exceptions']
