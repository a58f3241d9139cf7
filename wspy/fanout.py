"""`RedisFanout`: broadcasts that reach the clients of every process on every machine.

Each node (a server process) subscribes to one Redis pub/sub channel and
delivers what arrives there to its own clients; `publish()` sends to the
channel, so a message reaches every node, the publisher's own included.
Needs the `redis` package (`pip install wspy[redis]`); wspy's core does not.

On the channel a message is a NUL byte, `t` (text) or `b` (binary), then
the payload (text as UTF-8). Anything else published there (by
`redis-cli PUBLISH`, say) arrives as text if it is UTF-8, else as binary.
Delivery is Redis pub/sub's: at most once, and a node that is
disconnected misses what is published meanwhile.
"""

from __future__ import annotations

import importlib
import logging
import random
import threading
from collections import deque
from typing import Any, Protocol

from wspy.protocol.message import BinaryMessage, Message, TextMessage

logger = logging.getLogger('wspy')

_TEXT = b'\0t'
_BINARY = b'\0b'


class Broadcaster(Protocol):
    """What a fan-out delivers to: a server's `broadcast` (`AsyncServer` has one)."""

    def broadcast(self, message: Message | str | bytes) -> None:
        """Send `message` to every open client of this node."""


def encode(message: Message | str | bytes) -> bytes:
    """A message as it travels on the channel: its type, then its payload."""
    if isinstance(message, Message):
        message = message.payload
    if isinstance(message, str):
        return _TEXT + message.encode('utf-8')
    return _BINARY + bytes(message)


def decode(data: bytes) -> Message:
    """A message from the channel: the type `encode` gave it, or guessed for foreign ones."""
    if data[:2] == _TEXT:
        return TextMessage(data[2:].decode('utf-8', 'replace'))
    if data[:2] == _BINARY:
        return BinaryMessage(data[2:])
    try:
        return TextMessage(data.decode('utf-8'))
    except UnicodeDecodeError:
        return BinaryMessage(data)


class RedisFanout:
    """Broadcast through a Redis channel to the clients of every node that listens on it.

    `RedisFanout(server, 'redis://host:6379/0', 'chat')` starts a subscriber
    thread that delivers each message of the channel with
    `server.broadcast()` (override `deliver` to do otherwise), and a
    publisher thread behind `publish()`, which never blocks. A lost
    connection to Redis is logged and tried again after a delay that
    doubles from `min_backoff` up to `max_backoff` seconds; messages
    published meanwhile wait (at most `max_pending`, the oldest dropped
    first, with a warning). Make it in the process that serves (in a
    `Workers` worker: in the server's `__init__`); `close()` stops it.

    Args:
        server: what delivers to this node's clients: anything with a
            `broadcast(message)` (an `AsyncServer`, an `AsyncClient`, a
            `wspy.wsgi.HandOff`).
        url: the Redis server, as `redis.Redis.from_url` takes it.
        channel: the pub/sub channel every node listens on.
        min_backoff: seconds before the first retry after Redis is lost.
        max_backoff: the longest delay between retries.
        max_pending: the most messages kept while Redis is out of reach.

    Raises:
        ImportError: the `redis` package is not installed.
    """

    def __init__(self, server: Broadcaster, url: str = 'redis://localhost:6379/0',
                 channel: str = 'wspy', *, min_backoff: float = 0.1, max_backoff: float = 10.0,
                 max_pending: int = 10_000) -> None:
        try:  # imported here: wspy itself does not depend on redis
            redis = importlib.import_module('redis')
        except ImportError:
            raise ImportError('RedisFanout needs the redis package: '
                              'pip install "wspy[redis]"') from None
        self._errors: type[Exception] = redis.RedisError
        self.server = server
        self.url = url
        self.channel = channel
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.max_pending = max_pending
        self._client: Any = redis.Redis.from_url(url, socket_connect_timeout=5)
        self._pending: deque[bytes] = deque()
        self._wakeup = threading.Condition()
        self._closing = threading.Event()
        #: Set while subscribed to the channel (cleared while Redis is out of reach).
        self.subscribed = threading.Event()
        self._threads = [
            threading.Thread(target=self._subscribe_forever, name='wspy-fanout-subscriber',
                             daemon=True),
            threading.Thread(target=self._publish_forever, name='wspy-fanout-publisher',
                             daemon=True)]
        for thread in self._threads:
            thread.start()

    # -- publishing -----------------------------------------------------------------

    def publish(self, message: Message | str | bytes) -> None:
        """Send `message` to every node's clients (this one's too); returns at once.

        Safe from any thread: the publisher thread sends it to Redis.

        Args:
            message: a `str` (text), `bytes` (binary) or a `Message`.
        """
        data = encode(message)
        with self._wakeup:
            if len(self._pending) >= self.max_pending:
                self._pending.popleft()
                logger.warning('fan-out: %d messages wait for Redis at %s; dropped the oldest',
                               self.max_pending, self.url)
            self._pending.append(data)
            self._wakeup.notify()

    def _publish_forever(self) -> None:
        errors = self._errors
        delay = self.min_backoff
        while not self._closing.is_set():
            with self._wakeup:
                while not self._pending and not self._closing.is_set():
                    self._wakeup.wait()
                if self._closing.is_set():
                    return
                data = self._pending[0]
            try:
                self._client.publish(self.channel, data)
            except errors as error:
                logger.warning('fan-out: cannot publish to Redis at %s (%s); trying again in '
                               '%.1f s', self.url, error, delay)
                delay = self._pause(delay)
                continue
            delay = self.min_backoff
            with self._wakeup:
                if self._pending and self._pending[0] is data:
                    self._pending.popleft()

    # -- receiving ------------------------------------------------------------------

    def deliver(self, message: Message) -> None:
        """Called on the subscriber thread with each message: broadcast to this node's clients."""
        self.server.broadcast(message)

    def _subscribe_forever(self) -> None:
        errors = self._errors
        delay = self.min_backoff
        lost = False
        while not self._closing.is_set():
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
                if lost:
                    logger.warning('fan-out: back on Redis at %s, channel %r', self.url,
                                   self.channel)
                else:
                    logger.info('fan-out: subscribed to %r on Redis at %s', self.channel,
                                self.url)
                lost = False
                delay = self.min_backoff
                self.subscribed.set()
                while not self._closing.is_set():
                    item = pubsub.get_message(timeout=0.5)
                    if item is not None and item['type'] == 'message':
                        self._deliver(item['data'])
            except errors as error:
                self.subscribed.clear()
                if not self._closing.is_set():
                    logger.warning('fan-out: lost Redis at %s (%s); reconnecting in %.1f s',
                                   self.url, error, delay)
                    lost = True
                    delay = self._pause(delay)
            finally:
                self.subscribed.clear()
                try:
                    pubsub.close()
                except errors:
                    pass

    def _deliver(self, data: bytes) -> None:
        try:
            self.deliver(decode(data))
        except Exception:
            logger.exception('fan-out: error delivering a message')

    def _pause(self, delay: float) -> float:
        """Wait `delay` seconds (with jitter) unless closing; the next delay."""
        self._closing.wait(delay * random.uniform(0.8, 1.2))
        return min(self.max_backoff, delay * 2)

    def close(self) -> None:
        """Stop both threads (messages still waiting for Redis are dropped)."""
        self._closing.set()
        with self._wakeup:
            self._wakeup.notify_all()
        for thread in self._threads:
            thread.join(2.0)
        self._client.close()
