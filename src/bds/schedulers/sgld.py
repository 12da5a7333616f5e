"""Preconditioned stochastic-gradient Langevin dynamics (pSGLD, Li et al., AAAI 2016).

Both schedulers' energies are U = (1/N) * (-log posterior) (see scalar.py), so the tempered
posterior they sample is  pi(z) ~ exp(-N * U(z) / T).  One step, per parameter tensor:

    V <- beta * V + (1 - beta) * g^2                (g = grad U; RMSprop's second moment)
    P  = 1 / max(sqrt(V / (1 - beta^t)), 0.1 * mean)  (diagonal preconditioner, damped)
    z <- z - lr * P * g  +  sqrt(2 * lr * P * T / N) * xi,     xi ~ N(0, I)

With E = N U / T this is z <- z - (e/2) P grad E + N(0, e P) with e = 2 lr T / N: Langevin
dynamics preconditioned by P, whose stationary law is pi (up to the Gamma term of Li et al.,
the drift from dP/dz, which they too drop: P changes slowly once V has settled). Two things
set it apart from "Adam plus noise", which this module replaces:
- no momentum in the drift: a momentum drift integrates past gradients, so the noise no
  longer balances it and the chain does not sample pi;
- the noise is scaled by the same P as the drift. Adam's step is lr * m / sqrt(v), while the
  unscaled noise sqrt(2 lr T / N) is P^(1/2) times too small wherever P > 1, and the
  scalar scheduler's gradients are small (O(1/N) per logit), so P is large: that chain ran
  far colder than the posterior it stated.
`precondition=False` gives plain SGLD (P = I).
"""

from __future__ import annotations

from typing import Any

import torch

DAMPING = 0.1  # P never exceeds 10x its tensor's typical value


class PreconditionedSGLD(torch.optim.Optimizer):
    """pSGLD on the energy U whose gradient is in .grad; `noise_scale` = T / N."""

    def __init__(
        self,
        params: Any,
        lr: float,
        noise_scale: float,
        generator: torch.Generator,
        beta: float = 0.99,
        eps: float = 1e-8,
        precondition: bool = True,
    ):
        if lr <= 0 or noise_scale < 0 or not 0 <= beta < 1:
            raise ValueError(f"bad pSGLD settings: lr={lr}, noise_scale={noise_scale}, beta={beta}")
        defaults = {"lr": lr, "beta": beta, "eps": eps, "precondition": precondition}
        super().__init__(params, defaults)
        self.noise_scale = noise_scale
        self.generator = generator

    @staticmethod
    def _preconditioner(group: dict[str, Any], state: dict[str, Any], p: torch.Tensor):
        """P for parameter `p` from its second-moment state (ones without one)."""
        if not group["precondition"] or "square_avg" not in state:
            return torch.ones_like(p)
        root = (state["square_avg"] / (1 - group["beta"] ** state["step"])).sqrt()
        typical = float(root.mean())
        if typical <= group["eps"]:  # no gradient seen yet: nothing to precondition by
            return torch.ones_like(p)
        # A coordinate whose gradient has been ~0 (a sample not yet visited) would get
        # P ~ 1/eps and a huge noise kick: floor its root at a tenth of the typical one.
        return 1.0 / root.clamp_min(DAMPING * typical)

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            lr, beta = group["lr"], group["beta"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if group["precondition"]:
                    if not state:
                        state["step"] = 0
                        state["square_avg"] = torch.zeros_like(p)
                    state["step"] += 1
                    state["square_avg"].mul_(beta).addcmul_(g, g, value=1 - beta)
                precond = self._preconditioner(group, state, p)
                p.add_(-lr * precond * g)
                if self.noise_scale > 0:
                    xi = torch.randn(p.shape, generator=self.generator).to(p.device, p.dtype)
                    p.add_((2 * lr * self.noise_scale * precond).sqrt() * xi)


def build_optimizer(
    params: Any, cfg: Any, n: int, generator: torch.Generator
) -> torch.optim.Optimizer:
    """The scheduler's optimizer: Adam for the MAP point, pSGLD for posterior samples.

    `params` may be parameter groups with their own lr (the neural scheduler's encoder).
    """
    if cfg.inference == "map":
        return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas))
    return PreconditionedSGLD(
        params,
        lr=cfg.lr,
        noise_scale=cfg.temperature / n,
        generator=generator,
        beta=cfg.sgld_beta,
        precondition=cfg.preconditioner == "rmsprop",
    )
