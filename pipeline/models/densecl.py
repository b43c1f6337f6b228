"""Dense contrastive pretraining (DenseCL, Wang et al., CVPR 2021) of a ResNet backbone.

Two augmented views, a momentum key encoder and two queues: a global InfoNCE loss on pooled
features (MoCo v2) and a dense InfoNCE loss between feature-map cells matched across views.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.backbone import ResNetFeatures
from pipeline.ops.precision import full_precision, to_float32


class _Heads(nn.Module):
    """Global MLP on pooled res5 and dense 1x1-conv MLP on every res5 cell (Sec. 3.2)."""

    def __init__(self, in_ch: int, hidden: int, dim: int):
        super().__init__()
        self.global_mlp = nn.Sequential(nn.Linear(in_ch, hidden), nn.ReLU(inplace=True),
                                        nn.Linear(hidden, dim))
        self.dense_mlp = nn.Sequential(nn.Conv2d(in_ch, hidden, 1), nn.ReLU(inplace=True),
                                       nn.Conv2d(hidden, dim, 1))

    def forward(self, c5):
        """-> normalised global (B, D), normalised dense (B, D, S), and the dense queue's key:
        the mean of the unnormalised dense projection, normalised (B, D) (the released
        neck's pooled dense output)."""
        g = self.global_mlp(c5.mean(dim=(2, 3)))
        d = self.dense_mlp(c5).flatten(2)
        return F.normalize(g, dim=1), F.normalize(d, dim=1), F.normalize(d.mean(2), dim=1)


class DenseCL(nn.Module):
    def __init__(self, backbone: ResNetFeatures, dim: int = 128, hidden: int = 512,
                 queue_size: int = 65536, momentum: float = 0.999, temperature: float = 0.2,
                 dense_weight: float = 0.5, shuffle_groups: int = 1,
                 dense_queue: str = "pooled_projection", key_bn: str = "own"):
        """dense_queue: what the dense queue stores per key image: `pooled_projection` (the
        released code: the unnormalised dense projection averaged, then normalised) or
        `pooled_normalised` (the normalised cells averaged, then normalised).
        key_bn: `own` (MoCo / DenseCL: the key encoder's BN running statistics come from its
        own forward passes; only weights follow the query encoder) or `copy` (copied from
        the query encoder at every step)."""
        super().__init__()
        if dense_queue not in ("pooled_projection", "pooled_normalised"):
            raise ValueError(f"pretrain.dense_queue={dense_queue!r}: use pooled_projection "
                             "or pooled_normalised")
        if key_bn not in ("own", "copy"):
            raise ValueError(f"pretrain.key_bn={key_bn!r}: use own or copy")
        self.shuffle_groups, self.dense_queue, self.key_bn = shuffle_groups, dense_queue, key_bn
        c5 = backbone.channels["res5"]
        self.backbone_q, self.heads_q = backbone, _Heads(c5, hidden, dim)
        self.backbone_k, self.heads_k = copy.deepcopy(backbone), copy.deepcopy(self.heads_q)
        for p in list(self.backbone_k.parameters()) + list(self.heads_k.parameters()):
            p.requires_grad = False
        self.m, self.t, self.dense_weight = momentum, temperature, dense_weight
        self.register_buffer("queue_g", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.register_buffer("queue_d", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def _momentum_update(self):
        q_params = list(self.backbone_q.parameters()) + list(self.heads_q.parameters())
        k_params = list(self.backbone_k.parameters()) + list(self.heads_k.parameters())
        torch._foreach_mul_(k_params, self.m)
        torch._foreach_add_(k_params, q_params, alpha=1 - self.m)
        if self.key_bn == "copy":
            for bq, bk in zip(self.backbone_q.buffers(), self.backbone_k.buffers()):
                bk.copy_(bq)  # BN running statistics follow the query encoder

    @torch.no_grad()
    def _enqueue(self, g: torch.Tensor, d: torch.Tensor):
        from pipeline import dist
        if dist.world_size() > 1:
            g, d = _all_gather(g), _all_gather(d)
        n, size = g.shape[0], self.queue_g.shape[0]
        idx = (self.queue_ptr + torch.arange(n, device=g.device)) % size
        self.queue_g[idx] = g
        self.queue_d[idx] = d
        self.queue_ptr.copy_((self.queue_ptr + n) % size)

    def forward(self, view_q: torch.Tensor, view_k: torch.Tensor) -> dict:
        c5_q = self.backbone_q(view_q)["res5"]
        g_q, d_q, _ = self.heads_q(c5_q)
        with torch.no_grad():
            self._momentum_update()
            c5_k, g_k, d_k, pooled_k = self._keys(view_k)
        # matching, queue and losses in float32 (pipeline.ops.precision)
        c5_q, g_q, d_q, c5_k, g_k, d_k, pooled_k = to_float32(
            (c5_q, g_q, d_q, c5_k, g_k, d_k, pooled_k))
        with full_precision(view_q.device):
            with torch.no_grad():
                # Dense correspondence: each query cell's most similar key cell, by backbone
                # features (Sec. 3.3).
                fq = F.normalize(c5_q.detach().flatten(2), dim=1)
                fk = F.normalize(c5_k.flatten(2), dim=1)
                match = (fq.transpose(1, 2) @ fk).argmax(dim=2)             # (B, S_q)
                d_k_pos = d_k.gather(2, match[:, None, :].expand(-1, d_k.shape[1], -1))
            loss_g = self._info_nce(g_q, g_k, self.queue_g)
            b, dim, s = d_q.shape
            loss_d = self._info_nce(d_q.transpose(1, 2).reshape(b * s, dim),
                                    d_k_pos.transpose(1, 2).reshape(b * s, dim), self.queue_d)
            self._enqueue(g_k, pooled_k if self.dense_queue == "pooled_projection"
                          else F.normalize(d_k.mean(dim=2), dim=1))
        loss = (1 - self.dense_weight) * loss_g + self.dense_weight * loss_d
        return {"loss": loss, "loss_global": loss_g.detach(), "loss_dense": loss_d.detach()}

    @torch.no_grad()
    def _keys(self, view_k: torch.Tensor):
        """Key features with shuffled BN (MoCo Sec. 3.3, used by DenseCL): the key encoder's
        batch statistics come from another grouping of the images than the query's, so the
        positive cannot be found through them. Under torchrun the batch is shuffled across
        ranks; on one device it is split into `shuffle_groups` random sub-batches."""
        from pipeline import dist
        world = dist.world_size()
        x = _all_gather(view_k) if world > 1 else view_k
        n = x.shape[0]
        perm = torch.randperm(n, device=x.device)
        if world > 1:
            import torch.distributed as td
            td.broadcast(perm, 0)
            chunks = [perm.chunk(world)[dist.rank()]]
        else:
            chunks = perm.chunk(max(1, min(self.shuffle_groups, n)))
        outs = []
        for idx in chunks:
            c5 = self.backbone_k(x[idx])["res5"]
            outs.append((c5, *self.heads_k(c5)))
        outs = [torch.cat(t) for t in zip(*outs)]       # c5, global, dense, pooled dense
        if world > 1:
            outs = [_all_gather(t) for t in outs]
        order = torch.empty_like(perm)
        order[perm] = torch.arange(n, device=perm.device)
        keep = order if world == 1 else order.chunk(world)[dist.rank()]
        return tuple(t[keep] for t in outs)

    def _info_nce(self, q, k, queue):
        """InfoNCE (MoCo Eq. 1): -log softmax of the positive logit q.k / t among it and the
        negatives q.queue / t, averaged over the rows of q."""
        pos = (q * k).sum(dim=1, keepdim=True)
        neg = q @ queue.clone().detach().T
        logits = torch.cat([pos, neg], dim=1) / self.t
        return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


@torch.no_grad()
def _all_gather(t: torch.Tensor) -> torch.Tensor:
    import torch.distributed as td
    out = [torch.zeros_like(t) for _ in range(td.get_world_size())]
    td.all_gather(out, t)
    return torch.cat(out)
