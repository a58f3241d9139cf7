"""Craft frames by hand: pack them, parse them back, fragment and mask them."""

import wspy

frame = wspy.Frame(wspy.OPCODE_BINARY, b'\x00\x01', final=False, masking_key=b'abcd')
raw = frame.pack()
print('packed:', raw.hex())
assert wspy.read_frame(raw) == frame

parser = wspy.FrameParser(require_mask=True)  # as a server: client frames must be masked
for piece in (raw[:3], raw[3:], wspy.Frame(wspy.OPCODE_CONTINUATION, b'\x02', b'wxyz').pack()):
    parser.feed(piece)
    for parsed in parser:
        print('parsed:', parsed, parsed.payload)

for part in wspy.TextMessage('hello, fragmented world').fragment(8, mask=True):
    print('fragment:', part)

try:
    parser.feed(wspy.Frame(wspy.OPCODE_TEXT, b'unmasked').pack())
    parser.next_frame()
except wspy.ProtocolError as error:
    print(f'rejected: {error} (close code {error.code})')
