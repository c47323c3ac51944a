"""Typed config of ``prefrec train-cf`` / ``prefrec compare`` (pydantic only; no torch import).

Temperature units (read this once; research §0.1)
-------------------------------------------------
The PSL paper scores with ``f = cos/2``; the IR-Benchmark code divides *raw* cosine by ``--tau``.
prefrec follows the code's CLI so that published code-unit values can be pasted in:

======== ================================ ============================ =====================
loss     scores fed to the loss           ``loss.tau`` means           paper tau -> loss.tau
======== ================================ ============================ =====================
psl      ``cos/2`` (so d in [-1, 1])      the paper's tau (= tau_star) same value
sl       raw ``cos``                      code tau                     ``2 * paper tau``
sl_paper raw ``cos`` (positive in denom.) code tau                     ``2 * paper tau``
bsl      raw ``cos``                      ``tau1``/``tau2`` code units ``2 * paper tau1/2``
bpr      raw ``cos`` or dot (norm=false)  (none)                       -
advinfo. raw ``cos`` (positive in denom.) code tau                     ``2 * paper tau``
llpauc   ``sigmoid(cos)`` probabilities   (none; ``alpha``, ``beta``)  -
======== ================================ ============================ =====================

So Gowalla MF (paper Table B.2, tau = 0.05 for both) is ``psl: tau 0.05`` and ``sl: tau 0.1``.
With ``model.norm: false`` the scores are raw dot products (for BPR, as the paper's B.3 implies).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from prefrec.config import Config


class CFData(Config):
    dataset: str = "movielens-100k"
    """Registered name (``prefrec data list``): IR-Benchmark iid/ood names or raw ``ml-100k``."""
    valid: Literal["holdout", "test", "none"] = "holdout"
    """Model selection split. ``holdout``: max(floor(0.1 n_u), 1) random training items per user
    (the peer's IID protocol; we also use it for OOD, where the peer validates on test).
    ``test``: select on the test set (the peer's OOD ``--no_valid``; optimistic, never tune on it).
    ``none``: keep the last epoch."""
    valid_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    """Raw datasets without a predefined split (ml-100k): per-user random test fraction."""
    split_seed: int | None = None
    """Seed of the holdout/test/noise splits; None uses the run seed."""
    noise_p: float = Field(0.0, ge=0.0, lt=1.0)
    """False-negative setting: probability that a negative slot is one of the user's false negatives."""
    noise_fraction: float = Field(0.1, gt=0.0, le=1.0)
    """Share of each user's training items turned into false negatives when noise_p > 0."""
    denominator: Literal["all", "with_truth"] = "all"
    """Average metrics over all users (the peer) or only users with ground truth."""


class CFModel(Config):
    name: Literal["mf", "lightgcn", "xsimgcl"] = "mf"
    dim: int = Field(64, ge=1, le=16384)
    layers: int | None = Field(None, ge=0)
    """Propagation layers; None = the paper's: LightGCN 2, XSimGCL 3."""
    norm: bool = True
    """L2-normalise embeddings (cosine scores); the paper's setting for SL-family losses."""
    init: Literal["auto", "normal", "xavier_normal", "xavier_uniform", "small_normal"] = "auto"
    """auto: xavier_normal for BPR, small_normal N(0, 0.01^2) for LLPAUC (as the peer re-initialises
    both), xavier_uniform for XSimGCL, N(0,1) otherwise."""
    # XSimGCL only (None = the paper's value; setting one for another backbone is an error).
    eps: float | None = Field(None, ge=0.0)
    """XSimGCL noise magnitude per layer (0.1)."""
    cl_layer: int | None = Field(None, ge=1)
    """XSimGCL contrastive view: this layer's output (1)."""
    cl_weight: float | None = Field(None, ge=0.0)
    """XSimGCL weight of the contrastive loss (0.2; the paper uses 0.05 on Amazon-Electronic)."""
    cl_tau: float | None = Field(None, gt=0.0)
    """XSimGCL InfoNCE temperature (0.1)."""
    noise: Literal["gaussian", "uniform"] | None = None
    """XSimGCL noise distribution: gaussian (IR-Benchmark, default) or uniform (the original)."""

    @model_validator(mode="after")
    def _xsimgcl_keys_need_xsimgcl(self) -> CFModel:
        if self.name != "xsimgcl":
            set_keys = [k for k in XSIMGCL_DEFAULTS if getattr(self, k) is not None]
            if set_keys:
                raise ValueError(f"{', '.join(set_keys)} only apply to model.name=xsimgcl, not {self.name!r}")
        return self


XSIMGCL_DEFAULTS: dict[str, Any] = {"eps": 0.1, "cl_layer": 1, "cl_weight": 0.2, "cl_tau": 0.1, "noise": "gaussian"}
"""XSimGCL's settings in the PSL paper (B.4) and IR-Benchmark's code."""
DEFAULT_LAYERS = {"lightgcn": 2, "xsimgcl": 3}


class CFLoss(Config):
    name: str = "psl"
    """bpr, sl, sl_paper, psl, bsl, advinfonce, llpauc (see the unit table in the module doc)."""
    tau: float = 0.05
    """sl, sl_paper, advinfonce: code units; psl: paper units."""
    activation: str = "tanh"
    """PSL activation: tanh, atan, relu (or exp, which equals SL at 2x tau)."""
    tau1: float = 0.1
    tau2: float = 0.1
    # The min-max losses' keys default to None (= the IR-Benchmark default); setting one for a loss
    # that does not take it is an error (prefrec.losses._LOSS_HYPER), not silently ignored.
    neg_weight: float | None = None
    """advinfonce: lambda, the weight of the negatives' term (default 64)."""
    lr_adv: float | None = None
    """advinfonce: the adversary's Adam learning rate (default 5e-5; it ascends the loss)."""
    epoch_adv: int | None = None
    """advinfonce: every epoch_adv-th epoch trains only the adversary, the others only the model (default 5)."""
    alpha: float | None = None
    """llpauc: TPR bound alpha in (0, 1] (default 0.7)."""
    beta: float | None = None
    """llpauc: FPR bound beta in (0, 1] (default 0.01)."""


class CFTrain(Config):
    epochs: int = Field(200, ge=0)
    batch_size: int = Field(1024, ge=1)
    lr: float = Field(0.1, gt=0, allow_inf_nan=False)
    weight_decay: float = Field(0.0, ge=0, allow_inf_nan=False)
    """Adam's coupled L2 (torch.optim.Adam weight_decay), on the full tables."""
    negatives: int = Field(1000, ge=1)
    negative_mode: Literal["per_row", "shared"] = "per_row"
    scoring: Literal["auto", "dense", "bag", "gather"] = "auto"
    eval_every: int = Field(5, ge=1)
    patience: int = Field(0, ge=0)
    """Stop after this many validations without improvement; 0 = off (the paper's protocol)."""
    ks: list[Annotated[int, Field(ge=1)]] = Field([5, 10, 20, 50], min_length=1)
    select_metric: str = "NDCG@20"
    eval_chunk: int = Field(1024, ge=1)
    checkpoint_every: int = Field(1, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    max_batches_per_epoch: int | None = None
    """Debug/bench cap on batches per epoch (None = full epoch)."""
    threads: int = Field(0, ge=0)
    """torch.set_num_threads; 0 leaves torch's default."""
    progress: bool | None = None
    """tqdm bars; None = only when stderr is a terminal."""


class CFConfig(Config):
    name: str = "cf"
    """Run name: output goes to ``<output_dir>/<name>/``."""
    output_dir: str = "runs"
    seed: int = 2024
    data: CFData = CFData()
    model: CFModel = CFModel()
    loss: CFLoss = CFLoss()
    train: CFTrain = CFTrain()
    presets: dict[str, dict[str, Any]] = {}
    """For ``prefrec compare``: label -> dotted overrides, e.g. ``psl-relu: {loss.name: psl,
    loss.activation: relu, loss.tau: 0.05}``. Labels without a preset are read as ``<loss>`` or
    ``psl-<activation>``."""
