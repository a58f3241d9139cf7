"""permessage-deflate (RFC 7692): each message compressed as a whole, RSV1 on its first frame."""

from __future__ import annotations

import zlib

from wspy.errors import InvalidPayload, NegotiationError, PayloadTooBig, ProtocolError
from wspy.protocol.extension import Extension, Hook, Params
from wspy.protocol.frame import OPCODE_CONTINUATION, Frame

# RFC 7692 7.2.1: the sender removes, and the receiver appends, the empty
# stored block that ends a sync flush.
TAIL = b'\x00\x00\xff\xff'
_WINDOW_BITS = tuple(str(n) for n in range(8, 16))


def _window_bits(name: str, value: str | None, required: bool) -> int | None:
    if value is None:
        if required:
            raise ValueError(f'{name} needs a value')
        return None
    if value not in _WINDOW_BITS:
        raise ValueError(f'{name}={value!r} is not 8 to 15')
    return int(value)


def parse_params(params: Params) -> dict[str, int | None]:
    """permessage-deflate parameters by name; ValueError for unknown, repeated or bad ones."""
    parsed: dict[str, int | None] = {}
    for name, value in params:
        if name in parsed:
            raise ValueError(f'{name} given twice')
        if name in ('server_no_context_takeover', 'client_no_context_takeover'):
            if value is not None:
                raise ValueError(f'{name} takes no value')
            parsed[name] = None
        elif name == 'server_max_window_bits':
            parsed[name] = _window_bits(name, value, required=True)
        elif name == 'client_max_window_bits':
            parsed[name] = _window_bits(name, value, required=False)
        else:
            raise ValueError(f'unknown parameter {name}')
    return parsed


class DeflateHook(Hook):
    """Compresses outgoing messages and inflates incoming ones on one connection.

    The zlib objects are made on first use, so an idle connection holds
    none. Inflating stops at `max_size`: a compression bomb is a 1009, not
    an allocation.
    """

    rsv_bits = 0x40
    per_message = True

    def __init__(self, *, compress_bits: int, compress_reset: bool, decompress_bits: int,
                 decompress_reset: bool, threshold: int, level: int, mem_level: int) -> None:
        self.compress_bits = compress_bits
        self.compress_reset = compress_reset
        self.decompress_bits = decompress_bits
        self.decompress_reset = decompress_reset
        self.threshold = threshold
        self.level = level
        self.mem_level = mem_level
        self._compressor: zlib._Compress | None = None
        self._decompressor: zlib._Decompress | None = None
        self._inflating = False

    def compress(self, payload: bytes) -> bytes:
        """Deflate a payload, ending with a sync flush whose tail is removed.

        RFC 7692 7.2.1: "Remove 4 octets (that are 0x00 0x00 0xff 0xff) from
        the tail end."
        """
        compressor = self._compressor
        if compressor is None:
            compressor = zlib.compressobj(self.level, zlib.DEFLATED, -self.compress_bits,
                                          self.mem_level)
        data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
        self._compressor = None if self.compress_reset else compressor
        return data[:-4] if data.endswith(TAIL) else data

    def inflate(self, payload: bytes, final: bool, max_size: int | None) -> bytes:
        """Inflate part of a message, producing at most `max_size` bytes.

        On its last part, RFC 7692 7.2.2: "Append 4 octets of 0x00 0x00 0xff
        0xff to the tail end of the payload of the message."

        Raises:
            InvalidPayload: data that does not inflate (1007).
            PayloadTooBig: more than `max_size` bytes (1009): a compression
                bomb stops there.
        """
        decompressor = self._decompressor
        if decompressor is None:
            decompressor = self._decompressor = zlib.decompressobj(-self.decompress_bits)
        data = payload + TAIL if final else payload
        try:
            if max_size is None:
                out = decompressor.decompress(data)
            else:
                out = decompressor.decompress(data, max_size + 1)
        except zlib.error as error:
            raise InvalidPayload(f'cannot inflate: {error}') from None
        if max_size is not None and (len(out) > max_size or decompressor.unconsumed_tail):
            raise PayloadTooBig(f'message inflates to over {max_size} more bytes')
        if final and self.decompress_reset:
            self._decompressor = None
        return out

    def send(self, frame: Frame) -> Frame:
        """Compress a whole message (unless it is under the threshold); RSV1 marks it.

        A payload that does not shrink (random or already compressed data)
        goes out as it is: a peer that limits frames by their size on the
        wire would refuse it, grown by deflate's block headers.
        """
        payload = frame.payload
        if len(payload) < self.threshold:
            return frame
        compressed = self.compress(payload)
        if len(compressed) >= len(payload):
            # The peer never sees this payload in its window: our compressor must
            # forget it too, so that later messages do not refer to it.
            self._compressor = None
            return frame
        return Frame(frame.opcode, compressed, final=frame.final, rsv1=True)

    def recv(self, frame: Frame, max_size: int | None) -> Frame:
        """Inflate the frames of a compressed message, as they arrive."""
        if frame.opcode != OPCODE_CONTINUATION:
            self._inflating = frame.rsv1
        elif frame.rsv1:
            raise ProtocolError('RSV1 set on a continuation frame')
        if not self._inflating:
            return frame
        payload = self.inflate(frame.payload, frame.final, max_size)
        return Frame(frame.opcode, payload, final=frame.final)


class DeflateMessage(Extension):
    """The permessage-deflate extension (RFC 7692), for servers and clients.

    Each message is compressed as a whole, and RSV1 (the "Per-Message
    Compressed" bit) set on its first frame; RFC 7692 6: "An endpoint MUST
    NOT set the "Per-Message Compressed" bit of control frames and
    non-first fragments of a data message." A message that does not shrink
    goes uncompressed. Inflating stops at `max_message_size`: a compression
    bomb is a 1009 close, not an allocation.

    The four parameters of RFC 7692 7.1 say what this side asks for or
    allows. Memory, measured with zlib 1.2.13: a compressor with the
    defaults (12-bit window, memory level 5) takes about 38 KiB, zlib's own
    defaults (15 bits, level 8) 224 KiB; an inflater for a peer's 15-bit
    window about 40 KiB. Both are made on first use, so idle connections
    hold none.

    Args:
        server_no_context_takeover: the server resets its compression
            context after each message. A client asks for it (7.1.1.1: "a
            client prevents the peer server from using context takeover");
            a server answers with it even when not asked ("A server MAY
            include the "server_no_context_takeover" extension parameter in
            an extension negotiation response even if the extension
            negotiation offer being accepted by the extension negotiation
            response didn't include" it).
        client_no_context_takeover: the client resets its compression
            context after each message: a client promises it (7.1.1.2), a
            server asks it of the client.
        server_max_window_bits: the most window bits (8-15) of the server's
            compressor, 12 by default. A client asks for it (7.1.2.1: "a
            client limits the LZ77 sliding window size that the server will
            use to compress messages"); a server never uses more, and
            declines an offer that would hold it to 8 (zlib cannot compress
            raw deflate with a 256-byte window). None: 15.
        client_max_window_bits: the most window bits (8-15) of the client's
            compressor. A client that leaves it unset offers it bare
            (7.1.2.2: the client "supports the "client_max_window_bits"
            extension parameter in an extension negotiation response"),
            letting the server choose; a server given it holds a client
            that offered the parameter to it.
        compress_threshold: messages under this many bytes go uncompressed.
        compress_level: zlib's compression level (0-9, or -1 for its default).
        mem_level: zlib's memory level (1-9) for the compressor.

    Raises:
        ValueError: a window size outside 8-15.
    """

    name = 'permessage-deflate'
    rsv1 = True

    def __init__(self, *, server_no_context_takeover: bool = False,
                 client_no_context_takeover: bool = False,
                 server_max_window_bits: int | None = 12,
                 client_max_window_bits: int | None = None, compress_threshold: int = 32,
                 compress_level: int = 6, mem_level: int = 5) -> None:
        for name, bits in (('server_max_window_bits', server_max_window_bits),
                           ('client_max_window_bits', client_max_window_bits)):
            if bits is not None and not 8 <= bits <= 15:
                raise ValueError(f'{name} must be 8 to 15')
        self.server_no_context_takeover = server_no_context_takeover
        self.client_no_context_takeover = client_no_context_takeover
        self.server_max_window_bits = server_max_window_bits
        self.client_max_window_bits = client_max_window_bits
        self.compress_threshold = compress_threshold
        self.compress_level = compress_level
        self.mem_level = mem_level

    def _hook(self, compress_bits: int, compress_reset: bool, decompress_bits: int,
              decompress_reset: bool) -> DeflateHook:
        return DeflateHook(compress_bits=compress_bits, compress_reset=compress_reset,
                           decompress_bits=decompress_bits, decompress_reset=decompress_reset,
                           threshold=self.compress_threshold, level=self.compress_level,
                           mem_level=self.mem_level)

    # -- server side ----------------------------------------------------------------

    def accept_offer(self, params: Params) -> tuple[Params, Hook] | None:
        """Answer a client's offer (see `Extension.accept_offer`).

        Returns:
            The response parameters and the connection's hook, or None to
            decline the offer: parameters RFC 7692 does not allow (unknown,
            repeated, a window outside 8-15), or one that would hold this
            server's compressor to an 8-bit window.
        """
        try:
            offer = parse_params(params)
        except ValueError:
            return None
        response: Params = []
        server_reset = self.server_no_context_takeover or 'server_no_context_takeover' in offer
        if server_reset:
            response.append(('server_no_context_takeover', None))
        client_reset = self.client_no_context_takeover
        if client_reset:
            response.append(('client_no_context_takeover', None))
        requested = offer.get('server_max_window_bits')
        server_bits = min(requested or 15, self.server_max_window_bits or 15)
        if server_bits == 8:
            return None  # zlib cannot compress raw deflate with a 256-byte window
        if requested is not None or server_bits < 15:
            response.append(('server_max_window_bits', str(server_bits)))
        client_bits = 15
        if 'client_max_window_bits' in offer:
            client_bits = offer['client_max_window_bits'] or 15
            ours = self.client_max_window_bits
            if ours is not None and ours < client_bits:
                client_bits = ours
                response.append(('client_max_window_bits', str(client_bits)))
        return response, self._hook(server_bits, server_reset, client_bits, client_reset)

    # -- client side ------------------------------------------------------------------

    def offers(self) -> list[Params]:
        """The one offer this client makes, from its parameters."""
        offer: Params = []
        if self.server_no_context_takeover:
            offer.append(('server_no_context_takeover', None))
        if self.client_no_context_takeover:
            offer.append(('client_no_context_takeover', None))
        if self.server_max_window_bits is not None and self.server_max_window_bits < 15:
            offer.append(('server_max_window_bits', str(self.server_max_window_bits)))
        bits = self.client_max_window_bits
        offer.append(('client_max_window_bits', None if bits is None else str(bits)))
        return [offer]

    def accept_response(self, params: Params) -> Hook:
        """Check the server's answer against this client's offer.

        Raises:
            NegotiationError: parameters RFC 7692 does not allow, a server
                window larger than asked, `server_no_context_takeover` asked
                for and not granted, `client_max_window_bits` without a value
                or larger than offered, or an 8-bit client window (zlib cannot
                compress with it).
        """
        try:
            response = parse_params(params)
        except ValueError as error:
            raise NegotiationError(f'permessage-deflate response: {error}') from None
        asked = self.server_max_window_bits if (self.server_max_window_bits or 15) < 15 else None
        server_bits = response.get('server_max_window_bits') or 15
        if asked is not None and server_bits > asked:
            raise NegotiationError(f'server_max_window_bits={server_bits}, over the {asked} asked')
        if self.server_no_context_takeover and 'server_no_context_takeover' not in response:
            raise NegotiationError('server ignored server_no_context_takeover')
        if 'client_max_window_bits' in response and response['client_max_window_bits'] is None:
            raise NegotiationError('client_max_window_bits without a value in a response')
        client_bits = response.get('client_max_window_bits') or self.client_max_window_bits or 15
        if self.client_max_window_bits is not None and client_bits > self.client_max_window_bits:
            raise NegotiationError(f'client_max_window_bits={client_bits}, over the offer')
        if client_bits == 8:
            raise NegotiationError('client_max_window_bits=8: zlib cannot compress with it')
        client_reset = (self.client_no_context_takeover
                        or 'client_no_context_takeover' in response)
        return self._hook(client_bits, client_reset, server_bits,
                          'server_no_context_takeover' in response)

    def __repr__(self) -> str:
        return (f'DeflateMessage(server_max_window_bits={self.server_max_window_bits}, '
                f'client_max_window_bits={self.client_max_window_bits})')
