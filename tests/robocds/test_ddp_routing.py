"""Under DDP every rank routes as one process would on the union of the ranks' batches (2 CPU processes, gloo)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from robocds.config import SharingConfig
from robocds.sharing import SharingRouter, batch_thresholds, cds_weights, own_task_values, sharing_matrix

WORLD = 2
CONFIGS = {
    "mean": SharingConfig(mode="cds"),
    "percentile": SharingConfig(mode="cds", threshold="percentile", percentile=30.0),
    "ema": SharingConfig(mode="cds", ema=0.8),
}


def rank_batches(rank: int, steps: int = 2) -> list[torch.Tensor]:
    """q_data [T=3, B=5, T=3] per step, different on every rank (rank 1's values are shifted up)."""
    g = torch.Generator().manual_seed(100 * rank)
    return [torch.randn(3, 5, 3, generator=g) + 2.0 * rank + step for step in range(steps)]


def _worker(rank: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        results = {}
        for name, config in CONFIGS.items():
            router = SharingRouter(config)
            weights = [router(q).weights for q in rank_batches(rank)]
            results[name] = {"thresholds": router.last_thresholds, "weights": weights, "matrix": router.pop_matrix()}
        torch.save(results, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_thresholds_are_all_reduced_across_ranks(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    batches = [rank_batches(r) for r in range(WORLD)]
    for name, config in CONFIGS.items():
        # One process on the union of the ranks' batches (concatenated along B).
        running = None
        for step in range(2):
            union = torch.cat([batches[r][step] for r in range(WORLD)], dim=1)
            thr = batch_thresholds(own_task_values(union), config.threshold, config.percentile)
            if config.ema > 0 and running is not None:
                thr = config.ema * running + (1 - config.ema) * thr
            running = thr
            for r in range(WORLD):
                torch.testing.assert_close(ranks[r][name]["weights"][step], cds_weights(batches[r][step], thr))
        for r in range(WORLD):
            torch.testing.assert_close(ranks[r][name]["thresholds"], running)
        # The logged matrix is the union's matrix, averaged over steps, identical on both ranks.
        expected = torch.stack(
            [sharing_matrix(torch.cat([ranks[r][name]["weights"][s] for r in range(WORLD)], dim=1)) for s in range(2)]
        ).mean(0)
        for r in range(WORLD):
            torch.testing.assert_close(ranks[r][name]["matrix"], expected)
    # The ranks' data differ, so per-rank thresholds would differ: the test would catch a missing all-reduce.
    own = [own_task_values(batches[r][0]).mean(1) for r in range(WORLD)]
    assert not torch.allclose(own[0], own[1])
