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

"""The ``bittorrent`` driver: BitTorrent with the HTTP origin as web seed.

The entry point names :class:`BitTorrentDriver`.  Its modules, by job:

* :mod:`.driver`: the driver (options, metadata lookup, web seeds, seeding
  after a copy);
* :mod:`.session`: the process's one libtorrent session and its alerts;
* :mod:`.download`: one torrent download into the engine's ``.part``;
* :mod:`.origin`: pieces fetched from the HTTP origin, and this host's
  share of them;
* :mod:`.pieces`: which origin piece to ask for next;
* :mod:`.record`: what a download records in the engine's journal;
* :mod:`.seed`: seeding complete files.

Metadata itself (bencoding, ``.torrent`` files) is the public
:mod:`oslo_transfer.torrent`.
"""

from oslo_transfer._drivers.bittorrent.driver import BitTorrentDriver

__all__ = ['BitTorrentDriver']
