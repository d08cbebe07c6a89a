"""The trainer's progress on a terminal: one bar with the loss, tokens/s and the time left.

The transformers `Trainer` prints each logging step as a Python dict (`PrinterCallback`, or
`ProgressCallback` writing the dict under its bar): hundreds of lines in a `make run`. `with_progress`
swaps both for `TrainProgress`, one tqdm bar per training run on the main process whose postfix carries
the last logged loss and the training speed in input tokens per second (non-padding tokens, the
Trainer's `num_input_tokens_seen`); tqdm gives steps/s and the ETA. The logged values still reach MLflow
through the stage's own callback. Off a terminal (dvc or Prefect capturing the output into a log) the bar
redraws at most every `LOG_INTERVAL_S` seconds, so a log gets a line a minute, not one per step.
"""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

LOG_INTERVAL_S = 60.0  # redraw interval when stderr is not a terminal
TERMINAL_INTERVAL_S = 0.5


def tokens_per_second(tokens_before: int, tokens_now: int, seconds: float) -> float:
    """Input tokens per second between two readings of the Trainer's token counter; 0 for no time."""
    return (tokens_now - tokens_before) / seconds if seconds > 0 else 0.0


def postfix(logs: dict, tokens_rate: float) -> dict[str, str]:
    """The bar's postfix: `loss` (4 significant digits) when this log has one, and `tok/s` (rounded)."""
    shown = {"loss": f"{logs['loss']:.4g}"} if isinstance(logs.get("loss"), (int, float)) else {}
    return shown | {"tok/s": f"{tokens_rate:,.0f}"}


class TrainProgress(TrainerCallback):
    """One tqdm bar over the optimizer steps of `Trainer.train`, on the main process only."""

    def __init__(self):
        self.bar = None
        self.started = 0.0
        self.tokens_at_start = 0
        self.shown: dict[str, str] = {}  # the last loss stays on the bar through logs without one

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        interval = TERMINAL_INTERVAL_S if sys.stderr.isatty() else LOG_INTERVAL_S
        self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", unit="step",
                        mininterval=interval, maxinterval=max(interval, 10.0), dynamic_ncols=True)
        self.started = time.perf_counter()
        self.tokens_at_start = state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is not None and logs:
            rate = tokens_per_second(self.tokens_at_start, state.num_input_tokens_seen,
                                     time.perf_counter() - self.started)
            self.shown |= postfix(logs, rate)
            self.bar.set_postfix(self.shown, refresh=False)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def with_progress(trainer):
    """`trainer` with its dict-printing callbacks replaced by one `TrainProgress` bar; returns it."""
    for noisy in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(noisy)
    trainer.add_callback(TrainProgress())
    return trainer
