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

"""The ``iscsi`` driver: iSCSI LUNs in user space with libiscsi.

The entry point names :class:`ISCSIDriver`.  Its modules, by job:

* :mod:`.driver`: the driver, its options and its pool of sessions;
* :mod:`.libiscsi`: the ctypes binding of libiscsi (loaded on first
  use).
"""

from oslo_transfer._drivers.iscsi.driver import ISCSIDriver

__all__ = ['ISCSIDriver']
