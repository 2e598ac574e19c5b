"""Which SGD settings step the measured parameters (the stability limits' input), and why there are none."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from lightning_spectral.callbacks._internal.optimizer_info import (
    outside_first_optimizer,
    resolved_sgd_settings,
)


def trainer_with(*optimizers):
    return SimpleNamespace(optimizers=list(optimizers))


def test_one_sgd_over_every_parameter_gives_its_settings():
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    settings, why = resolved_sgd_settings(trainer_with(optimizer), list(model.parameters()))
    assert why == "" and (settings.lr, settings.momentum, settings.nesterov) == (0.1, 0.9, True)
    assert resolved_sgd_settings(trainer_with(optimizer))[0] == settings


def test_groups_with_different_step_sizes_have_no_single_setting_unless_one_group_is_measured():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    optimizer = torch.optim.SGD(
        [{"params": model[0].parameters()}, {"params": model[1].parameters(), "lr": 0.01}], lr=0.1
    )
    trainer = trainer_with(optimizer)
    settings, why = resolved_sgd_settings(trainer, list(model.parameters()))
    assert settings is None and "different settings" in why and "lr=0.1" in why and "lr=0.01" in why
    assert resolved_sgd_settings(trainer)[0] is None
    settings, why = resolved_sgd_settings(trainer, list(model[1].parameters()))
    assert why == "" and settings.lr == 0.01


def test_groups_that_differ_in_weight_decay_only_keep_the_first_groups_settings():
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(
        [{"params": [model.weight], "weight_decay": 0.1}, {"params": [model.bias]}], lr=torch.tensor(0.1)
    )
    settings, why = resolved_sgd_settings(trainer_with(optimizer), list(model.parameters()))
    assert why == "" and settings.lr == torch.tensor(0.1).item() and settings.weight_decay == 0.1


def test_parameters_of_a_second_optimizer_have_no_limit():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    first = torch.optim.SGD(model[0].parameters(), lr=0.1)
    second = torch.optim.SGD(model[1].parameters(), lr=0.1)
    trainer = trainer_with(first, second)
    assert outside_first_optimizer(trainer, list(model.parameters())) == 2
    settings, why = resolved_sgd_settings(trainer, list(model.parameters()))
    assert settings is None and why == "2 of the 4 measured parameters are not in the first optimizer"
    settings, why = resolved_sgd_settings(trainer)
    assert settings is None and why == "the model has 2 optimizers"
    assert resolved_sgd_settings(trainer, list(model[0].parameters()))[0].lr == 0.1


def test_adaptive_optimizers_and_maximize_have_no_sgd_settings_and_no_reason():
    model = nn.Linear(3, 2)
    assert resolved_sgd_settings(trainer_with(torch.optim.Adam(model.parameters()))) == (None, "")
    ascent = torch.optim.SGD(model.parameters(), lr=0.1, maximize=True)
    assert resolved_sgd_settings(trainer_with(ascent), list(model.parameters())) == (None, "")
    assert resolved_sgd_settings(trainer_with()) == (None, "")


def test_parameters_outside_the_first_adaptive_optimizer_are_named_too():
    """Its preconditioned limit is read from the first optimizer as well: the reason covers any optimizer."""
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    trainer = trainer_with(torch.optim.Adam(model[0].parameters()), torch.optim.Adam(model[1].parameters()))
    assert resolved_sgd_settings(trainer, list(model.parameters())) == (
        None,
        "2 of the 4 measured parameters are not in the first optimizer",
    )
    assert resolved_sgd_settings(trainer, list(model[0].parameters())) == (None, "")
