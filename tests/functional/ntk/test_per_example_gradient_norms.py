"""per_example_squared_gradient_norms against per-example rows of the explicit Jacobian, in float64.

Reference: ``s[n, i] = ‖J_iᵀ c[n, i]‖²`` with ``J_i`` the ``K × P`` block of example ``i`` of the whole-batch
Jacobian (jacrev on the flat parameter vector). Tolerance 1e-10 relative: the layer-wise identities are exact
algebra, so only float64 rounding separates the two.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from spectral_testing.references import explicit_jacobian
from torch import nn

from lightning_spectral.functional.ntk.model_jacobian import make_functional_model
from lightning_spectral.functional.ntk.per_example_gradient_norms import (
    LayerwiseChecks,
    per_example_squared_gradient_norms,
)

DTYPE = torch.float64


def reference_norms(model, inputs, cotangents, names=None):
    outputs = model(inputs)
    batch, k = outputs.shape[0], outputs.reshape(outputs.shape[0], -1).shape[1]
    jac = explicit_jacobian(model, inputs, names=names).reshape(batch, k, -1)  # (B, K, P)
    return torch.einsum("nbk,bkp->nbp", cotangents, jac).pow(2).sum(-1)


class SequenceMLP(nn.Module):
    """Linear layers on (B, T, features): the Gram form (T² ≤ in·out) and the per-example-gradient form."""

    def __init__(self, positions: int = 3) -> None:
        super().__init__()
        self.narrow = nn.Linear(2, 2)  # T² = 9 > 4: per-example gradients
        self.wide = nn.Linear(2, 6)  # T² = 9 ≤ 12: Gram matrices
        self.norm = nn.LayerNorm(6)  # generic path
        self.head = nn.Linear(6 * positions, 4)

    def forward(self, x):
        h = self.norm(torch.tanh(self.wide(torch.tanh(self.narrow(x)))))
        return self.head(h.flatten(1))


class Conv1dNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 3, 3, stride=2, padding=1, dilation=2)
        self.head = nn.Linear(3 * 3, 2)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).flatten(1))


class EmbeddingNet(nn.Module):
    """An embedding (generic path) before a linear layer with an in-place ReLU after it."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.fc = nn.Linear(4, 5)
        self.act = nn.ReLU(inplace=True)
        self.head = nn.Linear(5, 3)

    def forward(self, idx):
        return self.head(self.act(self.fc(self.embed(idx))).mean(1))


def conv2d_net():
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, stride=2, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(inplace=True),
        nn.Conv2d(3, 2, 2, dilation=2, bias=False),
        nn.Flatten(),
        nn.Linear(2 * 1 * 1, 3),
    )
    return model


CASES = {
    "mlp": (
        lambda: nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)),
        lambda g: torch.randn(5, 4, generator=g, dtype=DTYPE),
    ),
    "sequence": (SequenceMLP, lambda g: torch.randn(4, 3, 2, generator=g, dtype=DTYPE)),
    "conv1d": (Conv1dNet, lambda g: torch.randn(4, 2, 8, generator=g, dtype=DTYPE)),
    "conv2d": (conv2d_net, lambda g: torch.randn(3, 2, 6, 6, generator=g, dtype=DTYPE)),
    "embedding": (EmbeddingNet, lambda g: torch.randint(0, 10, (4, 5), generator=g)),
}


def build(case):
    torch.manual_seed(0)
    make_model, make_inputs = CASES[case]
    return make_model().to(DTYPE).eval(), make_inputs(torch.Generator().manual_seed(1))


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("cotangent_kind", ["one_hot", "rademacher"])
def test_norms_equal_explicit_per_example_jacobian(case, cotangent_kind):
    model, inputs = build(case)
    outputs = model(inputs)
    batch, k = outputs.shape
    if cotangent_kind == "one_hot":
        cotangents, given = torch.eye(k, dtype=DTYPE)[:, None, :].expand(k, batch, k), None
    else:
        cotangents = torch.randint(0, 2, (6, batch, k), generator=torch.Generator().manual_seed(2)).to(DTYPE)
        cotangents = given = 2 * cotangents - 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the layer-wise path must pass its own check here
        result = per_example_squared_gradient_norms(make_functional_model(model), inputs, given)
    expected = reference_norms(model, inputs, cotangents)
    assert result.shape == expected.shape
    torch.testing.assert_close(result, expected, rtol=1e-10, atol=1e-12 * expected.abs().max().item())


@pytest.mark.parametrize("params, names", [("0.bias", ["0.bias"]), (["2.weight"], ["2.weight"])])
def test_partial_selection_of_a_layer(params, names):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(DTYPE)
    inputs = torch.randn(5, 4, dtype=DTYPE)
    cotangents = torch.eye(3, dtype=DTYPE)[:, None, :].expand(3, 5, 3)
    result = per_example_squared_gradient_norms(make_functional_model(model, params=params), inputs)
    torch.testing.assert_close(
        result, reference_norms(model, inputs, cotangents, names=names), rtol=1e-10, atol=0
    )


class TwiceApplied(nn.Module):
    """One linear layer called twice per forward: its hook fires twice, so the generic path takes it."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(3, 3)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head(torch.tanh(self.shared(torch.tanh(self.shared(x)))))


class WeightReusedOutsideForward(nn.Module):
    """``fc.weight`` also enters functionally: only the check can notice; it must fall back, correctly."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head(torch.tanh(self.fc(x)) + x @ self.fc.weight)


class SequenceFirst(nn.Module):
    """A layer that sees (T, B, features) with T = B: rows are positions, not examples."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 3)

    def forward(self, x):  # x: (B, T, 2) with T = B
        return torch.tanh(self.fc(x.transpose(0, 1))).transpose(0, 1).flatten(1)


@pytest.mark.parametrize(
    "make_model, shape, warns",
    [
        (TwiceApplied, (4, 3), False),
        (WeightReusedOutsideForward, (4, 3), True),
        (SequenceFirst, (3, 3, 2), True),
    ],
)
def test_layers_the_layer_wise_identity_does_not_cover_are_still_exact(make_model, shape, warns):
    torch.manual_seed(0)
    model = make_model().to(DTYPE)
    inputs = torch.randn(*shape, dtype=DTYPE)
    k = model(inputs).shape[1]
    cotangents = torch.eye(k, dtype=DTYPE)[:, None, :].expand(k, shape[0], k)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = per_example_squared_gradient_norms(make_functional_model(model), inputs)
    assert any("disagreed" in str(w.message) for w in caught) == warns
    torch.testing.assert_close(result, reference_norms(model, inputs, cotangents), rtol=1e-10, atol=0)


def test_cotangent_shape_is_checked():
    model = nn.Linear(3, 2).to(DTYPE)
    with pytest.raises(ValueError, match="cotangents"):
        per_example_squared_gradient_norms(
            make_functional_model(model), torch.randn(4, 3, dtype=DTYPE), torch.ones(2, 4, 3, dtype=DTYPE)
        )


@pytest.mark.parametrize(
    "case, generic",
    [
        ("mlp", []),
        ("sequence", ["norm.weight", "norm.bias"]),
        ("conv1d", []),
        ("conv2d", ["1.weight", "1.bias"]),
        ("embedding", ["embed.weight"]),
    ],
)
def test_linear_and_conv_layers_take_the_layer_wise_path(monkeypatch, case, generic):
    """Only the parameters outside linear / convolution layers go through the vmap (generic) path."""
    import lightning_spectral.functional.ntk.per_example_gradient_norms as module

    calls = []
    original = module._generic_norms

    def recording(fm, names, inputs, *args, **kwargs):
        calls.append((list(names), inputs.shape[0]))
        return original(fm, names, inputs, *args, **kwargs)

    monkeypatch.setattr(module, "_generic_norms", recording)
    model, inputs = build(case)
    fm = make_functional_model(model)
    per_example_squared_gradient_norms(fm, inputs)
    assert calls == ([(generic, inputs.shape[0])] if generic else [])


def counted_checks(monkeypatch) -> list[int]:
    """Record the per-example check's single-example evaluations (one per checked example)."""
    import lightning_spectral.functional.ntk.per_example_gradient_norms as module

    calls: list[int] = []
    original = module._single_example_norms

    def recording(fm, example, cotangents):
        calls.append(example.shape[0])
        return original(fm, example, cotangents)

    monkeypatch.setattr(module, "_single_example_norms", recording)
    return calls


def test_a_set_up_that_passed_the_check_is_not_checked_again(monkeypatch):
    """With a LayerwiseChecks the first call checks (first and last example) and later calls on the same model and
    input shape do not, with the same norms; new weights do not re-check, a new input shape or a re-created
    layer does."""
    calls = counted_checks(monkeypatch)
    model, inputs = build("conv2d")
    checks = LayerwiseChecks()
    first = per_example_squared_gradient_norms(make_functional_model(model), inputs, checks=checks)
    assert len(calls) == 2 and len(checks) == 1
    with torch.no_grad():
        model[0].weight.mul_(1.5)  # a training step: same set-up
    again = per_example_squared_gradient_norms(make_functional_model(model), inputs, checks=checks)
    assert len(calls) == 2
    k = model(inputs).shape[1]
    one_hot = torch.eye(k, dtype=DTYPE)[:, None, :].expand(k, inputs.shape[0], k)
    torch.testing.assert_close(again, reference_norms(model, inputs, one_hot), rtol=1e-10, atol=0)
    assert not torch.allclose(again, first)
    per_example_squared_gradient_norms(make_functional_model(model), inputs[:2], checks=checks)
    assert len(calls) == 4 and len(checks) == 2  # another input shape: checked
    model[0] = copy.deepcopy(model[0])
    per_example_squared_gradient_norms(make_functional_model(model), inputs, checks=checks)
    assert len(calls) == 6 and len(checks) == 3  # a new layer object: checked
    model[0].weight = nn.Parameter(model[0].weight.detach().clone())
    per_example_squared_gradient_norms(make_functional_model(model), inputs, checks=checks)
    assert len(calls) == 8 and len(checks) == 4  # a new parameter object (re-tied weights, say): checked
    checks.clear()
    per_example_squared_gradient_norms(make_functional_model(model), inputs, checks=checks)
    assert len(calls) == 10


def test_a_set_up_that_failed_the_check_is_checked_and_recomputed_every_time(monkeypatch):
    """A weight also used outside its layer fails the check: every call checks again, falls back to the
    generic path and is exact; nothing is remembered."""
    calls = counted_checks(monkeypatch)
    torch.manual_seed(0)
    model = WeightReusedOutsideForward().to(DTYPE)
    inputs = torch.randn(4, 3, dtype=DTYPE)
    one_hot = torch.eye(2, dtype=DTYPE)[:, None, :].expand(2, 4, 2)
    checks = LayerwiseChecks()
    for call in (1, 2):
        with pytest.warns(UserWarning, match="disagreed"):
            result = per_example_squared_gradient_norms(make_functional_model(model), inputs, checks=checks)
        torch.testing.assert_close(result, reference_norms(model, inputs, one_hot), rtol=1e-10, atol=0)
        assert len(calls) == 2 * call and len(checks) == 0
