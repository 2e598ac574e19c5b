"""The stability limits are checked against the optimizer itself: torch.optim.SGD on a 1-D quadratic."""

import pytest
import torch

from lightning_spectral.functional.edge_of_stability import edge_of_stability_ratio, stability_limit


def _diverges(curvature: float, lr: float, momentum: float, nesterov: bool, steps: int = 2000) -> bool:
    theta = torch.nn.Parameter(torch.ones(1, dtype=torch.float64))
    optimizer = torch.optim.SGD([theta], lr=lr, momentum=momentum, nesterov=nesterov)
    for _ in range(steps):
        optimizer.zero_grad()
        (0.5 * curvature * theta**2).sum().backward()
        optimizer.step()
    return bool(theta.abs().item() > 1.0)


@pytest.mark.parametrize(
    "momentum, nesterov", [(0.0, False), (0.5, False), (0.9, False), (0.5, True), (0.9, True)]
)
def test_limit_separates_stable_from_divergent_sgd(momentum, nesterov):
    lr = 0.1
    limit = stability_limit(lr, momentum, nesterov)
    assert not _diverges(0.99 * limit, lr, momentum, nesterov)
    assert _diverges(1.01 * limit, lr, momentum, nesterov)
    assert edge_of_stability_ratio(limit, lr, momentum, nesterov) == pytest.approx(1.0)


def test_plain_sgd_ratio_is_lr_lambda_over_two():
    assert edge_of_stability_ratio(30.0, 0.05) == pytest.approx(0.05 * 30.0 / 2)


@pytest.mark.parametrize(
    "kwargs, argument",
    [({"lr": 0.0}, "lr"), ({"lr": float("nan")}, "lr"), ({"lr": 0.1, "momentum": 1.0}, "momentum")],
)
def test_validation(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        stability_limit(**kwargs)
