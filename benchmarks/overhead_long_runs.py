"""Long runs for the overhead benchmark (``python -m benchmarks.bench_overhead --part long``): the three monitors
constructed with no arguments (the automatic schedule, 5 % shared budget) on realistic fits.

Workloads (all generated or shipped with scikit-learn, no download; CPU, one torch thread):

- ``cnn``: the overhead benchmark's CNN on the 8×8 digits, batch 64, plain SGD (lr 0.05), 2,000 steps;
- ``transformer``: a causal language model, 2 ``nn.TransformerEncoderLayer`` of width 64 (4 heads, feed-forward
  128, dropout 0.1), vocabulary 64, sequences of 32 tokens drawn from a fixed random Markov chain (sparse
  transition matrix, so there is something to learn), batch 32, AdamW (lr 1e-3), 1,000 steps;
- ``lstm``: embedding 32 → ``nn.LSTM(32, 64)`` → linear, classifying generated token sequences (length 20,
  vocabulary 16; the label is the most frequent of the first four tokens), batch 32, SGD (lr 0.5,
  momentum 0.9), 1,000 steps.

For each: ``repeats`` pairs of fits without and with the three monitors, alternating (the overhead is the median
fit time with them over the median without, minus one), the measurements each monitor made, the cost of one
measurement of each in training steps, and a dense reference of the same run: a cold Lanczos solve at tol 1e-6
every 10 steps (``HessianEigenMonitor(every_n_steps=10, tol=1e-6, eigenvalue_tol=None, warm_start=False)``;
monitors do not change training, so it sees the same models), against which the default schedule's λ_1 curve
(linear between its measurements) is compared at the reference's steps. The per-step path of the three monitors
when they do not measure is timed as Lightning runs it: the six per-step hooks of each (``on_train_batch_start``
... ``on_train_batch_end``) called through Lightning's own dispatch (``trainer.profiler.profile`` around each,
named by the callback's ``state_key``) after the fit, on a step that measures nothing.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_spectral.callbacks import HessianEigenMonitor, NTKTraceMonitor, WeightSpectrumMonitor

SEED = 0


class DigitsCNN64(pl.LightningModule):
    """The overhead benchmark's CNN (conv 1→16→32, max-pool, 512→64→10), SGD lr 0.05."""

    def __init__(self) -> None:
        super().__init__()
        from benchmarks.bench_overhead import DigitsCNN

        self.net = DigitsCNN().net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


class TinyLM(pl.LightningModule):
    """2-layer causal transformer language model, width 64."""

    def __init__(self, vocab: int = 64, width: int = 64, length: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(torch.randn(length, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, 4, dim_feedforward=128, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(width, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(length), persistent=False)

    def forward(self, tokens: Tensor) -> Tensor:
        n = tokens.shape[1]
        h = self.embed(tokens) + self.position[:n]
        return self.head(self.encoder(h, mask=self.mask[:n, :n], is_causal=True))

    def training_step(self, batch, batch_idx):
        tokens, targets = batch
        logits = self(tokens)
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


class LSTMClassifier(pl.LightningModule):
    def __init__(self, vocab: int = 16, classes: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 32)
        self.lstm = nn.LSTM(32, 64, batch_first=True)
        self.head = nn.Linear(64, classes)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.head(self.lstm(self.embed(tokens))[0][:, -1])

    def training_step(self, batch, batch_idx):
        tokens, labels = batch
        return nn.functional.cross_entropy(self(tokens), labels)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5, momentum=0.9)


def markov_tokens(num: int = 4096, vocab: int = 64, length: int = 32) -> TensorDataset:
    g = torch.Generator().manual_seed(SEED)
    logits = torch.randn(vocab, vocab, generator=g) * 3.0
    probs = torch.softmax(logits, dim=1)
    tokens = torch.empty(num, length + 1, dtype=torch.long)
    tokens[:, 0] = torch.randint(0, vocab, (num,), generator=g)
    for t in range(length):
        tokens[:, t + 1] = torch.multinomial(probs[tokens[:, t]], 1, generator=g).squeeze(1)
    return TensorDataset(tokens[:, :-1], tokens[:, 1:])


def sequence_labels(num: int = 4096, vocab: int = 16, length: int = 20, classes: int = 4) -> TensorDataset:
    g = torch.Generator().manual_seed(SEED)
    tokens = torch.randint(0, vocab, (num, length), generator=g)
    labels = (tokens[:, :4] % classes).mode(dim=1).values
    return TensorDataset(tokens, labels)


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    model: Callable[[], pl.LightningModule]
    data: Callable[[], TensorDataset]
    batch_size: int
    steps: int


def workloads(quick: bool) -> list[Workload]:
    from benchmarks.bench_overhead import digits

    scale = 0.5 if quick else 1.0
    return [
        Workload("cnn", "CNN on the digits, batch 64, SGD", DigitsCNN64, digits, 64, int(2000 * scale)),
        Workload(
            "transformer",
            "2-layer width-64 causal LM, batch 32, AdamW",
            TinyLM,
            markov_tokens,
            32,
            int(1000 * scale),
        ),
        Workload(
            "lstm",
            "LSTM(32, 64) classifier, batch 32, SGD",
            LSTMClassifier,
            sequence_labels,
            32,
            int(1000 * scale),
        ),
    ]


class Lambda1Recorder(pl.Callback):
    """After the monitors' hooks: ``(step, λ_1)`` whenever the Hessian monitor has measured."""

    def __init__(self, monitor: HessianEigenMonitor) -> None:
        self.monitor, self.count, self.curve, self.num_hvps = monitor, 0, [], []

    def _after(self, trainer) -> None:
        if self.monitor.num_measurements > self.count:
            self.count = self.monitor.num_measurements
            metrics = trainer.callback_metrics
            self.curve.append((trainer.global_step, float(metrics["spectral/hessian/lambda_1"])))
            self.num_hvps.append(int(metrics["spectral/hessian/num_hvps"]))

    def on_train_start(self, trainer, pl_module):
        self._after(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._after(trainer)


@dataclass
class LongRun:
    seconds: float
    counts: dict[str, int] = field(default_factory=dict)
    curve: list[tuple[int, float]] = field(default_factory=list)
    period: int | None = None
    early: list[int] = field(default_factory=list)
    idle_seconds: float = 0.0  # the three monitors' per-step path when not measuring (Lightning's dispatch)
    hook_seconds: float = 0.0  # all the time spent inside the monitors' own Lightning hooks
    measure_seconds: dict[str, float] = field(default_factory=dict)  # per monitor, per measurement
    num_hvps: list[int] = field(default_factory=list)  # λ's Hessian-vector products at each measurement


#: The callback hooks Lightning calls on every training step (automatic optimization).
PER_STEP_HOOKS = (
    "on_train_batch_start",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
    "on_train_batch_end",
)


def idle_step_seconds(trainer: pl.Trainer, monitors: list, repeats: int = 2000) -> float:
    """Seconds per training step of the monitors' per-step hooks, dispatched as Lightning does
    (``trainer.profiler.profile`` named by ``state_key`` around each call), on a step that measures nothing (the
    trainer's last step, already seen by the monitors)."""
    module, optimizer = trainer.lightning_module, trainer.optimizers[0]
    loss = torch.zeros(())
    arguments = {
        "on_train_batch_start": (None, 0),
        "on_before_backward": (loss,),
        "on_after_backward": (),
        "on_before_optimizer_step": (optimizer,),
        "on_before_zero_grad": (optimizer,),
        "on_train_batch_end": (None, None, 0),
    }
    counts = [m.num_measurements for m in monitors]
    start = time.perf_counter()
    for _ in range(repeats):
        for hook in PER_STEP_HOOKS:
            for callback in monitors:
                with trainer.profiler.profile(f"[Callback]{callback.state_key}.{hook}"):
                    getattr(callback, hook)(trainer, module, *arguments[hook])
    seconds = (time.perf_counter() - start) / repeats
    if [m.num_measurements for m in monitors] != counts:
        raise RuntimeError("a monitor measured during the per-step timing")
    return seconds


def fit(workload: Workload, data: TensorDataset, monitors: list) -> LongRun:
    torch.manual_seed(SEED)
    model = workload.model()
    loader = DataLoader(
        data, batch_size=workload.batch_size, shuffle=True, generator=torch.Generator().manual_seed(SEED)
    )
    hessian = next((m for m in monitors if isinstance(m, HessianEigenMonitor)), None)
    recorder = [Lambda1Recorder(hessian)] if hessian is not None else []
    from benchmarks.bench_overhead import HookClock

    hooks = [HookClock(m) for m in monitors]
    trainer = pl.Trainer(
        max_steps=workload.steps,
        max_epochs=-1,
        accelerator="cpu",
        devices=1,
        callbacks=[*monitors, *recorder],
        enable_progress_bar=False,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(model, loader)
    seconds = time.perf_counter() - start
    for monitor in monitors:
        if monitor._disabled:
            raise RuntimeError(f"{type(monitor).__name__} disabled itself on {workload.name}")
    schedule = monitors[0].auto_schedule if monitors else None
    return LongRun(
        seconds,
        {type(m).__name__: m.num_measurements for m in monitors},
        recorder[0].curve if recorder else [],
        schedule.period if schedule else None,
        list(schedule.early_steps) if schedule else [],
        idle_step_seconds(trainer, monitors) if monitors else 0.0,
        sum(c.seconds for c in hooks),
        {type(m).__name__: m._measure_seconds / max(m.num_measurements, 1) for m in monitors},
        recorder[0].num_hvps if recorder else [],
    )


def reference_monitor() -> HessianEigenMonitor:
    """The dense reference: a cold Lanczos solve at tol 1e-6 every 10 steps (λ_1 only)."""
    return HessianEigenMonitor(
        every_n_steps=10,
        tol=1e-6,
        eigenvalue_tol=None,
        max_matvecs=300,
        warm_start=False,
        compute_batch_sharpness=False,
        compute_preconditioned=False,
    )


def defaults() -> list:
    return [HessianEigenMonitor(), NTKTraceMonitor(), WeightSpectrumMonitor()]


def interpolated(curve: list[tuple[int, float]], step: int) -> float:
    """The piecewise-linear curve through ``curve``'s points at ``step`` (constant past its ends)."""
    if step <= curve[0][0]:
        return curve[0][1]
    for (s0, v0), (s1, v1) in zip(curve, curve[1:]):
        if s0 <= step <= s1:
            return v0 + (v1 - v0) * (step - s0) / (s1 - s0)
    return curve[-1][1]


def curve_agreement(
    default: list[tuple[int, float]], dense: list[tuple[int, float]]
) -> tuple[float, float, float]:
    """Relative deviation of the default schedule's λ_1 curve from the dense reference at the reference's steps:
    median and max; and the largest relative difference at the steps both measured (the estimator's accuracy)."""
    errors = [abs(interpolated(default, s) - v) / abs(v) for s, v in dense if v != 0]
    reference = dict(dense)
    common = [
        abs(v - reference[s]) / abs(reference[s]) for s, v in default if s in reference and reference[s]
    ]
    return statistics.median(errors), max(errors), max(common) if common else float("nan")


def run_workload(workload: Workload, repeats: int, log: Callable[[str], None]) -> dict:
    data = workload.data()
    fit(workload, data, [])  # warm-up (first-call costs)
    base, monitored = [], []
    for r in range(repeats):
        order = [False, True] if r % 2 == 0 else [True, False]
        for with_monitors in order:
            run = fit(workload, data, defaults() if with_monitors else [])
            (monitored if with_monitors else base).append(run)
        log(
            f"[overhead-long] {workload.name} round {r + 1}/{repeats}: {base[-1].seconds:.1f} s without, "
            f"{monitored[-1].seconds:.1f} s with (every {monitored[-1].period}, early {monitored[-1].early})"
        )
    dense = fit(workload, data, [reference_monitor()])
    t_base = statistics.median(r.seconds for r in base)
    t_mon = statistics.median(r.seconds for r in monitored)
    paired = statistics.median(m.seconds / b.seconds - 1 for m, b in zip(monitored, base))
    median_dev, max_dev, common = curve_agreement(monitored[0].curve, dense.curve)
    return {
        "workload": workload,
        "t_base": t_base,
        "t_monitored": t_mon,
        "overhead": t_mon / t_base - 1,
        "paired": paired,
        "counts": monitored[0].counts,
        "period": monitored[0].period,
        "early": monitored[0].early,
        "periods": sorted({m.period for m in monitored}),
        "median_dev": median_dev,
        "max_dev": max_dev,
        "common": common,
        "dense_points": len(dense.curve),
        "t_dense": dense.seconds,
        "idle_us": statistics.median(m.idle_seconds for m in monitored) * 1e6,
        "hook_share": statistics.median(m.hook_seconds for m in monitored) / t_base,
        "step_ms": t_base / workload.steps * 1e3,
        "num_hvps": monitored[0].num_hvps,
        "round_steps": {
            name: statistics.median(m.measure_seconds[name] for m in monitored) / (t_base / workload.steps)
            for name in monitored[0].measure_seconds
        },
    }
