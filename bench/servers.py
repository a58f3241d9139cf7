"""Echo servers for the benchmark: `python bench/servers.py IMPLEMENTATION PORT`.

Each echoes every message as it came, with limits raised to 32 MiB and no
compression. IMPLEMENTATION is one of the keys of SERVERS.
"""

from __future__ import annotations

import sys

LIMIT = 32 << 20


def wspy_server(port: int, base_name: str) -> None:
    """wspy's AsyncServer or Server."""
    import wspy

    base = getattr(wspy, base_name)

    class Echo(base):  # type: ignore[misc, valid-type]
        def onmessage(self, client: wspy.ServerConnection, message: wspy.Message) -> None:
            client.send(message)

    Echo(('127.0.0.1', port), max_message_size=LIMIT, max_frame_size=LIMIT,
         backlog_size=1024).run()


SERVERS = {
    'wspy-AsyncServer': lambda port: wspy_server(port, 'AsyncServer'),
    'wspy-Server': lambda port: wspy_server(port, 'Server'),
}


if __name__ == '__main__':
    SERVERS[sys.argv[1]](int(sys.argv[2]))
