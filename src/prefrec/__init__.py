"""prefrec: ranking losses and preference optimization for recommenders.

One idea holds the package together: every method is a loss over the score of one preferred
item against K negatives (see :mod:`prefrec.losses`). Backbones produce scores, losses never
know the backbone.
"""

__version__ = "0.1.0"


def load(run_dir, *, data_dir=None, device="auto"):
    """Load a trained run directory for recommendation (see :func:`prefrec.api.load`).

    ``data_dir``: the datasets folder a CF run's split is rebuilt from (default: $PREFREC_DATA,
    else the folder the run recorded, else ./data). ``device``: where an LM run is loaded (auto =
    CUDA when present, else CPU)."""
    from prefrec.api import load as _load

    return _load(run_dir, data_dir=data_dir, device=device)
