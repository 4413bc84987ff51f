"""The FLARE executor of a site: a plain ``Executor`` (no Client API polling) around :class:`SiloWorker`."""

from __future__ import annotations

import traceback

from nvflare.apis.executor import Executor
from nvflare.apis.fl_constant import ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable, make_reply
from nvflare.apis.signal import Signal

from fedkit.remote.silo import SiloWorker

PAYLOAD = "fedkit"


class FedkitExecutor(Executor):
    """Runs fedkit's local training of this site's hospital; ``hospital`` defaults to the FLARE site name.

    Parameters
    ----------
    hospital
        This site's hospital (default: the FLARE site name).
    data_dir
        The folder of the UCI files (default: ``$FEDKIT_DATA_DIR``, else ``~/.cache/fedkit/heart-disease``).
    """

    def __init__(self, hospital: str = "", data_dir: str = "") -> None:
        super().__init__()
        self.hospital = hospital
        self.data_dir = data_dir
        self._worker: SiloWorker | None = None

    def execute(self, task_name: str, shareable: Shareable, fl_ctx: FLContext, abort_signal: Signal) -> Shareable:
        """Answer one task from the server."""
        if self._worker is None:
            self._worker = SiloWorker(self.hospital or fl_ctx.get_identity_name(), self.data_dir or None)
        try:
            result = self._worker.handle(task_name, shareable[PAYLOAD])
        except Exception:
            self.log_error(fl_ctx, f"fedkit task {task_name} failed:\n{traceback.format_exc()}")
            reply = make_reply(ReturnCode.EXECUTION_EXCEPTION)
            reply["error"] = traceback.format_exc(limit=3)
            return reply
        reply = make_reply(ReturnCode.OK)
        reply[PAYLOAD] = result
        return reply
