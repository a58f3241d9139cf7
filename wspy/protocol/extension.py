"""Extensions (RFC 6455 section 9): the API, the header grammar and negotiation.

An `Extension` is configuration shared by every connection: its name, the
RSV bits it uses, and how it negotiates (the client's offers, the server's
answer to an offer, the client's check of that answer). Each successful
negotiation yields a `Hook`: the extension's state on one connection,
which sees frames as they are sent and received.

A custom extension subclasses both, for example::

    class Reverse(wspy.Extension):
        name = 'x-reverse'
        rsv1 = True

        def accept_offer(self, params):
            return [], ReverseHook()

        def accept_response(self, params):
            return ReverseHook()

    class ReverseHook(wspy.Hook):
        rsv_bits = 0x40

        def send(self, frame):
            return wspy.Frame(frame.opcode, frame.payload[::-1], final=frame.final, rsv1=True)

        def recv(self, frame, max_size):
            if not frame.rsv1:
                return frame
            return wspy.Frame(frame.opcode, frame.payload[::-1], final=frame.final)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from wspy.errors import HandshakeError, InvalidRequest, NegotiationError
from wspy.protocol.frame import Frame

#: Extension parameters in the order given: (name, value or None).
Params = list[tuple[str, str | None]]

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM_VALUE = re.compile(rf'\s*({_TOKEN}|"(?:[^"\\]|\\.)*")\s*')


class Hook:
    """An extension's state on one connection.

    `send` sees each outgoing data frame and `recv` each incoming one
    (control frames are never passed). With `per_message` True, `send`
    gets a whole message as one frame, before fragmentation; otherwise
    each frame as it goes out. `recv` gets every data frame, with
    `max_size` the most payload bytes it may produce (None: no limit).
    With several extensions, outgoing frames pass through their hooks in
    the order the server's response lists them, and incoming ones in the
    reverse order (RFC 6455 9.1: "the order of operations on the data
    should be assumed to be the same as the order in which the extensions
    are listed in the server's response").
    """

    #: The RSV bits (0x40, 0x20, 0x10) this hook may set on frames.
    rsv_bits = 0
    #: Whether `send` gets each message whole, before fragmentation (True), or each frame.
    per_message = True

    def send(self, frame: Frame) -> Frame:
        """Transform an outgoing data frame; by default, return it as it is.

        Args:
            frame: the message as one frame (`per_message`), or one frame of
                it, unmasked: the connection masks what the hooks return.

        Returns:
            The frame to send (with the RSV bits of `rsv_bits` it needs).
        """
        return frame

    def recv(self, frame: Frame, max_size: int | None) -> Frame:
        """Transform an incoming data frame; by default, return it as it is.

        Args:
            frame: a received data frame, unmasked, RSV bits as they came.
            max_size: the most payload bytes the result may have (what is
                left of `max_message_size`); None: no limit.

        Returns:
            The frame as the next extension, then the application, sees it.

        Raises:
            ProtocolError: the frame breaks the extension's rules; the
                connection fails with its code (`PayloadTooBig`, 1009, for a
                result over `max_size`; `InvalidPayload`, 1007, for data
                that does not decode).
        """
        return frame


class Extension:
    """A WebSocket extension (RFC 6455 9): its name, RSV bits and negotiation.

    One object is the configuration of every connection (give it in
    `extensions=[...]`); each negotiation that succeeds makes a `Hook`.
    Override `offers` and `accept_response` for the client side, and
    `accept_offer` for the server side: RFC 6455 9.1, "The interpretation
    of any extension parameters, and what constitutes a valid response by
    a server to a requested set of parameters by a client, will be defined
    by each such extension."
    """

    #: The extension's token in `Sec-WebSocket-Extensions`.
    name = ''
    #: Other names accepted in offers and responses.
    aliases: tuple[str, ...] = ()
    #: Whether the extension uses the RSV1 bit (two extensions that use one bit are never
    #: both accepted).
    rsv1 = False
    #: Whether it uses the RSV2 bit.
    rsv2 = False
    #: Whether it uses the RSV3 bit.
    rsv3 = False

    @property
    def names(self) -> tuple[str, ...]:
        """Every name this extension answers to."""
        return (self.name, *self.aliases)

    @property
    def rsv_bits(self) -> int:
        """The RSV bits as they sit in a frame's first byte."""
        return (self.rsv1 << 6) | (self.rsv2 << 5) | (self.rsv3 << 4)

    def offers(self) -> list[Params]:
        """Client: the offers to send, most preferred first.

        RFC 6455 9.1: the offers "represent a preference [...], with the
        first options listed being most preferable".

        Returns:
            A list of offers, each a list of (parameter, value or None).
            By default one offer without parameters.
        """
        return [[]]

    def accept_response(self, params: Params) -> Hook:
        """Client: check the server's acceptance of an offer.

        Args:
            params: the parameters of the server's response, in order, as
                (name, value or None).

        Returns:
            The `Hook` for this connection, following what the server chose.

        Raises:
            NegotiationError: a response this side cannot use: the handshake
                fails.
        """
        raise NegotiationError(f'{self.name}: no client side')

    def accept_offer(self, params: Params) -> tuple[Params, Hook] | None:
        """Server: answer one of the client's offers.

        The client's offers are taken in its order; the first this method
        accepts wins (RFC 6455 9.1: "A server accepts one or more extensions
        by including a `Sec-WebSocket-Extensions` header field containing
        one or more extensions that were requested by the client").

        Args:
            params: the offer's parameters, in order, as (name, value or
                None).

        Returns:
            (the parameters of the response, the `Hook` for this
            connection), or None to decline the offer (the default).
        """
        return None

    def __repr__(self) -> str:
        return f'{type(self).__name__}()'


def parse_extensions(value: str, error: type[HandshakeError] = InvalidRequest,
                     ) -> list[tuple[str, Params]]:
    """Parse a Sec-WebSocket-Extensions value into (name, params) pairs, in order."""
    result: list[tuple[str, Params]] = []
    pos = 0
    length = len(value)
    while pos < length:
        match = re.compile(rf'\s*({_TOKEN})\s*').match(value, pos)
        if not match:
            raise error(f'malformed Sec-WebSocket-Extensions: {value[:100]!r}')
        name = match.group(1)
        pos = match.end()
        params: Params = []
        while pos < length and value[pos] == ';':
            match = re.compile(rf'\s*({_TOKEN})\s*').match(value, pos + 1)
            if not match:
                raise error(f'malformed extension parameter in {value[:100]!r}')
            param, pos = match.group(1), match.end()
            param_value = None
            if pos < length and value[pos] == '=':
                match = _PARAM_VALUE.match(value, pos + 1)
                if not match:
                    raise error(f'malformed value of {param} in {value[:100]!r}')
                param_value, pos = match.group(1), match.end()
                if param_value.startswith('"'):
                    param_value = re.sub(r'\\(.)', r'\1', param_value[1:-1])
                    if not re.fullmatch(_TOKEN, param_value):
                        raise error(f'quoted value of {param} is not a token')
            params.append((param, param_value))
        result.append((name, params))
        if pos < length:
            if value[pos] != ',':
                raise error(f'malformed Sec-WebSocket-Extensions: {value[:100]!r}')
            pos += 1
            if not value[pos:].strip():
                raise error('trailing comma in Sec-WebSocket-Extensions')
    return result


def format_extension(name: str, params: Params) -> str:
    """One extension with its parameters, as in a header."""
    return '; '.join([name, *(p if v is None else f'{p}={v}' for p, v in params)])


def offer_header(extensions: Sequence[Extension]) -> str | None:
    """Client: the Sec-WebSocket-Extensions value offering `extensions`."""
    offers = [format_extension(ext.name, params) for ext in extensions for params in ext.offers()]
    return ', '.join(offers) or None


def negotiate(header: str | None, extensions: Sequence[Extension]) -> tuple[str | None, list[Hook]]:
    """Server: the response header and hooks for a client's offers.

    Offers are taken in the client's order; for each extension the first
    offer it accepts wins, and an extension whose RSV bits are already in
    use by an accepted one is never accepted.
    """
    if not header or not extensions:
        return None, []
    accepted: list[str] = []
    hooks: list[Hook] = []
    used: set[int] = set()
    rsv_in_use = 0
    for name, params in parse_extensions(header):
        for index, ext in enumerate(extensions):
            if name not in ext.names or index in used or ext.rsv_bits & rsv_in_use:
                continue
            result = ext.accept_offer(params)
            if result is None:
                continue
            response, hook = result
            accepted.append(format_extension(name, response))
            hooks.append(hook)
            used.add(index)
            rsv_in_use |= ext.rsv_bits
            break
    return ', '.join(accepted) or None, hooks


def accept_response(header: str | None, extensions: Iterable[Extension]) -> list[Hook]:
    """Client: the hooks for the extensions the server accepted; `NegotiationError` if wrong."""
    if not header:
        return []
    offered = list(extensions)
    hooks: list[Hook] = []
    seen: set[int] = set()
    rsv_in_use = 0
    for name, params in parse_extensions(header, NegotiationError):
        index = next((i for i, ext in enumerate(offered) if name in ext.names), None)
        if index is None:
            raise NegotiationError(f'server accepted {name!r}, which was not offered')
        ext = offered[index]
        if index in seen or ext.rsv_bits & rsv_in_use:
            raise NegotiationError(f'server accepted {name!r} twice or with conflicting RSV bits')
        hooks.append(ext.accept_response(params))
        seen.add(index)
        rsv_in_use |= ext.rsv_bits
    return hooks
