"""torch.distributed set-up for `torchrun`; a no-op in a plain single process."""
from __future__ import annotations

import os

import torch
import torch.distributed as torch_dist


def world_size() -> int:
    return torch_dist.get_world_size() if torch_dist.is_initialized() else 1


def rank() -> int:
    return torch_dist.get_rank() if torch_dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def init(device: str) -> torch.device:
    """Join the process group torchrun describes (WORLD_SIZE > 1); return this rank's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch_dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        torch_dist.init_process_group(backend)
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            from pipeline.errors import UserError
            raise UserError("hardware.device=cuda but no CUDA GPU is visible; use hardware=cpu")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device(device)


def barrier() -> None:
    if torch_dist.is_initialized():
        torch_dist.barrier()


def broadcast_state(model: torch.nn.Module) -> None:
    """Every rank takes rank 0's parameters and buffers. DDP keeps parameters in step, but
    each rank's last forward updates its own BN running statistics: without this, ranks
    would predict with weights other than the checkpoint rank 0 writes."""
    if torch_dist.is_initialized():
        for t in model.state_dict().values():
            torch_dist.broadcast(t, src=0)
