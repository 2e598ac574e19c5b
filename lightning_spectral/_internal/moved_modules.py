"""Old module paths of the package, kept importable after the modules moved into domain folders."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

from typing_extensions import override

# old module path -> where the module lives now
MOVED_MODULES: dict[str, str] = {
    "lightning_spectral.validation": "lightning_spectral._internal.validation",
    "lightning_spectral.full_precision": "lightning_spectral._internal.full_precision",
    "lightning_spectral.eager_execution": "lightning_spectral._internal.eager_execution",
    "lightning_spectral.differentiable_kernels": "lightning_spectral._internal.differentiable_kernels",
    "lightning_spectral.anomaly_mode": "lightning_spectral._internal.anomaly_mode",
    "lightning_spectral.plotting": "lightning_spectral._internal.plotting",
    "lightning_spectral.callbacks.training_state_guard": "lightning_spectral.callbacks._internal.training_state_guard",
    "lightning_spectral.callbacks.collectives": "lightning_spectral.callbacks._internal.collectives",
    "lightning_spectral.callbacks.measurement_batch": "lightning_spectral.callbacks._internal.measurement_batch",
    "lightning_spectral.callbacks.stopping_criterion": "lightning_spectral.callbacks._internal.stopping_criterion",
    "lightning_spectral.callbacks.optimizer_info": "lightning_spectral.callbacks._internal.optimizer_info",
    "lightning_spectral.callbacks.new_measurements": "lightning_spectral.callbacks._internal.new_measurements",
    "lightning_spectral.callbacks.overhead_budget": "lightning_spectral.callbacks._internal.overhead_budget",
    "lightning_spectral.callbacks.metric_logging": "lightning_spectral.callbacks._internal.metric_logging",
    "lightning_spectral.callbacks.half_precision_upcast": "lightning_spectral.callbacks._internal.half_precision_upcast",
    "lightning_spectral.callbacks.parameter_patterns": "lightning_spectral.callbacks._internal.parameter_patterns",
    "lightning_spectral.callbacks.batch_parts": "lightning_spectral.callbacks._internal.batch_parts",
    "lightning_spectral.callbacks.training_loss": "lightning_spectral.callbacks._internal.training_loss",
    "lightning_spectral.callbacks.auto_schedule": "lightning_spectral.callbacks._internal.auto_schedule",
    "lightning_spectral.callbacks.gathered_parameters": "lightning_spectral.callbacks._internal.gathered_parameters",
    "lightning_spectral.functional.parameter_selection": "lightning_spectral.functional._common.parameter_selection",
    "lightning_spectral.functional.model_io": "lightning_spectral.functional._common.model_io",
    "lightning_spectral.functional.hessian_operator": "lightning_spectral.functional.hessian.operator",
    "lightning_spectral.functional.hessian_spectrum": "lightning_spectral.functional.hessian.spectrum",
    "lightning_spectral.functional.hvp_graph": "lightning_spectral.functional.hessian.hvp_graph",
    "lightning_spectral.functional.gradient_graphs": "lightning_spectral.functional.hessian.gradient_graphs",
    "lightning_spectral.functional.replayed_randomness": "lightning_spectral.functional.hessian.replayed_randomness",
    "lightning_spectral.functional.batch_sharpness": "lightning_spectral.functional.hessian.batch_sharpness",
    "lightning_spectral.functional.edge_of_stability": "lightning_spectral.functional.hessian.edge_of_stability",
    "lightning_spectral.functional.adaptive_preconditioners": "lightning_spectral.functional.hessian.adaptive_preconditioners",
    "lightning_spectral.functional.ntk_alignment": "lightning_spectral.functional.ntk.alignment",
    "lightning_spectral.functional.ntk_eigenvalues": "lightning_spectral.functional.ntk.eigenvalues",
    "lightning_spectral.functional.ntk_matrix": "lightning_spectral.functional.ntk.kernel_matrix",
    "lightning_spectral.functional.ntk_trace": "lightning_spectral.functional.ntk.trace",
    "lightning_spectral.functional.model_jacobian": "lightning_spectral.functional.ntk.model_jacobian",
    "lightning_spectral.functional.per_example_gradient_norms": "lightning_spectral.functional.ntk.per_example_gradient_norms",
    "lightning_spectral.functional.sgd_stability": "lightning_spectral.functional.ntk.sgd_stability",
    "lightning_spectral.functional.weight_spectrum": "lightning_spectral.functional.weights.spectrum",
    "lightning_spectral.functional.weight_matrices": "lightning_spectral.functional.weights.matrices",
    "lightning_spectral.functional.singular_refinement": "lightning_spectral.functional.weights.singular_refinement",
    "lightning_spectral.functional.spectrum_metrics": "lightning_spectral.functional.weights.spectrum_metrics",
    "lightning_spectral.functional.power_law": "lightning_spectral.functional.weights.power_law",
    "lightning_spectral.functional.farms": "lightning_spectral.functional.weights.farms",
    "lightning_spectral.functional.singular_dynamics": "lightning_spectral.functional.weights.singular_dynamics",
    "lightning_spectral.functional.interlayer_alignment": "lightning_spectral.functional.weights.interlayer_alignment",
}


class _MovedModuleLoader(importlib.abc.Loader):
    """Loads an old path as the module at its new path (the same module object, not a copy)."""

    def __init__(self, new_name: str) -> None:
        self.new_name = new_name
        self.new_spec: importlib.machinery.ModuleSpec | None = None

    @override
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(
            f"{spec.name} moved to {self.new_name}; import it from there (the old path will be removed)",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(self.new_name)
        self.new_spec = module.__spec__
        return module

    @override
    def exec_module(self, module: ModuleType) -> None:
        # the import system set the old path's spec on the module object; give it back its own
        module.__spec__ = self.new_spec


class _MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Finds the old path of a moved module (and nothing else)."""

    @override
    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        new_name = MOVED_MODULES.get(fullname)
        if new_name is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _MovedModuleLoader(new_name))


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
