"""Real ``transformers`` models built from small configs (nothing downloaded), wrapped the way Lightning users
wrap them: ``self.model = ...``, no ``forward`` on the LightningModule, ``training_step`` returns
``self.model(**batch).loss``, dict batches with the model's input keys and ``labels``. Every monitor at its
defaults plus a stopper: each logs finite values, the training loss curve is bit-identical with and without
them, and the BERT classifier's NTK trace equals ``‖J‖_F²`` of the explicit Jacobian of its logits."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

transformers = pytest.importorskip("transformers")

from spectral_testing.figure_text import overlapping_texts  # noqa: E402
from spectral_testing.invariance import fits_without_and_with  # noqa: E402
from spectral_testing.models import trainer_kwargs  # noqa: E402

from lightning_spectral.callbacks import (  # noqa: E402
    HessianEigenMonitor,
    NTKTraceMonitor,
    SpectralEarlyStopping,
    WeightSpectrumMonitor,
)

transformers.utils.logging.set_verbosity_error()
VOCAB, LENGTH, EXAMPLES, BATCH = 40, 10, 16, 8


def bert_classifier(num_hidden_layers: int = 2):
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=LENGTH,
        num_labels=3,
    )
    return transformers.BertForSequenceClassification(config)


def gpt2_lm():
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=LENGTH, n_embd=16, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(config)


def vit_classifier():
    config = transformers.ViTConfig(
        image_size=8,
        patch_size=4,
        num_channels=3,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=24,
        num_labels=3,
    )
    return transformers.ViTForImageClassification(config)


def resnet_classifier():  # convolutions with BatchNorm
    config = transformers.ResNetConfig(
        num_channels=3,
        embedding_size=8,
        hidden_sizes=[8, 12],
        depths=[1, 1],
        layer_type="basic",
        num_labels=3,
    )
    return transformers.ResNetForImageClassification(config)


def token_batches(labels: str) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, VOCAB, (EXAMPLES, LENGTH), generator=generator)
    mask = torch.ones(EXAMPLES, LENGTH, dtype=torch.long)
    mask[::2, -3:] = 0  # padded examples
    ids[mask == 0] = 0
    if labels == "class":
        targets = torch.randint(0, 3, (EXAMPLES,), generator=generator)
    else:
        targets = ids.masked_fill(mask == 0, -100)
    return [{"input_ids": ids[i], "attention_mask": mask[i], "labels": targets[i]} for i in range(EXAMPLES)]


def image_batches() -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(EXAMPLES, 3, 8, 8, generator=generator)
    targets = torch.randint(0, 3, (EXAMPLES,), generator=generator)
    return [{"pixel_values": pixels[i], "labels": targets[i]} for i in range(EXAMPLES)]


class Wrapped(pl.LightningModule):
    """The usual wrapping: no forward, the model's own loss."""

    def __init__(self, make_model, examples) -> None:
        super().__init__()
        self.model = make_model()
        self.examples = examples

    def training_step(self, batch, batch_idx):
        loss = self.model(**batch).loss
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)

    def train_dataloader(self):
        return DataLoader(self.examples, batch_size=BATCH, shuffle=False)


MODELS = {
    "gpt2": (gpt2_lm, lambda: token_batches("lm")),
    "bert": (bert_classifier, lambda: token_batches("class")),
    "vit": (vit_classifier, image_batches),
    "resnet": (resnet_classifier, image_batches),
}


class RecordingStopper(SpectralEarlyStopping):
    """The edge-of-stability stopper, also keeping the ``spectral/`` values it saw at the end of the fit."""

    def on_train_end(self, trainer, pl_module) -> None:
        self.logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("spectral/")}
        self.fired = trainer.should_stop


def default_monitors():
    return [
        WeightSpectrumMonitor(strict=True),
        HessianEigenMonitor(strict=True),
        NTKTraceMonitor(strict=True),
        RecordingStopper.edge_of_stability(),
    ]


@pytest.mark.parametrize("name", list(MODELS))
def test_every_monitor_at_its_defaults_on_a_wrapped_transformers_model(tmp_path, name):
    make_model, make_examples = MODELS[name]
    examples = make_examples()
    monitors = default_monitors()
    (without, _), (with_monitors, _) = fits_without_and_with(
        tmp_path, lambda: Wrapped(make_model, examples), monitors, max_steps=3, max_epochs=1
    )
    assert torch.equal(without, with_monitors)  # bit-identical training
    for monitor in monitors[:3]:
        assert monitor.num_measurements == 1  # at train start (default every_n_steps=100)
    logged = monitors[-1].logged
    for key in ("spectral/weights/max_sigma_max", "spectral/hessian/lambda_1", "spectral/ntk/trace"):
        assert key in logged
    assert all(math.isfinite(value) for value in logged.values()), logged
    assert not monitors[-1].fired


def test_bert_ntk_trace_matches_the_explicit_jacobian_of_its_logits(tmp_path):
    examples = token_batches("class")
    pl.seed_everything(0)
    module = Wrapped(bert_classifier, examples)
    initial = {k: v.detach().clone() for k, v in module.state_dict().items()}
    monitor = NTKTraceMonitor(strict=True)
    trainer = pl.Trainer(callbacks=[monitor], **trainer_kwargs(tmp_path, max_steps=2, max_epochs=1))
    trainer.fit(module)
    measured = float(trainer.callback_metrics["spectral/ntk/trace"])
    module.load_state_dict(initial)  # measured at step 0
    module.eval()
    first = examples[:BATCH]  # shuffle=False: the measurement batch is the first training batch
    ids = torch.stack([e["input_ids"] for e in first])
    mask = torch.stack([e["attention_mask"] for e in first])
    names = [n for n, p in module.named_parameters() if p.requires_grad]
    params = {n: p.detach() for n, p in module.named_parameters()}

    def logits(theta: dict[str, torch.Tensor]) -> torch.Tensor:
        state = {**params, **theta}
        return torch.func.functional_call(
            module, state, (), {"input_ids": ids, "attention_mask": mask}
        ).reshape(-1)

    module.forward = lambda **kwargs: module.model(**kwargs).logits  # the reference's own call of the model
    jacobian = torch.func.jacrev(logits)({n: params[n] for n in names})
    reference = sum(float(j.double().pow(2).sum()) for j in jacobian.values())
    assert float(trainer.callback_metrics["spectral/ntk/trace_per_example"]) * BATCH == pytest.approx(
        measured
    )
    assert measured == pytest.approx(reference, rel=1e-4)
    assert math.isfinite(measured) and measured > 0


@pytest.mark.slow
def test_report_of_a_bert_run_has_legible_per_layer_figures(tmp_path):
    """A BERT with 12 layers (77 weight matrices, names up to 46 characters) logging every layer
    (``per_layer_limit=None``): each per-layer figure of the report draws no text over other text."""
    from pytorch_lightning.loggers import TensorBoardLogger

    from lightning_spectral.report import build_report, read_runs
    from lightning_spectral.report.figures import make_figures, run_colors

    examples = token_batches("class")
    pl.seed_everything(0)
    module = Wrapped(lambda: bert_classifier(num_hidden_layers=12), examples)
    logger = TensorBoardLogger(str(tmp_path), name="bert")
    monitor = WeightSpectrumMonitor(every_n_steps=1, per_layer_limit=None, strict=True)
    trainer = pl.Trainer(
        callbacks=[monitor], **trainer_kwargs(tmp_path, logger=logger, max_steps=4, max_epochs=2)
    )
    trainer.fit(module)
    runs = read_runs([logger.log_dir])
    figures, _ = make_figures(runs, run_colors(runs))
    weights = [f for f in figures if f.section == "Weights"]
    names = {f.name for f in weights}
    assert {
        "weights_sigma_max",
        "weights_stable_rank",
        "weights_effective_rank",
        "weights_singular_values",
    } <= names
    assert len([n for n in names if n.startswith("weights_heatmap_")]) == 4  # the 4 layers of largest σ_max
    for figure in weights:
        assert overlapping_texts(figure.figure) == [], figure.name
    rows = [
        t.get_text()
        for t in next(f for f in weights if f.name == "weights_sigma_max").figure.axes[0].get_yticklabels()
    ]
    assert len(rows) == 40 and all(len(row) <= 44 for row in rows) and len(set(rows)) == 40
    page = build_report([logger.log_dir], tmp_path / "report", progress=False)
    assert (page.parent / "weights_sigma_max.png").stat().st_size > 10_000


def test_auto_uses_few_probes_for_sequence_sized_outputs():
    """``method="auto"`` on more than ``AUTO_FEW_PROBES_OUTPUTS`` outputs per example: Hutchinson with 2 probes
    (the same estimate as asking for it), with a standard error; an explicit ``num_probes`` is kept."""
    from lightning_spectral.functional import ntk_trace
    from lightning_spectral.functional.ntk.trace import AUTO_FEW_PROBES_OUTPUTS

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, AUTO_FEW_PROBES_OUTPUTS + 4)
    )
    x = torch.randn(2, 3)

    def trace(**kwargs):
        return ntk_trace(model, x, generator=torch.Generator().manual_seed(0), **kwargs)

    first, last = model[0], model[2]
    with torch.no_grad():  # ‖∂f_k/∂θ‖² in closed form: read-out row and bias, then through the tanh layer
        hidden = torch.tanh(first(x))
        slope = 1 - hidden.pow(2)
        exact = float(
            (last.out_features * (hidden.pow(2).sum(1) + 1)).sum()
            + ((last.weight.pow(2) @ slope.pow(2).T).sum(0) * (x.pow(2).sum(1) + 1)).sum()
        )
    auto = trace()
    assert auto.method_used == "hutchinson" and math.isfinite(auto.std_error)
    assert auto.trace == trace(method="hutchinson", num_probes=2).trace
    assert auto.trace != trace(method="hutchinson", num_probes=3).trace
    assert abs(auto.trace - exact) < 5 * auto.std_error + 1e-5 * exact


def test_gpt2_conv1d_layers_are_weight_matrices_oriented_like_linear(tmp_path):
    """GPT-2's ``Conv1D`` (``c_attn``, ``c_proj``, ``c_fc``) store ``(in, out)``; they are measured as ``(out, in)``."""
    from lightning_spectral.functional import weight_matrices, weight_spectrum

    model = gpt2_lm()
    matrices = {m.name: m for m in weight_matrices(model)}
    conv1d = {n: m for n, m in matrices.items() if m.module_type == "Conv1D"}
    # 2 layers × (c_attn, c_proj of attention; c_fc, c_proj of the MLP)
    assert len(conv1d) == 8, sorted(matrices)
    c_attn = model.transformer.h[0].attn.c_attn
    found = matrices["transformer.h.0.attn.c_attn.weight"]
    assert found.matrix.shape == (c_attn.nf, c_attn.weight.shape[0])  # (3E, E): out × in
    assert torch.equal(found.matrix, c_attn.weight.detach().T)
    x = torch.randn(5, c_attn.weight.shape[0])
    torch.testing.assert_close(found.matrix @ x.T, (c_attn(x) - c_attn.bias).T)  # maps in → out like Linear
    for matrix in conv1d.values():
        spectrum = weight_spectrum(matrix.matrix, 3)
        torch.testing.assert_close(
            spectrum.singular_values,
            torch.linalg.svdvals(matrix.matrix.double())[:3].float(),
            rtol=1e-4,
            atol=0,
        )
    # and the monitor logs them in a fit
    examples = token_batches("lm")
    monitor = WeightSpectrumMonitor(every_n_steps=1, strict=True)
    trainer = pl.Trainer(callbacks=[monitor], **trainer_kwargs(tmp_path, max_steps=1, max_epochs=1))
    trainer.fit(Wrapped(gpt2_lm, examples))
    assert "spectral/weights/model.transformer.h.1.mlp.c_fc.weight/sigma_max" in trainer.callback_metrics
