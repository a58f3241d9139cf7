"""The I/O-free protocol core: decisions of the RFCs, made on data, for every driver.

Nothing here reads or writes a socket, waits or starts a thread: drivers
feed it what arrived and carry out what it decides.

- `frame`: frames, opcodes, close codes and the incremental parser (RFC 6455 5);
- `masking`: the masking of payloads (C accelerated when built);
- `message`: messages, text and binary;
- `connection`: `Protocol`, the connection state machine (bytes in, messages
  and events out, frames out, keepalive deadlines);
- `extension`, `deflate_message`, `deflate_frame`: the extension API and
  permessage-deflate (RFC 7692) and deflate-frame;
- `handshake`: HTTP heads, the server's checks of an upgrade request and
  the client's of the answer (RFC 6455 4);
- `auth`: Basic and Digest authentication (RFC 7617, 7616): headers parsed,
  answers computed;
- `server_opening`: a server's opening handshake with one client, fed with
  bytes (`ServerOpening`: the 101 or the rejection to send);
- `opening`: the client's opening decisions (redirects, authentication
  challenges, the proxy's CONNECT) and one attempt's handshake, fed with
  bytes (`ClientHandshake`);
- `forwarded`: the client's address behind trusted reverse proxies.
"""
