"""Tests of the selection of weight matrices and of their reshaping/splitting."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from lightning_spectral.functional.weights.matrices import WeightMatrix, weight_matrices


def _by_name(matrices: list[WeightMatrix]) -> dict[str, WeightMatrix]:
    names = [m.name for m in matrices]
    assert len(names) == len(set(names)), names
    return {m.name: m for m in matrices}


def _shares_storage(view: torch.Tensor, param: torch.Tensor) -> bool:
    return view.untyped_storage().data_ptr() == param.untyped_storage().data_ptr()


def test_linear_is_a_view_and_follows_updates() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3, bias=False))
    found = _by_name(weight_matrices(model))
    assert list(found) == ["0.weight", "2.weight"]
    m = found["0.weight"]
    assert m.module_type == "Linear" and m.parameter_name == "0.weight"
    assert torch.equal(m.matrix, model[0].weight) and _shares_storage(m.matrix, model[0].weight)
    assert not m.matrix.requires_grad
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert torch.equal(m.matrix, model[0].weight)


def test_root_module_weight_has_no_prefix() -> None:
    assert [m.name for m in weight_matrices(nn.Linear(3, 4))] == ["weight"]


def test_biases_and_norm_layers_are_skipped() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.BatchNorm1d(4), nn.Bilinear(4, 4, 2))
    assert [m.name for m in weight_matrices(model)] == ["0.weight"]


@pytest.mark.parametrize(
    ("conv", "expected_shape"),
    [
        (nn.Conv1d(3, 8, 5), (8, 15)),
        (nn.Conv2d(3, 8, (3, 2)), (8, 18)),
        (nn.Conv3d(2, 4, 3), (4, 54)),
        (nn.Conv2d(4, 8, 3, groups=2), (8, 18)),
        (nn.ConvTranspose2d(3, 8, 3), (3, 72)),
    ],
)
def test_conv_flatten(conv: nn.Module, expected_shape: tuple[int, int]) -> None:
    (m,) = weight_matrices(nn.Sequential(conv))
    assert m.name == "0.weight" and tuple(m.matrix.shape) == expected_shape
    assert m.module_type == type(conv).__name__
    assert torch.equal(m.matrix, conv.weight.reshape(conv.weight.shape[0], -1))
    assert _shares_storage(m.matrix, conv.weight)


def test_conv_flatten_is_the_im2col_map() -> None:
    """The flattened kernel applied to one receptive field gives the conv output at that location."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, (2, 3), bias=False)
    x = torch.randn(1, 3, 2, 3)  # exactly one receptive field
    (m,) = weight_matrices(conv)
    torch.testing.assert_close(m.matrix @ x.reshape(-1), conv(x).reshape(-1), rtol=1e-5, atol=1e-6)


def test_conv_per_position() -> None:
    conv = nn.Conv2d(3, 8, (2, 3))
    found = _by_name(weight_matrices(nn.Sequential(conv), conv_mode="per_position"))
    assert list(found) == [f"0.weight[{i},{j}]" for i in range(2) for j in range(3)]
    for i in range(2):
        for j in range(3):
            m = found[f"0.weight[{i},{j}]"]
            assert torch.equal(m.matrix, conv.weight[:, :, i, j]) and m.matrix.shape == (8, 3)
            assert m.parameter_name == "0.weight"
    conv1d = nn.Conv1d(2, 4, 3)
    names = [m.name for m in weight_matrices(conv1d, conv_mode="per_position")]
    assert names == ["weight[0]", "weight[1]", "weight[2]"]


def test_embedding() -> None:
    emb = nn.Embedding(11, 6)
    (m,) = weight_matrices(nn.ModuleDict({"tok": emb}))
    assert m.name == "tok.weight" and m.module_type == "Embedding" and m.matrix.shape == (11, 6)
    assert torch.equal(m.matrix, emb.weight)


def test_multihead_attention_qkv_split() -> None:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2)
    found = _by_name(weight_matrices(nn.ModuleDict({"attn": mha})))
    assert list(found) == [
        "attn.in_proj_weight.q",
        "attn.in_proj_weight.k",
        "attn.in_proj_weight.v",
        "attn.out_proj.weight",
    ]
    for block, label in enumerate("qkv"):
        m = found[f"attn.in_proj_weight.{label}"]
        assert torch.equal(m.matrix, mha.in_proj_weight[8 * block : 8 * (block + 1)])
        assert _shares_storage(m.matrix, mha.in_proj_weight)
        assert m.module_type == "MultiheadAttention" and m.parameter_name == "attn.in_proj_weight"
    assert found["attn.out_proj.weight"].module_type == "Linear"
    # unsplit on request
    whole = _by_name(weight_matrices(mha, split_fused=False))
    assert torch.equal(whole["in_proj_weight"].matrix, mha.in_proj_weight)


def test_multihead_attention_separate_projections() -> None:
    mha = nn.MultiheadAttention(8, 2, kdim=4, vdim=6, add_bias_kv=True)
    shapes = {m.name: tuple(m.matrix.shape) for m in weight_matrices(mha)}
    assert shapes == {
        "q_proj_weight": (8, 8),
        "k_proj_weight": (8, 4),
        "v_proj_weight": (8, 6),
        "out_proj.weight": (8, 8),
    }


def test_lstm_gate_blocks() -> None:
    lstm = nn.LSTM(5, 4, num_layers=2, bidirectional=True, proj_size=3)
    found = _by_name(weight_matrices(lstm))
    expected = []
    for layer in range(2):
        for suffix in ("", "_reverse"):
            for kind in ("ih", "hh"):
                expected += [f"weight_{kind}_l{layer}{suffix}.{g}" for g in "ifgo"]
            expected.append(f"weight_hr_l{layer}{suffix}")
    assert list(found) == expected
    for gate, label in enumerate("ifgo"):
        m = found[f"weight_hh_l1_reverse.{label}"]
        assert torch.equal(m.matrix, lstm.weight_hh_l1_reverse[4 * gate : 4 * (gate + 1)])
        assert m.matrix.shape == (4, 3) and m.module_type == "LSTM"
    assert torch.equal(found["weight_hr_l0"].matrix, lstm.weight_hr_l0)
    assert torch.equal(found["weight_ih_l1.g"].matrix, lstm.weight_ih_l1[8:12])  # layer 1 input: 2 * proj = 6


def test_gru_and_cells_gate_blocks_and_plain_rnn_unsplit() -> None:
    gru = nn.GRU(5, 4)
    found = _by_name(weight_matrices(gru))
    assert list(found) == [f"weight_ih_l0.{g}" for g in "rzn"] + [f"weight_hh_l0.{g}" for g in "rzn"]
    assert torch.equal(found["weight_hh_l0.z"].matrix, gru.weight_hh_l0[4:8])
    cell = nn.LSTMCell(5, 4)
    assert torch.equal(_by_name(weight_matrices(cell))["weight_ih.o"].matrix, cell.weight_ih[12:16])
    rnn = nn.RNN(5, 4)
    assert [m.name for m in weight_matrices(rnn)] == ["weight_ih_l0", "weight_hh_l0"]
    assert [m.name for m in weight_matrices(gru, split_fused=False)] == ["weight_ih_l0", "weight_hh_l0"]


def _mixed_model() -> nn.Module:
    return nn.ModuleDict(
        {
            "encoder": nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8)),
            "attn": nn.MultiheadAttention(8, 2),
            "head": nn.Linear(8, 3),
        }
    )


def test_include_exclude_globs() -> None:
    model = _mixed_model()
    names = [m.name for m in weight_matrices(model, include="encoder.*")]
    assert names == ["encoder.0.weight", "encoder.1.weight"]
    names = [m.name for m in weight_matrices(model, include=["encoder.*", "head.*"], exclude="encoder.1.*")]
    assert names == ["encoder.0.weight", "head.weight"]
    # parameter-name patterns select all blocks of a split matrix, reported-name patterns a single block
    assert len(weight_matrices(model, include="*.in_proj_weight")) == 3
    assert [m.name for m in weight_matrices(model, include="*.k")] == ["attn.in_proj_weight.k"]
    assert len(weight_matrices(model, exclude="attn.*")) == 3


def test_unmatched_pattern_warns_with_its_name() -> None:
    with pytest.warns(UserWarning, match=r"include='decoder\.\*'.*exclude='nope'"):
        found = weight_matrices(_mixed_model(), include=["encoder.*", "decoder.*"], exclude="nope")
    assert len(found) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        weight_matrices(_mixed_model(), include="encoder.*", exclude="head.*")


def test_frozen_parameters() -> None:
    model = _mixed_model()
    model["encoder"][0].weight.requires_grad_(False)
    assert "encoder.0.weight" in [m.name for m in weight_matrices(model)]
    names = [m.name for m in weight_matrices(model, trainable_only=True)]
    assert "encoder.0.weight" not in names and "encoder.1.weight" in names


def test_tied_weights_reported_once() -> None:
    class TiedLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 6)
            self.body = nn.Linear(6, 6)
            self.lm_head = nn.Linear(6, 10, bias=False)
            self.lm_head.weight = self.embed.weight

    model = TiedLM()
    assert [m.name for m in weight_matrices(model)] == ["embed.weight", "body.weight"]
    # selected under its other name when the first one is filtered out
    assert [m.name for m in weight_matrices(model, include="lm_head.*")] == ["lm_head.weight"]
    # the same module registered twice is reported once
    shared = nn.Linear(3, 3)
    assert [m.name for m in weight_matrices(nn.Sequential(shared, nn.ReLU(), shared))] == ["0.weight"]


def test_parametrized_weight_without_side_effects() -> None:
    torch.manual_seed(0)
    layer = nn.utils.parametrizations.spectral_norm(nn.Linear(5, 7))
    layer.train()
    u_before = layer.parametrizations.weight[0]._u.clone()
    (m,) = weight_matrices(layer)
    assert torch.equal(layer.parametrizations.weight[0]._u, u_before)  # no power-iteration step taken
    assert layer.training and layer.parametrizations.weight.training
    layer.eval()
    with torch.no_grad():
        torch.testing.assert_close(m.matrix, layer.weight)
    assert m.name == "weight" and "parametrization" in m.shape_note
    layer.parametrizations.weight.original.requires_grad_(False)
    assert weight_matrices(layer, trainable_only=True) == []


def test_uninitialized_lazy_layer_is_skipped() -> None:
    model = nn.Sequential(nn.LazyLinear(3), nn.Linear(3, 2))
    assert [m.name for m in weight_matrices(model)] == ["1.weight"]
    model(torch.randn(1, 4))
    assert [m.name for m in weight_matrices(model)] == ["0.weight", "1.weight"]


def test_bad_arguments() -> None:
    model = _mixed_model()
    with pytest.raises(ValueError, match="`conv_mode`.*'flatten', 'per_position'"):
        weight_matrices(model, conv_mode="flat")
    with pytest.raises(TypeError, match="`include`"):
        weight_matrices(model, include=[1])
    with pytest.raises(TypeError, match="`exclude`"):
        weight_matrices(model, exclude=3)
    with pytest.raises(TypeError, match="`model`"):
        weight_matrices(torch.zeros(3, 3))
