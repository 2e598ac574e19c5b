"""A LightningModule with one layer of every kind the weight monitor covers."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class LayerZoo(pl.LightningModule):
    """Embedding → LSTM → GRU → self-attention → Conv1d → Linear, on generated token sequences."""

    def __init__(self, vocab: int = 20, dim: int = 12, length: int = 6, num_classes: int = 3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embedding = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(dim, dim, batch_first=True)
        self.gru = nn.GRU(dim, dim, batch_first=True)
        self.attention = nn.MultiheadAttention(dim, num_heads=2, batch_first=True)
        self.conv = nn.Conv1d(dim, dim, kernel_size=3, padding=1)
        self.head = nn.Linear(dim * length, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embedding(tokens)
        h, _ = self.lstm(h)
        h, _ = self.gru(h)
        h, _ = self.attention(h, h, h, need_weights=False)
        h = self.conv(h.transpose(1, 2)).relu()
        return self.head(h.flatten(1))

    def training_step(self, batch, batch_idx):
        tokens, y = batch
        loss = nn.functional.cross_entropy(self(tokens), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)

    def train_dataloader(self):
        generator = torch.Generator().manual_seed(0)
        tokens = torch.randint(0, self.hparams.vocab, (64, self.hparams.length), generator=generator)
        y = tokens[:, 0] % self.hparams.num_classes
        return DataLoader(TensorDataset(tokens, y), batch_size=16, shuffle=True)
