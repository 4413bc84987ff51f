"""The FLARE executor of a site: a plain ``Executor`` (no Client API polling) around :class:`SiloWorker`.

The site's data options come from the ``FEDKIT_SITE_*`` environment (``fedkit remote start --data``
sets them), its secure-aggregation identity from its startup kit (site certificate, key, root CA),
and it keeps its silo's state per round in its workspace's ``fedkit`` folder (for resumed runs).
"""

from __future__ import annotations

import traceback
from pathlib import Path

from nvflare.apis.executor import Executor
from nvflare.apis.fl_constant import ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable, make_reply
from nvflare.apis.signal import Signal

from fedkit.remote.silo import SiloWorker, SiteOptions, site_identity

PAYLOAD = "fedkit"


class FedkitExecutor(Executor):
    """Runs fedkit's local training of this site's own data; ``site`` defaults to the FLARE site name.

    Parameters
    ----------
    site
        This site's name (default: the FLARE site name).
    """

    def __init__(self, site: str = "") -> None:
        super().__init__()
        self.site = site
        self._worker: SiloWorker | None = None

    def execute(self, task_name: str, shareable: Shareable, fl_ctx: FLContext, abort_signal: Signal) -> Shareable:
        """Answer one task from the server."""
        try:
            if self._worker is None:
                workspace = fl_ctx.get_engine().get_workspace()
                startup = Path(workspace.get_startup_kit_dir())
                name = self.site or fl_ctx.get_identity_name()
                state_dir = Path(workspace.get_root_dir()) / "fedkit"  # the site's, kept across jobs
                self._worker = SiloWorker(name, SiteOptions.from_env(), site_identity(startup), state_dir)
            result = self._worker.handle(task_name, shareable[PAYLOAD])
        except Exception:
            self.log_error(fl_ctx, f"fedkit task {task_name} failed:\n{traceback.format_exc()}")
            reply = make_reply(ReturnCode.EXECUTION_EXCEPTION)
            reply["error"] = traceback.format_exc(limit=3)
            return reply
        reply = make_reply(ReturnCode.OK)
        reply[PAYLOAD] = result
        return reply
