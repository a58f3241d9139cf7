"""The server the worker tests run: `python test/worker_app.py ADDRESS [REDIS_URL | digest]`.

ADDRESS is host:port or a Unix socket path. A message 'pid' is answered
with the worker's process id; with REDIS_URL every other message is
published to all workers' clients, without it echoed. With `digest` the
workers ask for Digest credentials (`USERS`), checked by one `DigestAuth`.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import wspy

USERS = {'alice': 'wonder land'}


class App(wspy.AsyncServer):
    """Answers 'pid'; echoes, or broadcasts through Redis, everything else."""

    def __init__(self, *args: Any, redis_url: str | None = None, **options: Any) -> None:
        super().__init__(*args, **options)
        self.fanout = None if redis_url is None else wspy.RedisFanout(
            self, redis_url, 'test', min_backoff=0.05, max_backoff=0.5)

    def onmessage(self, client: wspy.AsyncConnection, message: wspy.Message) -> None:
        if message.payload == 'pid':
            client.send(str(os.getpid()))
        elif self.fanout is not None:
            self.fanout.publish(message)
        else:
            client.send(message)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format='%(process)d %(levelname)s %(message)s')
    where = sys.argv[1]
    address: tuple[str, int] | str = where
    if not where.startswith('/'):
        host, port = where.rsplit(':', 1)
        address = (host, int(port))
    extra = sys.argv[2] if len(sys.argv) > 2 else None
    options: dict[str, Any] = {'auth': wspy.DigestAuth(USERS)} if extra == 'digest' else {
        'redis_url': extra}
    workers = wspy.Workers(App, address, workers=2, max_join_time=1.0, ping_interval=None,
                           **options)
    print('ready', flush=True)
    workers.run()


if __name__ == '__main__':
    main()
