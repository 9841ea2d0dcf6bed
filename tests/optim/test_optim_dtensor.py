"""DTensor (FSDP2) parameters: Newton-Schulz gathers the full matrix, or raises when told to."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from hope.optim import DMGD, M3, AssocMomentum, Muon

tensor_api = pytest.importorskip("torch.distributed.tensor")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    from torch.distributed.device_mesh import init_device_mesh

    store = tmp_path_factory.mktemp("dist") / "store"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    yield init_device_mesh("cpu", (1,))
    dist.destroy_process_group()


@pytest.mark.parametrize("make", [
    lambda ps: Muon(ps, lr=0.1),
    lambda ps: M3(ps, lr=1e-3, slow_every=2),
    lambda ps: AssocMomentum(ps, objective="l2", mem_lr=0.1),
])
def test_sharded_matches_plain(mesh, make) -> None:
    shard = tensor_api.Shard(0)
    w0 = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    dw = torch.nn.Parameter(tensor_api.distribute_tensor(w0.clone(), mesh, [shard]))
    w = torch.nn.Parameter(w0.clone())
    o1, o2 = make([dw]), make([w])
    for t in range(4):
        g = torch.randn(4, 6, generator=torch.Generator().manual_seed(t + 1))
        dw.grad = tensor_api.distribute_tensor(g, mesh, [shard])
        w.grad = g.clone()
        o1.step()
        o2.step()
    torch.testing.assert_close(dw.full_tensor(), w.detach(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("make", [
    lambda ps: Muon(ps, dtensor="error"),
    lambda ps: M3(ps, dtensor="error"),
    lambda ps: DMGD(ps),
])
def test_sharded_error_names_shape(mesh, make) -> None:
    dw = torch.nn.Parameter(tensor_api.distribute_tensor(torch.zeros(4, 6), mesh, [tensor_api.Shard(0)]))
    dw.grad = tensor_api.distribute_tensor(torch.ones(4, 6), mesh, [tensor_api.Shard(0)])
    with pytest.raises(ValueError, match=r"shape \(4, 6\) is a DTensor"):
        make([dw]).step()
