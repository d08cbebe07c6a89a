"""One scoring loop for every request in flight: candidates of all concurrent requests, batched by tokens.

MLflow's scoring server runs `predict` in a pool of threads, one request each. Each request's thread
encodes its own candidates (tokenization runs in parallel) and hands their jobs (model.modeling.Job) to
the one `ScoringLoop` of the process; its thread forms batches from everything pending and runs the model,
so sixteen concurrent one-solution requests cost about one forward, not sixteen.

The loop runs its forwards in `threads` threads, each on its own batch (`register.scoring_threads`; 0: one per
CPU core the process may use, 1 on a GPU): a small model's forward gains little from several torch threads
(1 thread per process for small models: docs/benchmarks/scoring-vs-loop.md), while two batches at once, one per core, double
what a CPU server scores; torch releases the GIL inside its kernels, and the scoring path keeps no state on the
model (modeling.final_hidden_states), so the threads share it.

A batch is bounded by padded tokens (rows x longest row <= `batch_tokens`), not by a count of rows, so one
long candidate does not pad sixty-three short ones. Each batch holds the oldest pending job (no job waits
behind an endless stream of others) and the pending jobs whose length adds the least padding to it. A job
longer than the budget runs alone. Every job's scores equal those it gets alone, to the float rounding
of the kernels at another batch shape: right padding changes no position a causal model reads.

Work nobody waits for is not scored: a request answered 504 or whose client went away is marked abandoned
(`abandoned`, set by http_guard.py for the thread that serves it), and its pending jobs are dropped when the next
batch is formed, their futures failed with `Abandoned`, so retries of timed-out requests do not pile up.

The continuous-batching idea is vLLM's and TGI's; here it is the least of it that a CPU or one GPU
serving a PRM needs: no preemption, no KV cache across requests.
"""

from __future__ import annotations

import contextvars
import itertools
import os
import threading
from concurrent.futures import Future

from prmflow.scoring.modeling import Job, read_jobs


# The request the current thread serves: a threading.Event set once nobody waits for its answer (http_guard.py).
abandoned: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("abandoned", default=None)


class Abandoned(RuntimeError):
    """A job's request was answered 504 or its client went away before the job was scored."""


def pick_batch(lengths: list[int], oldest: int, budget: int) -> list[int]:
    """Indices into `lengths` for one batch: `oldest`, then greedily the job that adds the least padded
    tokens (rows x longest), while rows x longest stays within `budget`. Pure; exact unit tests.

    >>> pick_batch([5, 100, 6, 7], oldest=0, budget=24)
    [0, 2, 3]
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    at = order.index(oldest)
    low, high = at, at  # the batch is the window order[low..high]: lengths in order, the widest last
    while True:
        rows, width = high - low + 1, lengths[order[high]]
        shorter = width * (rows + 1) if low > 0 else None  # one more row of the same width
        longer = lengths[order[high + 1]] * (rows + 1) if high + 1 < len(order) else None
        options = [(cost, side) for cost, side in ((shorter, -1), (longer, 1)) if cost is not None and cost <= budget]
        if not options:
            return [order[i] for i in range(low, high + 1)]
        if min(options)[1] < 0:
            low -= 1
        else:
            high += 1


def default_threads(device: str) -> int:
    """Forwards at once for `register.scoring_threads: 0`: the CPU cores this process may use on a CPU, 1 on an
    accelerator (its kernels already fill it)."""
    if device != "cpu":
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class ScoringLoop:
    """Scores `Job`s of any number of threads with one model, in token-budgeted batches (module docstring).

    `scorer`: what modeling.read_jobs runs (StepTagScorer or a public_prms format). `threads`: forwards at
    once (0: `default_threads(scorer.device)`). The loop's threads start with the first request and are daemons:
    they end with the server process.
    """

    def __init__(self, scorer, batch_tokens: int, threads: int):
        self.scorer = scorer
        self.batch_tokens = batch_tokens
        self.threads = threads or default_threads(str(scorer.device))
        self._pending: list[tuple[int, Job, Future, threading.Event | None]] = []
        self._arrivals = itertools.count()
        self._ready = threading.Condition()
        self._started = False
        self.forwards = 0  # batches run so far
        self.dropped = 0  # jobs of abandoned requests, not scored

    def score(self, jobs: list[Job]) -> list[list[float]]:
        """The scores of each job, in order; raises what the model raised for a job's batch."""
        futures = [Future() for _ in jobs]
        gone = abandoned.get()
        with self._ready:
            if not self._started:
                for index in range(self.threads):
                    threading.Thread(target=self._run, name=f"prmflow-scoring-loop-{index}", daemon=True).start()
                self._started = True
            self._pending += [(next(self._arrivals), job, future, gone) for job, future in zip(jobs, futures)]
            self._ready.notify()
        return [future.result() for future in futures]

    def _take_batch(self) -> list[tuple[int, Job, Future, threading.Event | None]]:
        with self._ready:
            while True:
                while not self._pending:
                    self._ready.wait()
                live = [item for item in self._pending if item[3] is None or not item[3].is_set()]
                for item in self._pending:
                    if item[3] is not None and item[3].is_set():
                        item[2].set_exception(Abandoned("the request was answered 504 or its client went away"))
                self.dropped += len(self._pending) - len(live)
                self._pending = live
                if live:
                    break
            lengths = [len(job.input_ids) for _, job, _, _ in self._pending]
            oldest = min(range(len(self._pending)), key=lambda i: self._pending[i][0])
            chosen = set(pick_batch(lengths, oldest, self.batch_tokens))
            batch = [item for i, item in enumerate(self._pending) if i in chosen]
            self._pending = [item for i, item in enumerate(self._pending) if i not in chosen]
            return batch

    def _run(self) -> None:
        import torch

        while True:
            batch = self._take_batch()
            try:
                with torch.inference_mode():  # the scores leave as floats; no autograd bookkeeping
                    results = read_jobs(self.scorer, [job for _, job, _, _ in batch])
            except Exception as err:  # the requests of this batch fail; the loop serves the next ones
                for _, _, future, _ in batch:
                    future.set_exception(err)
                continue
            with self._ready:
                self.forwards += 1
            for (_, _, future, _), scores in zip(batch, results):
                future.set_result(scores)
