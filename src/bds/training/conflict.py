"""The conflict drive: how much the alignment set pushes each user sample's loss up.

Why. The posterior the paper samples,
    p(theta, w | D_ft, D_safe) ~ p(D_safe | theta) p(D_ft | theta, w) p(D_ft | w)^-1 p(theta, w),
charges sample i, through p(D_ft | theta, w) / p(D_ft | w), the difference between its loss
under the safety-aware model (fitted to D_safe and the weighted D_ft) and under a
safety-agnostic one (fitted to the weighted D_ft alone):
    d_i = E[l_i | w, D_safe, D_ft] - E[l_i | w, D_ft].
The raw loss l_i (`drive: loss`, the reference code) leaves the second term out, so the
weights rank samples by how hard they are: long free-form benign answers lose weight and,
once fitted, harmful answers gain it (measured in benchmarks/scheduler_separation.py).

How. Both models start at the same theta and take the same optimizer steps, except that the
safety-aware one also descends the alignment loss L_align. To first order, one step of the
alignment part changes l_i by
    delta_i = -lr * < grad l_i , P grad L_align >,
with P the optimizer's preconditioner (Adam: 1 / (sqrt(v_hat) + eps), whose momentum spreads
the same total over later steps). Summed over the steps so far, d_i(t) ~ sum_s delta_i(s):
the l_i(theta) - l_i(theta_ref) of a twin adapter that shares theta's init and optimizer
state, without running it. A sample is only seen when it is in a batch, so each visit adds
the steps since its previous visit times -<grad l_i, D_bar>, where D_bar is the alignment
update lr P grad L_align averaged over about the last epoch of steps (an EMA): while
grad l_i changes slowly, sum_s <grad l_i, D_s> over that window is <grad l_i, sum_s D_s>.
One alignment batch's direction alone is a noisy estimate of it (4 samples in the demo):
measured on free-form tweets at p = 0.1, AUROC 0.59 with the single batch's direction.
Its sign does not depend on how hard a sample is: a benign sample's gradient is nearly
orthogonal to the refusal gradient (d ~ 0), a harmful compliance is opposed to it (d > 0).

Cost. No extra pass. The step's one backward already holds what the inner products need:
for a LoRA matrix W (out x in) with inputs x_t and output gradients g_t of row r,
    grad_W (row r) = sum_t g_t x_t^T,     < grad_W (row r), D > = sum_t g_t^T D x_t,
so forward hooks keep each LoRA matrix's input and its output's gradient; the alignment
rows give grad L_align (and D = P grad L_align), the user rows their inner products with D,
one small matmul per LoRA matrix. Rows of the user batch carry the objective's factor
w_i / B, which is divided out (the weight must not change the drive it is inferred from).
"""

from __future__ import annotations

from typing import Any

import torch


class ConflictProbe:
    """Forward hooks on the trained adapter's LoRA matrices; after the step's backward,
    `rates` gives each user row's delta_i (see the module docstring)."""

    def __init__(self, peft_model: Any, horizon: int, adapter: str = "default"):
        from peft.tuners.lora import LoraLayer

        self.matrices: list[torch.nn.Linear] = []
        for module in peft_model.modules():
            if isinstance(module, LoraLayer) and adapter in module.lora_A:
                self.matrices += [module.lora_A[adapter], module.lora_B[adapter]]
        if not self.matrices:
            raise ValueError(f"no LoRA matrices of adapter {adapter!r} to probe")
        self.captures: dict[torch.nn.Module, list[list[Any]]] = {}
        # Mean alignment update direction over about the last `horizon` steps (see rates)
        self.beta = 1.0 - 1.0 / max(horizon, 1)
        self.direction: list[torch.Tensor | None] = [None] * len(self.matrices)
        self.updates = 0
        self.active = False
        self.handles = [m.register_forward_hook(self._capture) for m in self.matrices]

    def _capture(self, module: Any, inputs: tuple[torch.Tensor, ...], output: torch.Tensor):
        if not self.active or not output.requires_grad:
            return
        slot: list[Any] = [inputs[0].detach(), None]

        def keep_grad(grad: torch.Tensor) -> None:
            slot[1] = grad.detach()

        output.register_hook(keep_grad)
        self.captures.setdefault(module, []).append(slot)

    def start(self) -> None:
        """Capture the next forward/backward (the step's training pass)."""
        self.captures.clear()
        self.active = True

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.captures.clear()

    @torch.no_grad()
    def rates(
        self,
        n_user: int,
        row_factors: torch.Tensor,
        optimizer: Any,
        lr: float,
        reduce: Any = None,
    ) -> torch.Tensor:
        """delta_i for the first `n_user` rows of the captured batch (the rest: alignment).

        Returns -<grad l_i, D>, D the preconditioned alignment update (lr P grad L_align)
        averaged over about the last `horizon` steps (an EMA, bias-corrected): the rate at
        which the alignment has been raising l_i lately, per step.
        row_factors: d objective / d l_i of each user row (w_i / B times the loss scale);
        optimizer: the model's Adam(W), whose second moment gives P;
        reduce: averages a tensor over processes (DDP), or None.
        """
        self.active = False
        self.updates += 1
        correction = 1.0 - self.beta**self.updates
        dots = None
        for k, module in enumerate(self.matrices):
            filled = [s for s in self.captures.get(module, []) if s[1] is not None]
            if len(filled) != 1:
                raise RuntimeError(
                    f"conflict drive: expected one training pass through each LoRA matrix, "
                    f"saw {len(filled)}"
                )
            x, g = (t.float() for t in filled[0])
            x, g = x.reshape(x.size(0), -1, x.size(-1)), g.reshape(g.size(0), -1, g.size(-1))
            grad_align = torch.einsum("rto,rti->oi", g[n_user:], x[n_user:])
            if reduce is not None:
                grad_align = reduce(grad_align)
            update = lr * adam_preconditioner(optimizer, module.weight) * grad_align
            ema = self.direction[k]
            ema = torch.zeros_like(update) if ema is None else ema
            self.direction[k] = ema = ema.lerp_(update, 1 - self.beta)
            d = ema / correction
            xu, gu = x[:n_user], g[:n_user]
            if d.size(0) <= d.size(1):  # contract over the smaller side of W
                part = ((xu @ d.T) * gu).sum(dim=(1, 2))
            else:
                part = ((gu @ d) * xu).sum(dim=(1, 2))
            dots = part if dots is None else dots + part
        self.captures.clear()
        assert dots is not None
        per_sample = dots / row_factors.to(dots.device, dots.dtype).clamp_min(1e-12)
        return (-per_sample).cpu()

    def state_dict(self) -> dict[str, Any]:
        ready = all(d is not None for d in self.direction)
        return {
            "updates": self.updates,
            "direction": [d.cpu().clone() for d in self.direction] if ready else [],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        device = self.matrices[0].weight.device
        saved = state["direction"]
        self.direction = [d.to(device) for d in saved] if saved else [None] * len(self.matrices)


def adam_preconditioner(optimizer: Any, param: torch.Tensor) -> torch.Tensor:
    """The P = 1 / (sqrt(v_hat) + eps) Adam(W) is about to step `param` with: its second
    moment updated with the current .grad, bias-corrected at the coming step count."""
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the optimizer
    group = next(g for g in inner.param_groups if any(p is param for p in g["params"]))
    beta2, eps = group["betas"][1], group["eps"]
    state = inner.state.get(param, {})
    v = state.get("exp_avg_sq")
    step = float(state.get("step", 0))
    grad = param.grad.float() if param.grad is not None else torch.zeros_like(param.float())
    v_next = (beta2 * v.float() if v is not None else 0.0) + (1 - beta2) * grad.square()
    v_hat = v_next / (1 - beta2 ** (step + 1))
    return 1.0 / (v_hat.sqrt() + eps)


class ConflictDrive:
    """d_i(t): each sample's accumulated delta (what the scheduler weighs), O(N) floats."""

    def __init__(self, n: int):
        self.total = torch.zeros(n, dtype=torch.float64)
        self.last_step = torch.zeros(n, dtype=torch.long)

    def accumulate(self, index: torch.Tensor, rates: torch.Tensor, step: int) -> torch.Tensor:
        """Add each visited sample's rate times the steps since its last visit; returns d
        of the visited samples (a sample twice in one batch counts its second visit as 0)."""
        out = torch.empty(len(index), dtype=torch.float32)
        for k, (i, rate) in enumerate(zip(index.tolist(), rates.tolist(), strict=True)):
            elapsed = step + 1 - int(self.last_step[i])
            self.total[i] += rate * elapsed
            self.last_step[i] = step + 1
            out[k] = float(self.total[i])
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"total": self.total.clone(), "last_step": self.last_step.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.total = state["total"].clone()
        self.last_step = state["last_step"].clone()
