"""How the NTK finds a model's inputs and outputs: keyword inputs (labels left out), the wrapped model, the
logits rule, the packing of keyword inputs; errors name ``input_fn`` / ``output_fn`` and what was looked for."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from lightning_spectral.functional._common.model_io import (
    PackedInputs,
    keyword_inputs,
    measured_module,
    model_logits,
)


class KeywordModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)

    def forward(self, input_ids, attention_mask=None, labels=None):
        return {"loss": torch.tensor(0.0), "logits": self.embed(input_ids) * attention_mask[..., None]}


class Wrapper(nn.Module):  # no forward, one child with parameters and one without
    def __init__(self) -> None:
        super().__init__()
        self.model = KeywordModel()
        self.loss = nn.CrossEntropyLoss()


def test_keyword_inputs_leave_out_labels_and_unknown_keys():
    batch = {
        "input_ids": torch.zeros(2, 3, dtype=torch.long),
        "attention_mask": torch.ones(2, 3),
        "labels": 1,
        "other": torch.ones(2),
    }
    assert list(keyword_inputs(batch, KeywordModel())) == ["input_ids", "attention_mask"]
    with pytest.raises(
        ValueError,
        match=r"looked for the keyword arguments of KeywordModel.forward \(input_ids, "
        r"attention_mask\).*`input_fn=`",
    ):
        keyword_inputs({"pixels": torch.ones(2, 3)}, KeywordModel())


def test_measured_module_is_the_one_wrapped_model():
    wrapper = Wrapper()
    assert measured_module(wrapper) == ("model", wrapper.model)
    assert measured_module(wrapper.model) == ("", wrapper.model)
    two = Wrapper()
    two.other = nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"model \(KeywordModel\), other \(Linear\).*`output_fn="):
        measured_module(two)


def test_logits_rule():
    logits, loss = torch.randn(3, 2), torch.tensor(1.0)
    assert model_logits(OrderedDict(loss=loss, logits=logits), 3) is logits
    hidden = torch.randn(3, 5)
    assert model_logits({"loss": loss, "last_hidden_state": hidden}, 3) is hidden
    assert model_logits((loss, logits), 3) is logits
    with pytest.raises(ValueError, match=r"without a 'logits' entry.*keys \['loss'\].*`output_fn="):
        model_logits({"loss": loss}, 3)


def test_packing_round_trips_shapes_and_dtypes():
    inputs = {
        "input_ids": torch.randint(0, 50_000, (4, 7)),
        "mask": torch.rand(4, 7) > 0.5,
        "pixels": torch.randn(4, 2, 3, dtype=torch.bfloat16),
    }
    layout = PackedInputs.from_mapping(inputs)
    packed = layout.pack(inputs)
    assert packed.shape == (4, 7 + 7 + 6) and packed.dtype == torch.float64
    back = layout.unpack(packed[1:3])  # a slice of the examples, as vmap / chunking hand them over
    for key, value in inputs.items():
        assert back[key].dtype == value.dtype and torch.equal(back[key], value[1:3]), key
    with pytest.raises(ValueError, match="first \\(batch\\) dimension"):
        PackedInputs.from_mapping({"a": torch.ones(2, 3), "b": torch.ones(3)})
