"""The server job's task waits (fedkit.remote.controller) outside FLARE: FLARE's task objects, sites that answer late.

tests/test_remote.py runs the controller in real FLARE jobs; here the timing of who is waited for is checked alone.
"""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("nvflare")

from nvflare.apis.shareable import Shareable
from nvflare.apis.signal import Signal

from fedkit.remote import wire
from fedkit.remote.controller import FedkitController
from fedkit.remote.executor import PAYLOAD

pytestmark = pytest.mark.timeout(60)


class _Site:
    def __init__(self, name: str) -> None:
        self.name = name


class _ClientTask:
    def __init__(self, name: str) -> None:
        self.client = _Site(name)
        self.result: Shareable | None = None


def controller_with_sites(delays: dict[str, float], **options) -> FedkitController:
    """A controller whose broadcast reaches sites that answer ``delays[site]`` seconds after a task is sent."""
    controller = FedkitController(task_check_period=0.01, **options)

    def broadcast(task, fl_ctx, targets, min_responses) -> None:
        def answer(client_task: _ClientTask, delay: float) -> None:
            time.sleep(delay)
            reply = Shareable()
            reply[PAYLOAD] = {"site": client_task.client.name}
            client_task.result = reply

        for site in targets:
            client_task = _ClientTask(site)
            task.client_tasks.append(client_task)
            threading.Thread(target=answer, args=(client_task, delays[site]), daemon=True).start()

    controller.broadcast = broadcast
    controller.cancel_task = lambda task, fl_ctx=None: None
    return controller


@pytest.mark.parametrize(("task", "waited_for"), [(wire.HELLO, True), (wire.FIT, False)])
def test_the_first_task_waits_start_timeout_for_a_late_site_and_a_round_the_straggler_timeout(task, waited_for) -> None:
    """va answers 1.5 s after the others: within the first task's start timeout (3 s), past a round's (0.5 s)."""
    delays = {"cleveland": 0.0, "hungarian": 0.05, "va": 1.5}
    controller = controller_with_sites(delays, straggler_timeout=0.5, start_timeout=3)
    need = 2
    t0 = time.monotonic()
    replies = controller._broadcast(task, {}, list(delays), need, controller.straggler_timeout_of(task), None, Signal())
    took = time.monotonic() - t0
    assert ("va" in replies) is waited_for
    assert sorted(replies) == sorted(delays if waited_for else ["cleveland", "hungarian"])
    assert took < (2.5 if waited_for else 1.4)  # every site answered, or the straggler timeout ran out


def test_the_start_timeout_is_at_least_the_straggler_timeout() -> None:
    assert FedkitController(straggler_timeout=45, start_timeout=30).straggler_timeout_of(wire.HELLO) == 45
    assert FedkitController(straggler_timeout=5).straggler_timeout_of(wire.HELLO) == 30
    assert FedkitController(straggler_timeout=5).straggler_timeout_of(wire.EVALUATE) == 5
