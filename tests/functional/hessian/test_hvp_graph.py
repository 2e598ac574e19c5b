"""Hessian-vector products replayed as CUDA graphs (:class:`~lightning_spectral.functional.HVPGraph`).

The CUDA tests need a GPU (CI has none; run ``pytest tests/functional/hessian/test_hvp_graph.py`` where one is): every replayed
product is compared with the eager product of the same operator, eigenvalues with a dense float64 Hessian, and
a fit with ``cuda_graphs=True`` with the same fit measured eagerly. The CPU tests check that a graph never
changes a CPU operator and the argument checks.
"""

from __future__ import annotations

import warnings

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from spectral_testing import gpu
from spectral_testing.gpu import image_classifier, to
from spectral_testing.log_readers import read_tensorboard_scalars
from spectral_testing.models import LossRecorder, TinyClassifier, trainer_kwargs
from spectral_testing.problems import cross_entropy, seeded
from spectral_testing.references import dense_hessian
from torch import nn

from lightning_spectral._internal.full_precision import full_float32_precision
from lightning_spectral.callbacks import HessianEigenMonitor
from lightning_spectral.functional import HessianOperator, HVPGraph, hessian_eigenvalues

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")


def batchnorm_cnn() -> nn.Module:
    """The CUDA tests' image classifier in train mode: BatchNorm on batch statistics, writing its running statistics."""
    return image_classifier().train()


def image_batch(n: int = 64, seed: int = 0, device: torch.device | str = "cpu"):
    return to(gpu.image_batch(n, seed), device)


def products(operator: HessianOperator, vectors: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([operator.matvec(v) for v in vectors])


def assert_products_equal(got: torch.Tensor, expected: torch.Tensor) -> None:
    relative = torch.linalg.vector_norm(got - expected, dim=1) / torch.linalg.vector_norm(expected, dim=1)
    assert relative.max() < 1e-5, relative


# ------------------------------------------------------------------------------------------------- CPU
def test_a_graph_leaves_cpu_operators_eager_and_checks_its_arguments():
    model, batch = batchnorm_cnn(), image_batch()
    graph = HVPGraph()
    vectors = [torch.randn(1481, generator=seeded(i)) for i in range(2)]
    with_graph = products(HessianOperator(model, cross_entropy, batch, hvp_graph=graph), vectors)
    eager = products(HessianOperator(model, cross_entropy, batch), vectors)
    assert torch.equal(with_graph, eager)
    assert graph.num_captures == graph.num_replays == 0
    with pytest.raises(ValueError, match="max_graphs"):
        HVPGraph(max_graphs=0)
    with pytest.raises(TypeError, match="hvp_graph"):
        HessianOperator(model, cross_entropy, batch, hvp_graph="yes")
    with pytest.raises(ValueError, match="cuda_graphs"):
        HessianEigenMonitor(cuda_graphs="yes")


def test_the_signature_follows_what_a_replay_depends_on_and_not_the_values():
    """What decides between replaying and capturing again (checked on CPU operators, no GPU needed)."""
    from lightning_spectral.functional.hessian.hvp_graph import _signature

    model = batchnorm_cnn()

    def signature(batch, fn=cross_entropy, **kwargs):
        return _signature(HessianOperator(model, fn, batch, **kwargs))

    base = signature(image_batch())
    assert signature(image_batch(seed=3)) == base  # new values, same structure
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert signature(image_batch()) == base
    assert signature(image_batch(n=32)) != base  # batch shape
    assert (
        signature(tuple(t.double() if t.is_floating_point() else t for t in image_batch())) != base
    )  # dtype
    assert signature(image_batch(), fn=lambda net, b: cross_entropy(net, b)) != base  # another loss object
    assert signature(image_batch(), params="0.*") != base  # another parameter selection
    model[1].eval()
    assert signature(image_batch()) != base  # one module's mode
    model[1].train()
    torch.backends.cudnn.deterministic = not torch.backends.cudnn.deterministic
    try:
        assert signature(image_batch()) != base  # a setting that changes the kernels
    finally:
        torch.backends.cudnn.deterministic = not torch.backends.cudnn.deterministic
    assert signature(image_batch()) == base


class FailingClassifier(TinyClassifier):
    def training_step(self, batch, batch_idx):
        if batch_idx == 2:
            raise RuntimeError("boom")
        return super().training_step(batch, batch_idx)


@pytest.mark.parametrize("module", [TinyClassifier, FailingClassifier])
def test_the_monitor_releases_its_graphs_when_the_fit_ends_or_raises(tmp_path, module):
    """(On CPU nothing is captured: a stand-in capture shows that the monitor lets go of what it holds.)"""
    monitor = HessianEigenMonitor(cuda_graphs=True, every_n_steps=2)
    monitor._hvp_graph._captures["stand-in"] = object()
    trainer = pl.Trainer(callbacks=[monitor], **trainer_kwargs(tmp_path, max_epochs=1))
    if module is FailingClassifier:
        with pytest.raises(RuntimeError, match="boom"):
            trainer.fit(module())
    else:
        trainer.fit(module())
    assert not monitor._hvp_graph._captures


# ------------------------------------------------------------------------------------------------ CUDA
@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("method", ["double_backward", "forward_over_reverse"])
def test_replayed_products_equal_eager_ones_and_one_capture_serves_later_operators(method):
    model = batchnorm_cnn().to(CUDA)
    graph = HVPGraph()
    vectors = [torch.randn(1481, generator=seeded(i)).to(CUDA) for i in range(3)]
    with full_float32_precision():
        first = HessianOperator(
            model, cross_entropy, image_batch(device=CUDA), method=method, hvp_graph=graph
        )
        replayed_first = products(first, vectors)
        assert_products_equal(
            replayed_first,
            products(HessianOperator(model, cross_entropy, image_batch(device=CUDA), method=method), vectors),
        )
        assert graph.num_captures == 1 and graph.num_replays == 3
        # a training step later, another batch of the same shape: the same capture, the new values
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        batch = image_batch(seed=1, device=CUDA)
        later = HessianOperator(model, cross_entropy, batch, method=method, hvp_graph=graph)
        eager = HessianOperator(model, cross_entropy, batch, method=method)
        assert_products_equal(products(later, vectors), products(eager, vectors))
        assert graph.num_captures == 1 and graph.num_replays == 6
        # the first operator again: its own point and batch are copied back in (it holds the old parameters)
        assert_products_equal(products(first, vectors[:1]), replayed_first[:1])
    buffers = dict(model.named_buffers())
    assert int(buffers["1.num_batches_tracked"]) == 0  # the model's BatchNorm statistics were never written


@pytest.mark.gpu
@needs_cuda
def test_a_changed_structure_is_captured_again():
    model = batchnorm_cnn().to(CUDA)
    graph = HVPGraph(max_graphs=2)
    v = torch.randn(1481, generator=seeded(0)).to(CUDA)

    def product(batch):
        with full_float32_precision():
            replayed = HessianOperator(
                model, cross_entropy, batch, method="double_backward", hvp_graph=graph
            )(v)
            eager = HessianOperator(model, cross_entropy, batch, method="double_backward")(v)
        assert_products_equal(replayed[None], eager[None])

    product(image_batch(device=CUDA))
    product(image_batch(n=32, device=CUDA))  # another batch size
    assert graph.num_captures == 2
    model.eval()  # BatchNorm on running statistics: another function of the parameters
    product(image_batch(device=CUDA))
    assert graph.num_captures == 3
    model.train()
    product(image_batch(device=CUDA))  # evicted by max_graphs=2 (least recently used): captured again
    assert graph.num_captures == 4
    product(image_batch(device=CUDA))
    assert graph.num_captures == 4


@pytest.mark.gpu
@needs_cuda
def test_auto_is_resolved_once_and_later_operators_start_replaying():
    model = batchnorm_cnn().to(CUDA)
    graph = HVPGraph()
    v = torch.randn(1481, generator=seeded(0)).to(CUDA)
    with full_float32_precision():
        first = HessianOperator(model, cross_entropy, image_batch(device=CUDA), hvp_graph=graph)
        first(v)  # eager: resolves "auto"
        assert first.method == "forward_over_reverse" and graph.num_replays == 0
        first(v)
        assert graph.num_captures == 1 and graph.num_replays == 1
        later = HessianOperator(model, cross_entropy, image_batch(seed=2, device=CUDA), hvp_graph=graph)
        replayed = later(v)
        assert later.method == "forward_over_reverse" and graph.num_replays == 2
        eager = HessianOperator(model, cross_entropy, image_batch(seed=2, device=CUDA))(v)
    assert_products_equal(replayed[None], eager[None])


@pytest.mark.gpu
@needs_cuda
def test_eigenvalues_with_a_graph_equal_the_dense_float64_spectrum():
    model, batch = batchnorm_cnn().eval(), image_batch()
    reference = torch.linalg.eigvalsh(
        dense_hessian(model.double(), lambda f, b: nn.functional.cross_entropy(f(b[0].double()), b[1]), batch)
    ).flip(0)[:3]
    model = model.float().to(CUDA)
    graph = HVPGraph()
    for _ in range(2):  # the first call captures, the second replays from the start
        with full_float32_precision():
            operator = HessianOperator(
                model,
                cross_entropy,
                tuple(t.to(CUDA) for t in batch),
                method="double_backward",
                hvp_graph=graph,
            )
            result = hessian_eigenvalues(
                operator=operator, k=3, tol=1e-6, max_matvecs=200, generator=seeded(0, CUDA)
            )
        relative = (result.eigenvalues.cpu().double() - reference).abs() / reference.abs()
        assert relative.max() < 1e-4, (result.eigenvalues, reference)
    assert graph.num_captures == 1 and graph.num_replays == 2 * result.num_hvps


@pytest.mark.gpu
@needs_cuda
def test_random_losses_and_uncapturable_losses_stay_eager_with_a_warning():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Dropout(0.3), nn.Linear(16, 3)).to(
        CUDA
    )  # train mode
    batch = (torch.randn(32, 8, device=CUDA), torch.randint(0, 3, (32,), device=CUDA))
    v = torch.randn(sum(p.numel() for p in model.parameters()), device=CUDA)
    graph = HVPGraph()
    state = torch.cuda.get_rng_state()
    with full_float32_precision(), pytest.warns(UserWarning, match="random numbers"):
        got = HessianOperator(model, cross_entropy, batch, method="double_backward", hvp_graph=graph)(v)
    assert torch.equal(torch.cuda.get_rng_state(), state)
    with full_float32_precision():
        expected = HessianOperator(model, cross_entropy, batch, method="double_backward")(v)
    assert torch.equal(got, expected)  # the eager product: the same fixed dropout mask
    assert graph.num_captures == 0 and len(graph.disabled) == 1

    def synchronising_loss(net, b):
        loss = cross_entropy(net, b)
        if loss.item() > 1e9:  # a host synchronisation: not capturable
            raise AssertionError
        return loss

    model.eval()
    with full_float32_precision(), pytest.warns(UserWarning, match="capture failed"):
        got = HessianOperator(model, synchronising_loss, batch, method="double_backward", hvp_graph=graph)(v)
    with full_float32_precision():
        expected = HessianOperator(model, cross_entropy, batch, method="double_backward")(v)
    assert_products_equal(got[None], expected[None])
    with warnings.catch_warnings(), full_float32_precision():
        warnings.simplefilter("error")  # warned once per signature (the precision settings are part of it)
        HessianOperator(model, synchronising_loss, batch, method="double_backward", hvp_graph=graph)(v)
    # CUDA still works after the failed capture, random draws included (the next training step's dropout)
    assert torch.isfinite(HessianOperator(model, cross_entropy, batch, method="double_backward")(v)).all()
    assert torch.equal(torch.cuda.get_rng_state(), state)
    mask = nn.functional.dropout(torch.ones(1000, device=CUDA), 0.5)
    assert 0 < int((mask == 0).sum()) < 1000


def fit_on_the_gpu(root, callbacks):
    """Training losses and logged TensorBoard scalars of a seeded TinyClassifier fit on the GPU."""
    recorder = LossRecorder()
    pl.seed_everything(0)
    module = TinyClassifier(shuffle=False)
    logger = TensorBoardLogger(str(root), name="", version="")
    kwargs = trainer_kwargs(root, accelerator="gpu", logger=logger)
    pl.Trainer(callbacks=[recorder, *callbacks], **kwargs).fit(module)
    return torch.stack(recorder.losses), read_tensorboard_scalars(logger.log_dir)


@pytest.mark.gpu
@needs_cuda
def test_monitor_with_cuda_graphs_logs_the_eager_numbers_and_never_changes_training(tmp_path):
    """TinyClassifier has BatchNorm and dropout, measured in eval mode through its own training_step."""
    kwargs = dict(every_n_steps=2, k=2, tol=1e-6, compute_batch_sharpness=False, compute_trace=True)
    graphs = HessianEigenMonitor(cuda_graphs=True, **kwargs)
    without, _ = fit_on_the_gpu(tmp_path / "without", [])
    with_graphs, got = fit_on_the_gpu(tmp_path / "graphs", [graphs])
    with_eager, expected = fit_on_the_gpu(tmp_path / "eager", [HessianEigenMonitor(**kwargs)])
    assert torch.equal(without, with_graphs) and torch.equal(without, with_eager)
    assert graphs._hvp_graph.num_captures == 1 and graphs._hvp_graph.num_replays > 10
    assert not graphs._hvp_graph._captures  # released at the end of the fit
    for key in ("spectral/hessian/lambda_1", "spectral/hessian/lambda_2", "spectral/hessian/trace"):
        assert [step for step, _ in got[key]] == [step for step, _ in expected[key]]
        assert len(got[key]) >= 4
        for (_, a), (_, b) in zip(got[key], expected[key]):
            assert a == pytest.approx(b, rel=1e-4)
