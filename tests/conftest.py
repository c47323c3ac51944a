"""Shared fixtures. Real data is read from ../shared/data (beside the checkout) or $PREFREC_DATA."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


# Converted models and tokenizers go to a temporary folder, never the user's ~/.cache/prefrec (the
# SmolLM2 conversion is 517 MB). The folder is stable across sessions so the ~25 s conversion runs
# once per machine; PREFREC_TEST_CACHE chooses another.
os.environ["PREFREC_CACHE"] = os.environ.get("PREFREC_TEST_CACHE") or str(
    Path(tempfile.gettempdir()) / f"prefrec-test-cache-{os.getuid() if hasattr(os, 'getuid') else 'user'}")


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


@pytest.fixture(autouse=True)
def _restore_data_env(monkeypatch):
    """`prefrec --data-dir X` exports PREFREC_DATA=X for its process; undo it after each test so
    one test's data folder never leaks into the next."""
    value = os.environ.get("PREFREC_DATA")
    if value:
        monkeypatch.setenv("PREFREC_DATA", value)  # records the value; monkeypatch restores it
    else:
        monkeypatch.delenv("PREFREC_DATA", raising=False)
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
