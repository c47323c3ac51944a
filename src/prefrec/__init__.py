"""prefrec: ranking losses and preference optimization for recommenders.

One idea holds the package together: every method is a loss over the score of one preferred
item against K negatives (see :mod:`prefrec.losses`). Backbones produce scores, losses never
know the backbone.
"""

__version__ = "0.1.0"


def load(run_dir):  # pragma: no cover - thin lazy wrapper
    """Load a trained run directory for recommendation (see :mod:`prefrec.api`)."""
    from prefrec.api import load as _load

    return _load(run_dir)
