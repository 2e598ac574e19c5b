"""``NTKTraceMonitor``: the trace of the empirical NTK and the stochastic edge of stability during fit."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence, Sized
from typing import Any, get_args

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from typing_extensions import override

from lightning_spectral._internal.validation import (
    check_bool,
    check_callable,
    check_choice,
    check_int,
    check_open_unit_interval,
    check_positive_finite,
)
from lightning_spectral.callbacks._internal.batch_parts import (
    BatchFn,
    InputFn,
    OutputFn,
    concatenated,
    default_inputs,
    default_targets,
    model_call,
)
from lightning_spectral.callbacks._internal.collectives import (
    MeasurementCollectives,
    has_distributed_parameters,
)
from lightning_spectral.callbacks._internal.gathered_parameters import fits_gathered
from lightning_spectral.callbacks._internal.optimizer_info import resolved_sgd_settings, training_batch_size
from lightning_spectral.callbacks._internal.parameter_patterns import (
    check_param_spec,
    checked_param_patterns,
    include_argument,
)
from lightning_spectral.callbacks._internal.training_loss import loss_functions_called
from lightning_spectral.callbacks.base import SpectralMonitor
from lightning_spectral.functional._common.parameter_selection import select_parameters
from lightning_spectral.functional.ntk.alignment import kernel_alignments, ntk_targets
from lightning_spectral.functional.ntk.eigenvalues import ntk_lambda_max
from lightning_spectral.functional.ntk.kernel_matrix import ntk_matrix
from lightning_spectral.functional.ntk.output_probes import output_probe_trace
from lightning_spectral.functional.ntk.per_example_gradient_norms import LayerwiseChecks
from lightning_spectral.functional.ntk.sgd_stability import sgd_stability
from lightning_spectral.functional.ntk.trace import NTKTraceMethod, ntk_trace

NTK_METHODS: tuple[NTKTraceMethod, ...] = get_args(NTKTraceMethod)
SHARDED_PRODUCTS = ("auto", "gather", "sharded")
#: The methods that run on a sharded model without gathering it.
SHARDED_METHODS = ("auto", "output_probes")


class NTKTraceMonitor(SpectralMonitor):
    """Trace (and optionally top eigenvalue and label alignment) of the empirical NTK on a schedule.

    Logged under ``spectral/ntk/``: ``trace`` (``tr Θ = Σ_i Σ_k ‖∂f_k(x_i)/∂θ‖²`` over the measurement batch),
    ``trace_per_example`` (``tr Θ / n``), ``trace_std_error`` (stochastic methods), ``lambda_max`` and
    ``alignment`` / ``alignment_centered`` / ``alignment_offdiagonal`` when enabled, ``sgd_stability_exact`` with
    ``compute_spectrum=True``, and ``sgd_stability``, the
    noise-kernel norm 𝒦 of Agarwala & Pennington (2024) for the run's learning rate and training batch size (``≥ 1`` marks the stochastic edge of stability; see
    :mod:`lightning_spectral.functional.ntk.sgd_stability` for the formula and its assumptions: MSE loss,
    ``torch.optim.SGD`` (momentum, Nesterov, dampening and the first param group's coupled weight decay included),
    linearized model). The measurement runs in eval mode (the per-example Jacobians need examples that do not
    interact, so BatchNorm uses its running statistics and dropout is off).

    Distributed: under DDP the products / traces are reduced over the ranks' shards; under ``ModelParallelStrategy``
    (FSDP2) the same runs on the gathered parameters (:mod:`~lightning_spectral.callbacks._internal.gathered_parameters`),
    or, for a model that does not fit gathered, the trace comes from output-space probes through the sharded module
    (``sharded_products``; :mod:`~lightning_spectral.functional.ntk.output_probes`).

    Args:
        every_n_steps: measure every n optimizer steps; default: the automatic schedule.
        every_n_epochs: measure at the end of every n-th epoch.
        log_spacing: also measure at steps 1, 2, 4, ... below ``every_n_steps``.
        at_train_start: measure the initial model.
        method: ``"auto"`` (exact when ``K ≤ num_probes`` or ``B·K ≤ 128``, else Hutchinson, with at most 2
            probes above 65,536 outputs per example), ``"exact"``,
            ``"hutchinson"``, ``"hutchpp"`` (see :func:`lightning_spectral.functional.ntk.trace`), or
            ``"output_probes"`` (``E‖Jᵀu‖²`` with whole-batch probes, one backward pass of the model's own per
            probe: :mod:`lightning_spectral.functional.ntk.output_probes`). On the sharded path
            (``sharded_products``) only ``"output_probes"`` runs, and ``"auto"`` picks it.
        num_probes: probes of the stochastic methods.
        compute_alignment: log the kernel-target alignment ``⟨Θ, yyᵀ⟩_F / (‖Θ‖_F ‖yyᵀ‖_F)`` and its centered
            form ``alignment_centered`` (both kernels centered, ``HΘH`` with ``H = I − 11ᵀ/N``; Cortes et al.
            2012) and ``alignment_offdiagonal`` (the correlation, over pairs of distinct examples, of the
            output-traced kernel with the targets' Gram matrix: do examples that share a label have similar
            gradients? Needs a measurement batch with repeated labels) from the same kernel (forms the
            ``B·K × B·K`` kernel: small measurement batches only). Each is logged where it is defined
            (:func:`~lightning_spectral.functional.ntk.alignment.kernel_alignments`).
        compute_lambda_max: log the top NTK eigenvalue (Lanczos on ``J Jᵀ`` products, warm-started).
        compute_spectrum: form the ``B·K × B·K`` kernel (as the alignment does; small measurement batches only)
            and take all its eigenvalues (``eigvalsh``, float64): ``lambda_max`` is then the exact top
            eigenvalue (no Lanczos), and ``sgd_stability_exact`` the exact noise-kernel norm 𝒦 from the whole
            spectrum, which the logged bounds bracket (SGD only, below the mean's edge).
        lambda_max_tol: relative residual tolerance of that Lanczos.
        chunk_size: examples per vectorized chunk of per-example gradients, for parameters outside linear and
            convolution layers, and of the Jacobian when the kernel is formed (``None``: memory-bounded).
        loss_scale: the training loss over ``(1/(2B)) Σ ‖f − y‖²`` for ``sgd_stability``; ``None`` means
            ``torch.nn.MSELoss()`` (mean over ``B·K`` entries), i.e. ``2/K``.
        input_fn: ``batch -> inputs``, a tensor or a mapping of keyword arguments (default: the batch tensor,
            its first element, its ``"input"`` / ``"inputs"`` / ``"x"`` entry, or, for another mapping such as
            a Hugging Face batch, the entries the model's ``forward`` takes, label entries left out).
        target_fn: ``batch -> targets`` for the alignment (default: the second element or a target key).
        output_fn: ``(model, inputs) -> outputs`` (default: the module, or the one model a module without
            ``forward`` wraps, called on the inputs, its output reduced to its logits: a ``ModelOutput`` /
            dict gives ``"logits"``, a tuple its first batch-sized floating-point tensor; rules in
            :mod:`lightning_spectral.functional._common.model_io` and
            :func:`~lightning_spectral.callbacks._internal.batch_parts.model_call`). Sequence outputs ``(B, T, V)`` count
            ``K = T·V`` outputs per example: the trace sums ``‖∂f_{t,v}/∂θ‖²`` over every position ``t``
            (those with ``attention_mask`` 1 when the batch has one) and every entry ``v``; ``method="auto"``
            then picks per-example Hutchinson, whose backward passes (2 probes) do not grow with ``T·V``.
        params: the older name of ``include`` (still accepted; pass one of the two).
        include: names / globs / module prefixes of the parameters whose NTK is measured,
            ``Θ = Σ_{θ ∈ include} (∂f/∂θ)(∂f/∂θ)ᵀ`` (default: all trainable; e.g. ``"head.*"`` for the kernel of
            the read-out alone). A pattern that matches no parameter raises ``ValueError`` at setup, naming it
            and the closest parameter names.
        exclude: names / globs / module prefixes of parameters left out of the selection, checked the same way.
        sharded_products: how a model whose parameters are sharded ``DTensor`` s (``ModelParallelStrategy``,
            FSDP2's ``fully_shard``) is measured. ``"gather"``: the parameters are gathered whole on every rank
            for the measurement and every method runs as under DDP. ``"sharded"``: nothing is gathered; the trace
            comes from output-space probes through the strategy's own forward and backward (``method`` ``"auto"``
            or ``"output_probes"``; the others need per-example gradients of whole parameters, and
            ``compute_lambda_max`` / ``compute_alignment`` / ``compute_spectrum`` need the whole Jacobian: refused
            with ``ValueError``). ``"auto"`` (default): ``"gather"`` when the whole parameters (plus two whole
            vectors) take at most half the memory available on every rank's device
            (:func:`~lightning_spectral.callbacks._internal.gathered_parameters.fits_gathered`), else
            ``"sharded"``; decided at the first measurement of each fit. No effect on other models.
        batch, num_batches, seed, strict, max_overhead, name, auto_schedule_budget: see :class:`~lightning_spectral.callbacks.SpectralMonitor`.

    Raises:
        ValueError: an argument out of range (the message names it and what is allowed).

    Example::

        trainer = Trainer(callbacks=[NTKTraceMonitor(every_n_steps=100, compute_alignment=True)])
    """

    monitor_name = "ntk"
    supports_dtensor_parameters = True  # FSDP2: measured on the gathered parameters (gathered_parameters)
    measures_gathered_parameters = True
    primary_metrics = ("trace", "trace_per_example")
    metric_summaries = {"trace*": "max", "lambda_max": "max", "sgd_stability*": "max", "alignment*": "max"}

    def __init__(
        self,
        *,
        every_n_steps: int | None = None,
        every_n_epochs: int | None = None,
        log_spacing: bool = False,
        at_train_start: bool = True,
        method: NTKTraceMethod = "auto",
        num_probes: int = 8,
        compute_alignment: bool = False,
        compute_lambda_max: bool = False,
        compute_spectrum: bool = False,
        lambda_max_tol: float = 1e-3,
        chunk_size: int | None = None,
        loss_scale: float | None = None,
        input_fn: InputFn | None = None,
        target_fn: BatchFn | None = None,
        output_fn: OutputFn | None = None,
        params: str | Sequence[str] | None = None,
        include: str | Sequence[str] | None = None,
        exclude: str | Sequence[str] | None = None,
        sharded_products: str = "auto",
        batch: Any = None,
        num_batches: int = 1,
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
        check_choice("method", method, NTK_METHODS)
        check_choice("sharded_products", sharded_products, SHARDED_PRODUCTS)
        if sharded_products == "sharded":
            self._check_sharded(method, compute_lambda_max, compute_alignment, compute_spectrum)
        check_int("num_probes", num_probes, 3 if method == "hutchpp" else 1)
        check_bool("compute_alignment", compute_alignment)
        check_bool("compute_lambda_max", compute_lambda_max)
        check_bool("compute_spectrum", compute_spectrum)
        check_open_unit_interval("lambda_max_tol", lambda_max_tol)
        if chunk_size is not None:
            check_int("chunk_size", chunk_size, 1)
        if loss_scale is not None:
            check_positive_finite("loss_scale", loss_scale)
        for name, fn in (("input_fn", input_fn), ("target_fn", target_fn), ("output_fn", output_fn)):
            check_callable(name, fn)
        check_param_spec(params)
        check_param_spec(include, "include")
        check_param_spec(exclude, "exclude")
        self._include_argument, include = include_argument(params, include)
        self.method = method
        self.sharded_products = sharded_products
        self._gathers: bool | None = None  # the resolved sharded_products of this fit (True: gather)
        self.num_probes = num_probes
        self.compute_alignment = compute_alignment
        self.compute_lambda_max = compute_lambda_max
        self.compute_spectrum = compute_spectrum
        self.lambda_max_tol = lambda_max_tol
        self.chunk_size = chunk_size
        self.loss_scale = loss_scale
        self.input_fn = input_fn or default_inputs
        self.target_fn = target_fn or default_targets
        self.output_fn = output_fn
        self._user_input_fn = input_fn
        # (batch -> tensor, (module, tensor) -> outputs), found from the first measurement batch of a fit
        self._model_call: tuple[BatchFn, OutputFn] | None = None
        self.params = include  # `include` under its older name
        self.include = include
        self.exclude = exclude
        self._params = include
        self._lambda_max_vector: torch.Tensor | None = None
        self._warned_stability = False
        self._checked_loss = False  # whether training_step's loss was looked at (the MSE warning, once)
        # the per-example check of the layer-wise norms: once per fit (same model, same fixed batch)
        self._layerwise_checks = LayerwiseChecks()

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
        self._layerwise_checks.clear()  # a new fit may bring a new model
        self._model_call = None
        self._gathers = None

    @staticmethod
    def _check_sharded(method: str, lambda_max: bool, alignment: bool, spectrum: bool) -> None:
        """``ValueError`` for what the sharded path (no gathering) cannot measure, naming what can."""
        if method not in SHARDED_METHODS:
            raise ValueError(
                f"`method`={method!r} needs per-example gradients of the whole parameters, which the sharded path "
                f"(sharded_products='sharded', no gathering) does not have: use method='output_probes' (or 'auto', "
                "which picks it there), or sharded_products='gather' for every method."
            )
        asked = [f"`{name}`" for name, on in (("compute_lambda_max", lambda_max), ("compute_alignment", alignment),
                                              ("compute_spectrum", spectrum)) if on]  # fmt: skip
        if asked:
            raise ValueError(
                f"{', '.join(asked)} need the whole Jacobian (kernel products or the kernel matrix), which the "
                "sharded path (no gathering) does not have: pass sharded_products='gather', or leave them off "
                "(the trace and sgd_stability are measured on the shards)."
            )

    @override
    def gathers_parameters(self, pl_module: pl.LightningModule, collectives: MeasurementCollectives) -> bool:
        """``sharded_products`` resolved (``"auto"``: once per fit, the same on every rank)."""
        if self._gathers is None:
            if self.sharded_products == "auto":
                measured = sum(p.numel() for p in select_parameters(pl_module, self._params).values())
                self._gathers = fits_gathered(pl_module, measured, 2, collectives)
                if not self._gathers:
                    self._check_sharded(
                        self.method, self.compute_lambda_max, self.compute_alignment, self.compute_spectrum
                    )
            else:
                self._gathers = self.sharded_products == "gather"
        return self._gathers

    @override
    def measure(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batches: list[Any]
    ) -> Mapping[str, float]:
        pl_module.eval()
        if self._model_call is None:
            self._model_call = model_call(pl_module, batches[0], self._user_input_fn, self.output_fn)
        input_fn, output_fn = self._model_call
        inputs = concatenated(batches, input_fn)
        device = next(pl_module.parameters()).device
        if has_distributed_parameters(pl_module):  # the sharded path (not gathered): output-space probes
            result = output_probe_trace(
                pl_module,
                inputs,
                num_probes=self.num_probes,
                output_fn=output_fn,
                params=self._params,
                generator=self.make_generator(device, per_rank=True),
                shard_sum=self.collectives.sum,
                gradient_scale=float(
                    self.collectives.world_size
                ),  # FSDP2's reduce-scatter averages the ranks
            )
            values = {"trace": result.trace, "trace_per_example": result.trace / result.num_examples}
            values["trace_std_error"] = result.std_error
            values.update(
                self._stability(
                    trainer, pl_module, result.trace, None, result.num_examples, result.num_outputs, None
                )
            )
            if "sgd_stability" in values:
                self._check_mse(pl_module, batches[0])
            return values
        result = ntk_trace(
            pl_module,
            inputs,
            method=self.method,
            num_probes=self.num_probes,
            output_fn=output_fn,
            chunk_size=self.chunk_size,
            params=self._params,
            generator=self.make_generator(device),
            reduce_fn=self.collectives.sum,  # DDP: traces add over the ranks' disjoint shards
            layerwise_checks=self._layerwise_checks,
        )
        values = {"trace": result.trace, "trace_per_example": result.trace / result.num_examples}
        if result.method_used != "exact":
            values["trace_std_error"] = result.std_error
        # λ_max, the spectrum and the alignment need the kernel of the union of the shards, cross-rank entries
        # included: every rank computes them on the gathered inputs (identity on one process).
        if self.compute_lambda_max or self.compute_alignment or self.compute_spectrum:
            inputs = self.collectives.gather(inputs)
        kernel = None
        if self.compute_alignment or self.compute_spectrum:  # one kernel for both
            kernel = ntk_matrix(
                pl_module, inputs, output_fn=output_fn, params=self._params, chunk_size=self.chunk_size
            )
        eigenvalues = None
        if kernel is not None and self.compute_spectrum:
            # J Jᵀ is PSD: negative eigenvalues are the rounding of the (float32) kernel
            eigenvalues = torch.linalg.eigvalsh(kernel.double()).clamp_min(0.0)
        lambda_max = None
        if eigenvalues is not None:
            lambda_max = float(eigenvalues[-1])
        elif self.compute_lambda_max:
            lambda_max = self._lambda_max(
                pl_module, inputs, device, result.num_examples * result.num_outputs, output_fn
            )
        if lambda_max is not None:
            values["lambda_max"] = lambda_max
        if kernel is not None and self.compute_alignment:
            num_examples = inputs.shape[0]
            targets = self.collectives.gather(concatenated(batches, self.target_fn))
            y = ntk_targets(targets, num_examples, kernel.shape[0] // num_examples)
            values.update(kernel_alignments(kernel, y, num_examples))  # those defined for these targets
        del kernel
        values.update(
            self._stability(
                trainer,
                pl_module,
                result.trace,
                lambda_max,
                result.num_examples,
                result.num_outputs,
                eigenvalues,
            )
        )
        if "sgd_stability" in values:
            self._check_mse(pl_module, batches[0])
        return values

    def _check_mse(self, pl_module: pl.LightningModule, batch: Any) -> None:
        """Once: warn when ``training_step`` computes a loss other than MSE (the loss functions it calls), as
        ``sgd_stability`` assumes MSE. Not with ``loss_scale`` given (the user chose the MSE scale), nor under
        manual optimization (``training_step`` steps the optimizer).
        """
        if (
            self._checked_loss
            or self.loss_scale is not None
            or not getattr(pl_module, "automatic_optimization", True)
        ):
            return
        self._checked_loss = True
        try:
            called = loss_functions_called(pl_module, batch)
        except Exception:  # the check is advice only: a training_step that cannot run here gives none
            return
        others = [name for name in called if name != "mse_loss"]
        if others:
            rank_zero_warn(
                f"NTKTraceMonitor: `spectral/ntk/sgd_stability` assumes the MSE loss (1/(2B)) Σ ‖f − y‖² scaled "
                f"by `loss_scale`, but this module's training_step calls {', '.join(others)}: the logged value "
                "is the noise-kernel norm of an MSE run with this kernel, learning rate and batch size, not of "
                "this run's loss. Pass `loss_scale=` to state the MSE scale you compare with (and silence this)."
            )

    def _lambda_max(
        self,
        pl_module: pl.LightningModule,
        inputs: torch.Tensor,
        device: torch.device,
        dim: int,
        output_fn: OutputFn,
    ) -> float:
        v0 = (
            self._lambda_max_vector
            if self._lambda_max_vector is not None and self._lambda_max_vector.numel() == dim
            else None
        )
        eigen = ntk_lambda_max(
            pl_module,
            inputs,
            k=1,
            tol=self.lambda_max_tol,
            v0=v0.to(device) if v0 is not None else None,
            output_fn=output_fn,
            params=self._params,
            generator=self.make_generator(device),
        )
        self._lambda_max_vector = eigen.eigenvectors[:, 0].detach().clone()
        return float(eigen.eigenvalues[0])

    def _stability(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        trace: float,
        lambda_max: float | None,
        num_examples: int,
        num_outputs: int,
        eigenvalues: torch.Tensor | None,
    ) -> dict[str, float]:
        parameters = [self.trained_parameter(p) for p in select_parameters(pl_module, self._params).values()]
        settings, why = resolved_sgd_settings(trainer, parameters)
        batch_size = training_batch_size(trainer)
        if settings is None or batch_size is None:
            if not self._warned_stability:
                self._warned_stability = True
                rank_zero_warn(
                    "NTKTraceMonitor: `spectral/ntk/sgd_stability` is defined for torch.optim.SGD (with or without "
                    "momentum) stepping the measured parameters with one learning rate, with a known training "
                    f"batch size, so it is not logged for this run{f' ({why})' if why else ''}."
                )
            return {}
        if settings.lr <= 0:
            return {}
        global_batch = batch_size * trainer.world_size * trainer.accumulate_grad_batches
        dataset = getattr(trainer.train_dataloader, "dataset", None)
        dataset_size = len(dataset) if isinstance(dataset, Sized) else None
        stability_of = functools.partial(
            sgd_stability,
            lr=settings.lr,
            batch_size=global_batch,
            ntk_num_examples=num_examples,
            num_outputs=num_outputs,
            dataset_size=dataset_size if dataset_size is not None and dataset_size >= global_batch else None,
            loss_scale=self.loss_scale if self.loss_scale is not None else 2.0 / num_outputs,
            momentum=settings.momentum,
            nesterov=settings.nesterov,
            dampening=settings.dampening,
            weight_decay=settings.weight_decay,
        )
        stability = stability_of(ntk_trace=trace, ntk_lambda_max=lambda_max)
        values = {"sgd_stability": stability.noise_kernel_norm_lower}
        if lambda_max is not None and math.isfinite(stability.noise_kernel_norm_upper):
            # infinite once η·λ̂_max ≥ 2 (the mean itself is past its edge): not logged then
            values["sgd_stability_upper"] = stability.noise_kernel_norm_upper
        if eigenvalues is not None:
            exact = stability_of(ntk_eigenvalues=eigenvalues).noise_kernel_norm
            if exact is not None and math.isfinite(exact):  # likewise infinite past the mean's edge
                values["sgd_stability_exact"] = exact
        return values

    @override
    def extra_state(self) -> dict[str, Any]:
        return {
            "lambda_max_vector": None if self._lambda_max_vector is None else self._lambda_max_vector.cpu()
        }

    @override
    def load_extra_state(self, state: dict[str, Any]) -> None:
        self._lambda_max_vector = state.get("lambda_max_vector")
