import pytest
from hypothesis import given
from hypothesis import strategies as st

from lightning_spectral.callbacks.schedule import Schedule


def test_every_n_steps_includes_initialisation():
    assert Schedule(every_n_steps=5).steps_up_to(16) == [0, 5, 10, 15]


def test_no_step_zero_without_train_start_measurement():
    assert Schedule(every_n_steps=5, at_train_start=False).steps_up_to(10) == [5, 10]


def test_log_spacing_is_dense_early_then_regular():
    assert Schedule(every_n_steps=50, log_spacing=True).steps_up_to(200) == [
        0,
        1,
        2,
        4,
        8,
        16,
        32,
        50,
        100,
        150,
        200,
    ]


def test_epoch_schedule():
    schedule = Schedule(every_n_epochs=2)
    assert [e for e in range(6) if schedule.is_measurement_epoch(e)] == [1, 3, 5]
    assert schedule.steps_up_to(100) == [0]  # only the initial model on the step side


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({}, "every_n_steps"),
        ({"every_n_steps": 0}, "every_n_steps"),
        ({"every_n_steps": -3}, "every_n_steps"),
        ({"every_n_steps": 2.5}, "every_n_steps"),
        ({"every_n_steps": True}, "every_n_steps"),
        ({"every_n_epochs": 0}, "every_n_epochs"),
        ({"every_n_epochs": 1, "log_spacing": True}, "log_spacing"),
        ({"every_n_steps": 1, "at_train_start": "yes"}, "at_train_start"),
    ],
)
def test_invalid_arguments_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        Schedule(**kwargs)


@given(n=st.integers(1, 300), log_spacing=st.booleans(), last=st.integers(0, 2000))
def test_schedule_properties(n, log_spacing, last):
    steps = Schedule(every_n_steps=n, log_spacing=log_spacing).steps_up_to(last)
    assert steps[0] == 0
    assert steps == sorted(set(steps))
    multiples = [s for s in range(0, last + 1, n)]
    assert set(multiples) <= set(steps)
    extra = set(steps) - set(multiples)
    if not log_spacing:
        assert not extra
    else:
        assert all(s < n and (s & (s - 1)) == 0 for s in extra)
        assert {1 << i for i in range(12) if (1 << i) < n and (1 << i) <= last} <= set(steps)


@given(
    n=st.integers(1, 60),
    log_spacing=st.booleans(),
    stride=st.integers(1, 5),
    start=st.integers(0, 40),
    length=st.integers(1, 200),
)
def test_a_jumping_global_step_is_due_once_per_scheduled_step_it_reaches(
    n, log_spacing, stride, start, length
):
    """A global step that moves ``stride`` per batch (manual optimization, ``stride`` optimizers) is due at the
    first batch end at which it has reached or passed each scheduled step, and nowhere else; with stride 1 that
    is exactly the scheduled steps."""
    schedule = Schedule(every_n_steps=n, log_spacing=log_spacing)
    seen = [start + stride * i for i in range(length + 1)]
    due = [step for previous, step in zip(seen, seen[1:]) if schedule.is_due(previous, step)]
    scheduled = [s for s in schedule.steps_up_to(seen[-1]) if s > start]
    expected = sorted({next(step for step in seen[1:] if step >= s) for s in scheduled})
    assert due == expected
    if stride == 1:
        assert due == scheduled
    assert not schedule.is_due(start, start)  # accumulation: the step did not move


def test_two_optimizers_stepping_each_batch_hit_every_scheduled_step():
    schedule = Schedule(every_n_steps=3)
    seen = list(range(0, 26, 2))  # two optimizers: 0, 2, 4, ...
    assert [step for previous, step in zip(seen, seen[1:]) if schedule.is_due(previous, step)] == [
        4,
        6,
        10,
        12,
        16,
        18,
        22,
        24,
    ]
    assert not Schedule(every_n_epochs=1).is_due(0, 5)  # no step-based schedule
