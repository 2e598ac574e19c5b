"""Cost of one NTK measurement on a tiny Hugging Face GPT-2 with the real vocabulary, in training steps.

Run from the repository root::

    python -m benchmarks.bench_hf_ntk

A GPT-2 built from a small config (2 layers, width 64, 2 heads, the real ``vocab_size = 50257``, no download),
wrapped the usual way (``training_step`` returns ``self.model(**batch).loss``), a batch of ``B = 8`` sequences
of ``T = 32`` tokens with an attention mask. Outputs per example ``K = T·V ≈ 1.6 M``. Timed, in one process and
interleaved (medians of 5 repeats): one training step (forward, backward, AdamW step) and
``ntk_trace`` with the monitor's default ``method="auto"`` (per-example Hutchinson; 2 probes at this ``K``), called through the
same model call the monitor builds (:func:`lightning_spectral.callbacks._internal.batch_parts.model_call`). The issue's goal:
the measurement costs no more than ~10 training steps. The numbers are printed (copy them into RESULTS.md).
"""

from __future__ import annotations

import statistics
import time

import torch


def main() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    from lightning_spectral.callbacks._internal.batch_parts import model_call
    from lightning_spectral.functional import ntk_trace
    from lightning_spectral.functional.ntk.per_example_gradient_norms import LayerwiseChecks

    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=64, n_positions=64, vocab_size=50257)
    model = GPT2LMHeadModel(config)

    class Wrapper(torch.nn.Module):  # a LightningModule without forward, as far as the measurement sees
        def __init__(self) -> None:
            super().__init__()
            self.model = model

    wrapper = Wrapper()
    ids = torch.randint(0, config.vocab_size, (8, 32))
    mask = torch.ones_like(ids)
    mask[::2, -4:] = 0
    batch = {"input_ids": ids, "attention_mask": mask, "labels": ids}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step() -> None:
        model.train()
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    input_fn, output_fn = model_call(wrapper, batch, None, None)
    checks = LayerwiseChecks()  # kept across measurements, as the monitor keeps it: the check runs once

    def measure() -> str:
        model.eval()
        result = ntk_trace(
            wrapper,
            input_fn(batch),
            output_fn=output_fn,
            layerwise_checks=checks,
            generator=torch.Generator().manual_seed(0),
        )
        return f"{result.method_used}, K = {result.num_outputs}"

    train_step()
    start = time.perf_counter()
    measure()  # the first measurement of a fit, with the one-time check of the layer-wise norms
    first = time.perf_counter() - start
    step_times, ntk_times = [], []
    for _ in range(5):
        start = time.perf_counter()
        train_step()
        step_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        how = measure()
        ntk_times.append(time.perf_counter() - start)
    step, ntk = statistics.median(step_times), statistics.median(ntk_times)
    print(f"first measurement (with the one-time check) {first * 1e3:.0f} ms = {first / step:.1f} steps")
    print(f"threads {torch.get_num_threads()}, {how}")
    print(
        f"training step {step * 1e3:.0f} ms, NTK measurement {ntk * 1e3:.0f} ms, ratio {ntk / step:.1f} steps"
    )


if __name__ == "__main__":
    main()
