"""wspy: a socket-level WebSocket (RFC 6455) library, from single frames to servers."""

from typing import TYPE_CHECKING

from wspy.asyncclient import AsyncClient, Connecting
from wspy.asyncserver import AsyncConnection, AsyncServer
from wspy.auth import BasicAuth, DigestAuth
from wspy.client import connect
from wspy.connection import Connection, State
from wspy.protocol.deflate_frame import DeflateFrame
from wspy.protocol.deflate_message import DeflateMessage
from wspy.errors import (AbortHandshake, ConcurrencyError, ConnectionClosed, ConnectionClosedError,
                         ConnectionClosedOK, HandshakeError, HandshakeTimeout, InvalidHeader,
                         InvalidLocation, InvalidMethod, InvalidOrigin, InvalidPayload,
                         InvalidRequest, InvalidResponse, InvalidState, InvalidStatus, InvalidURI,
                         NegotiationError, NotUpgrade, PayloadTooBig, PingError, ProtocolError,
                         ProxyError, RedirectError, SecurityError, SocketClosed, SSLError,
                         Unauthorized, UnsupportedVersion, WebSocketError, WriteTimeout)
from wspy.protocol.extension import Extension, Hook
from wspy.fanout import RedisFanout
from wspy.protocol.forwarded import TrustedProxies
from wspy.protocol.handshake import Headers, Request, Response
from wspy.protocol.frame import (CLOSE_ABNORMAL, CLOSE_BAD_GATEWAY, CLOSE_GOING_AWAY,
                                 CLOSE_INTERNAL_ERROR, CLOSE_INVALID_DATA, CLOSE_MESSAGE_TOO_BIG,
                                 CLOSE_MISSING_EXTENSION, CLOSE_NO_STATUS, CLOSE_NORMAL,
                                 CLOSE_POLICY_VIOLATION, CLOSE_PROTOCOL_ERROR,
                                 CLOSE_SERVICE_RESTART, CLOSE_TLS_HANDSHAKE, CLOSE_TRY_AGAIN_LATER,
                                 CLOSE_UNSUPPORTED_DATA, DEFAULT_MAX_SIZE, OPCODE_BINARY,
                                 OPCODE_CLOSE, OPCODE_CONTINUATION, OPCODE_PING, OPCODE_PONG,
                                 OPCODE_TEXT, ControlFrame, Frame, FrameParser, contains_frame,
                                 mask, pop_frame, read_frame)
from wspy.protocol.message import BinaryMessage, Message, TextMessage, create_message
from wspy.server import BaseServer, Server, ServerConnection
from wspy.websocket import websocket
from wspy.workers import Workers

__version__ = '1.0.0'

if TYPE_CHECKING:
    # wspy 0.9's close-code names: at run time they come from __getattr__, with a
    # DeprecationWarning naming today's (docs/porting.md).
    from wspy.protocol.frame import CLOSE_MESSAGE_TOOBIG as CLOSE_MESSAGE_TOOBIG
    from wspy.protocol.frame import CLOSE_MISSING_EXTENSIONS as CLOSE_MISSING_EXTENSIONS
    from wspy.protocol.frame import CLOSE_NOACCEPT_DTYPE as CLOSE_NOACCEPT_DTYPE
    from wspy.protocol.frame import CLOSE_POLICY as CLOSE_POLICY
    from wspy.protocol.frame import CLOSE_UNABLE as CLOSE_UNABLE
else:
    def __getattr__(name: str) -> object:
        """wspy 0.9's close-code names (deprecated): `wspy.protocol.compat.RENAMED_CLOSE_CODES`."""
        from wspy.protocol.compat import renamed_close_code
        return renamed_close_code(__name__, name, globals())

__all__ = [
    'connect', 'Connection', 'State', 'BaseServer', 'Server', 'ServerConnection', 'AsyncServer',
    'AsyncConnection', 'AsyncClient', 'Connecting', 'Workers', 'RedisFanout', 'TrustedProxies',
    'websocket', 'Extension', 'Hook', 'DeflateMessage', 'DeflateFrame',
    'Request', 'Response', 'Headers',
    'Frame', 'ControlFrame', 'FrameParser', 'mask', 'contains_frame', 'read_frame', 'pop_frame',
    'Message', 'TextMessage', 'BinaryMessage', 'create_message', 'DEFAULT_MAX_SIZE',
    'OPCODE_CONTINUATION', 'OPCODE_TEXT', 'OPCODE_BINARY', 'OPCODE_CLOSE', 'OPCODE_PING',
    'OPCODE_PONG',
    'CLOSE_NORMAL', 'CLOSE_GOING_AWAY', 'CLOSE_PROTOCOL_ERROR', 'CLOSE_UNSUPPORTED_DATA',
    'CLOSE_NO_STATUS', 'CLOSE_ABNORMAL', 'CLOSE_INVALID_DATA', 'CLOSE_POLICY_VIOLATION',
    'CLOSE_MESSAGE_TOO_BIG', 'CLOSE_MISSING_EXTENSION', 'CLOSE_INTERNAL_ERROR',
    'CLOSE_SERVICE_RESTART', 'CLOSE_TRY_AGAIN_LATER', 'CLOSE_BAD_GATEWAY', 'CLOSE_TLS_HANDSHAKE',
    'WebSocketError', 'HandshakeError', 'AbortHandshake', 'HandshakeTimeout', 'InvalidRequest',
    'InvalidMethod',
    'NotUpgrade', 'UnsupportedVersion', 'InvalidOrigin', 'InvalidLocation', 'SecurityError',
    'InvalidResponse', 'InvalidHeader', 'InvalidStatus', 'NegotiationError', 'RedirectError',
    'InvalidURI',
    'ProtocolError', 'InvalidPayload', 'PayloadTooBig', 'ConnectionClosed', 'ConnectionClosedOK',
    'ConnectionClosedError', 'SocketClosed', 'WriteTimeout', 'InvalidState', 'ConcurrencyError',
    'PingError',
    'SSLError', 'Unauthorized', 'BasicAuth', 'DigestAuth', 'ProxyError',
]
