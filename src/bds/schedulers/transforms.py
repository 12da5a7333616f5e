"""Logit -> weight transforms and the log-priors over scheduler logits.

Everything here is a pure function of the full logit vector z (length N), so autograd
gives the scheduler's gradient and tests can compare it with the closed forms.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from bds.schedulers.config import PriorConfig, SchedulerConfig

from bds.schedulers.config import Transform  # noqa: E402


def weights_from_logits(z: torch.Tensor, transform: Transform) -> torch.Tensor:
    """softmax: N * softmax(z) (weights start at 1 and always sum to N; the default);
    sigmoid: 2 * sigmoid(z) (in (0, 2), 1 at z = 0); identity: z itself."""
    if transform == "softmax":
        return z.numel() * torch.softmax(z, dim=0)
    if transform == "sigmoid":
        return 2.0 * torch.sigmoid(z)
    return z


def logit_for_unit_weight(transform: Transform) -> float:
    """The logit at which a sample's weight is 1 (for any N under softmax if all equal)."""
    return 1.0 if transform == "identity" else 0.0


def remembered_losses(
    memory: torch.Tensor, seen: torch.Tensor, index: torch.Tensor, losses: torch.Tensor
) -> torch.Tensor:
    """Write the batch's losses into the per-sample memory (in place) and return every
    sample's latest loss; samples never visited stand at the mean of the visited."""
    memory[index] = losses.float()
    seen[index] = True
    return torch.where(seen, memory, memory[seen].mean())


def with_priors(
    data_term: torch.Tensor, z: torch.Tensor, w: torch.Tensor, cfg: SchedulerConfig, scale: int
) -> torch.Tensor:
    """The energy: data term minus the log-priors over the logits z, divided by `scale`
    (the number of samples the data term averages over)."""
    u = data_term
    for prior in cfg.priors:
        u = u - log_prior(z, w, prior, cfg.init_logit) / scale
    return u


def log_prior(z: torch.Tensor, w: torch.Tensor, prior: PriorConfig, z0: float) -> torch.Tensor:
    """log p(z) of one prior, up to a constant, as a differentiable scalar."""
    n = z.numel()
    if prior.kind == "entropy":
        p = w / w.sum().clamp_min(1e-12)
        entropy = -(p * torch.log(p.clamp_min(1e-30))).sum()
        return prior.strength * entropy
    if prior.kind == "gaussian":
        return -prior.strength * ((z - z0) ** 2).sum() / (2 * prior.std**2)
    target = prior.target_fraction * n
    return -prior.strength * (w.sum() - target) ** 2 / (2 * (prior.std * n) ** 2)
