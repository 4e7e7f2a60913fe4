"""Muon for weight matrices, AdamW for every other parameter, in one optimizer.

Muon (Jordan et al., 2024) replaces a matrix's momentum by the nearest semi-orthogonal
matrix, computed by a few Newton-Schulz iterations, so every direction of the update
moves at the same rate instead of the few that dominate the gradient. Its update is
scaled by 0.2 * sqrt(max(rows, cols)) so that its RMS matches AdamW's (Liu et al., 2025,
"Muon is Scalable for LLM Training"): the learning rate and weight decay tuned for AdamW
carry over unchanged. Biases, norms, embeddings and LayerScales keep AdamW.

A param group with `muon: True` holds matrices (2-D); the rest are AdamW groups.
Everything lives in one `torch.optim.Optimizer`, so Accelerate, checkpoints and the
learning-rate schedule treat it as they treat AdamW.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch.optim.adamw import adamw

# Quintic Newton-Schulz coefficients (Jordan et al.): in five steps they bring every singular value
# of a unit-norm matrix that is at least about 1e-2 of the largest into about [0.7, 1.2]. That is
# not exactly orthogonal, and enough for an update direction.
NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)


def orthogonalize(matrices: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """A batch (G, A, B) -> each matrix's approximately semi-orthogonal factor U V^T (of its SVD U S V^T), fp32."""
    a, b, c = NEWTON_SCHULZ
    wide = matrices.shape[-2] <= matrices.shape[-1]
    x = matrices.float() if wide else matrices.float().mT  # iterate on the Gram matrix of the short side
    # The engine steps inside bf16 autocast on GPUs; these products must stay in fp32.
    with torch.autocast(x.device.type, enabled=False):
        x = x / (x.norm(dim=(-2, -1), keepdim=True) + eps)
        for _ in range(steps):
            gram = x @ x.mT
            x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x if wide else x.mT


class MuonAdamW(torch.optim.Optimizer):
    def __init__(
        self,
        groups: list[dict],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        momentum: float = 0.95,
        ns_steps: int = 5,
        eps: float = 1e-8,
    ):
        for group in groups:
            if group.get("muon") and any(p.ndim != 2 for p in group["params"]):
                raise ValueError("a Muon param group may hold matrices (2-D parameters) only")
        defaults = dict(
            lr=lr, betas=betas, weight_decay=weight_decay, momentum=momentum, ns_steps=ns_steps, eps=eps, muon=False
        )
        super().__init__(groups, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                (self._muon_step if group["muon"] else self._adamw_step)(params, group)
        return loss

    def _muon_step(self, params: list[torch.Tensor], group: dict) -> None:
        lr, momentum = group["lr"], group["momentum"]
        if group["weight_decay"]:
            torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        # Matrices of one shape (the same layer in every block) are orthogonalized as one batch.
        by_shape = defaultdict(list)
        for param in params:
            by_shape[param.shape].append(param)
        for shape, same in by_shape.items():
            grads = [p.grad for p in same]
            for param in same:
                if "momentum_buffer" not in self.state[param]:
                    self.state[param]["momentum_buffer"] = torch.zeros_like(param)
            buffers = [self.state[p]["momentum_buffer"] for p in same]
            torch._foreach_mul_(buffers, momentum)
            torch._foreach_add_(buffers, grads)
            directions = torch.stack(grads).add_(torch.stack(buffers), alpha=momentum)  # Nesterov
            updates = orthogonalize(directions, group["ns_steps"]).mul_(-lr * 0.2 * max(shape) ** 0.5)
            torch._foreach_add_(same, list(updates.unbind()))

    def _adamw_step(self, params: list[torch.Tensor], group: dict) -> None:
        for param in params:
            state = self.state[param]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
                state["exp_avg"] = torch.zeros_like(param)
                state["exp_avg_sq"] = torch.zeros_like(param)
            elif (
                state["step"].device != param.device
            ):  # a checkpoint loads it on the CPU; fused kernels want it beside the param
                state["step"] = state["step"].to(param.device)
        states = [self.state[p] for p in params]
        beta1, beta2 = group["betas"]
        adamw(
            params,
            [p.grad for p in params],
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [],
            [s["step"] for s in states],
            fused=params[0].device.type in ("cpu", "cuda"),
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
        )
