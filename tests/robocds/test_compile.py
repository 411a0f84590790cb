"""The compiled networks (``compile: true``, as ``--config gpu`` trains) give the eager loss."""

from __future__ import annotations

import copy

import pytest
import torch
from synthetic_batches import TINY_ENCODER, make_batch

from robocds.config import CQLConfig, EncoderConfig
from robocds.module import MultiTaskCQL, own_data_router

torch.set_num_threads(1)


def _compiler_available() -> bool:
    try:
        import torch._inductor.config  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means no inductor here
        return False
    return hasattr(torch, "compile")


@pytest.mark.skipif(not _compiler_available(), reason="torch.compile (inductor) is not available")
def test_compiled_networks_give_the_eager_loss() -> None:
    torch.manual_seed(0)
    # One conv layer and no gradient: inductor compiles one small graph (the online and the target network
    # share it), which keeps this test to seconds; the forward pass is where compiled and eager could differ.
    encoder = EncoderConfig(**{**TINY_ENCODER, "channels": (8,), "kernel_sizes": (3,), "strides": (2,)})
    eager = MultiTaskCQL(3, 4, 16, 4, encoder=encoder, cql=CQLConfig(head_hidden=32)).eval()
    compiled = copy.deepcopy(eager)
    compiled.compile_networks = True
    compiled.on_fit_start()  # what the Trainer calls: compiles q and q_target in place
    assert list(compiled.state_dict()) == list(eager.state_dict())  # checkpoints keep the eager names
    batch = make_batch()
    with torch.no_grad():
        expected = eager.compute_terms(batch, own_data_router)[0]
        got = compiled.compute_terms(batch, own_data_router)[0]
    for name, value in expected.metrics().items():
        torch.testing.assert_close(got.metrics()[name], value, rtol=1e-4, atol=1e-5, msg=name)
