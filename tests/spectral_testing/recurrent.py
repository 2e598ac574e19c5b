"""The recurrent-model tests' token classifier (embedding → LSTM / GRU / RNN → linear), a float64 reference copy
and a batch; shared by tests/models/test_recurrent_models.py and the CUDA tests."""

from __future__ import annotations

import torch
from torch import nn

RECURRENT = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class TokenClassifier(nn.Module):
    """Embedding → recurrent layer → mean over time → linear readout."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.embedding = nn.Embedding(10, 4)
        self.recurrent = RECURRENT[kind](4, 5, batch_first=True)
        self.out = nn.Linear(5, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(self.recurrent(self.embedding(tokens))[0].mean(dim=1))


def model_and_reference(kind: str) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    model = TokenClassifier(kind)
    reference = TokenClassifier(kind).double()
    reference.load_state_dict(model.state_dict())
    return model, reference


def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 10, (4, 6), generator=g), torch.randint(0, 3, (4,), generator=g)
