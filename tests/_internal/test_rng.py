"""The one RNG guard (``lightning_spectral._internal.rng``): captured states restore every generator exactly."""

import random

import numpy as np
import pytest
import torch

from lightning_spectral._internal.rng import capture_rng_state, preserved_rng_state


def _draws():
    return torch.rand(4), random.random(), float(np.random.rand())


def test_preserved_rng_state_leaves_every_host_generator_where_it_was():
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    expected = _draws()
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    with preserved_rng_state():
        _draws(), _draws()
    got = _draws()
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]


def test_restored_also_after_an_exception():
    state = capture_rng_state(host=True)
    with pytest.raises(RuntimeError), preserved_rng_state():
        torch.rand(3)
        raise RuntimeError("inside")
    assert capture_rng_state().same_torch_state(state)


def test_a_captured_state_replays_the_same_draws_and_compares():
    state = capture_rng_state("cpu")
    assert state.accelerator is None and state.python is None  # a CPU device: no accelerator; host off
    first = torch.rand(5)
    assert not capture_rng_state("cpu").same_torch_state(state)
    state.restore()
    assert capture_rng_state("cpu").same_torch_state(state)
    assert torch.equal(torch.rand(5), first)


def test_without_host_python_and_numpy_are_not_restored():
    random.seed(1)
    with preserved_rng_state(host=False):
        random.random()
    random.seed(1)
    random.random()
    value = random.random()
    random.seed(1)
    with preserved_rng_state(host=False):
        random.random()
    assert random.random() == value  # the draw inside advanced Python's generator


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_accelerator_generator_is_captured_and_restored():
    torch.cuda.init()
    with preserved_rng_state() as state:
        assert state.accelerator is not None and state.accelerator[0] == "cuda"
        first = torch.rand(3, device="cuda")
    again = torch.rand(3, device="cuda")
    assert torch.equal(first, again)
