"""The remote engine: the same runs across organizations on NVIDIA FLARE (``pip install 'fedkit[remote]'``).

- :mod:`fedkit.remote.wire` — task names and how arrays travel (no FLARE import);
- :mod:`fedkit.remote.silo` — a site's side: its hospital's silo only, trained by a one-silo
  :class:`~fedkit.engines.simulation.SimulationEngine`; :mod:`fedkit.remote.executor` wraps it in a FLARE executor;
- :mod:`fedkit.remote.server` — the :class:`~fedkit.engines.base.Engine` the server's round loop drives, the
  relay of tracker calls to the notebook, and :func:`~fedkit.remote.server.serve`, the server's whole run (hello,
  engine, :func:`fedkit.runner.run`); :mod:`fedkit.remote.controller` wraps it in a FLARE controller;
- :mod:`fedkit.remote.submit` — the notebook/CLI side, which :func:`fedkit.run` calls for ``engine="remote"``:
  submit the job, follow it round by round, stop it, record it;
- :mod:`fedkit.remote.kits` — ``fedkit remote provision`` and ``fedkit remote poc``;
- :mod:`fedkit.remote.prestart` — the kits' FLARE job launchers, which start each next job process ahead
  (:mod:`fedkit.remote.spare`, imports done before the job comes).

Nothing here imports ``nvflare`` at import time except the FLARE wrappers (controller, executor, launchers),
which only FLARE loads. This
package imports the core (runner, engines, tracking); the core never imports it (tests/test_layers.py).
"""
