"""The shared training loop: schedules, clipping, resume after a kill, bit for bit."""

import math

import pytest
import torch
from torch import nn

from probity.models.training import FitResult, GeneratorState, OptimConfig, Stepper, fit


def problem(seed=0):
    """A small regression: a fresh MLP, and a batch_loss drawing from its own generator."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(4, 1, generator=gen)

    def batch_loss(step):
        x = torch.randn(16, 4, generator=gen)
        return (model(x) - x @ w).pow(2).mean()

    return model, gen, batch_loss


def test_cosine_schedule_is_transformers_warmup_then_cosine():
    model, _, batch_loss = problem()
    stepper = Stepper(model.parameters(), OptimConfig(1e-2, warmup=4, min_lr_ratio=0.1), steps=20)
    seen = []
    for step in range(20):
        seen.append(stepper.lr)
        stepper.step(batch_loss(step))
    assert seen[:4] == pytest.approx([0.0, 2.5e-3, 5e-3, 7.5e-3])  # linear warm-up from 0
    for step in range(4, 20):  # then cosine from lr to 10% of it over the remaining 16 steps
        assert seen[step] == pytest.approx(1e-3 + 9e-3 * 0.5 * (1 + math.cos(math.pi * (step - 4) / 16)))


def test_constant_schedule_set_lr_and_lr_at():
    model, _, batch_loss = problem()
    stepper = Stepper(model.parameters(), OptimConfig(1e-2, schedule="constant"), steps=5)
    stepper.step(batch_loss(0))
    stepper.set_lr(3e-4)
    assert stepper.lr == 3e-4
    stepper.step(batch_loss(1))
    assert stepper.lr == 3e-4  # the schedule keeps the new rate
    recorded = Stepper(model.parameters(), OptimConfig(1.0), steps=5, lr_at=lambda step: 0.1 * (step + 1))
    for step in range(3):
        recorded.step(batch_loss(step))
    assert recorded.lr == pytest.approx(0.4)  # the rate the next update uses
    with pytest.raises(ValueError, match="lr_at"):
        recorded.set_lr(1.0)


def test_clipping_bounds_the_gradient_norm():
    model, _, batch_loss = problem()
    stepper = Stepper(model.parameters(), OptimConfig(1e-3, max_grad_norm=1e-3), steps=1)
    stepper.step(100 * batch_loss(0))
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert float(norm) <= 1e-3 * (1 + 1e-5)


def test_a_killed_fit_resumes_bit_for_bit(tmp_path):
    config = OptimConfig(5e-3, warmup=3, weight_decay=0.01, max_grad_norm=1.0)
    model, gen, batch_loss = problem()
    whole = fit(model, batch_loss, 12, config, progress=False)
    want = [p.detach().clone() for p in model.parameters()]
    assert isinstance(whole, FitResult) and len(whole.losses) == 12 and not model.training

    model, gen, batch_loss = problem()

    def dies(step):
        if step == 9:
            raise KeyboardInterrupt
        return batch_loss(step)

    state = {"batches": GeneratorState(gen)}
    with pytest.raises(KeyboardInterrupt):
        fit(model, dies, 12, config, checkpoint_dir=tmp_path, checkpoint_every=4, state=state, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000004.pt", "step-00000008.pt"]

    model, gen, batch_loss = problem()  # a fresh process: everything rebuilt
    resumed = fit(model, batch_loss, 12, config, checkpoint_dir=tmp_path, checkpoint_every=4,
                  state={"batches": GeneratorState(gen)}, progress=False)  # fmt: skip
    assert resumed.start == 8 and len(resumed.losses) == 4
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), want))
    again = fit(model, batch_loss, 12, config, checkpoint_dir=tmp_path, progress=False)  # finished: nothing to do
    assert again.start == 12 and again.losses == []


@pytest.mark.parametrize(
    "kwargs, match",
    [({"lr": 0}, "lr must be > 0"), ({"lr": 1, "schedule": "step"}, "schedule must be one of"),
     ({"lr": 1, "min_lr_ratio": 2}, "min_lr_ratio"), ({"lr": 1, "max_grad_norm": 0}, "max_grad_norm")],
)  # fmt: skip
def test_optim_config_is_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OptimConfig(**kwargs)


def test_checkpoints_of_another_run_are_never_resumed(tmp_path):
    config = OptimConfig(5e-3)
    model, _, batch_loss = problem()
    fit(model, batch_loss, 4, config, checkpoint_dir=tmp_path, run_id={"seed": 3}, progress=False)
    model, _, batch_loss = problem()
    with pytest.raises(ValueError, match="another run"):  # another seed
        fit(model, batch_loss, 4, config, checkpoint_dir=tmp_path, run_id={"seed": 5}, progress=False)
    with pytest.raises(ValueError, match="another run"):  # more steps: the cosine schedule is another one
        fit(model, batch_loss, 8, config, checkpoint_dir=tmp_path, run_id={"seed": 3}, progress=False)
    assert fit(model, batch_loss, 4, config, checkpoint_dir=tmp_path, run_id={"seed": 3}, progress=False).start == 4
    constant = OptimConfig(5e-3, schedule="constant")  # a constant rate: a finished run may go on for longer
    fit(model, batch_loss, 2, constant, checkpoint_dir=tmp_path / "c", progress=False)
    assert fit(model, batch_loss, 4, constant, checkpoint_dir=tmp_path / "c", progress=False).start == 2
