import pytest
import torch

from bds.schedulers.config import PriorConfig, ScalarSchedulerConfig
from bds.schedulers.scalar import ScalarScheduler
from bds.schedulers.transforms import log_prior, weights_from_logits


def scheduler(n, **kw):
    kw.setdefault("estimator", "batch")
    kw.setdefault("priors", [])
    return ScalarScheduler(n, ScalarSchedulerConfig(**kw))


def energy_grad(s, index, losses):
    s.logits.grad = None
    s.energy(index, losses).backward()
    g = s.logits.grad.clone()
    s.logits.grad = None
    return g


def test_softmax_gradient_matches_closed_form_full_batch():
    torch.manual_seed(0)
    n = 7
    s = scheduler(n)
    with torch.no_grad():
        s.logits.copy_(torch.randn(n))
    losses = torch.rand(n) * 3
    g = energy_grad(s, torch.arange(n), losses)
    soft = torch.softmax(s.logits.detach(), 0)
    # U = mean_i w_i l_i with w = N softmax(z), over the whole set: dU/dz_j = s_j (l_j - sum_i s_i l_i)
    closed = soft * (losses - (soft * losses).sum())
    assert torch.allclose(g, closed, atol=1e-6)


def test_softmax_gradient_matches_closed_form_minibatch():
    torch.manual_seed(1)
    n, idx = 10, torch.tensor([2, 5, 7])
    s = scheduler(n)
    with torch.no_grad():
        s.logits.copy_(torch.randn(n))
    losses = torch.rand(3)
    g = energy_grad(s, idx, losses)
    soft = torch.softmax(s.logits.detach(), 0)
    in_batch = torch.zeros(n)
    in_batch[idx] = soft[idx] * losses
    # scaled as implemented: U = (1/B) sum_{i in B} N s_i l_i
    closed = (n / 3) * (in_batch - soft * (soft[idx] * losses).sum())
    assert torch.allclose(g, closed, atol=1e-6)


def test_memory_estimator_gradient_is_the_full_dataset_closed_form():
    torch.manual_seed(2)
    n = 9
    s = scheduler(n, estimator="memory")
    with torch.no_grad():
        s.logits.copy_(torch.randn(n))
    losses = torch.rand(n) * 3
    s.energy(torch.arange(0, 5), losses[:5])  # remembered, as after two batches
    g = energy_grad(s, torch.arange(5, 9), losses[5:])
    soft = torch.softmax(s.logits.detach(), 0)
    assert torch.allclose(g, soft * (losses - (soft * losses).sum()), atol=1e-6)


def test_memory_estimator_gives_unvisited_samples_no_gradient():
    s = scheduler(6, estimator="memory")
    g = energy_grad(s, torch.tensor([0, 1]), torch.tensor([1.0, 3.0]))
    assert g[0] < 0 < g[1]  # below the mean gains weight, above loses it
    assert torch.allclose(g[2:], torch.zeros(4), atol=1e-7)


def test_transforms():
    z = torch.tensor([0.0, 1.0, -2.0, 0.5])
    w = weights_from_logits(z, "softmax")
    assert torch.isclose(w.sum(), torch.tensor(4.0))
    assert torch.allclose(weights_from_logits(torch.zeros(5), "softmax"), torch.ones(5))
    assert torch.allclose(weights_from_logits(torch.zeros(3), "sigmoid"), torch.ones(3))
    assert torch.equal(weights_from_logits(z, "identity"), z)
    assert torch.allclose(scheduler(6, init_logit=0.1).all_weights(), torch.ones(6))


@pytest.mark.parametrize("estimator", ["batch", "memory"])
def test_map_update_moves_weight_from_high_to_low_loss(estimator):
    s = scheduler(4, lr=0.1, estimator=estimator)
    for _ in range(20):
        s.update(torch.arange(4), torch.tensor([0.1, 0.1, 3.0, 0.1]))
    w = s.all_weights()
    assert w[2] < 0.5 < 1.0 < w[0]
    assert torch.isclose(w.sum(), torch.tensor(4.0))


def test_prior_signs():
    z0 = 0.0
    peaked = torch.tensor([3.0, 0.0, 0.0, 0.0])
    even = torch.zeros(4)
    ent = PriorConfig(kind="entropy", strength=1.0)
    assert log_prior(even, weights_from_logits(even, "softmax"), ent, z0) > log_prior(
        peaked, weights_from_logits(peaked, "softmax"), ent, z0
    )
    gauss = PriorConfig(kind="gaussian", std=1.0)
    assert log_prior(even, even, gauss, z0) == 0 > log_prior(peaked, peaked, gauss, z0)
    total = PriorConfig(kind="total-weight", target_fraction=0.5, std=0.1)
    half = torch.zeros(4)  # sigmoid weights 1 each: sum 4, target 2
    w = weights_from_logits(half, "sigmoid")
    assert log_prior(half, w, total, z0) < 0
    # as part of the energy (minus log prior), each prior pulls the logits the right way
    for prior, transform, start, check in [
        (ent, "softmax", peaked, lambda z: (z.max() - z.min()) < 3.0),
        (gauss, "softmax", peaked, lambda z: z.abs().sum() < 3.0),
        (total, "sigmoid", half, lambda z: weights_from_logits(z, "sigmoid").sum() < 4.0),
    ]:
        s = scheduler(4, transform=transform, init_logit=0.0, lr=0.05, priors=[prior])
        with torch.no_grad():
            s.logits.copy_(start)
        for _ in range(10):
            s.update(torch.arange(4), torch.zeros(4))  # no data: only the prior acts
        assert check(s.logits.detach()), prior.kind


@pytest.mark.parametrize("preconditioner", ["none", "rmsprop"])
def test_sgld_noise_statistics_with_zero_gradient(preconditioner):
    n, lr, temperature = 4000, 0.02, 0.5
    s = scheduler(
        n, inference="sgld", lr=lr, temperature=temperature, preconditioner=preconditioner, seed=3
    )
    before = s.logits.detach().clone()
    s.update(torch.arange(10), torch.zeros(10))  # zero losses, no prior: zero gradient
    step = s.logits.detach() - before
    expected_std = (2 * lr * temperature / n) ** 0.5
    assert abs(step.mean().item()) < 4 * expected_std / n**0.5
    assert step.std().item() == pytest.approx(expected_std, rel=0.05)


@pytest.mark.parametrize("preconditioner,lr", [("none", 0.5), ("rmsprop", 0.025)])
def test_sgld_samples_the_posterior_it_states(preconditioner, lr):
    """Identity weights, fixed losses L and a Gaussian prior N(z0, s^2): the tempered
    posterior exp(-N U / T) is Gaussian with mean z0 - s^2 L and variance s^2 T."""
    n, std, z0, temperature = 40, 0.5, 0.1, 0.7
    losses = torch.linspace(-1.0, 1.0, n)
    s = scheduler(
        n,
        transform="identity",
        estimator="memory",
        inference="sgld",
        lr=lr,
        temperature=temperature,
        init_logit=z0,
        priors=[PriorConfig(kind="gaussian", std=std)],
        preconditioner=preconditioner,
        seed=0,
    )
    chain = []
    for step in range(7000):
        s.update(torch.arange(n), losses)
        if step >= 1000:
            chain.append(s.all_logits())
    chain = torch.stack(chain)
    assert torch.allclose(chain.mean(0), z0 - std**2 * losses, atol=0.1)
    assert chain.var(0).mean().item() == pytest.approx(std**2 * temperature, rel=0.12)


def test_sgld_reports_posterior_mean_of_recorded_steps():
    s = scheduler(50, inference="sgld", lr=0.05, temperature=1.0)
    seen = []
    for step in range(6):
        s.update(torch.arange(5), torch.rand(5), record_average=step >= 3)
        if step >= 3:
            seen.append(s.all_weights())
    assert torch.allclose(s.reported_weights(), torch.stack(seen).mean(0), atol=1e-6)


@pytest.mark.parametrize("inference", ["map", "sgld"])
def test_state_round_trip_continues_identically(inference, tmp_path):
    a = scheduler(20, inference=inference, lr=0.05, estimator="memory")
    for _ in range(3):
        a.update(torch.tensor([1, 4, 9]), torch.rand(3))
    torch.save(a.state_dict(), tmp_path / "s.pt")
    b = scheduler(20, inference=inference, lr=0.05, estimator="memory")
    b.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    losses = torch.rand(3)
    a.update(torch.tensor([0, 2, 3]), losses)
    b.update(torch.tensor([0, 2, 3]), losses)
    assert torch.equal(a.logits, b.logits)
    from bds.errors import BDSInputError

    with pytest.raises(BDSInputError, match="holds 20 samples, this run's data 21"):
        scheduler(21).load_state_dict(a.state_dict())
