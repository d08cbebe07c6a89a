"""The model registry's rules: lineage tags, the promotion gate, and hand-moved aliases.

    decision = gate((difference, low, high), margin)                # pure: a paired interval against the margin
    promote(client, "prm", "3", alias="champion", who="ana", reason="canary passed")
    rollback(client, "prm", alias="champion", who="ana", reason="bad outputs")

Every alias move leaves tags on the version it lands on: who moved it, why, when, and which
version held the alias before (`<alias>.previous`), and appends the version to the registered model's
tag `<alias>.history` (the versions that held the alias, oldest first, as integers: `promote 03` is
version 3): `rollback` pops that stack, so repeated rollbacks walk back through every earlier champion
instead of toggling between the last two.

A move is several MLflow writes (alias, version tags, history), each its own transaction, so it is made
recoverable: the whole new state is first written as an intent record (registered-model tag
`<alias>.move`), then the alias, the version's tags and the history, and the intent is deleted last. A
process killed anywhere in between leaves the intent behind; the next move of that alias, or
`finish_moves` (every `prmflow promote`, `rollback`, `registry` and `register` runs it first), writes the
recorded state again and deletes it: the registry ends in the new state, and until then it says a move is
unfinished instead of showing half of it.

A version `register` created (lineage tags, or its MLflow run is a register run) but never gated (no
`gate.promoted` tag: the run was killed, or is still scoring) is an orphan: `orphan_versions` lists them and
`promote` refuses one unless forced.

Moves are serialised by `registry_lock`: a file lock per tracking store and model name, held by
`register` from reading the champion to moving the alias (its gate compares with the version that holds
the alias at its decision), and by `promote` and `rollback`. Its scope is the processes of one machine
that use the same store (beside a SQLite database; for a remote tracking server, in the temp folder).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import yaml

from prmflow.param_rules import HEADLINE_METRICS
from prmflow.tracking import store_lock

HELDOUT_TAG = "heldout.md5"  # the held-out set a version's metrics were computed on
METRIC_TAG = "metric.{}"
HISTORY_TAG = "{}.history"  # registered-model tag: JSON list of the versions that held the alias, oldest first
HISTORY_KEPT = 200  # entries kept (MLflow caps a tag value at 5,000 characters)
MOVE_TAG = "{}.move"  # registered-model tag: the alias move being written (JSON), deleted when it is complete
TAG_VALUE_LIMIT = 5000  # MLflow's SQL stores hold 5,000 characters of a tag value
GATE_DONE_TAG = "gate.promoted"  # the last gate tag register writes: a version without it was never gated
# Fault injection for the kill tests: set to a point of a move (MOVE_POINTS) and the process SIGKILLs itself
# right after that write, as `kill -9` would.
KILL_ENV = "PRMFLOW_REGISTRY_KILL_AT"
MOVE_POINTS = ("intent", "alias", "tags", "history", "done")


@dataclasses.dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str


def version_number(version: str | int) -> int:
    """A registered model version as its number: "3", "03", " 3 " and 3 are version 3. Raises ValueError naming
    the text for anything else (a sign, a decimal point, a name, 0): MLflow itself reads "03" as version 3 but
    stores the text, and a history holding "03" never matches version 3 again."""
    text = str(version).strip()
    if not re.fullmatch(r"[0-9]+", text) or int(text) == 0:
        raise ValueError(f"version {str(version)!r}: not a version number (a whole number from 1, e.g. 3)")
    return int(text)


def gate(difference: tuple[float, float, float] | None, margin: float, metric: str = "gate metric") -> GateDecision:
    """Promote only when the whole 95% interval of challenger - champion lies above `margin`.

    `difference`: (point, low, high) of the paired bootstrap on the same held-out problems; None: there is no
    champion, so the challenger is promoted. A difference the test cannot tell from noise (low <= margin) keeps
    the champion, however large the point difference.
    """
    if difference is None:
        return GateDecision(True, "no current champion")
    point, low, high = difference
    interval = f"{metric} challenger - champion {point:+.4f} (95% interval [{low:+.4f}, {high:+.4f}])"
    if low > margin:  # False for NaN: an undefined difference never promotes
        return GateDecision(True, f"{interval}: its lower bound is above the margin {margin}")
    return GateDecision(False, f"{interval}: its lower bound is not above the margin {margin}")


def file_md5(path: str | Path) -> str:
    """The same md5 DVC records for a file, so the tag can be checked against dvc.lock."""
    digest = hashlib.md5()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_commit(cwd: str | Path = ".", generated: tuple[str, ...] = ()) -> str:
    """`git rev-parse HEAD`, with `-dirty` when tracked files changed; 'none' outside git or before a commit.

    Changes under `generated` (what the pipeline run itself writes: dvc.lock, the reports) do not count:
    a `dvc repro` from a clean commit would otherwise always register a "dirty" version.
    """
    excluded = [f":(exclude){path}" for path in generated]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=30)
        if head.returncode != 0:
            return "none"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *excluded],
                               cwd=cwd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return "none"
    return head.stdout.strip() + ("-dirty" if dirty else "")


def dvc_md5(path: str | Path) -> str:
    """The md5 DVC records for `path` (`hash: md5` in dvc.lock): dvc_data's own build of it, computed from the
    files themselves and writing nothing (`dry_run`; `.dir` suffix for a directory). Nothing is ignored (the
    project's .dvcignore is empty). Raises FileNotFoundError for a missing path."""
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    fs = LocalFileSystem()
    _, _, obj = build(HashFileDB(fs, str(path.parent / ".dvc-hash")), str(path), fs, "md5", dry_run=True)
    return obj.hash_info.value


def lineage_paths(dvc_yaml: str | Path, roots: tuple[str, ...]) -> list[str]:
    """Every dep and out of a dvc.yaml stage under `roots` (data, models), in file order, each once."""
    stages = (yaml.safe_load(Path(dvc_yaml).read_text()) or {}).get("stages", {})
    paths = [entry if isinstance(entry, str) else next(iter(entry)) for stage in stages.values()
             for entry in stage.get("deps", []) + stage.get("outs", [])]
    return list(dict.fromkeys(path for path in paths if path.split("/")[0] in roots))


def dvc_hashes(paths: list[str], root: str | Path = ".") -> dict[str, str]:
    """{path: dvc_md5} of each of `paths` (relative to `root`) that exists, hashed now from what is on disk.

    Not read from dvc.lock: while `register` runs, the lock's entries for its own deps are those of
    the previous run, so a retrained model would be tagged with its predecessor's hash.
    """
    return {path: dvc_md5(Path(root) / path) for path in sorted(paths) if (Path(root) / path).exists()}


def stage_run_ids(client, experiment_id: str, stages: tuple[str, ...], parent_run_id: str | None) -> dict[str, str]:
    """The MLflow run of each stage: the child of `parent_run_id` when set, else the latest one."""
    ids = {}
    for stage in stages:
        query = f"tags.`prmflow.stage` = '{stage}'"
        if parent_run_id:
            query += f" and tags.`mlflow.parentRunId` = '{parent_run_id}'"
        runs = client.search_runs([experiment_id], query, order_by=["attributes.start_time DESC"], max_results=1)
        if runs:
            ids[stage] = runs[0].info.run_id
    return ids


def lineage_tags(commit: str, hashes: dict[str, str], params: dict[str, object], run_ids: dict[str, str],
                 metrics: dict[str, float], heldout_md5: str) -> dict[str, str]:
    """Model version tags that trace a version to its code, data, params, runs and results.

    `git.dirty` is "true" when tracked code differed from `commit` (git_commit's `-dirty`), "unknown" outside git.
    """
    dirty = "unknown" if commit == "none" else str(commit.endswith("-dirty")).lower()
    tags = {"git.commit": commit, "git.dirty": dirty, HELDOUT_TAG: heldout_md5}
    tags |= {f"dvc.{path}": md5 for path, md5 in hashes.items()}
    tags |= {f"params.{section}": json.dumps(values, sort_keys=True) for section, values in params.items()}
    tags |= {f"run.{stage}": run_id for stage, run_id in run_ids.items()}
    tags |= {METRIC_TAG.format(k): f"{metrics[k]:.6f}" for k in HEADLINE_METRICS if k in metrics}
    return tags


def alias_version(client, name: str, alias: str):
    """The version that holds `alias`, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def registry_lock(tracking_uri: str, name: str, timeout_s: float = 600.0):
    """The lock on `name`'s aliases in the store at `tracking_uri` (its scope: the module docstring), a context
    manager; raises filelock.Timeout after `timeout_s` seconds (a register's gate scores two models inside it)."""
    return store_lock(tracking_uri, f"{name}.registry", timeout_s)


def alias_history(client, name: str, alias: str) -> list[int]:
    """The versions that held `alias`, oldest first, the current holder last. A registry from before the
    history tag starts from the current holder and the `previous` it records; entries written as text by an
    older prmflow ("3", "03") are read as their numbers."""
    tags = client.get_registered_model(name).tags
    if HISTORY_TAG.format(alias) in tags:
        return [version_number(v) for v in json.loads(tags[HISTORY_TAG.format(alias)])]
    current = alias_version(client, name, alias)
    if current is None:
        return []
    previous = current.tags.get(f"{alias}.previous")
    return ([version_number(previous)] if previous else []) + [int(current.version)]


def _kill_point(point: str) -> None:
    if os.environ.get(KILL_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def _write_move(client, name: str, alias: str, move: dict) -> None:
    """Write the state `move` records (the intent: version, history, version tags), then delete the intent.
    Every write sets a value, so writing a move again after a kill at any point ends in the same state."""
    version = str(move["version"])
    client.set_registered_model_alias(name, alias, version)
    _kill_point("alias")
    if f"{alias}.previous" not in move["tags"] and f"{alias}.previous" in client.get_model_version(name, version).tags:
        client.delete_model_version_tag(name, version, f"{alias}.previous")  # from an earlier move to it
    for key, value in move["tags"].items():
        client.set_model_version_tag(name, version, key, value)
    _kill_point("tags")
    client.set_registered_model_tag(name, HISTORY_TAG.format(alias), json.dumps(move["history"]))
    _kill_point("history")
    client.delete_registered_model_tag(name, MOVE_TAG.format(alias))
    _kill_point("done")


def unfinished_moves(client, name: str, aliases: tuple[str, ...]) -> dict[str, dict]:
    """{alias: its intent record} for each of `aliases` whose last move was interrupted."""
    tags = client.get_registered_model(name).tags
    return {alias: json.loads(tags[MOVE_TAG.format(alias)]) for alias in aliases if MOVE_TAG.format(alias) in tags}


def finish_moves(client, name: str, aliases: tuple[str, ...]) -> list[str]:
    """Complete every interrupted move of `aliases` from its intent record; one line per move completed, saying
    what it was. Call it under `registry_lock` (it writes)."""
    done = []
    for alias, move in unfinished_moves(client, name, aliases).items():
        _write_move(client, name, alias, move)
        by = move["tags"].get(f"{alias}.set_by", "?")
        done.append(f"{name}@{alias}: completed an interrupted move to version {move['version']} (by {by}, "
                    f"started {move['tags'].get(f'{alias}.set_at', '?')}: "
                    f"{move['tags'].get(f'{alias}.reason', '')})")
    return done


def _move(client, name: str, alias: str, version: int, history: list[int], record: dict[str, str],
          version_tags: dict[str, str] | None = None) -> None:
    """Move `alias` to `version` with `history`, tagging the version `<alias>.<key>` for `record` and `set_at`,
    and with `version_tags` as they are: intent first, then the writes (module docstring). Raises ValueError,
    before writing anything, when the intent would not fit in a tag (a reason thousands of characters long)."""
    stamp = {"set_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tags = {f"{alias}.{key}": value for key, value in (record | stamp).items()} | (version_tags or {})
    move = {"version": version, "history": history[-HISTORY_KEPT:], "tags": tags}
    intent = json.dumps(move)
    if len(intent) > TAG_VALUE_LIMIT:
        raise ValueError(f"{name}@{alias}: the move's record is {len(intent)} characters, more than the "
                         f"{TAG_VALUE_LIMIT} a registry tag holds: shorten the reason")
    client.set_registered_model_tag(name, MOVE_TAG.format(alias), intent)
    _kill_point("intent")
    _write_move(client, name, alias, move)


def move_alias(client, name: str, alias: str, version: str | int, who: str, reason: str,
               version_tags: dict[str, str] | None = None) -> int | None:
    """Point `alias` at `version`, record who/why/when and the previous holder on it (and `version_tags`, in
    the same recoverable move), push it on the alias history; return the previous holder. An interrupted
    earlier move of `alias` is completed first. Call it under `registry_lock`."""
    finish_moves(client, name, (alias,))
    version = version_number(version)
    previous = alias_version(client, name, alias)
    previous_version = int(previous.version) if previous else None
    history = alias_history(client, name, alias)
    record = {"set_by": who, "reason": reason}
    if previous_version not in (None, version):
        record["previous"] = str(previous_version)
    if history[-1:] != [version]:
        history.append(version)
    _move(client, name, alias, version, history, record, version_tags)
    return previous_version


def orphan_versions(client, name: str) -> list[int]:
    """The versions of `name` that `register` created but never gated (module docstring), in order."""
    from mlflow.exceptions import MlflowException

    def registered_by_a_run(version) -> bool:
        if "git.commit" in version.tags:  # the first lineage tag register writes
            return True
        try:
            return bool(version.run_id) and client.get_run(version.run_id).data.tags.get("prmflow.stage") == "register"
        except MlflowException:  # its run was deleted
            return False

    versions = client.search_model_versions(f"name = '{name}'")
    return sorted(int(v.version) for v in versions if GATE_DONE_TAG not in v.tags and registered_by_a_run(v))


def _checked_target(client, name: str, version: str | int, force: bool) -> int:
    """`version` as a number, once it exists and is not an orphan (unless `force`); raises ValueError."""
    number = version_number(version)
    client.get_model_version(name, str(number))  # raises, naming the version, if it does not exist
    if not force and number in orphan_versions(client, name):
        raise ValueError(f"{name} version {number} is an orphan: `prmflow register` created it and tagged its "
                         f"lineage but recorded no gate decision (the run was killed, or is still running); "
                         f"pass --force to move the alias to it anyway")
    return number


def promote(client, name: str, version: str | int, alias: str, who: str, reason: str,
            force: bool = False) -> int | None:
    """Move `alias` to `version` by hand; return the version it left. Raises ValueError for a text that is not a
    version number or an orphan version (unless `force`), MlflowException for a version that does not exist."""
    number = _checked_target(client, name, version, force)
    return move_alias(client, name, alias, number, who, reason)


def rollback(client, name: str, alias: str, who: str, reason: str, to: str | int | None = None,
             force: bool = False) -> int:
    """Move `alias` back to the version that held it before the current one (or to `to`); return that version.

    The current holder is popped off the alias history, so the next rollback goes one further back. `to`
    truncates the history after that version's last turn, or pushes it when it never held the alias."""
    finish_moves(client, name, (alias,))
    current = alias_version(client, name, alias)
    if current is None:
        raise ValueError(f"{name}@{alias}: no version holds this alias, nothing to roll back")
    history = alias_history(client, name, alias)
    if to is None:
        while history and history[-1] == int(current.version):
            history.pop()
        if not history:
            raise ValueError(f"{name}@{alias}: version {current.version} is the first version in the alias "
                             f"history; pass the version to roll back to (--to)")
    else:
        to = _checked_target(client, name, to, force)
        history = history[:len(history) - history[::-1].index(to)] if to in history else history + [to]
    target = history[-1]
    _move(client, name, alias, target, history, {"set_by": who, "reason": f"rollback from {current.version}: {reason}"})
    return target


def registry_state(client, name: str, alias: str, challenger_alias: str) -> dict:
    """What the registry holds now: the versions behind both aliases, the champion's history and the last
    move's who/why/when (from the champion's tags), the orphan versions and the target of each unfinished move
    ({alias: version}; empty once `finish_moves` ran); versions are ints, None where no version holds an alias."""
    champion, challenger = (alias_version(client, name, a) for a in (alias, challenger_alias))
    moved = {key: champion.tags.get(f"{alias}.{key}") for key in ("set_by", "reason", "set_at")} if champion else {}
    unfinished = unfinished_moves(client, name, (alias, challenger_alias))
    return {"champion_version": int(champion.version) if champion else None,
            "challenger_version": int(challenger.version) if challenger else None,
            "champion_history": alias_history(client, name, alias), "champion_set": moved,
            "orphan_versions": orphan_versions(client, name),
            "unfinished_moves": {a: move["version"] for a, move in unfinished.items()}}
