"""The stability limits are checked against the optimizer itself: torch.optim.SGD on a 1-D quadratic."""

import math

import pytest
import torch

from lightning_spectral.functional.hessian.edge_of_stability import edge_of_stability_ratio, stability_limit


def _diverges(
    curvature: float, lr: float, momentum: float, nesterov: bool, steps: int = 2000, **kwargs
) -> bool:
    theta = torch.nn.Parameter(torch.ones(1, dtype=torch.float64))
    optimizer = torch.optim.SGD([theta], lr=lr, momentum=momentum, nesterov=nesterov, **kwargs)
    for _ in range(steps):
        optimizer.zero_grad()
        (0.5 * curvature * theta**2).sum().backward()
        optimizer.step()
    return not theta.abs().item() <= 1.0  # inf and NaN (overflowed) diverged too


@pytest.mark.parametrize(
    "momentum, nesterov", [(0.0, False), (0.5, False), (0.9, False), (0.5, True), (0.9, True)]
)
def test_limit_separates_stable_from_divergent_sgd(momentum, nesterov):
    lr = 0.1
    limit = stability_limit(lr, momentum, nesterov)
    assert not _diverges(0.99 * limit, lr, momentum, nesterov)
    assert _diverges(1.01 * limit, lr, momentum, nesterov)
    assert edge_of_stability_ratio(limit, lr, momentum, nesterov) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "momentum, nesterov, dampening, weight_decay",
    [
        (0.9, False, 0.5, 0.0),
        (0.9, False, 0.9, 0.0),
        (0.0, False, 0.0, 3.0),
        (0.9, False, 0.5, 3.0),
        (0.9, True, 0.0, 3.0),
        (0.0, False, 0.7, 0.0),
    ],
)
def test_dampening_and_weight_decay_move_the_limit_as_they_move_torchs_sgd(
    momentum, nesterov, dampening, weight_decay
):
    """The limit on the loss curvature: heavy ball with step ``η(1 − d)`` (dampening ignored without momentum, as
    torch does), minus the coupled weight decay ``w`` (the step sees ``a + w``)."""
    lr = 0.1
    limit = stability_limit(lr, momentum, nesterov, dampening, weight_decay)
    step = lr * (1 - dampening) if momentum else lr
    expected = (2 + 2 * momentum) / step / (1 + 2 * momentum if nesterov else 1) - weight_decay
    assert limit == pytest.approx(expected, rel=1e-12)
    kwargs = {"dampening": dampening, "weight_decay": weight_decay}
    assert not _diverges(0.99 * limit, lr, momentum, nesterov, **kwargs)
    assert _diverges(1.01 * limit, lr, momentum, nesterov, **kwargs)


def test_full_dampening_limits_nothing():
    assert stability_limit(0.1, momentum=0.9, dampening=1.0) == math.inf
    assert edge_of_stability_ratio(50.0, 0.1, momentum=0.9, dampening=1.0) == 0.0


def test_plain_sgd_ratio_is_lr_lambda_over_two():
    assert edge_of_stability_ratio(30.0, 0.05) == pytest.approx(0.05 * 30.0 / 2)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"lr": 0.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"lr": 0.1, "momentum": 1.0}, "momentum"),
        ({"lr": 0.1, "dampening": 1.5}, "dampening"),
        ({"lr": 0.1, "weight_decay": -1.0}, "weight_decay"),
        ({"lr": 0.1, "weight_decay": 20.0}, "weight_decay"),  # ≥ 2/η: unstable whatever the curvature
        ({"lr": 0.1, "momentum": 0.9, "nesterov": True, "dampening": 0.1}, "dampening"),
    ],
)
def test_validation(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        stability_limit(**kwargs)
