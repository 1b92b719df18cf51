"""The helper threads a combined flush overlaps its waits on (engine/helper_threads.py)."""

import multiprocessing
import os
import threading

import pytest

from engine import helper_threads


def thread_of(helper) -> int:
    return helper.submit(threading.get_ident).result(10)


def test_rounds_at_once_each_have_their_own_helper_and_a_given_back_one_is_kept():
    with helper_threads.borrowed() as first, helper_threads.borrowed() as second:
        assert first is not second and thread_of(first) != thread_of(second)
        # one round's task blocked (on a row lock, say) holds up no other round
        release = threading.Event()
        blocked = first.submit(release.wait, 10)
        assert thread_of(second)
        release.set()
        assert blocked.result(10)
    with helper_threads.borrowed() as again:
        assert again in (first, second)


def test_leaving_on_an_error_waits_for_what_the_helper_still_runs():
    finished = []

    def statement() -> None:  # still running on the caller's connection when it fails
        threading.Event().wait(0.3)
        finished.append(True)

    with pytest.raises(RuntimeError), helper_threads.borrowed() as helper:
        helper.submit(statement)
        raise RuntimeError("the caller's next step failed")
    assert finished == [True]


def child_borrows() -> None:
    try:
        with helper_threads.borrowed() as helper:
            assert helper.submit(os.getpid).result(10) == os.getpid()
    except BaseException:  # noqa: BLE001 - any failure is the answer
        os._exit(1)
    os._exit(0)


def test_a_forked_child_starts_its_own_helpers():
    """The parent keeps an idle helper; in a forked child its thread does not exist, so
    a task given to it would never run."""
    with helper_threads.borrowed() as helper:
        thread_of(helper)
    child = multiprocessing.get_context("fork").Process(target=child_borrows)
    child.start()
    child.join(30)
    assert child.exitcode == 0
