"""gunicorn's gthread worker for blocking WebSockets: each thread may hold one, pages go on.

With gunicorn's own `gthread` worker and `--threads N`, N open WebSockets
hold every thread, and further requests, pages or WebSockets, wait in its
queue until one closes. `GThreadWorker` runs one thread more than
`--threads`, which no WebSocket takes: N WebSockets are held, the next is
answered 503 with `Retry-After` at once, and pages are served meanwhile::

    gunicorn --worker-class wspy.wsgi.gunicorn.GThreadWorker --threads 20 app:app

WebSockets handed off (`HandOff`) hold no thread and are not counted.
Importing this module imports gunicorn (`pip install "wspy[gunicorn]"`).
"""

from __future__ import annotations

from concurrent import futures

from gunicorn.workers.gthread import ThreadWorker

from wspy.wsgi import stopping


class GThreadWorker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's `gthread` worker where `--threads` bounds the open blocking WebSockets, and
    one more thread serves pages and answers the WebSockets beyond them (503)."""

    def init_process(self) -> None:
        """Bound the process's blocking WebSockets by the thread count, then run the worker."""
        stopping._process.max_blocking = self.cfg.threads
        super().init_process()

    def get_thread_pool(self) -> futures.ThreadPoolExecutor:
        """The request threads: `--threads`, and one for pages and refusals."""
        return futures.ThreadPoolExecutor(max_workers=self.cfg.threads + 1)
