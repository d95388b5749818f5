"""Process-group set-up under torchrun, in one process: what the first CUDA run (one H200, NCCL) found broken.

- torchrun with one process joins a one-process group (so DDP/NCCL runs on a single GPU as on eight);
- more processes than GPUs is a clear error before NCCL fails with "invalid device ordinal";
- reductions go through :func:`all_reduce`, which works for CPU counters whatever the backend (NCCL refused them).
"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist

from mobileseg.engine import runtime
from mobileseg.engine.metrics import ConfusionMatrix
from mobileseg.engine.runtime import all_reduce, init_distributed
from mobileseg.errors import ConfigError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def torchrun_env(monkeypatch):
    """The variables torchrun --nproc_per_node=1 sets for its one process."""
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1", "TORCHELASTIC_RUN_ID": "t"}
    env |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    yield env
    if dist.is_initialized():
        dist.destroy_process_group()


def test_plain_process_does_not_join(monkeypatch):
    """Outside torchrun nothing joins, also where a cluster left MASTER_ADDR / RANK in the environment."""
    for k in ("WORLD_SIZE", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("RANK", "0")
    d = init_distributed("cpu")
    assert not d.enabled and not dist.is_initialized()


def test_torchrun_with_one_process_joins_a_group_and_reduces(torchrun_env):
    d = init_distributed("cpu")
    assert d.enabled and d.world_size == 1 and d.main
    assert dist.is_initialized() and dist.get_backend() == "gloo"
    # The helper every reduction goes through: sums (here over one process) and returns on the caller's device.
    totals = all_reduce(torch.tensor([2.5, 4.0], dtype=torch.float64))
    assert totals.tolist() == [2.5, 4.0] and totals.device.type == "cpu"
    flag = all_reduce(torch.tensor([1.0]), op=dist.ReduceOp.MIN)
    assert flag.item() == 1.0
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))
    cm.reduce_from_all_processes()
    assert cm.mat.tolist() == [[1, 0], [1, 1]]


def test_all_reduce_without_a_group_returns_the_tensor_itself():
    t = torch.tensor([3.0])
    assert all_reduce(t) is t


def test_more_processes_than_gpus_is_a_clear_error(torchrun_env, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(runtime.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(runtime.torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match=r"started 2 processes .* 1 CUDA device.*--nproc_per_node=1"):
        init_distributed("auto")
    assert not dist.is_initialized()
