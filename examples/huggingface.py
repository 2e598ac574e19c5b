"""Hugging Face: fine-tune a tiny BERT classifier with every spectral monitor, then write the spectral report.

The model is ``transformers.BertForSequenceClassification`` built from a small config (4 layers, width 32, no
download), wrapped the way Lightning users wrap a Hugging Face model: ``self.model = ...``, no ``forward`` on
the LightningModule, ``training_step`` returns ``self.model(**batch).loss``, batches are dicts with
``input_ids``, ``attention_mask`` and ``labels``. The data are generated: random token sequences of random
length (padded, with an attention mask) whose class is the first token's id modulo 3. The monitors need no
``input_fn`` / ``output_fn``: the NTK monitor passes the batch entries the model's ``forward`` takes (not
``labels``) as keyword arguments and measures the ``logits`` of its output. Under AdamW the stopper watches the
Hessian monitor's ``eos_ratio`` (the preconditioned sharpness over Adam's limit), not ``edge_of_stability()``.

Usage::

    python examples/huggingface.py                      # 160 steps; logs to runs/huggingface, report in its report/
    python examples/huggingface.py --max-steps 20       # a quick look
    tensorboard --logdir runs/huggingface

Requires ``transformers`` (in the ``dev`` extra).
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from _common.argument_types import positive_float, positive_int
from _common.cpu_threads import add_threads_argument, torch_threads
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from lightning_spectral.callbacks import (
    HessianEigenMonitor,
    NTKTraceMonitor,
    SpectralEarlyStopping,
    WeightSpectrumMonitor,
)
from lightning_spectral.report import build_report
from lightning_spectral.report.reader import read_scalars

VOCAB, LENGTH, CLASSES = 64, 16, 3


class HuggingFaceClassifier(pl.LightningModule):
    """The usual wrapping of a Hugging Face model: no ``forward``, the model computes its own loss."""

    def __init__(self, lr: float = 1e-3) -> None:
        super().__init__()
        import transformers

        self.save_hyperparameters()
        config = transformers.BertConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=LENGTH,
            num_labels=CLASSES,
        )
        self.model = transformers.BertForSequenceClassification(config)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.model(**batch).loss
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)


def generated_examples(count: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Token sequences of random length (padded with 0, masked), labeled by their first token modulo 3."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (count, LENGTH), generator=generator)
    lengths = torch.randint(LENGTH // 2, LENGTH + 1, (count,), generator=generator)
    mask = (torch.arange(LENGTH)[None, :] < lengths[:, None]).long()
    ids = ids * mask
    labels = ids[:, 0] % CLASSES
    return [{"input_ids": ids[i], "attention_mask": mask[i], "labels": labels[i]} for i in range(count)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-steps", type=positive_int, default=160)
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--lr", type=positive_float, default=1e-3, help="AdamW learning rate")
    parser.add_argument("--every-n-steps", type=positive_int, default=20, help="measure this often")
    parser.add_argument("--seed", type=int, default=0)
    add_threads_argument(parser)
    parser.add_argument("--log-dir", default="runs/huggingface")
    args = parser.parse_args(argv)

    import transformers

    transformers.utils.logging.set_verbosity_error()
    with torch_threads(args.threads), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(does not have many workers|smaller than the logging).*")
        # BERT's attention-mask check (`padding_mask.all()`) cannot run under torch.func.vmap: the per-example
        # norms of the NTK are then computed one example at a time, same numbers (said once here, not per step)
        warnings.filterwarnings("once", message="per-example gradient norms: torch.func.vmap cannot batch")
        pl.seed_everything(args.seed, verbose=False)
        loader = DataLoader(generated_examples(512, args.seed), batch_size=args.batch_size, shuffle=True)
        every = args.every_n_steps
        logger = TensorBoardLogger(args.log_dir, name="bert")
        trainer = pl.Trainer(
            max_steps=args.max_steps,
            logger=logger,
            log_every_n_steps=1,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=False,
            callbacks=[
                WeightSpectrumMonitor(every_n_steps=every),
                HessianEigenMonitor(every_n_steps=every),
                NTKTraceMonitor(every_n_steps=every),
                SpectralEarlyStopping("spectral/hessian/eos_ratio", threshold=1.0, patience=3),
            ],
        )
        trainer.fit(HuggingFaceClassifier(lr=args.lr), loader)
        page = build_report([logger.log_dir], Path(logger.log_dir) / "report", progress=False)
    scalars = read_scalars(logger.log_dir)
    loss = [value for _, value in scalars["train_loss"]]
    print(f"train_loss {loss[0]:.3f} -> {loss[-1]:.3f} over {trainer.global_step} steps")
    for key in ("spectral/hessian/lambda_1", "spectral/ntk/trace", "spectral/weights/max_sigma_max"):
        values = [value for _, value in scalars[key]]
        print(f"{key}: {values[0]:.4g} -> {values[-1]:.4g}")
    print(f"TensorBoard logs: {logger.log_dir}\nreport: {page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
