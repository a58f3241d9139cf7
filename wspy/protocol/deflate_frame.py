"""deflate-frame (x-webkit-deflate-frame): each frame compressed on its own, RSV1 on each.

The draft that preceded permessage-deflate, kept for old peers: prefer
`DeflateMessage` where both sides support it.
"""

from __future__ import annotations

from wspy.protocol.deflate_message import DeflateHook
from wspy.errors import NegotiationError
from wspy.protocol.extension import Extension, Hook, Params
from wspy.protocol.frame import Frame

_WINDOW_BITS = tuple(str(n) for n in range(8, 16))


def _parse(params: Params) -> tuple[int | None, bool]:
    """(max_window_bits, no_context_takeover) of an offer or response; ValueError if bad."""
    bits: int | None = None
    reset = False
    seen = set()
    for name, value in params:
        if name in seen:
            raise ValueError(f'{name} given twice')
        seen.add(name)
        if name == 'max_window_bits' and value in _WINDOW_BITS:
            bits = int(value)
        elif name == 'no_context_takeover' and value is None:
            reset = True
        else:
            raise ValueError(f'bad parameter {name}={value}')
    return bits, reset


class DeflateFrameHook(DeflateHook):
    """Compresses and inflates each data frame on its own."""

    per_message = False

    def recv(self, frame: Frame, max_size: int | None) -> Frame:
        """Inflate a frame that has RSV1 set."""
        if not frame.rsv1:
            return frame
        payload = self.inflate(frame.payload, True, max_size)
        return Frame(frame.opcode, payload, final=frame.final)


class DeflateFrame(Extension):
    """The deflate-frame extension, also known as x-webkit-deflate-frame.

    Each data frame is compressed on its own, RSV1 set on each. Accepted
    under either name. Inflating stops at `max_message_size`, as with
    `DeflateMessage`.

    Args:
        max_window_bits: the most window bits (8-15) this side asks of the
            peer's compressor; None asks nothing (15). The peer's request
            bounds this side's compressor (8 cannot be honoured: zlib
            cannot compress with it, and the offer or response fails).
        no_context_takeover: ask the peer to reset its compression context
            after each frame; the peer's request resets this side's.
        compress_threshold: frames under this many bytes go uncompressed.
        compress_level: zlib's compression level.
        mem_level: zlib's memory level (1-9) for the compressor.

    Raises:
        ValueError: a `max_window_bits` outside 8-15.
    """

    name = 'deflate-frame'
    aliases = ('x-webkit-deflate-frame',)
    rsv1 = True

    def __init__(self, *, max_window_bits: int | None = None, no_context_takeover: bool = False,
                 compress_threshold: int = 32, compress_level: int = 6,
                 mem_level: int = 5) -> None:
        if max_window_bits is not None and not 8 <= max_window_bits <= 15:
            raise ValueError('max_window_bits must be 8 to 15')
        self.max_window_bits = max_window_bits
        self.no_context_takeover = no_context_takeover
        self.compress_threshold = compress_threshold
        self.compress_level = compress_level
        self.mem_level = mem_level

    def _our_params(self) -> Params:
        params: Params = []
        if self.max_window_bits is not None:
            params.append(('max_window_bits', str(self.max_window_bits)))
        if self.no_context_takeover:
            params.append(('no_context_takeover', None))
        return params

    def _hook(self, peer_params: Params) -> DeflateFrameHook:
        bits, reset = _parse(peer_params)
        if bits == 8:
            raise ValueError('zlib cannot compress with an 8-bit window')
        return DeflateFrameHook(compress_bits=bits or 15, compress_reset=reset,
                                decompress_bits=self.max_window_bits or 15,
                                decompress_reset=self.no_context_takeover,
                                threshold=self.compress_threshold, level=self.compress_level,
                                mem_level=self.mem_level)

    def accept_offer(self, params: Params) -> tuple[Params, Hook] | None:
        """Accept an offer whose requests this side can honour; None declines it."""
        try:
            return self._our_params(), self._hook(params)
        except ValueError:
            return None

    def offers(self) -> list[Params]:
        """One offer, with this side's requests."""
        return [self._our_params()]

    def accept_response(self, params: Params) -> Hook:
        """Honour the server's requests.

        Raises:
            NegotiationError: a parameter that is unknown, repeated or
                malformed, or an 8-bit window.
        """
        try:
            return self._hook(params)
        except ValueError as error:
            raise NegotiationError(f'deflate-frame response: {error}') from None

    def __repr__(self) -> str:
        return f'DeflateFrame(max_window_bits={self.max_window_bits})'
