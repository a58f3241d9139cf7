"""TLS settings: `SSLContext`s made from the original wspy's `ssl_args`.

The TLS session itself, over memory buffers, is the core's
(`wspy.protocol.tls.TLS`).
"""

from __future__ import annotations

import ssl
from typing import Any

_SERVER_ARGS = frozenset({'certfile', 'keyfile', 'password', 'cafile', 'ca_certs', 'capath',
                          'cert_reqs', 'ciphers'})
_CLIENT_ARGS = frozenset({'certfile', 'keyfile', 'password', 'cafile', 'ca_certs', 'capath',
                          'cert_reqs', 'ciphers', 'check_hostname', 'verify'})


def server_context(**ssl_args: Any) -> ssl.SSLContext:
    """A server `SSLContext` from the original wspy's `ssl_args`.

    Keys: `certfile` (required), `keyfile`, `password`; for client
    certificates `cafile` (or `ca_certs`), `capath` and `cert_reqs`
    (`ssl.CERT_REQUIRED` or `ssl.CERT_OPTIONAL`; CERT_REQUIRED when a CA is
    given); `ciphers`.

    Raises:
        TypeError: an unknown key, or no `certfile`.
        OSError: a file that cannot be read (`ssl.SSLError` for one that
            is not a certificate or key).
    """
    _check_args(ssl_args, _SERVER_ARGS)
    if 'certfile' not in ssl_args:
        raise TypeError('ssl_args needs a certfile')
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _load(context, ssl_args)
    return context


def client_context(**ssl_args: Any) -> ssl.SSLContext:
    """A client `SSLContext`: system CAs and host name checks unless told otherwise.

    Keys: `cafile` (or `ca_certs`) and `capath` for other trusted CAs;
    `certfile`, `keyfile`, `password` for a client certificate; `verify`
    False (or `cert_reqs=ssl.CERT_NONE`) to skip certificate checks;
    `check_hostname`; `ciphers`.

    Raises:
        TypeError: an unknown key.
        OSError: a file that cannot be read (`ssl.SSLError` for one that
            is not a certificate or key).
    """
    _check_args(ssl_args, _CLIENT_ARGS)
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if not ssl_args.pop('verify', True):
        ssl_args.setdefault('check_hostname', False)
        ssl_args.setdefault('cert_reqs', ssl.CERT_NONE)
    if 'check_hostname' in ssl_args:
        context.check_hostname = bool(ssl_args.pop('check_hostname'))
    _load(context, ssl_args)
    return context


def _check_args(ssl_args: dict[str, Any], known: frozenset[str]) -> None:
    unknown = set(ssl_args) - known
    if unknown:
        raise TypeError(f'unknown ssl_args: {", ".join(sorted(unknown))} '
                        f'(known: {", ".join(sorted(known))})')


def _load(context: ssl.SSLContext, ssl_args: dict[str, Any]) -> None:
    cafile = ssl_args.get('cafile') or ssl_args.get('ca_certs')
    capath = ssl_args.get('capath')
    if cafile or capath:
        context.load_verify_locations(cafile, capath)
        if context.verify_mode == ssl.CERT_NONE:  # a server given a CA checks clients
            context.verify_mode = ssl.CERT_REQUIRED
    if 'cert_reqs' in ssl_args:
        if ssl_args['cert_reqs'] == ssl.CERT_NONE:
            context.check_hostname = False
        context.verify_mode = ssl_args['cert_reqs']
    if ssl_args.get('certfile'):
        context.load_cert_chain(ssl_args['certfile'], ssl_args.get('keyfile'),
                                ssl_args.get('password'))
    if ssl_args.get('ciphers'):
        context.set_ciphers(ssl_args['ciphers'])
