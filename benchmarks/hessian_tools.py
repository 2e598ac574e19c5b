"""The tools the Hessian benchmark compares (see ``benchmarks/bench_hessian.py``): ours and the reference tools
(PyHessian, hessian-eigenthings, curvlinops + scipy ``eigsh``), each as a run, a single product and a sweep of
settings, with every product counted by wrapping the tool's operator."""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from benchmarks.common import package_versions, seeded
from benchmarks.hessian_problems import Problem, loss_fn
from lightning_spectral.functional import HessianOperator, HVPGraph, hessian_eigenvalues

#: A run past this many HVPs is stopped and counts as failed (bounds a slowly converging setting).
HVP_CAP = 400
PYHESSIAN_MAX_ITER = 1000  # per eigenvalue: its own default of 100 would cap the sweep below HVP_CAP

Setting = dict[str, Any]
#: The estimators' default HVP (``hessian_eigenvalues(model, loss_fn, batch)``, the monitor's default too).
OURS = "ours (Lanczos, default hvp_method=double_backward)"
#: ``HessianOperator``'s own default, forward-over-reverse where torch.func can transform the loss.
OURS_AUTO = "ours (Lanczos, hvp_method=auto)"
#: On CUDA only: products replayed from a CUDA graph captured by an earlier run (HVPGraph; capture cost below).
GRAPH_METHODS = ("double_backward", "forward_over_reverse")
Matvec = Callable[[Tensor], Tensor]


class BudgetExceeded(Exception):
    """A run used more than its cap of products."""


class Counter:
    """Counts products; raises :class:`BudgetExceeded` past ``cap``."""

    def __init__(self, cap: int | None) -> None:
        self.count, self.cap = 0, cap

    def add(self, n: int = 1) -> None:
        self.count += n
        if self.cap is not None and self.count > self.cap:
            raise BudgetExceeded


@dataclass
class Run:
    values: list[float] | None  # descending; None when stopped
    hvps: int
    stopped: bool = False


RunFn = Callable[[Problem, int, Setting, int | None, int | None], Run]


@dataclass
class Tool:
    """One eigensolver: how to run it, its sweeps, its defaults and its bare product."""

    name: str
    distribution: str
    module: str | None
    run: RunFn
    sweeps: Callable[[int, bool], list[list[Setting]]]
    default_label: str
    matvec: Callable[[Problem], Matvec]
    status: str = "ok"

    @property
    def available(self) -> bool:
        return self.status == "ok"

    @property
    def is_ours(self) -> bool:
        return self.module is None


def label(setting: Setting) -> str:
    return ", ".join(
        f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}" for key, value in setting.items()
    )


# --- ours


def graph_tool_name(method: str) -> str:
    return f"ours (Lanczos, hvp_method={method}, CUDA graph)"


def our_run(method: str, graph: HVPGraph | None = None) -> RunFn:
    def run(problem: Problem, k: int, setting: Setting, seed: int | None, cap: int | None) -> Run:
        op = HessianOperator(problem.model, loss_fn, problem.batch, method=method, hvp_graph=graph)
        generator = None if seed is None else seeded(seed, op.device)
        result = hessian_eigenvalues(
            operator=op, k=k, generator=generator, **setting
        )  # max_matvecs bounds it
        return Run(sorted(result.eigenvalues.tolist(), reverse=True), op.num_matvecs)

    return run


def our_matvec(method: str, graph: HVPGraph | None = None) -> Callable[[Problem], Matvec]:
    def build(problem: Problem) -> Matvec:
        return HessianOperator(problem.model, loss_fn, problem.batch, method=method, hvp_graph=graph).matvec

    return build


def our_sweeps(k: int, quick: bool) -> list[list[Setting]]:
    tols = (1e-1, 1e-2, 1e-3, 1e-4) if quick else (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 1e-4, 1e-5)
    return [[{"tol": tol, "max_matvecs": HVP_CAP} for tol in tols]]


# --- PyHessian: power iteration, with deflation for k > 1


def on_cuda(problem: Problem) -> bool:
    """PyHessian's ``cuda=`` flag (it moves the batch with ``.cuda()`` and its vectors to ``"cuda"``)."""
    return problem.device.type == "cuda"


def pyhessian_run(problem: Problem, k: int, setting: Setting, seed: int | None, cap: int | None) -> Run:
    module = importlib.import_module("pyhessian.hessian")
    counter = Counter(cap)
    original = module.hessian_vector_product

    def counted(grads, params, v):
        counter.add()
        return original(grads, params, v)

    model = problem.model
    model.zero_grad(set_to_none=True)  # PyHessian reads p.grad: a stale one would add a second Hessian
    module.hessian_vector_product = counted
    try:
        if seed is not None:
            torch.manual_seed(seed)  # PyHessian draws its start vectors from the global RNG
        solver = module.hessian(model, nn.CrossEntropyLoss(), data=problem.batch, cuda=on_cuda(problem))
        values, _ = solver.eigenvalues(top_n=k, **setting)
        return Run(sorted(values, reverse=True), counter.count)
    except BudgetExceeded:
        return Run(None, counter.count, stopped=True)
    finally:
        module.hessian_vector_product = original
        model.zero_grad(set_to_none=True)


def pyhessian_matvec(problem: Problem) -> Matvec:
    module = importlib.import_module("pyhessian.hessian")
    problem.model.zero_grad(set_to_none=True)
    solver = module.hessian(problem.model, nn.CrossEntropyLoss(), data=problem.batch, cuda=on_cuda(problem))
    problem.model.zero_grad(set_to_none=True)  # the solver keeps its own reference to the gradient graph
    sizes = [p.numel() for p in solver.params]

    def matvec(v: Tensor) -> Tensor:
        pieces = [piece.view_as(p) for piece, p in zip(torch.split(v, sizes), solver.params)]
        return torch.cat(
            [h.reshape(-1) for h in module.hessian_vector_product(solver.gradsH, solver.params, pieces)]
        )

    return matvec


def pyhessian_sweeps(k: int, quick: bool) -> list[list[Setting]]:
    tols = (
        (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
        if quick
        else (1e-1, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6)
    )
    return [[{"tol": tol, "maxIter": PYHESSIAN_MAX_ITER} for tol in tols]]


# --- hessian-eigenthings: Lanczos with a fixed number of steps


def eigenthings_operator(problem: Problem, counter: Counter | None):
    he = importlib.import_module("hessian_eigenthings")
    op = he.HessianOperator(problem.model, [problem.batch], loss_fn)
    if counter is None:
        return op

    def matvec(v: Tensor) -> Tensor:
        counter.add()
        return op.matvec(v)

    return he.LambdaOperator(matvec, op.size, device=op.device, dtype=op.dtype)


def eigenthings_run(problem: Problem, k: int, setting: Setting, seed: int | None, cap: int | None) -> Run:
    he = importlib.import_module("hessian_eigenthings")
    counter = Counter(cap)
    try:
        result = he.lanczos(eigenthings_operator(problem, counter), k=k, seed=seed, **setting)
    except BudgetExceeded:
        return Run(None, counter.count, stopped=True)
    return Run(sorted(result.eigenvalues.tolist(), reverse=True), counter.count)


def eigenthings_matvec(problem: Problem) -> Matvec:
    return eigenthings_operator(problem, None).matvec


def eigenthings_sweeps(k: int, quick: bool) -> list[list[Setting]]:
    steps = (4, 8, 12, 16, 24, 32, 64) if quick else (*range(2, 17), 18, 20, 24, 28, 32, 40, 48, 64, 96, 128)
    return [[{"max_iter": m, "which": "LA"} for m in steps if m >= k]]


# --- curvlinops + scipy eigsh: ARPACK's implicitly restarted Lanczos


def curvlinops_operator(problem: Problem, counter: Counter | None):
    from curvlinops import HessianLinearOperator
    from scipy.sparse.linalg import LinearOperator

    params = [p for p in problem.model.parameters() if p.requires_grad]
    op = HessianLinearOperator(
        problem.model, nn.CrossEntropyLoss(), params, [problem.batch], check_deterministic=False
    )
    scipy_op = op.to_scipy()
    if counter is None:
        return scipy_op

    def matmat(block: np.ndarray) -> np.ndarray:
        counter.add(1 if block.ndim == 1 else block.shape[1])
        return scipy_op @ block

    return LinearOperator(scipy_op.shape, matvec=matmat, matmat=matmat, dtype=scipy_op.dtype)


def curvlinops_run(problem: Problem, k: int, setting: Setting, seed: int | None, cap: int | None) -> Run:
    from scipy.sparse.linalg import eigsh

    counter = Counter(cap)
    scipy_op = curvlinops_operator(problem, counter)
    v0 = None if seed is None else np.random.default_rng(seed).standard_normal(scipy_op.shape[0])
    try:
        values, _ = eigsh(scipy_op, k=k, v0=v0, **setting)
    except BudgetExceeded:
        return Run(None, counter.count, stopped=True)
    return Run(sorted(values.tolist(), reverse=True), counter.count)


def curvlinops_matvec(problem: Problem) -> Matvec:
    """The SciPy operator's product on ``v``: through NumPy (the CPU) and back to ``v``'s device."""
    scipy_op = curvlinops_operator(problem, None)
    return lambda v: torch.from_numpy(scipy_op @ v.double().cpu().numpy()).float().to(v.device)


def curvlinops_sweeps(k: int, quick: bool) -> list[list[Setting]]:
    tols = (1e-1, 1e-2, 1e-3, 1e-4) if quick else (1e-1, 1e-2, 1e-3, 1e-4, 1e-6)
    ncvs = (2 * k + 4, max(2 * k + 1, 20)) if quick else (k + 2, k + 4, 2 * k + 6, max(2 * k + 1, 20))
    return [[{"which": "LA", "ncv": ncv, "tol": tol} for tol in tols] for ncv in ncvs]


def make_tools(device: torch.device) -> list[Tool]:
    graphs = [
        Tool(
            graph_tool_name(method),
            "lightning-spectral",
            None,
            our_run(method, graph),
            our_sweeps,
            "tol=1e-3, max_iter=50",
            our_matvec(method, graph),
        )
        for method in GRAPH_METHODS
        for graph in [HVPGraph()]
    ]
    tools = [
        *(graphs if device.type == "cuda" else []),
        Tool(
            OURS,
            "lightning-spectral",
            None,
            our_run("double_backward"),
            our_sweeps,
            "tol=1e-3, max_iter=50",
            our_matvec("double_backward"),
        ),
        Tool(
            OURS_AUTO,
            "lightning-spectral",
            None,
            our_run("auto"),
            our_sweeps,
            "tol=1e-3, max_iter=50",
            our_matvec("auto"),
        ),
        Tool(
            "PyHessian (power iteration)",
            "PyHessian",
            "pyhessian",
            pyhessian_run,
            pyhessian_sweeps,
            "maxIter=100, tol=1e-3",
            pyhessian_matvec,
        ),
        Tool(
            "hessian-eigenthings (lanczos)",
            "hessian-eigenthings",
            "hessian_eigenthings",
            eigenthings_run,
            eigenthings_sweeps,
            "max_iter=2k, which=LM",
            eigenthings_matvec,
        ),
        Tool(
            "curvlinops + eigsh",
            "curvlinops-for-pytorch",
            "curvlinops",
            curvlinops_run,
            curvlinops_sweeps,
            "which=LM, tol=0 (machine precision), ncv=max(2k+1, 20)",
            curvlinops_matvec,
        ),
    ]
    for tool in tools:
        if tool.module is None:
            continue
        try:
            importlib.import_module(tool.module)
            if tool.module == "curvlinops":
                importlib.import_module("scipy.sparse.linalg")
        except ModuleNotFoundError as error:
            tool.status = f"not installed ({error.name})"
        except Exception as error:  # a broken install: report it and benchmark the others
            tool.status = f"import failed: {type(error).__name__}: {error}"
    return tools


def tool_versions(tools: list[Tool]) -> str:
    """Versions of the base packages and of the reference tools that are importable."""
    return package_versions(
        ("torch", "numpy", "scipy", "scikit-learn", *(t.distribution for t in tools if t.module))
    )
