"""Labeling on a Ray cluster: `label.workers` actors, each with its own policy, fed chunks of problems.

    label:
      workers: 8
      ray_address: auto        # or ray://head:10001; empty starts a local Ray with `workers` CPUs

A local Ray (empty `ray_address`) listens on loopback only (`local_ray`), and the token Ray 2.60 writes for it
(~/.ray/auth_token, world-readable as Ray writes it) is made readable by its owner only.

Each worker (a Ray actor, 1 CPU and `label.worker_gpus` GPUs) builds the policy once (an HTTP
client of the policy servers, or a local model on the GPU Ray gives it) and labels the chunks
of `label.chunk_problems` problems it is sent with engine.label_many, so its answer checks and
bookkeeping run on its own core. The driver keeps two chunks queued per worker and yields each
problem's labels as chunks come back; it alone writes files (label.py), so a problem is
recorded once whichever worker labeled it. Per-problem random streams make the labels the same
as in one process.

A worker that dies (killed, its node lost) is replaced and its unfinished chunks are sent
again, at most `MAX_WORKER_RESTARTS` times in a run; an error raised while labeling (a refused
request, a server that stays down) stops the run with the worker, its node and the first
problem of the chunk named. Ray is an optional extra (`pip install prmflow[ray]`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

from prmflow.config import LabelParams
from prmflow.devices import Placement
from prmflow.labeling.engine import ProblemLabels, label_many

MAX_WORKER_RESTARTS = 8  # dead workers replaced per run; past this the cluster itself is failing


class LabelWorker:
    """One Ray worker's policy and what it has labeled; a plain class, made a Ray actor by `label_on_ray`."""

    def __init__(self, params: LabelParams, seed: int, placement: Placement):
        from prmflow.labeling.policies import make_policy

        self.params, self.seed = params, seed
        self.policy = make_policy(params, seed, placement)

    def where(self) -> str:
        return f"{socket.gethostname()} pid {os.getpid()}"

    def label(self, problems: list[dict]) -> list[ProblemLabels]:
        return list(label_many(self.policy, problems, self.params, self.seed))


def _start_ray(params: LabelParams) -> bool:
    """Join `label.ray_address`, or start a local Ray; True when this call started it (and must stop it)."""
    try:
        import ray
    except ImportError as error:
        raise RuntimeError("label.workers > 1 labels on Ray, which is not installed: "
                           "pip install 'prmflow[ray]' (ray==2.60.0)") from error
    if ray.is_initialized():
        return False
    if params.ray_address:
        ray.init(address=params.ray_address, log_to_driver=False)
    else:
        local_ray(params.workers)
    return True


def local_ray(cpus: int) -> None:
    """Start a local Ray of `cpus` CPUs whose servers (GCS, raylet, workers, agents) listen on 127.0.0.1 only, with
    no dashboard; its token file readable by its owner only.

    Ray 2.60 binds its servers to the node IP it picks, rewrites a `_node_ip_address` of 127.0.0.1 to the
    routable address, and picks 127.0.0.1 itself only where clusters are off (`ray_constants.ENABLE_RAY_CLUSTER`,
    False on macOS and Windows): that switch is off while this process starts the cluster, and back after."""
    import ray
    from ray._private import ray_constants

    clusters = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = clusters
    token = Path.home() / ".ray" / "auth_token"  # where Ray keeps a token it generated
    if token.is_file() and token.stat().st_uid == os.getuid() and token.stat().st_mode & 0o077:
        token.chmod(0o600)


def _where(ray, worker, index: int) -> str:
    """The worker's host and pid, once it has built its policy; a policy that fails to build fails here, named."""
    from ray.exceptions import RayActorError

    try:
        return ray.get(worker.where.remote())
    except RayActorError as error:  # its message is Ray's traceback of the worker; the cause is the last line
        raise RuntimeError(f"label: Ray worker {index} could not start: {str(error).strip().splitlines()[-1]}") \
            from error


def label_on_ray(problems: list[dict], params: LabelParams, seed: int,
                 placement: Placement = Placement()) -> Iterator[ProblemLabels]:
    """Each problem's labels as its chunk comes back from a worker (not in input order).

    Raises RuntimeError naming the worker (index, host, pid) and the chunk's first problem when labeling
    fails there, or when workers died more than MAX_WORKER_RESTARTS times.
    """
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    started = _start_ray(params)
    actor = ray.remote(num_cpus=1, num_gpus=params.worker_gpus)(LabelWorker)
    size = params.chunk_problems
    chunks = [problems[i:i + size] for i in range(0, len(problems), size)]
    queue = list(reversed(chunks))  # popped from the end: first chunks first
    workers: list = []
    pending: dict = {}  # ObjectRef -> (worker index, chunk)
    restarts = 0

    def feed(index: int) -> None:
        while queue and sum(i == index for i, _ in pending.values()) < 2:
            chunk = queue.pop()
            pending[workers[index].label.remote(chunk)] = (index, chunk)

    try:
        workers += [actor.remote(params, seed, placement) for _ in range(min(params.workers, len(chunks)))]
        where = [_where(ray, w, i) for i, w in enumerate(workers)]
        print(f"label: {len(workers)} Ray workers: " + ", ".join(f"{i} ({w})" for i, w in enumerate(where)),
              flush=True)
        for index in range(len(workers)):
            feed(index)
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            index, chunk = pending.pop(ref)
            try:
                results = ray.get(ref)
            except RayActorError as error:
                restarts += 1
                lost = [c for i, c in pending.values() if i == index] + [chunk]
                if restarts > MAX_WORKER_RESTARTS:
                    raise RuntimeError(f"label: Ray worker {index} ({where[index]}) died, the "
                                       f"{restarts}th worker lost in this run: {error}") from error
                print(f"label: Ray worker {index} ({where[index]}) died; {len(lost)} chunk(s) from problem "
                      f"{chunk[0]['id']} go to a new worker", flush=True)
                for other in [r for r, (i, _) in pending.items() if i == index]:
                    del pending[other]
                queue.extend(reversed(lost))
                workers[index] = actor.remote(params, seed, placement)
                where[index] = _where(ray, workers[index], index)
                print(f"label: Ray worker {index} is now {where[index]}", flush=True)
            except RayTaskError as error:
                raise RuntimeError(f"label: Ray worker {index} ({where[index]}) failed on the chunk from problem "
                                   f"{chunk[0]['id']}: {error.cause!r}") from error.cause
            else:
                yield from results
            feed(index)
    finally:
        for worker in workers:
            ray.kill(worker)
        if started:
            ray.shutdown()
