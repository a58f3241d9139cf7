"""The threaded Server's pool: calls never wait for a thread, idle threads retire."""

from __future__ import annotations

import logging
import threading

import pytest

from wspy.threadpool import ThreadPool
from conftest import eventually


def test_calls_run_with_their_arguments() -> None:
    pool = ThreadPool()
    results: list[int] = []
    lock = threading.Lock()

    def add(a: int, b: int) -> None:
        with lock:
            results.append(a + b)

    for i in range(100):
        pool.submit(add, i, 1)
    assert pool.join(5)
    assert sorted(results) == list(range(1, 101))


def test_a_blocked_call_does_not_hold_up_the_next() -> None:
    pool = ThreadPool()
    release = threading.Event()
    ran = threading.Event()
    pool.submit(release.wait, 10)
    pool.submit(ran.set)
    assert ran.wait(2), 'the second call waited for the first'
    assert pool.threads == 2
    release.set()
    assert pool.join(5)


def test_idle_threads_are_reused_then_retire() -> None:
    pool = ThreadPool(idle_timeout=0.3)
    for _ in range(20):  # one after another: one thread serves them all
        done = threading.Event()
        pool.submit(done.set)
        assert done.wait(2)
        assert pool.join(2)
    assert pool.threads == 1
    assert eventually(lambda: pool.threads == 0, 3), 'the idle thread did not retire'
    done = threading.Event()
    pool.submit(done.set)  # a new thread once the old has gone
    assert done.wait(2)


def test_a_failing_call_is_logged_and_the_thread_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    pool = ThreadPool()

    def fail() -> None:
        raise RuntimeError('boom')

    with caplog.at_level(logging.ERROR, logger='wspy'):
        pool.submit(fail)
        assert pool.join(5)
    assert 'boom' in caplog.text
    done = threading.Event()
    pool.submit(done.set)
    assert done.wait(2) and pool.threads == 1


def test_join_times_out_while_a_call_runs() -> None:
    pool = ThreadPool()
    release = threading.Event()
    pool.submit(release.wait, 10)
    assert not pool.join(0.1)
    release.set()
    assert pool.join(5)


def test_owns_current_thread() -> None:
    pool = ThreadPool()
    seen: list[bool] = []
    pool.submit(lambda: seen.append(pool.owns_current_thread()))
    assert pool.join(5)
    assert seen == [True] and not pool.owns_current_thread()
