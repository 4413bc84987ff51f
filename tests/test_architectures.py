"""The built-in models' numpy initialization against torch's, and the simulation path without torch."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from fedkit import architectures
from fedkit.models import build_model, get_flat, personal_mask

SEEDS = [*range(40), 1234, 2**31 - 1, 2**32 - 1, 2**32 + 5, 12345678901]


@pytest.mark.parametrize(("model", "n_features", "hidden"), [("logreg", 13, 16), ("mlp", 13, 16), ("mlp", 5, 33)])
def test_initial_params_equal_torch_bit_for_bit(model: str, n_features: int, hidden: int) -> None:
    for seed in SEEDS:
        expected = get_flat(build_model(model, n_features, hidden=hidden, seed=seed))
        found = architectures.initial_params(model, n_features, hidden=hidden, seed=seed)
        assert found.dtype == np.float32 and np.array_equal(found, expected), f"{model} seed {seed}"


@pytest.mark.parametrize("model", ["logreg", "mlp"])
def test_personal_mask_equals_the_torch_modules(model: str) -> None:
    expected = personal_mask(build_model(model, 13, hidden=16, seed=0))
    assert np.array_equal(architectures.personal_mask(model, 13, hidden=16), expected)


def test_a_simulation_run_imports_neither_torch_nor_scikit_learn_nor_scipy(data_dir) -> None:
    """What keeps a report notebook's kernel start-up short (issue 6): seconds of imports avoided."""
    code = (
        "import sys, fedkit\n"
        "from fedkit import api, explore, plots, reports\n"
        "api.run_seeds({'split': 'flamby', 'rounds': 2, 'personalize': 'fedper'}, [42], tracker='local')\n"
        "heavy = sorted(m for m in ('torch', 'sklearn', 'scipy') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    env = {**os.environ, "FEDKIT_DATA_DIR": str(data_dir)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
