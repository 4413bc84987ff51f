"""Job processes started ahead (fedkit.remote.prestart / fedkit.remote.spare), outside FLARE: a real spare process.

A spare handed a command must behave as that command started fresh would: same arguments, environment, working
folder, exit status; a child of the launcher in its own session. tests/test_remote.py checks that FLARE's jobs
run in the spares on a real federation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("nvflare")
psutil = pytest.importorskip("psutil")

from fedkit.remote import kits, prestart  # noqa: E402
from fedkit.remote.spare import SPARE_NAME, WARMING_NAME  # noqa: E402

pytestmark = pytest.mark.timeout(120)

FAKE_JOB = textwrap.dedent(
    """
    import json, os, sys

    if __name__ == "__main__":
        out = sys.argv[sys.argv.index("--out") + 1]
        with open("/proc/self/comm") as f:
            comm = f.read().strip()
        with open(out, "w") as f:
            json.dump({"argv": sys.argv[1:], "cwd": os.getcwd(), "ppid": os.getppid(), "sid": os.getsid(0),
                       "pid": os.getpid(), "token": os.environ.get("FEDKIT_TEST_TOKEN"), "comm": comm}, f)
        sys.exit(3)
    """
)


@pytest.fixture
def prestarted(tmp_path, monkeypatch):
    """A launcher side for module ``fakejob`` (on the spares' PYTHONPATH), its spares killed at the end."""
    (tmp_path / "fakejob.py").write_text(FAKE_JOB)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    pre = prestart._Prestarted("fakejob")
    yield pre
    pre.retire()
    for child in psutil.Process().children():
        if child.name() in (SPARE_NAME, WARMING_NAME):
            child.kill()
            child.wait(10)


def ready_spare(pre, timeout: float = 60.0) -> psutil.Process:
    """The launcher's spare once its imports are done."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process = pre._spare
        if process is not None:
            spare = psutil.Process(process.pid)
            if spare.name() == SPARE_NAME:
                return spare
        time.sleep(0.05)
    raise AssertionError("no spare became ready")


def wait_exit(handle, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = handle.adapter.poll()
        if code is not None:
            return code
        time.sleep(0.02)
    raise AssertionError("the job process did not exit")


def test_a_job_handed_to_a_spare_runs_as_its_command_would_and_the_next_spare_follows(
    prestarted, tmp_path, monkeypatch
) -> None:
    pre = prestarted
    pre.start_spare()
    spare = ready_spare(pre)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    out = tmp_path / "out.json"
    argv = [sys.executable, "-m", "fakejob", "--out", str(out), "two words"]
    handle = pre.launch(argv, {**os.environ, "FEDKIT_TEST_TOKEN": "t0k"})
    assert handle is not None and handle.adapter.pid == spare.pid
    pre.replace_after(handle.adapter.pid)  # waits without reaping: the exit status stays FLARE's to read
    assert wait_exit(handle) == 3
    seen = json.loads(out.read_text())
    assert seen["argv"] == ["--out", str(out), "two words"]
    assert seen["cwd"] == str(work) and seen["token"] == "t0k"
    assert seen["ppid"] == os.getpid() and seen["sid"] == seen["pid"] == spare.pid  # our child, its own session
    assert seen["comm"] not in (SPARE_NAME, WARMING_NAME)  # a job process shows its usual name
    follower = ready_spare(pre)  # started once the job process had exited
    assert follower.pid != spare.pid


def test_a_command_a_spare_cannot_run_is_left_to_flare_and_the_spare_kept(prestarted) -> None:
    pre = prestarted
    pre.start_spare()
    spare = ready_spare(pre)
    for argv in (
        [sys.executable, "-m", "otherjob"],  # another module
        ["/usr/bin/env", "python3", "-m", "fakejob"],  # another interpreter
    ):
        assert pre.launch(argv, dict(os.environ)) is None
    assert pre._spare is not None and pre._spare.pid == spare.pid


def test_a_dead_spare_is_replaced_at_the_launch_and_a_retired_one_ends_without_running(prestarted, tmp_path) -> None:
    pre = prestarted
    pre.start_spare()
    dead = ready_spare(pre)
    dead.kill()
    pre._spare.wait(10)
    out = tmp_path / "out.json"
    handle = pre.launch([sys.executable, "-m", "fakejob", "--out", str(out)], dict(os.environ))
    assert handle is not None and handle.adapter.pid != dead.pid  # a spare started for the job
    assert wait_exit(handle) == 3 and json.loads(out.read_text())["pid"] == handle.adapter.pid
    pre.start_spare()
    process = pre._spare
    ready_spare(pre)
    pre.retire()
    assert process.wait(30) == 0
    assert len(list(tmp_path.glob("*.json"))) == 1  # the retired spare ran nothing


def test_a_job_launched_while_the_one_before_runs_gets_its_own_spare_and_only_its_exit_starts_the_next(
    prestarted, tmp_path
) -> None:
    """Back to back: the second job comes before the first has exited (no spare waits); neither waits for the other,
    and no spare warms up beside the second job when the first exits."""
    pre = prestarted
    gate = tmp_path / "gate"
    slow = tmp_path / "slowjob.py"  # exits once ``gate`` exists
    slow.write_text(
        "import os, sys, time\n"
        "if __name__ == '__main__':\n"
        "    while not os.path.exists(sys.argv[1]):\n"
        "        time.sleep(0.02)\n"
    )
    pre.module = "slowjob"
    pre.start_spare()
    ready_spare(pre)
    first = pre.launch([sys.executable, "-m", "slowjob", str(gate)], dict(os.environ))
    pre.replace_after(first.adapter.pid)
    second = pre.launch([sys.executable, "-m", "slowjob", str(tmp_path / "gate2")], dict(os.environ))
    pre.replace_after(second.adapter.pid)
    assert first is not None and second is not None and second.adapter.pid != first.adapter.pid
    gate.touch()
    assert wait_exit(first) == 0
    time.sleep(1.0)  # the first job's watcher has seen its exit
    assert pre._spare is None  # the second job still runs: no spare beside it
    assert second.adapter.poll() is None
    (tmp_path / "gate2").touch()
    assert wait_exit(second) == 0
    assert ready_spare(pre).pid not in (first.adapter.pid, second.adapter.pid)


def test_kits_use_fedkits_launchers_and_allow_them(tmp_path) -> None:
    launcher = "nvflare.app_common.job_launcher.{}_process_launcher.{}ProcessJobLauncher"
    for kit, kind in (("server", "server"), ("cleveland", "client")):
        (tmp_path / kit / "local").mkdir(parents=True)
        (tmp_path / kit / "startup").mkdir()
        if kit == "server":
            (tmp_path / kit / "startup" / "fed_server.json").write_text("{}")
        conf = {
            "class_allow_list": ["nvflare"],
            "components": [{"id": "process_launcher", "path": launcher.format(kind, kind.title()), "args": {}}],
        }
        (tmp_path / kit / "local" / "resources.json.default").write_text(json.dumps(conf))
    kits.allow_fedkit(tmp_path)
    for kit, cls in (("server", prestart.PrestartedServerLauncher), ("cleveland", prestart.PrestartedClientLauncher)):
        conf = json.loads((tmp_path / kit / "local" / "resources.json.default").read_text())
        path = f"{cls.__module__}.{cls.__name__}"
        assert conf["components"][0]["path"] == path and path in conf["class_allow_list"]
    kits.use_launchers(tmp_path, prestart=False)  # FLARE's own again (the benchmark's baseline)
    for kit, kind in (("server", "server"), ("cleveland", "client")):
        conf = json.loads((tmp_path / kit / "local" / "resources.json.default").read_text())
        assert conf["components"][0]["path"] == launcher.format(kind, kind.title())


def test_the_server_job_skips_flares_torch_tensor_clean_up() -> None:
    """FLARE's workflow end imports nvflare.app_opt.pt (and torch); the controller makes that import fail at once."""
    code = textwrap.dedent(
        """
        import sys
        from fedkit.remote.controller import FedkitController

        class Engine:
            def register_app_command(self, topic, func):
                pass

        class Ctx:
            def get_engine(self):
                return Engine()

        FedkitController().start_controller(Ctx())
        try:
            from nvflare.app_opt.pt.tensor_downloader import cleanup_active_disk_tensor_downloads
        except ImportError:
            print("skipped", "torch" in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["skipped", "False"], done.stderr[-2000:]
