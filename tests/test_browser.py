"""A real browser on a real JupyterLab: 02_fedavg_widgets runs, the panel trains live, a screenshot is kept.

JupyterLab listens on 127.0.0.1 with a token, on a free port, and is killed (its process group, by
PID) at teardown. Playwright drives Debian's Chromium (``/usr/bin/chromium``, installed by
``.ci/run``; nothing is downloaded here). Without Chromium or Playwright the test skips on a
developer's machine and fails in CI (``CI=true``).

``FEDKIT_UPDATE_DOCS=1`` also writes the panel's screenshot to ``docs/widget_panel.png``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
NOTEBOOK = "02_fedavg_widgets.ipynb"
ROUNDS = 3
SERVER_START_S = 90
RUN_S = 120
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} CI must have it: .ci/run installs Debian's chromium and `make` installs playwright.")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def jupyterlab(tmp_path: Path, data_dir: Path, fedkit_home: Path) -> Iterator[tuple[str, str]]:
    """A JupyterLab server on 127.0.0.1 serving a copy of the notebook; yields (base url, token)."""
    pytest.importorskip("jupyterlab")
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, root / NOTEBOOK)
    port, token = _free_port(), secrets.token_hex(16)
    kernels = tmp_path / "kernels"  # the notebooks' kernel "Python (fedkit)", as `make lab` / `make kernel` install it
    install = ["install", "--prefix", str(kernels), "--name", "fedkit", "--display-name", "Python (fedkit)"]
    subprocess.run(
        [sys.executable, "-m", "ipykernel", *install, "--env", "FEDKIT_DATA_DIR", str(data_dir)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    env = {
        **{k: v for k, v in os.environ.items() if k != "FEDKIT_DATA_DIR"},  # the kernel's spec brings it
        "JUPYTER_PATH": str(kernels / "share" / "jupyter"),
        "FEDKIT_HOME": str(fedkit_home),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
    }
    news = tmp_path / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false"}')  # no "Jupyter news?" toast over the screenshot
    log = (tmp_path / "jupyterlab.log").open("wb")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            "--LabApp.extension_manager=readonly",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            *(["--allow-root"] if os.geteuid() == 0 else []),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"JupyterLab exited with {server.returncode}:\n{(tmp_path / 'jupyterlab.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer on {base} within {SERVER_START_S} s.")
            time.sleep(0.25)
        yield base, token
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)  # the server and the kernels it started
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=15)
        except ProcessLookupError:
            pass
        log.close()


def test_widget_panel_trains_live_in_jupyterlab(jupyterlab: tuple[str, str], tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is not installed (apt-get install chromium).")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install playwright; no browser download is needed).")
    base, token = jupyterlab
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1100},
        )
        try:
            page = context.new_page()
            page.set_default_timeout(60_000)
            page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}")
            page.locator(".jp-Notebook .jp-Cell").first.wait_for()
            # the notebook names its kernel, which is installed: no "Select Kernel" dialog
            expect(page.locator(".jp-KernelName").first).to_have_text("Python (fedkit)", timeout=60_000)
            expect(page.locator(".jp-Dialog")).to_have_count(0)
            expect(page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")).to_be_attached(timeout=60_000)

            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()

            panel = page.locator(".fedkit-panel")
            panel.wait_for(timeout=90_000)
            expect(page.locator("img.fedkit-figure")).to_be_hidden()  # no broken-image icon before the first run
            rounds = page.locator(".fedkit-rounds input")
            rounds.fill(str(ROUNDS))
            rounds.press("Enter")
            run = page.locator("button.fedkit-run")
            expect(page.locator(".fedkit-message")).to_contain_text(f"{ROUNDS} rounds")
            expect(page.locator(".fedkit-round-counter")).to_have_text(f"round 0/{ROUNDS}")  # follows rounds
            expect(run).to_be_enabled()
            run.click()

            counter = page.locator(".fedkit-round-counter")
            expect(counter).to_have_text(f"round {ROUNDS}/{ROUNDS}", timeout=RUN_S * 1000)
            expect(page.locator(".fedkit-message")).to_contain_text("finished", timeout=30_000)
            figure = page.locator("img.fedkit-figure")
            page.wait_for_function(
                "img => img.complete && img.naturalWidth > 400", arg=figure.element_handle(), timeout=30_000
            )
            expect(page.locator(".fedkit-table table")).to_contain_text("switzerland")  # without running a cell
            expect(page.locator(".fedkit-table table")).to_contain_text("auc 95% CI")
            expect(page.get_by_text("Press Run above")).to_have_count(0)  # no cell saying the table is elsewhere
            expect(page.locator(".fedkit-split select")).to_be_enabled()  # the panel is editable again
            expect(page.locator("button.fedkit-stop")).to_be_disabled()
            panel.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "browser_02_fedavg_widgets.png"), full_page=False)
            panel.screenshot(path=str(ARTIFACTS / "widget_panel.png"))
            if os.environ.get("FEDKIT_UPDATE_DOCS") == "1":
                (ROOT / "docs").mkdir(exist_ok=True)
                shutil.copy(ARTIFACTS / "widget_panel.png", ROOT / "docs" / "widget_panel.png")
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / "browser_failure.png"))
            raise
        finally:
            context.close()

    import fedkit

    (run_row,) = fedkit.runs().to_dict("records")
    assert run_row["status"] == "finished" and run_row["rounds"] == ROUNDS
