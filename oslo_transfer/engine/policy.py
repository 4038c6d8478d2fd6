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

"""The URL policy for untrusted URLs.

``[oslo_transfer] allowed_schemes`` and ``denied_networks`` apply to every
URL the library contacts: the caller's, redirects, web seeds and trackers.
Host names are resolved and every address they resolve to is checked.
"""

import ipaddress
import socket
import urllib.parse

from oslo_transfer import exceptions
from oslo_transfer import locations

# Schemes whose URL names no host to connect to: local paths, and
# ``torrent:`` locations (the web seeds and trackers in their metadata are
# checked one by one by the driver through ``Context.check_url``).
_NO_HOST_SCHEMES = frozenset(('file', 'torrent'))


class URLPolicy:
    def __init__(self, allowed_schemes=(), denied_networks=()):
        self.allowed = {s.strip().lower() for s in allowed_schemes
                        if s.strip()}
        try:
            self.denied = [ipaddress.ip_network(n.strip(), strict=False)
                           for n in denied_networks if n.strip()]
        except ValueError as exc:
            raise ValueError('[oslo_transfer] denied_networks: %s'
                             % exc) from exc

    @classmethod
    def from_conf(cls, conf):
        g = conf.oslo_transfer
        return cls(g.allowed_schemes or (), g.denied_networks or ())

    def check(self, url: str):
        """Raise ``URLNotAllowed`` if the policy refuses ``url``."""
        loc = locations.as_location(url)
        scheme = loc.scheme
        if self.allowed and scheme not in self.allowed:
            raise exceptions.URLNotAllowed(
                'scheme %r is not in [oslo_transfer] allowed_schemes: %s'
                % (scheme, loc.masked), url=loc.masked)
        if not self.denied or scheme in _NO_HOST_SCHEMES:
            return
        host = urllib.parse.urlsplit(loc.url).hostname
        if not host:
            return
        try:
            infos = socket.getaddrinfo(host, None)
        except socket.gaierror as exc:
            raise exceptions.ConnectionFailed(
                'cannot resolve %s: %s' % (host, exc), url=loc.masked) from exc
        for info in infos:
            addr = ipaddress.ip_address(info[4][0].split('%')[0])
            candidates = [addr]
            if addr.version == 6 and addr.ipv4_mapped is not None:
                # ::ffff:127.0.0.1 reaches 127.0.0.1
                candidates.append(addr.ipv4_mapped)
            if addr.is_unspecified:
                # 0.0.0.0 and :: connect to this host
                candidates += [ipaddress.ip_address('127.0.0.1'),
                               ipaddress.ip_address('::1')]
            for net in self.denied:
                if any(a.version == net.version and a in net
                       for a in candidates):
                    raise exceptions.URLNotAllowed(
                        '%s resolves to %s, inside a denied network (%s) '
                        '([oslo_transfer] denied_networks)'
                        % (loc.masked, addr, net), url=loc.masked)
