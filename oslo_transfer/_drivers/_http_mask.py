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

"""Secrets out of the text of HTTP errors and of urllib3's log lines.

requests and urllib3 put the URL being fetched, with its query, into their
exception messages and DEBUG lines; presigned URLs (S3, Swift temp URLs,
Azure SAS) carry their signature there.  The http driver builds every
message with :func:`clean` and installs :class:`QueryMaskFilter` on
urllib3's logger.
"""

import logging
import re
import urllib.parse

from oslo_transfer import locations


_QUERY_PARAM = re.compile(r'([?&;])([^=&;?\s"\']+)=([^&;\s"\']*)')


def mask_query_text(text: str) -> str:
    """``text`` with the values of secret query parameters masked.

    For text that embeds a URL or a request line (``GET /x?sig=... HTTP/
    1.1``) rather than being one.
    """
    def repl(m):
        key = urllib.parse.unquote_plus(m.group(2))
        if locations.is_secret_key(key):
            return '%s%s=***' % (m.group(1), m.group(2))
        return m.group(0)
    return _QUERY_PARAM.sub(repl, text)


class QueryMaskFilter(logging.Filter):
    """Mask query secrets in urllib3's own DEBUG lines.

    urllib3 logs every request line (``"GET /obj?X-Amz-Signature=..."``);
    a service that logs at DEBUG would write presigned signatures and
    temporary URL keys into its logs.  Only the arguments change.
    """

    def filter(self, record):
        args = record.args
        if isinstance(args, tuple) and args:
            record.args = tuple(mask_query_text(a) if isinstance(a, str)
                                else a for a in args)
        elif isinstance(record.msg, str) and not args:
            record.msg = mask_query_text(record.msg)
        return True


def query_secrets(url):
    """Values of the query parameters of ``url`` that carry secrets."""
    try:
        query = urllib.parse.urlsplit(url).query
    except ValueError:
        return []
    out = []
    for part in re.split('[&;]', query):
        key, sep, raw = part.partition('=')
        if not sep or len(raw) < 4:
            # Too short to be a secret, and replacing it everywhere would
            # garble the message (a port, a status code).
            continue
        if locations.is_secret_key(urllib.parse.unquote_plus(key)):
            out += [raw, urllib.parse.unquote_plus(raw)]
    return out


def clean(exc, loc, url=None):
    """``str(exc)`` without passwords, tokens and query secrets.

    urllib3's messages carry the raw path and query of the request
    (``url``: the URL that was being fetched, after redirects).
    """
    text = mask_query_text(str(exc))
    creds = loc.credentials
    secrets = [loc.parts().password] if loc.parts().password else []
    if creds:
        secrets += [creds.password, creds.token]
    secrets += query_secrets(loc.url)
    if url:
        secrets += query_secrets(url)
    # Longest first: a secret that contains another is masked whole.
    for s in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(s, '***')
        text = text.replace(urllib.parse.quote(s, safe=''), '***')
        text = text.replace(urllib.parse.quote_plus(s, safe=''), '***')
    return text
