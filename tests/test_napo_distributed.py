"""NAPO across 2 CPU processes (gloo): own rows are right on every rank (quirk q2 fixed),
the distributed loss/gradients equal a single-process run over the global batch, and Mbar
is averaged across ranks."""

from __future__ import annotations

import os

import pytest
import torch

SIZES = (3, 2)  # uneven on purpose: a short last batch on rank 1
K, D = 2, 4


def _global():
    g = torch.Generator().manual_seed(1)
    n = sum(SIZES)
    return (torch.randn(n, generator=g, dtype=torch.float64), torch.randn(n, K, generator=g, dtype=torch.float64),
            torch.randn(n, K, generator=g, dtype=torch.float64), torch.randn(n, D, generator=g, dtype=torch.float64),
            torch.arange(n) + 10)


def _reference(detach: bool):
    """Single process over the global batch: per-row losses and gradients of their sum."""
    from prefrec.lm.napo import NapoOptions, napo_batch_loss

    pos, neg, scores, states, ids = _global()
    pos, neg = pos.clone().requires_grad_(True), neg.clone().requires_grad_(True)
    opts = NapoOptions(share_ratio=0.75, gamma0=0.0, detach_shared=detach)  # k = int(0.75*4) = 3
    out = napo_batch_loss(pos, neg, opts, neg_scores=scores, user_states=states, example_ids=ids,
                          distributed=False)
    out.per_row.sum().backward()
    return out.per_row.detach(), pos.grad, neg.grad


def _worker(rank: int, world: int, init_file: str) -> None:
    import torch.distributed as dist

    from prefrec.lm.napo import NapoOptions, RunningMean, gather_pool, napo_batch_loss, share_negatives

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        pos_g, neg_g, scores_g, states_g, ids_g = _global()
        lo = sum(SIZES[:rank])
        sl = slice(lo, lo + SIZES[rank])
        neg = neg_g[sl].clone().requires_grad_(True)

        # 1. the pool: right local rows, same content as the global batch
        pool = gather_pool(neg, scores_g[sl], states_g[sl], ids_g[sl])
        assert pool.size == sum(SIZES)
        assert pool.local_rows.tolist() == list(range(lo, lo + SIZES[rank]))
        torch.testing.assert_close(pool.values.detach(), neg_g)
        assert pool.values[pool.local_rows].requires_grad

        # 2. own negatives in the shared tensor are THIS rank's rows (authors' code: rank 0's rows)
        sh = share_negatives(neg, scores_g[sl], states_g[sl], ids_g[sl], 0.75, pool=pool)
        torch.testing.assert_close(sh.values[:, :K].detach(), neg_g[sl])
        ref_sh = share_negatives(neg_g, scores_g, states_g, ids_g, 0.75)
        torch.testing.assert_close(sh.values.detach(), ref_sh.values[sl])
        torch.testing.assert_close(sh.scores, ref_sh.scores[sl])

        # 3. loss and gradients equal the single-process run, with and without cross-rank gradients
        for detach, cross in ((True, False), (False, True)):
            ref_rows, ref_pos_grad, ref_neg_grad = _reference(detach)
            pos = pos_g[sl].clone().requires_grad_(True)
            neg = neg_g[sl].clone().requires_grad_(True)
            opts = NapoOptions(share_ratio=0.75, gamma0=0.0, detach_shared=detach, cross_rank_grad=cross)
            out = napo_batch_loss(pos, neg, opts, neg_scores=scores_g[sl], user_states=states_g[sl],
                                  example_ids=ids_g[sl])
            torch.testing.assert_close(out.per_row.detach(), ref_rows[sl])
            out.per_row.sum().backward()
            torch.testing.assert_close(pos.grad, ref_pos_grad[sl])
            torch.testing.assert_close(neg.grad, ref_neg_grad[sl])

        # 4. Mbar is averaged over ranks after the local update
        rm = RunningMean(0.5)
        assert rm.update(float(rank + 1)) == pytest.approx((0.5 * 1 + 0.5 * 2) / 2)
        # both ranks are done before either tears its sockets down: a rank exiting while its peer
        # still closes connections made gloo's threads call std::terminate (SIGABRT) under load
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_process_sharing_matches_single_process(tmp_path):
    import torch.multiprocessing as mp

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(2, str(tmp_path / "pg_init")), nprocs=2, join=True)
