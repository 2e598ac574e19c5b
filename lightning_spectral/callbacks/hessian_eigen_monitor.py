"""``HessianEigenMonitor``: top Hessian eigenvalues, trace, density and edge-of-stability indicators."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from typing_extensions import override

from lightning_spectral._internal.deprecation import renamed_keywords
from lightning_spectral._internal.validation import (
    check_bool,
    check_callable,
    check_choice,
    check_int,
    check_open_unit_interval,
)
from lightning_spectral.callbacks._internal.collectives import (
    MeasurementCollectives,
    has_distributed_parameters,
)
from lightning_spectral.callbacks._internal.gathered_parameters import fits_gathered
from lightning_spectral.callbacks._internal.optimizer_info import first_optimizer, resolved_sgd_settings
from lightning_spectral.callbacks._internal.parameter_patterns import (
    check_param_spec,
    checked_param_patterns,
    include_argument,
)
from lightning_spectral.callbacks._internal.training_loss import LossFn, resolve_loss_fn
from lightning_spectral.callbacks.base import SpectralMonitor
from lightning_spectral.functional._common.parameter_selection import select_parameters
from lightning_spectral.functional.hessian.adaptive_preconditioners import (
    adaptive_preconditioning,
    has_preconditioner_rule,
)
from lightning_spectral.functional.hessian.batch_sharpness import (
    batch_rayleigh_quotients,
    batch_sharpness,
    summarized,
)
from lightning_spectral.functional.hessian.finite_difference import FiniteDifferenceHessian
from lightning_spectral.functional.hessian.hvp_graph import HVPGraph
from lightning_spectral.functional.hessian.operator import HVP_METHODS, HessianOperator, HVPMethod
from lightning_spectral.functional.hessian.spectrum import hessian_density, hessian_eigenvalues, hessian_trace
from lightning_spectral.linalg import WHICH, Which

#: The mode the model is measured in.
MeasurementMode = Literal["eval", "train"]
MEASUREMENT_MODES: tuple[MeasurementMode, ...] = get_args(MeasurementMode)
#: The default residual tolerance; ``eigenvalue_tol`` applies only at this ``tol`` or a looser one.
DEFAULT_TOL = 1e-3
SHARDED_PRODUCTS = ("auto", "gather", "finite_difference")
#: Layers whose kinks make finite-difference Hessian products unreliable (the sharded path warns on them).
PIECEWISE_LINEAR = (
    torch.nn.ReLU, torch.nn.ReLU6, torch.nn.LeakyReLU, torch.nn.PReLU, torch.nn.RReLU, torch.nn.Hardtanh,
    torch.nn.Hardswish, torch.nn.Hardsigmoid, torch.nn.MaxPool1d, torch.nn.MaxPool2d, torch.nn.MaxPool3d,
)  # fmt: skip


class HessianEigenMonitor(SpectralMonitor):
    """Top-k eigenvalues of the training-loss Hessian by Lanczos on exact Hessian-vector products.

    Logged under ``spectral/hessian/``: ``lambda_1 .. lambda_k`` (``lambda_1`` = λ_max, the sharpness),
    ``residual_max`` (the largest ``‖Hv − λv‖`` of the returned pairs), ``num_hvps``, ``eos_ratio`` (λ_max over
    the optimizer's stability limit: ``lr·λ_max/2`` for plain SGD; adaptive optimizers below),
    ``batch_sharpness`` (Andreyev & Beneventano: ``mean_B g_Bᵀ H_B g_B / ‖g_B‖²`` over the measurement batches; it
    sits at ``2/η`` at the edge of stochastic stability; ``batch_sharpness_std_error`` with two or more batches),
    ``batch_sharpness_ratio`` (``batch_sharpness`` over the same limit), ``trace`` and an eigenvalue-density figure when enabled. Under Adam / AdamW / Adamax / RAdam /
    NAdam / RMSprop / Adagrad / Adadelta also ``preconditioned_lambda_1``, ``λ_1(D⁻¹H)`` of the training-mode loss with the
    optimizer's preconditioner ``D`` (``D⁻¹(H + W)`` under coupled weight decay ``W``), and ``eos_ratio`` = that over the optimizer's limit: ``(2 + 2β₁)/((1 − β₁)η)``
    for the Adam family, its momentum schedule's for NAdam, ``(2 + 2μ)/η`` for RMSprop, ``2/η`` for Adagrad and
    Adadelta (the adaptive edge of stability, Cohen et
    al. 2022;
    :mod:`lightning_spectral.functional.hessian.adaptive_preconditioners`). Numerics: :mod:`lightning_spectral.functional`.

    Distributed: under DDP the products / traces are reduced over the ranks' shards; under ``ModelParallelStrategy``
    (FSDP2) the same runs on the gathered parameters (:mod:`~lightning_spectral.callbacks._internal.gathered_parameters`),
    or, for a model that does not fit gathered, on the shards with finite-difference products
    (``sharded_products``; :mod:`~lightning_spectral.functional.hessian.finite_difference`).

    Args:
        k: how many eigenvalues (``lambda_1 .. lambda_k``).
        every_n_steps: measure every n optimizer steps; default: the automatic schedule.
        every_n_epochs: measure at the end of every n-th epoch.
        log_spacing: also measure at steps 1, 2, 4, ... below ``every_n_steps``.
        at_train_start: measure the initial model.
        tol: Lanczos stops when every residual ``‖Hv − λv‖ ≤ tol·|λ|``, or (next argument) earlier.
        eigenvalue_tol: Lanczos also stops when every eigenvalue's a-posteriori error bound ``min(r, r²/δ)`` is
            ``≤ eigenvalue_tol·|λ|`` (``r`` the residual, ``δ`` the gap to the neighbouring Ritz values; see
            :func:`~lightning_spectral.linalg.lanczos`): the eigenvalue error is quadratic in the residual, so this
            takes fewer products than the residual test while the logged eigenvalues keep this accuracy (the
            eigenvectors, used only as the next warm start, are less accurate). Default ``1e-4``; ``None``: the
            residual test alone. Applied only while ``tol`` is at least its default ``1e-3``: a tighter ``tol``
            asks for accurate eigenpairs, and gets the residual test alone.
        max_matvecs: at most this many Hessian-vector products per eigenvalue solve.
        which: ``"LA"`` (largest, default), ``"SA"`` (most negative) or ``"LM"`` (largest magnitude).
        num_batches: measurement batches drawn at fit start; the Hessian is their average (more faithful
            full-batch curvature), and batch sharpness is averaged over them.
        loss_fn: ``loss_fn(pl_module, batch) -> scalar``; default: the module's own ``training_step``
            output (called with logging silenced).
        params: the older name of ``include`` (still accepted; pass one of the two).
        include: names / globs / module prefixes of the parameters whose Hessian is measured (default: all
            trainable). A pattern that matches no parameter raises ``ValueError`` at setup, naming it and the
            closest parameter names.
        exclude: names / globs / module prefixes of parameters left out of the selection (e.g. ``"*.bias"``),
            checked the same way.
        compute_trace: also log ``trace`` (Hutch++ with ``trace_num_matvecs`` products).
        trace_num_matvecs: products spent on the trace.
        compute_density: also log an eigenvalue-density figure (stochastic Lanczos quadrature).
        density_num_probes: probe vectors of the density.
        density_num_steps: Lanczos steps per probe of the density.
        compute_batch_sharpness: log ``batch_sharpness`` (one gradient and one single-batch product per
            measurement batch; the gradients come with the graphs λ_max's products use).
        compute_preconditioned: under Adam / AdamW / Adamax / RAdam / NAdam / RMSprop / Adagrad / Adadelta, also log ``preconditioned_lambda_1`` (one more Lanczos run
            on ``D^{-1/2} H D^{-1/2}``, warm-started like the first, always on the training-mode loss the
            optimizer's moments come from: with ``measurement_mode="eval"`` a second, train-mode operator is built for it)
            and ``eos_ratio`` relative to the optimizer's limit. Not logged before the optimizer's first step.
        warm_start: start Lanczos from the previous top eigenvectors.
        measurement_mode: ``"eval"`` (dropout off, BatchNorm on running statistics; default) or
            ``"train"`` (the stochastic training-mode loss, BatchNorm on batch statistics). The module's
            mode, buffers and RNG are restored afterwards either way.
        hvp_method: ``"double_backward"`` (default: the gradient graph is built once per measurement and each
            product is one more backward pass, faster than forward-over-reverse in the benchmarks, at the memory
            of one training step), ``"forward_over_reverse"`` (``torch.func``; keeps no graph between
            products) or ``"auto"`` (forward-over-reverse where ``torch.func`` can transform the loss).
        cuda_graphs: on CUDA, replay the Hessian-vector products of every measurement from CUDA graphs captured
            at the first one (:class:`~lightning_spectral.functional.HVPGraph`; one per loss: eval and train
            mode). Products of launch-bound models get several times cheaper; the graphs keep one copy of the
            parameters and batches and one product's activations on the GPU until the fit ends. For losses that
            are a function of parameters, buffers and batch tensors only (Python control flow is frozen at
            capture); losses that draw random numbers or cannot be captured are measured eagerly, with a
            warning. Default off; no effect on other devices.
        sharded_products: how a model whose parameters are sharded ``DTensor`` s (``ModelParallelStrategy``,
            FSDP2's ``fully_shard``) is measured. ``"gather"``: the parameters are gathered whole on every rank
            for the measurement and the exact products of ``hvp_method`` run as under DDP (memory: one unsharded
            copy of the model, whole-parameter Lanczos vectors, the gradient graph). ``"finite_difference"``:
            nothing is gathered; each product is the central difference of two gradients through the strategy's
            own sharded forward and backward, on vectors sharded like the parameters, with Lanczos' inner
            products all-reduced (:class:`~lightning_spectral.functional.hessian.finite_difference.FiniteDifferenceHessian`;
            two forward/backward passes per batch per product; ``hvp_method`` and ``cuda_graphs`` do not apply;
            relative accuracy of order ``u^(2/3)``, ``u`` the unit roundoff of the parameters' dtype, so a ``tol``
            below it is not met, on smooth activations only: a ReLU-family network's kinks make the differences
            unreliable, warned once; figures in ``benchmarks/RESULTS.md``, ``fd-hessian-accuracy``). ``"auto"``
            (default): ``"gather"`` when the parameters fit gathered -- the whole parameters plus ``max_matvecs + 4``
            whole vectors of the measured ones within half the memory available on every rank's device
            (:func:`~lightning_spectral.callbacks._internal.gathered_parameters.fits_gathered`) -- else
            ``"finite_difference"``; decided at the first measurement of each fit. No effect on other models.
        batch, seed, strict, max_overhead, name, auto_schedule_budget: see :class:`~lightning_spectral.callbacks.SpectralMonitor`.

    Raises:
        ValueError: an argument out of range (the message names it and what is allowed).

    Example::

        trainer = Trainer(callbacks=[HessianEigenMonitor(k=3, every_n_steps=100, compute_trace=True)])
    """

    monitor_name = "hessian"
    supports_dtensor_parameters = True  # FSDP2: measured on the gathered parameters (gathered_parameters)
    measures_gathered_parameters = True
    primary_metrics = ("lambda_1",)
    metric_summaries = {
        "lambda_*": "max",
        "preconditioned_lambda_1": "max",
        "eos_ratio": "max",
        "batch_sharpness": "max",
        "batch_sharpness_ratio": "max",
        "trace": "max",
    }

    @renamed_keywords(
        max_iter="max_matvecs",
        trace_matvecs="trace_num_matvecs",
        density_probes="density_num_probes",
        density_steps="density_num_steps",
    )
    def __init__(
        self,
        k: int = 1,
        *,
        every_n_steps: int | None = None,
        every_n_epochs: int | None = None,
        log_spacing: bool = False,
        at_train_start: bool = True,
        tol: float = DEFAULT_TOL,
        eigenvalue_tol: float | None = 1e-4,
        max_matvecs: int = 50,
        which: Which = "LA",
        num_batches: int = 1,
        loss_fn: LossFn | None = None,
        params: str | Sequence[str] | None = None,
        include: str | Sequence[str] | None = None,
        exclude: str | Sequence[str] | None = None,
        compute_trace: bool = False,
        trace_num_matvecs: int = 30,
        compute_density: bool = False,
        density_num_probes: int = 2,
        density_num_steps: int = 40,
        compute_batch_sharpness: bool = True,
        compute_preconditioned: bool = True,
        warm_start: bool = True,
        measurement_mode: MeasurementMode = "eval",
        hvp_method: HVPMethod = "double_backward",
        cuda_graphs: bool = False,
        sharded_products: str = "auto",
        batch: Any = None,
        seed: int = 0,
        strict: bool = False,
        max_overhead: float | None = None,
        name: str | None = None,
        auto_schedule_budget: float | None = None,
    ) -> None:
        super().__init__(
            every_n_steps=every_n_steps,
            every_n_epochs=every_n_epochs,
            log_spacing=log_spacing,
            at_train_start=at_train_start,
            batch=batch,
            num_batches=num_batches,
            seed=seed,
            strict=strict,
            max_overhead=max_overhead,
            name=name,
            auto_schedule_budget=auto_schedule_budget,
        )
        check_int("k", k, 1)
        check_int("max_matvecs", max_matvecs, 1)
        if max_matvecs < k:
            raise ValueError(
                f"`max_matvecs` must be >= `k` (Lanczos needs at least k steps for k eigenvalues), got "
                f"max_matvecs={max_matvecs}, k={k}."
            )
        check_int("trace_num_matvecs", trace_num_matvecs, 3)
        check_int("density_num_probes", density_num_probes, 1)
        check_int("density_num_steps", density_num_steps, 2)
        check_open_unit_interval("tol", tol)
        if eigenvalue_tol is not None:
            check_open_unit_interval("eigenvalue_tol", eigenvalue_tol)
        check_choice("which", which, WHICH)
        check_choice("measurement_mode", measurement_mode, MEASUREMENT_MODES)
        check_choice("hvp_method", hvp_method, HVP_METHODS)
        check_choice("sharded_products", sharded_products, SHARDED_PRODUCTS)
        check_callable("loss_fn", loss_fn)
        check_param_spec(params)
        check_param_spec(include, "include")
        check_param_spec(exclude, "exclude")
        self._include_argument, include = include_argument(params, include)
        check_bool("compute_trace", compute_trace)
        check_bool("compute_density", compute_density)
        check_bool("compute_batch_sharpness", compute_batch_sharpness)
        check_bool("compute_preconditioned", compute_preconditioned)
        check_bool("warm_start", warm_start)
        check_bool("cuda_graphs", cuda_graphs)
        self.k = k
        self.tol = tol
        self.eigenvalue_tol = eigenvalue_tol
        self.max_matvecs = max_matvecs
        self.which = which
        self.loss_fn = loss_fn
        self.params = include  # `include` under its older name
        self.include = include
        self.exclude = exclude
        self.compute_trace = compute_trace
        self.trace_num_matvecs = trace_num_matvecs
        self.compute_density = compute_density
        self.density_num_probes = density_num_probes
        self.density_num_steps = density_num_steps
        self.compute_batch_sharpness = compute_batch_sharpness
        self.compute_preconditioned = compute_preconditioned
        self.warm_start = warm_start
        self.measurement_mode = measurement_mode
        self.hvp_method = hvp_method
        self.cuda_graphs = cuda_graphs
        self.sharded_products = sharded_products
        self._gathers: bool | None = None  # the resolved sharded_products of this fit (True: gather)
        self._hvp_graph = HVPGraph() if cuda_graphs else None
        self._eigenvectors: torch.Tensor | None = None
        self._preconditioned_vector: torch.Tensor | None = None
        self._params = include
        self._warned_no_limit = False
        self._warned_sharded_moments = False
        self._warned_kinks = False

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._params = checked_param_patterns(
            pl_module,
            self.include,
            type(self).__name__,
            exclude=self.exclude,
            argument=self._include_argument,
        )
        self._gathers = None

    @override
    def gathers_parameters(self, pl_module: pl.LightningModule, collectives: MeasurementCollectives) -> bool:
        """``sharded_products`` resolved (``"auto"``: once per fit, the same on every rank)."""
        if self._gathers is None:
            if self.sharded_products == "auto":
                measured = sum(p.numel() for p in select_parameters(pl_module, self._params).values())
                self._gathers = fits_gathered(pl_module, measured, self.max_matvecs + 4, collectives)
            else:
                self._gathers = self.sharded_products == "gather"
        return self._gathers

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().teardown(trainer, pl_module, stage)
        self._release_graphs()

    @override
    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        super().on_exception(trainer, pl_module, exception)
        self._release_graphs()  # Lightning skips the callbacks' teardown after an exception

    def _release_graphs(self) -> None:
        if self._hvp_graph is not None:
            self._hvp_graph.release()  # the captured graphs' GPU memory

    @override
    def measure(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batches: list[Any]
    ) -> Mapping[str, float]:
        pl_module.train(self.measurement_mode == "train")
        loss_fn = resolve_loss_fn(pl_module, self.loss_fn)
        sharded = has_distributed_parameters(pl_module)  # not gathered: finite differences on the shards
        operator = (
            self._sharded_operator(pl_module, loss_fn, batches)
            if sharded
            else self._operator(pl_module, loss_fn, batches)
        )
        # The batch sharpness is the mean over the measurement batches of g_bᵀH_bg_b/‖g_b‖²: the gradients come
        # with the graphs the products build, if asked for before the first product, and each H_b g_b is a pass
        # through batch b's graph (not with CUDA-graph replays, which build no graphs: then separate operators).
        gradients = (
            operator.batch_gradients()
            if self.compute_batch_sharpness and (self._hvp_graph is None or sharded)
            else None
        )
        generator = self.make_generator(operator.device, per_rank=sharded)
        previous = self._eigenvectors if self.warm_start else None
        if previous is not None and previous.shape[0] != operator.dim:
            previous = None
        if sharded:  # every rank warm-starts or none does (a rank's stored shard may not fit after a resume)
            missing = torch.tensor([float(previous is None)], dtype=torch.float64, device=operator.device)
            if float(self.collectives.sum(missing)[0]) > 0:
                previous = None
        result = hessian_eigenvalues(
            k=min(self.k, operator.size),
            which=self.which,
            tol=self.tol,
            eigenvalue_tol=self._eigenvalue_tol(),
            max_matvecs=self.max_matvecs,
            v0=previous,
            generator=generator,
            operator=operator,
        )
        self._eigenvectors = result.eigenvectors.detach().clone()
        values: dict[str, float] = {
            f"lambda_{i}": float(v) for i, v in enumerate(result.eigenvalues.tolist(), 1)
        }
        values["residual_max"] = float(result.residuals.max())
        values["num_hvps"] = float(result.num_hvps)
        # the operator's parameters, in its flattening order
        parameters = [self.trained_parameter(p) for p in select_parameters(pl_module, self._params).values()]
        settings, why = resolved_sgd_settings(trainer, parameters)
        if why and not self._warned_no_limit:
            self._warned_no_limit = True
            rank_zero_warn(
                f"HessianEigenMonitor: no stability limit for the measured parameters ({why}), so the stability "
                "ratios (`eos_ratio`, `batch_sharpness_ratio`; under adaptive optimizers `preconditioned_lambda_1`) "
                "are not logged. Pass `params=` the parameters one optimizer steps with one learning rate to get them."
            )
        limit = settings.stability_limit() if settings and settings.lr > 0 else None
        if limit is not None and self.which == "LA":
            values["eos_ratio"] = values["lambda_1"] / limit
        if self.compute_batch_sharpness:
            if gradients is not None:
                sharpness = summarized(batch_rayleigh_quotients(operator, gradients))
                del gradients
            else:
                sharpness = batch_sharpness(
                    pl_module,
                    loss_fn,
                    batches,
                    params=self._params,
                    hvp_method=self.hvp_method,
                    reduce_fn=self.collectives.mean,
                )
            if not math.isnan(sharpness.value):
                values["batch_sharpness"] = sharpness.value
                if not math.isnan(sharpness.std_error):  # two or more batches with a gradient
                    values["batch_sharpness_std_error"] = sharpness.std_error
                if limit is not None:
                    values["batch_sharpness_ratio"] = sharpness.value / limit
        if self.compute_trace:
            trace = hessian_trace(num_matvecs=self.trace_num_matvecs, generator=generator, operator=operator)
            values["trace"] = trace.estimate
            values["trace_std_error"] = trace.std_error
        if self.compute_density:
            density = hessian_density(
                num_probes=self.density_num_probes,
                num_steps=self.density_num_steps,
                generator=generator,
                operator=operator,
            )
            from lightning_spectral._internal.plotting import density_figure

            self.log_figure(trainer, "density", density_figure(density, step=trainer.global_step))
        if self.compute_preconditioned:
            # the optimizer's moments come from the training-mode loss: reuse the operator only if it is that loss
            # (the eval-mode graph is dropped first, so that two graphs are never held at once).
            train_operator = operator if self.measurement_mode == "train" else None
            del operator
            values.update(
                self._preconditioned_sharpness(
                    trainer, pl_module, loss_fn, batches, parameters, train_operator, generator
                )
            )
        return values

    def _eigenvalue_tol(self) -> float | None:
        """``eigenvalue_tol``, unless a ``tol`` tighter than the default asks for accurate eigenpairs."""
        return self.eigenvalue_tol if self.tol >= DEFAULT_TOL else None

    def _operator(
        self, pl_module: pl.LightningModule, loss_fn: LossFn, batches: list[Any]
    ) -> HessianOperator:
        """The Hessian operator of the measurement batches' average loss, in the module's current mode."""
        return HessianOperator.from_batches(
            pl_module,
            loss_fn,
            batches,
            params=self._params,
            method=self.hvp_method,
            reduce_fn=self.collectives.mean,  # DDP: the Hessian of the loss on the union of the shards
            copy_params=False,  # used and dropped within this hook: nothing steps the model meanwhile
            hvp_graph=self._hvp_graph,
        )

    def _sharded_operator(
        self, pl_module: Any, loss_fn: LossFn, batches: list[Any]
    ) -> FiniteDifferenceHessian:
        """Finite-difference products through the sharded module: FSDP2's reduce-scatter averages the ranks'
        gradients (the Hessian of the mean loss of the ranks' shards, as under DDP); inner products all-reduced.
        """
        kinked = sorted({type(m).__name__ for m in pl_module.modules() if isinstance(m, PIECEWISE_LINEAR)})
        if kinked and not self._warned_kinks:
            self._warned_kinks = True
            rank_zero_warn(
                f"HessianEigenMonitor: sharded_products='finite_difference' on a model with {', '.join(kinked)}: "
                "finite differences of the gradient cross the kinks of piecewise-linear layers, which can make the "
                "products wrong by orders of magnitude (benchmarks/RESULTS.md, fd-hessian-accuracy). The path is "
                "meant for smooth activations; use sharded_products='gather' (exact products) if the model fits."
            )
        return FiniteDifferenceHessian(
            pl_module, loss_fn, batches, params=self._params, shard_sum=self.collectives.sum
        )

    def _preconditioned_sharpness(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        loss_fn: LossFn,
        batches: list[Any],
        parameters: list[torch.Tensor],
        operator: HessianOperator | FiniteDifferenceHessian | None,
        generator: torch.Generator,
    ) -> dict[str, float]:
        """``preconditioned_lambda_1`` and its ``eos_ratio`` under Adam / AdamW / Adamax / RAdam / NAdam / RMSprop / Adagrad / Adadelta once it has stepped, on the
        training-mode loss (``operator`` if given, else built here with the module in train mode): with
        BatchNorm, a parameter the training loss does not depend on (a bias right before BatchNorm) gets no
        gradient, so ``D`` is ``≈ ε`` there, while the eval-mode loss has curvature along it, which
        ``D⁻¹`` would inflate by ``1/ε``.
        """
        optimizer = first_optimizer(trainer)
        if has_preconditioner_rule(optimizer) and has_distributed_parameters(parameters):
            if not self._warned_sharded_moments:
                self._warned_sharded_moments = True
                rank_zero_warn(
                    "HessianEigenMonitor: `preconditioned_lambda_1` is not measured under sharded (DTensor) "
                    "parameters: the optimizer's moments that make the preconditioner are sharded too. lambda_k, "
                    "trace, density, batch sharpness and the SGD `eos_ratio` are measured; use strategy='ddp' for "
                    "the preconditioned sharpness."
                )
            return {}
        step = None if optimizer is None else adaptive_preconditioning(optimizer, parameters)
        if step is None:
            return {}
        if operator is None:
            pl_module.train(True)
            operator = self._operator(pl_module, loss_fn, batches)
        previous = self._preconditioned_vector if self.warm_start else None
        if previous is not None and previous.shape[0] != operator.dim:
            previous = None
        result = hessian_eigenvalues(
            k=1,
            tol=self.tol,
            eigenvalue_tol=self._eigenvalue_tol(),
            max_matvecs=self.max_matvecs,
            v0=previous,
            generator=generator,
            operator=operator,
            preconditioner=step.diagonal,
            weight_decay=step.weight_decay,
        )
        self._preconditioned_vector = result.eigenvectors.detach().clone()
        value = float(result.eigenvalues[0])
        return {"preconditioned_lambda_1": value, "eos_ratio": value / step.limit}

    @override
    def extra_state(self) -> dict[str, Any]:
        return {
            "eigenvectors": None if self._eigenvectors is None else self._eigenvectors.cpu(),
            "preconditioned_vector": None
            if self._preconditioned_vector is None
            else self._preconditioned_vector.cpu(),
        }

    @override
    def load_extra_state(self, state: dict[str, Any]) -> None:
        vectors = state.get("eigenvectors")
        self._eigenvectors = vectors
        self._preconditioned_vector = state.get("preconditioned_vector")
