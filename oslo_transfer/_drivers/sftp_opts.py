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

"""Options of the ``sftp`` driver (``[oslo_transfer_sftp]``)."""

from oslo_config import cfg

from oslo_transfer import driver

KiB = 1024
MiB = 1024 * KiB

OPTS = [
    cfg.StrOpt('known_hosts_file', default='~/.ssh/known_hosts',
               help='OpenSSH known_hosts file that holds the host keys of '
                    'the servers.  A server whose key is not in it, or '
                    'whose key differs, is refused; keys are never added '
                    'automatically.  Add one with "ssh-keyscan -p PORT '
                    'HOST >> FILE" after checking its fingerprint.'),
    cfg.StrOpt('username',
               help='User name when neither the location nor the URL '
                    'names one.  Unset means the local user running the '
                    'service, as ssh does.'),
    cfg.StrOpt('key_file',
               help='Private key file (OpenSSH or PEM format) used to log '
                    'in.  A Location\'s key_file credential wins.\n\n'
                    'Related options:\n\n* key_passphrase\n* allow_agent\n'
                    '* look_for_keys'),
    cfg.StrOpt('key_passphrase', secret=True,
               help='Passphrase of an encrypted key_file.'),
    cfg.BoolOpt('allow_agent', default=True,
                help='Also try the keys of a running SSH agent '
                     '(SSH_AUTH_SOCK), as ssh does.  Services that must '
                     'log in with exactly key_file should turn this off.'),
    cfg.BoolOpt('look_for_keys', default=True,
                help='Also try ~/.ssh/id_ed25519, id_ecdsa and id_rsa of '
                     'the user running the service, as ssh does.'),
    cfg.ListOpt('ciphers',
                default=['aes128-gcm@openssh.com', 'aes256-gcm@openssh.com',
                         'aes128-ctr', 'aes256-ctr'],
                help='Ciphers offered first, in order of preference; the '
                     'rest of paramiko\'s list follows.  AES-GCM needs no '
                     'separate MAC and is the fastest with paramiko.'),
    cfg.IntOpt('request_size', default=255 * KiB, min=4 * KiB,
               max=255 * KiB,
               help='Bytes per SFTP read or write request.  OpenSSH answers '
                    'at most 255 KiB per read (larger requests come back '
                    'short and are completed by another request).\n\n'
                    'Related options:\n\n* requests_in_flight'),
    cfg.IntOpt('requests_in_flight', default=128, min=1, max=1024,
               help='Requests sent before waiting for the first answer, '
                    'on a connection that reads alone: request_size * '
                    'requests_in_flight bytes (32 MiB by default).  On a '
                    'fast link the socket buffers on both sides hold '
                    'several MiB of answers already sent, so the window '
                    'must be larger than they are for the server to stay '
                    'busy while the engine writes what arrived.  Reads '
                    'running at once (parallel segments) share half that '
                    'many, at least 8 each, so memory stays bounded.\n\n'
                    'Related options:\n\n* window_size'),
    cfg.BoolOpt('read_ahead', default=True,
                help='When a ranged read runs alone (the engine reading '
                     'one stream piece after piece), keep up to '
                     'requests_in_flight requests in flight past the end '
                     'of the range, on the same connection and file '
                     'handle, for the next piece.  Without it the server '
                     'waits at each piece boundary while the last answers '
                     'are consumed.  Requests that the next read does not '
                     'continue are answered and dropped (at most '
                     'request_size * requests_in_flight bytes).\n\n'
                     'Related options:\n\n* requests_in_flight\n'
                     '* max_segments\n'
                     '* [oslo_transfer] segment_size'),
    cfg.IntOpt('window_size', default=32 * MiB, min=256 * KiB,
               help='SSH channel window: bytes the server may send before '
                    'we acknowledge them; should be at least request_size '
                    '* requests_in_flight.  Bytes received and not yet '
                    'written wait in memory, at most this many per '
                    'connection.'),
    cfg.BoolOpt('stage_uploads', default=True,
                help='Upload into NAME.part and rename it to NAME '
                     '(posix-rename) once the data is complete and '
                     'verified.  Turn off to write NAME in place.'),
    driver.max_segments_opt(
        'Most parallel ranged segments (each its own SSH connection, key '
        'exchange and server process) for one download.  A Python SSH '
        'client is limited by its own CPU (paramiko decrypts and parses '
        'every packet under one interpreter lock), not by the server or '
        'the link: on loopback 4 connections were slower than one with '
        'read_ahead, and peaked about 20 MiB higher.  Raise it when '
        'one connection is limited elsewhere (a server that caps each '
        'session, a long fat link).',
        'connection', ('read_ahead', 'requests_in_flight')),
    cfg.IntOpt('pool_size', default=4, min=0,
               help='Idle SSH connections kept per server and user for '
                    'reuse.\n\nRelated options:\n\n'
                    '* [oslo_transfer] max_connections_per_origin'),
    cfg.FloatOpt('idle_timeout', default=60.0, min=0.0,
                 help='Seconds an idle pooled connection is kept.'),
]
