"""The shared training engine: collectives only through prefrec.distributed (on the backend's
device), precision options, schedule checks on resume, accumulation = larger batch, clear errors
for what this machine cannot do (fp16 / 4-bit / flash-attention without a GPU, sharded launches)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

from prefrec.errors import ConfigError
from prefrec.lm.samples import LMSample

SRC = Path(__file__).resolve().parents[1] / "src" / "prefrec"
COLLECTIVES = {"all_reduce", "all_gather", "all_gather_into_tensor", "all_gather_object", "broadcast",
               "broadcast_object_list", "reduce", "reduce_scatter", "reduce_scatter_tensor", "gather",
               "scatter", "all_to_all", "all_to_all_single", "send", "recv"}


def test_no_collective_outside_the_distributed_module():
    """A collective on a CPU tensor crashes under NCCL. prefrec/distributed.py moves every tensor
    to the backend's device; any other module calling torch.distributed directly would bypass it."""
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name == "distributed.py" and path.parent == SRC:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mod = node.module if isinstance(node, ast.ImportFrom) else None
                names = [a.name for a in node.names]
                if (mod or "").startswith("torch.distributed") or any(n.startswith("torch.distributed") for n in names):
                    offenders.append(f"{path.relative_to(SRC)}:{node.lineno} imports torch.distributed")
            if isinstance(node, ast.Attribute) and node.attr in COLLECTIVES \
                    and isinstance(node.value, ast.Name) and node.value.id in ("dist", "distributed_c10d"):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno} calls {node.value.id}.{node.attr}")
    assert not offenders, offenders


@pytest.mark.parametrize("backend,kinds", [("gloo", ["cpu"]), ("nccl", ["cuda"]), ("cpu:gloo,cuda:nccl", ["cpu", "cuda"]),
                                           ("cuda:gloo", ["cuda"]), ("mpi", ["cpu"])])
def test_backend_device_types(backend, kinds):
    from prefrec.distributed import _backend_devices

    assert _backend_devices(backend) == kinds


def test_a_cuda_only_group_is_served_on_cuda_not_cpu(tmp_path):
    """Under a group whose only backend is registered for ``cuda`` (NCCL's situation), a raw
    collective on a CPU tensor fails -- the crash the issue reproduced -- and prefrec's comm
    device is CUDA, so its collectives never hand that backend a CPU tensor."""
    import torch.distributed as dist

    from prefrec import distributed

    dist.init_process_group("cuda:gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        with pytest.raises(RuntimeError, match="(?i)no backend type associated with device type cpu"):
            dist.all_reduce(torch.ones(1))
        assert distributed.comm_device().type == "cuda"
        # world size 1: prefrec's helpers are no-ops and never touch the backend
        t = torch.ones(2)
        assert distributed.all_reduce_sum(t) is t and distributed.all_gather(t)[0] is t
    finally:
        dist.destroy_process_group()
    assert distributed.comm_device().type == "cpu"


def test_all_reduce_moves_to_the_comm_device_and_back(monkeypatch, tmp_path):
    """With a (gloo, 1-process) group, a pinned comm device is where the collective runs; the
    result lands in the caller's tensor. Checked with a spy on torch.distributed.all_reduce."""
    import torch.distributed as dist

    from prefrec import distributed

    seen = []
    real = dist.all_reduce
    monkeypatch.setattr(dist, "all_reduce", lambda t, **kw: (seen.append(t.device), real(t, **kw))[1])
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)  # force the collective path
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        distributed.set_comm_device("cpu")
        t = torch.tensor([1.0, 2.0], dtype=torch.float64)
        out = distributed.all_reduce_sum(t)
        assert out is t and seen == [torch.device("cpu")]
        assert t.tolist() == [1.0, 2.0]
    finally:
        distributed.set_comm_device(None)
        monkeypatch.undo()
        dist.destroy_process_group()


# ------------------------------------------------------------------------------ precision options
def test_precision_resolution(monkeypatch):
    from prefrec.train.engine import resolve_precision

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # accelerate launch --mixed_precision bf16
    assert resolve_precision("auto", "cpu") == "bf16"
    assert resolve_precision("fp32", "cpu") == "fp32"  # the config wins over the launcher
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU") as e:
        resolve_precision("fp16", "cpu")
    assert e.value.where == "precision"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the messages of a machine without a GPU")
@pytest.mark.parametrize("kw,match", [(dict(quantization="4bit"), "bitsandbytes|CUDA GPU"),
                                      (dict(attn_implementation="flash_attention_2"), "flash-attn"),
                                      (dict(dtype="float64"), "model_dtype")])
def test_load_options_without_gpu_say_what_is_missing(kw, match):
    from prefrec.models.lm import LoadOptions

    with pytest.raises(ConfigError, match=match):
        LoadOptions(**kw).kwargs()


def test_sharded_launch_is_refused_clearly(monkeypatch, tmp_path):
    from prefrec.train.engine import make_accelerator
    from prefrec.train.sft import SFTConfig

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(ConfigError, match="DeepSpeed") as e:
        make_accelerator(SFTConfig(output_dir=str(tmp_path / "r"), model="tiny"))
    assert "--multi_gpu" in e.value.fix and "4bit" in e.value.fix


def test_unknown_or_missing_tracker(tmp_path):
    import importlib.util

    from prefrec.train.engine import make_accelerator
    from prefrec.train.sft import SFTConfig

    cfg = SFTConfig(output_dir=str(tmp_path / "r"), model="tiny", report_to="wandb")
    assert cfg.report_to == ["wandb"]  # a single name on the command line becomes a list
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(ConfigError, match="wandb is not installed"):
            make_accelerator(cfg)


# ------------------------------------------------------------------------------ SFT through the engine
def _samples(n: int) -> list[LMSample]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        ids = torch.randperm(40, generator=g)[:11].tolist()
        hist, cands = ids[:2 + i % 4], ids[5:]
        out.append(LMSample(prompt=f"User watched {', '.join(f'Movie {h}' for h in hist)}. Next? Answer:",
                            history=[f"Movie {h}" for h in hist], candidates=[f"Movie {c}" for c in cands],
                            target_index=i % 6, user=i))
    return out


def _sft(tmp_path, name, **kw):
    from prefrec.models.lm import tiny_lm
    from prefrec.train.sft import SFTConfig, train_sft

    base = dict(output_dir=str(tmp_path / name), model="tiny", max_steps=2, per_device_train_batch_size=4,
                per_device_eval_batch_size=4, learning_rate=1e-2, warmup_ratio=0.0, plots=False, lora_dropout=0.0,
                save_final_model=False, threads=1)
    base.update(kw)
    model, tok = tiny_lm(seed=0, initializer_range=0.3)
    return train_sft(SFTConfig(**base), model=model, tokenizer=tok, train_samples=_samples(8),
                     eval_samples=_samples(4)), model


def _rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_bf16_on_cpu_runs_and_matches_fp32(tmp_path):
    """Mixed bf16 on the CPU: the first step's loss (same weights, same batch) is within 1 % of
    fp32's (bf16 keeps ~3 significant digits), and the run records its precision."""
    r32, _ = _sft(tmp_path, "fp32", max_steps=1, precision="fp32")
    r16, _ = _sft(tmp_path, "bf16", max_steps=1, precision="bf16")
    l32 = [r["loss"] for r in _rows(r32.run_dir) if "loss" in r][0]
    l16 = [r["loss"] for r in _rows(r16.run_dir) if "loss" in r][0]
    assert abs(l16 - l32) <= 0.01 * abs(l32), (l16, l32)
    assert l16 != l32  # bf16 really ran (a silently ignored option would give the same number)
    assert json.loads((r16.run_dir / "summary.json").read_text())["precision"] == "bf16"


def test_accumulation_equals_the_larger_batch(tmp_path):
    """2 micro-batches of 2 accumulated = 1 batch of 4: same loss, same weights."""
    r_a, m_a = _sft(tmp_path, "accum", per_device_train_batch_size=2, gradient_accumulation_steps=2)
    r_b, m_b = _sft(tmp_path, "big", per_device_train_batch_size=4, gradient_accumulation_steps=1)
    la = [r["loss"] for r in _rows(r_a.run_dir) if "loss" in r]
    lb = [r["loss"] for r in _rows(r_b.run_dir) if "loss" in r]
    assert la == pytest.approx(lb, rel=1e-5)
    for (n, pa), (_, pb) in zip(m_a.named_parameters(), m_b.named_parameters()):
        if pa.requires_grad:
            torch.testing.assert_close(pa, pb, atol=1e-5, rtol=1e-4, msg=n)  # Adam amplifies float rounding to ~1e-6


def test_learning_rate_logged_is_the_one_the_step_used(tmp_path):
    """Linear schedule without warm-up: step 1 trains at the full rate, the last one above 0."""
    r, _ = _sft(tmp_path, "lr", max_steps=4, lr_scheduler_type="linear", learning_rate=1e-2)
    lrs = [r["learning_rate"] for r in _rows(r.run_dir) if "learning_rate" in r]
    assert lrs == pytest.approx([1e-2, 7.5e-3, 5e-3, 2.5e-3])


def test_warmup_starts_above_zero(tmp_path):
    """Warm-up of 2 steps out of 4 (linear): step 1 trains at lr/2, not at 0 (HF's first value);
    the peak is reached at the end of warm-up and the decay is HF's."""
    r, _ = _sft(tmp_path, "warm", max_steps=4, lr_scheduler_type="linear", learning_rate=1e-2, warmup_ratio=0.5)
    lrs = [r["learning_rate"] for r in _rows(r.run_dir) if "learning_rate" in r]
    assert lrs == pytest.approx([5e-3, 1e-2, 1e-2, 5e-3])


def test_epoch_end_cadence_evaluates_and_saves_every_epoch(tmp_path):
    """8 examples, batch 4: 2 steps per epoch; eval/save at steps 2, 4, 6 (epoch ends + last)."""
    r, _ = _sft(tmp_path, "cad", max_steps=-1, num_train_epochs=3, save_total_limit=5)
    evals = [row["step"] for row in _rows(r.run_dir) if "eval_loss" in row]
    assert evals == [2, 4, 6]
    assert sorted(p.name for p in (r.run_dir / "checkpoints").iterdir()) == [f"step-{s:08d}" for s in (2, 4, 6)]


def test_resume_with_another_number_of_processes_is_refused(tmp_path):
    """A checkpoint of a 1-process run resumed by 2 processes would continue with another order of
    examples (the global batch doubles): refused, naming what changed. (Config keys such as the
    batch size are refused earlier by prefrec.rundir; the process count is not in the config.)"""
    from prefrec.checkpoint import latest_checkpoint
    from prefrec.models.lm import tiny_lm
    from prefrec.train.engine import build_optimizer, plan_schedule, restore_checkpoint
    from prefrec.train.preference import setup_training
    from prefrec.train.sft import SFTConfig

    _sft(tmp_path, "procs", max_steps=2)
    cfg = SFTConfig(output_dir=str(tmp_path / "procs"), model="tiny", max_steps=2, per_device_train_batch_size=4,
                    learning_rate=1e-2, warmup_ratio=0.0, lora_dropout=0.0)
    model, _ = tiny_lm(seed=0, initializer_range=0.3)
    model, params, _, _, _ = setup_training(model, cfg, 8, 1)
    two = plan_schedule(cfg, 8, world=2)
    optimizer, scheduler = build_optimizer(params, cfg, two.total_steps)
    with pytest.raises(ConfigError, match="another training schedule") as e:
        restore_checkpoint(latest_checkpoint(tmp_path / "procs" / "checkpoints"), params, optimizer, scheduler, two)
    assert "processes: 1 -> 2" in str(e.value)


def test_longer_resume_replans_and_shorter_is_refused(tmp_path):
    """max_steps 2 -> 4 on resume continues (the schedule re-planned, a warning); 2 -> 1 is refused."""
    from prefrec.models.lm import tiny_lm
    from prefrec.train.sft import SFTConfig, train_sft

    _sft(tmp_path, "longer", max_steps=2)

    def resume(steps):
        model, tok = tiny_lm(seed=0, initializer_range=0.3)
        cfg = SFTConfig(output_dir=str(tmp_path / "longer"), model="tiny", max_steps=steps, per_device_train_batch_size=4,
                        per_device_eval_batch_size=4, learning_rate=1e-2, warmup_ratio=0.0, plots=False,
                        lora_dropout=0.0, save_final_model=False, threads=1)
        return train_sft(cfg, resume=True, model=model, tokenizer=tok, train_samples=_samples(8),
                         eval_samples=_samples(4))

    with pytest.raises(ConfigError, match="after the 1 steps"):
        resume(1)
    assert resume(4).steps == 4
    assert [r["step"] for r in _rows(tmp_path / "longer") if "loss" in r] == [1, 2, 3, 4]


def test_a_fresh_run_into_a_used_folder_is_refused_before_any_work(tmp_path):
    from prefrec.train.engine import check_fresh_run

    _sft(tmp_path, "used", max_steps=1)
    import yaml

    stored = yaml.safe_load((tmp_path / "used" / "config.yaml").read_text())
    with pytest.raises(ConfigError, match="already holds a run"):
        check_fresh_run(tmp_path / "used", resume=False, config=stored)
    assert check_fresh_run(tmp_path / "used", resume=True, config=stored).name == "step-00000001"


def test_eta_format():
    from prefrec.train.engine import format_eta

    assert format_eta(59.4) == "0m59s" and format_eta(3725) == "1h02m" and format_eta(-3) == "0m00s"


def test_cf_training_under_a_launcher_is_refused(monkeypatch, tmp_path):
    """torchrun / accelerate launch with 2 processes would train two copies into one folder."""
    from prefrec.cf.config import CFConfig
    from prefrec.train.cf import train_cf

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="WORLD_SIZE=2") as e:
        train_cf(CFConfig(), run_dir=tmp_path / "r")
    assert "without accelerate launch" in e.value.fix
    assert not (tmp_path / "r").exists()


def test_preference_training_in_bf16_on_cpu(tmp_path):
    """S-DPO through the engine under bf16 autocast: reference cache, step and evaluation run, the
    first loss is log(1+K) (fresh LoRA: policy = reference) within bf16 rounding, and the cache
    key records the precision (an fp32 cache is not reused for a bf16 run)."""
    import math

    from prefrec.models.lm import tiny_lm
    from prefrec.train.preference import PreferenceConfig, train_preference

    def run(name, precision):
        model, tok = tiny_lm(seed=0, initializer_range=0.3)
        cfg = PreferenceConfig(output_dir=str(tmp_path / name), model="tiny", max_steps=2, per_device_train_batch_size=2,
                               per_device_eval_batch_size=2, num_negatives=3, learning_rate=1e-3, warmup_ratio=0.0,
                               plots=False, save_final_model=False, lora_dropout=0.0, precision=precision,
                               ref_cache_dir=str(tmp_path / "cache"), threads=1)
        return train_preference(cfg, model=model, tokenizer=tok, train_samples=_samples(4), eval_samples=_samples(2))

    r16 = run("bf16", "bf16")
    first = [r for r in _rows(r16.run_dir) if "loss" in r][0]["loss"]
    assert first == pytest.approx(math.log(4), abs=0.02)
    s16 = json.loads((r16.run_dir / "summary.json").read_text())
    assert s16["precision"] == "bf16" and math.isfinite(s16["eval"]["eval_loss"])
    r32 = run("fp32", "fp32")
    s32 = json.loads((r32.run_dir / "summary.json").read_text())
    assert s32["ref_cache"]["train"] != s16["ref_cache"]["train"]
