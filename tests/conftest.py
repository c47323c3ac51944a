"""Shared fixtures. Real data is read from ../shared/data (beside the checkout) or $PREFREC_DATA."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _shared_data() -> Path:
    env = os.environ.get("PREFREC_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data folder; tests that need it fail loudly if it is missing (CI has it)."""
    p = _shared_data()
    assert p.exists(), f"real data not found at {p}; set PREFREC_DATA"
    return p


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def load_script():
    """Import a repository script (docs/gen_cli.py, bench/*.py) that is not in a package."""
    import importlib.util

    def load(path: Path, name: str):
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        assert spec.loader is not None
        spec.loader.exec_module(mod)
        return mod
    return load
