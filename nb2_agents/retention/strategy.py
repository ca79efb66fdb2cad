"""The retention strategies: ``ewc``, ``distill``, ``ewc+distill`` and ``nb2``.

* ``ewc``: online EWC (:mod:`.ewc`) on each optimizer's parameters; the Fisher is estimated at
  each task's end from the task's own states, kept in the replay memory.
* ``distill``: at each task's end a frozen snapshot of the policy is kept. While later tasks
  train, every optimizer step adds, on a batch replayed from one earlier task, the distillation
  loss of that task's snapshot (:mod:`.heads`: KL(pi_old || pi_new) on actions plus value / Q
  regression): CLEAR's behaviour cloning and Progress & Compress's distillation.
* ``nb2`` (the default of ``make run``): distillation plus what NB2 keeps per task (the agent
  is told the task id): its task embedding, the head gates it conditions, and per-task output
  adapters (``nn/decoder.py``), which distillation leaves free, so a task whose actions
  contradict an earlier one's is learnable. Each new task starts from the best earlier task's
  rows, as ClonEx explores from the best earlier policy: every earlier task's rows, and fresh
  ones with the actor softened to near uniform, are probed on the new task for
  ``probe_episodes`` episodes with sampled actions, as training would act (on env seeds of their
  own, never the evaluation's), and the best start is kept (fresh on a tie). The others see
  task id 0 for every task. ``nb2+ewc`` adds online EWC: it was ``nb2`` until EWC's pull on the
  shared network was found to stop CartPole-LongPole from being learned after CartPole-v1
  (seeds 1 and 2 of ``cartpole-variants``: 0.2-0.3 with EWC, 1.0 without, CartPole kept at 1.0
  either way), while distillation alone kept every earlier task.

With task ids (``nb2``, ``nb2+ewc``) the critic is also re-initialised at each new task, with its
optimizer state, and left out of distillation and EWC (``reset_critic``; Continual World's
``reset_critic_on_task_change``): only the actor carries a task's skill, and the critic serves the
task in training alone. A critic carried over from earlier tasks fitted MountainCar-v0's values
too slowly for its actor to find the flag: after CartPole-v1, ``nb2`` never reached it (seed 0,
60k steps), and reached it on seeds 0, 1 and 2 within 15k steps with the critic reset.

Observations reach the replay memory (:mod:`.replay`: fixed byte budget, reservoir sampling per
task, float16 / uint8) through :meth:`RetentionStrategy.observe` at every env step.
TensorBoard: ``retention/kl``, ``retention/distill_loss``, ``retention/ewc_penalty`` (means
over the optimizer steps since the last write), ``retention/replay_bytes`` (bytes the stored
observations take), ``retention/replay_allocated_bytes`` (reserved up front: the budget),
``retention/replay_size``, ``retention/bytes_per_obs``, ``retention/fisher_mean``,
``retention/start_from`` (the earlier task the current one started from, -1 for fresh rows).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy

from nb2_agents.errors import UsageError
from nb2_agents.nn.model import NB2
from nb2_agents.retention.base import Strategy, register_strategy
from nb2_agents.retention.ewc import OnlineEWC
from nb2_agents.retention.heads import Part, has_critic, parts_for, reset_critic, snapshot
from nb2_agents.retention.replay import ReplayMemory
from nb2_agents.runs import atomic_write, write_json
from nb2_agents.safe_files import load_tensors

MB = 2**20
Probe = Callable[[int, int, BaseAlgorithm], float]
"""``probe(task, episodes, model)``: the model's mean score on ``task`` over that many episodes, on
env seeds of the probe's own (the curriculum loop provides it)."""
ACTOR_QUERY = 0  # NB2Heads reads the actor from the decoder's first query


@dataclass(frozen=True)
class RetentionConfig:
    """Settings of a retention strategy (validated on construction)."""

    ewc: bool = True
    distill: bool = True
    task_ids: bool = True
    ewc_strength: float = 10.0
    """lambda of the EWC penalty, on Fishers normalised to mean 1 per output head."""
    ewc_decay: float = 0.9
    ewc_average: bool = False
    """Divide the running Fisher by its decayed task count (:mod:`.ewc`), so the pull on the shared
    network stays that of one task however many came before."""
    distill_coef: float = 1.0
    replay_budget_mb: float = 64.0
    replay_batch: int = 64
    distill_every: int = 1
    """Distil at every ``distill_every``-th step of each optimizer, with ``distill_coef`` times
    ``distill_every``: the same pull on average for a fraction of the work."""
    fisher_samples: int = 128
    new_task_gain: float = 0.1
    """With task ids: a new task's actor output gain (actor-critic policies) when it starts from
    fresh rows, so its policy starts near uniform and explores instead of replaying the previous
    task's confident actions."""
    start_from_best: bool = True
    """With task ids: start each new task from the rows of the earlier task that scores best on
    it, when that beats fresh rows (module docstring)."""
    probe_episodes: int = 5
    """Episodes each candidate start is probed for."""
    reset_critic: bool | None = None
    """Re-initialise the critic at each new task and keep it out of distillation and EWC (module
    docstring). ``None``: on with task ids, off otherwise."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.ewc_strength < 0 or not 0 <= self.ewc_decay <= 1 or self.distill_coef < 0:
            raise ValueError(
                f"retention: ewc_strength >= 0, 0 <= ewc_decay <= 1 and distill_coef >= 0 are accepted, got "
                f"{self.ewc_strength}, {self.ewc_decay}, {self.distill_coef}"
            )
        if self.replay_budget_mb <= 0 or self.replay_batch < 1 or self.fisher_samples < 1:
            raise ValueError(
                "retention: replay_budget_mb > 0, replay_batch >= 1 and fisher_samples >= 1 are accepted, "
                f"got {self.replay_budget_mb}, {self.replay_batch}, {self.fisher_samples}"
            )
        for name in ("start_from_best", "ewc_average", "reset_critic"):
            value = getattr(self, name)
            if not isinstance(value, bool) and not (name == "reset_critic" and value is None):
                raise ValueError(f"retention: {name} must be true or false, got {value!r}")
        for name in ("probe_episodes", "distill_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"retention: {name} must be a positive integer, got {value!r}")

    @property
    def resets_critic(self) -> bool:
        """``reset_critic``, its default resolved (on with task ids)."""
        return self.task_ids if self.reset_critic is None else self.reset_critic


class RetentionStrategy(Strategy):
    """EWC and / or distillation from snapshots on replayed observations (module docstring)."""

    def __init__(self, config: RetentionConfig, name: str) -> None:
        self.config = config
        self.name = name
        self.uses_task_ids = config.task_ids
        self.memory: ReplayMemory | None = None
        self.parts: dict[str, Part] = {}
        self.ewc: dict[str, OnlineEWC] = {}
        self.snapshots: dict[int, BasePolicy] = {}
        self.current = -1
        self.rng = np.random.default_rng(config.seed)
        self.probe: Probe | None = None
        self.steps: dict[str, int] = {}
        """Optimizer steps seen per part (which of them distil: ``distill_every``)."""
        self.start_from: dict[int, int] = {}
        """Task → the earlier task whose rows it started from (-1: fresh rows)."""

    # --- hooks the curriculum loop calls
    def setup(self, model: BaseAlgorithm, context: Any) -> None:
        seed = int(context.get("seed", self.config.seed)) if isinstance(context, dict) else self.config.seed
        self.rng = np.random.default_rng(seed)
        self.probe = context.get("probe") if isinstance(context, dict) else None
        cfg = self.config
        if cfg.reset_critic and not has_critic(model):
            raise UsageError(
                f"retention option reset_critic: {type(model).__name__} has no critic apart from its policy; "
                "it applies to PPO, A2C, MaskablePPO, SAC and TD3"
            )
        self.memory = ReplayMemory(model.observation_space, int(cfg.replay_budget_mb * MB), seed)
        self.parts = {part.name: part for part in parts_for(model, critic=not cfg.resets_critic)}
        if cfg.ewc:
            self.ewc = {
                name: OnlineEWC(part.params, cfg.ewc_strength, cfg.ewc_decay, cfg.ewc_average)
                for name, part in self.parts.items()
            }

    def observe(self, task: int, obs: Any) -> None:
        assert self.memory is not None
        self.memory.add(task, obs)

    def on_task_start(self, task: int, model: BaseAlgorithm) -> None:
        self.current = task
        assert self.memory is not None
        earlier = sorted(t for t in self.memory.tasks if t != task)
        if earlier and self.config.resets_critic:
            reset_critic(model)
        nets: list[NB2] = getattr(model.policy, "nb2_networks", list)()
        if not (self.config.task_ids and earlier and nets):
            return
        fresh = [net.task_state(task) for net in nets]

        def start(source: int) -> None:
            """Give ``task`` the rows of ``source`` (-1: fresh rows, the actor softened)."""
            for net, rows in zip(nets, fresh, strict=True):
                net.set_task_state(task, rows if source < 0 else net.task_state(source))
                if source < 0 and isinstance(model.policy, ActorCriticPolicy):
                    net.decoder.soften(task, ACTOR_QUERY, self.config.new_task_gain)

        best = -1
        if self.config.start_from_best and self.probe is not None:
            scores = {}
            for source in [-1, *earlier]:  # fresh first: it wins ties
                start(source)
                scores[source] = self.probe(task, self.config.probe_episodes, model)
            best = max(scores, key=lambda source: scores[source])
        start(best)
        self.start_from[task] = best

    def on_task_end(self, task: int, model: BaseAlgorithm) -> None:
        assert self.memory is not None
        if task not in self.memory.sizes():
            return  # nothing observed (a zero-step task)
        if self.config.ewc:
            n = min(self.config.fisher_samples, self.memory.sizes()[task])
            obs = model.policy.obs_to_tensor(self.memory.task_sample(task, n))[0]
            was_training = model.policy.training
            model.policy.set_training_mode(False)
            for name, part in self.parts.items():
                heads: list[Callable[[], Iterable[torch.Tensor]]] = [
                    lambda head=head: head(model.policy, obs)  # type: ignore[misc]
                    for head in part.heads
                ]
                self.ewc[name].consolidate(heads)
            model.policy.set_training_mode(was_training)
        if self.config.distill:
            self.snapshots[task] = snapshot(model.policy)

    def extra_loss(self, model: BaseAlgorithm, part: str) -> torch.Tensor | None:
        if part not in self.parts:
            return None  # a critic reset at each task: nothing keeps it
        terms = []
        if part in self.ewc and self.ewc[part].active:
            penalty = self.ewc[part].penalty()
            model.logger.record_mean("retention/ewc_penalty", float(penalty.detach()))
            terms.append(penalty)
        earlier = [t for t in self.snapshots if t != self.current]
        every = self.config.distill_every
        self.steps[part] = self.steps.get(part, 0) + 1
        if earlier and self.config.distill_coef > 0 and self.steps[part] % every == 0:
            assert self.memory is not None
            task = int(self.rng.choice(earlier))  # one earlier task per step: one snapshot forward
            obs = model.policy.obs_to_tensor(self.memory.task_sample(task, self.config.replay_batch))[0]
            loss, kl = self.parts[part].distill(model.policy, self.snapshots[task], obs)
            if part != "critic":
                model.logger.record_mean("retention/kl", kl)
            model.logger.record_mean("retention/distill_loss", float(loss.detach()))
            terms.append(self.config.distill_coef * every * loss)
        return torch.stack(terms).sum() if terms else None

    def log(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.memory is not None:
            out["retention/replay_bytes"] = float(self.memory.size * self.memory.bytes_per_obs)
            out["retention/replay_allocated_bytes"] = float(self.memory.nbytes)
            out["retention/replay_size"] = float(self.memory.size)
            out["retention/bytes_per_obs"] = float(self.memory.bytes_per_obs)
        if self.ewc:
            out["retention/fisher_mean"] = float(np.mean([e.raw_fisher_mean for e in self.ewc.values()]))
        if self.current in self.start_from:
            out["retention/start_from"] = float(self.start_from[self.current])
        return out

    # --- state
    def _weights(self) -> dict[str, Any]:
        """EWC's Fishers and anchors, and every snapshot's weights."""
        return {
            "ewc": {name: e.state_dict() for name, e in self.ewc.items()},
            "snapshots": {task: p.state_dict() for task, p in self.snapshots.items()},
        }

    def _load_weights(self, weights: dict[str, Any], model: BaseAlgorithm) -> None:
        for name, ewc_state in weights["ewc"].items():
            self.ewc[name].load_state_dict(ewc_state)
        self.snapshots = {}
        for task, state in weights["snapshots"].items():
            frozen = snapshot(model.policy)
            frozen.load_state_dict(state)
            self.snapshots[int(task)] = frozen

    def checkpoint_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
        assert self.memory is not None
        memory = self.memory.state_dict()
        data = memory.pop("data")
        arrays = {f"memory.{t}.{key}": arr for t, rows in data.items() for key, arr in rows.items()}
        start_from = {str(t): s for t, s in self.start_from.items()}
        info = {"name": self.name, "memory": memory, "rng": self.rng.bit_generator.state,
                "current": self.current, "start_from": start_from, "steps": self.steps}  # fmt: skip
        weights = self._weights()
        weights["snapshots"] = {str(t): w for t, w in weights["snapshots"].items()}
        return info, arrays, weights

    def load_checkpoint_state(
        self,
        info: dict[str, Any],
        arrays: dict[str, np.ndarray],
        tensors: dict[str, Any],
        model: BaseAlgorithm,
    ) -> None:
        assert self.memory is not None
        if info.get("name") != self.name:
            raise ValueError(
                f"the checkpoint holds the state of retention {info.get('name')!r}, not {self.name!r}"
            )
        memory = info["memory"]
        data = {t: {key: arrays[f"memory.{t}.{key}"] for key in self.memory.keys} for t in memory["tasks"]}
        self.memory.load_state_dict({**memory, "data": data})
        self._load_weights(tensors, model)
        self.rng.bit_generator.state = info["rng"]
        self.current = int(info["current"])
        self.start_from = {int(t): int(s) for t, s in info["start_from"].items()}
        self.steps = {part: int(n) for part, n in info["steps"].items()}

    def save(self, folder: Path) -> None:
        """``replay.npz``, ``retention.pt`` (EWC and snapshot weights) and ``retention.json``."""
        assert self.memory is not None
        folder.mkdir(parents=True, exist_ok=True)
        self.memory.save(folder / "replay.npz")
        state = {
            **self._weights(),
            "rng": self.rng.bit_generator.state,
            "current": self.current,
            "start_from": dict(self.start_from),
        }
        atomic_write(folder / "retention.pt", lambda tmp: torch.save(state, tmp))
        write_json(folder / "retention.json", {"name": self.name, **asdict(self.config)})

    def load(self, folder: Path, model: BaseAlgorithm, trust_pickle: bool = False) -> None:
        """Restore what :meth:`save` wrote. ``retention.pt`` is read as tensors and plain data
        (``weights_only``): a file that needs unpickling is refused unless ``trust_pickle``."""
        if self.memory is None:
            self.setup(model, None)
        path = folder / "retention.pt"
        try:
            meta = json.loads((folder / "retention.json").read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot read retention state {folder / 'retention.json'}: {err}") from err
        saved = meta.get("name") if isinstance(meta, dict) else None
        if saved not in (self.name, "nb2"):  # "nb2" may hold nb2+ewc's state (below)
            raise ValueError(f"{folder} holds the state of retention {saved!r}, not {self.name!r}")
        state = load_tensors(path, path, "retention state", model.device, trust_pickle)
        if not isinstance(state, dict) or not {"ewc", "snapshots", "rng", "current"} <= state.keys():
            raise ValueError(f"cannot read retention state {path}: not a state saved by nb2's retention")
        legacy = saved == "nb2" and bool(state["ewc"])  # saved while nb2 still had EWC: nb2+ewc's state
        if saved != self.name and not (legacy and self.name == "nb2+ewc"):
            raise ValueError(f"{folder} holds the state of retention {saved!r}, not {self.name!r}")
        kept = _kept_critic(meta)
        if bool(state["ewc"]) != bool(self.ewc):
            how = "--retention nb2+ewc" + (" --retention-set reset_critic=false" if kept else "")
            raise ValueError(
                f"{folder} holds the state of retention {saved!r} {'with' if state['ewc'] else 'without'} "
                f"EWC, but {self.name!r} here is {'with' if self.ewc else 'without'} it"
                + (f": load it with {how}, what 'nb2' was when it was saved" if legacy else "")
            )
        if state["ewc"] and kept == self.config.resets_critic:  # the Fisher covers the critic, or not
            saved_how, here = ("kept across", "reset at") if kept else ("reset at", "kept across")
            raise ValueError(
                f"{folder} was saved with EWC on a critic {saved_how} tasks, but here the critic is {here} "
                f"each new task: load it with --retention-set reset_critic={str(not kept).lower()}"
            )
        self.memory = ReplayMemory.load(folder / "replay.npz", model.observation_space)
        self._load_weights(state, model)
        self.rng.bit_generator.state = state["rng"]
        self.current = int(state["current"])
        self.start_from = {int(t): int(s) for t, s in state.get("start_from", {}).items()}


def _kept_critic(meta: dict[str, Any]) -> bool:
    """Whether a saved strategy (its ``retention.json``) kept its critic across tasks; one saved
    before ``reset_critic`` existed did."""
    if "reset_critic" not in meta:
        return True
    reset = meta["reset_critic"]
    return not (bool(meta.get("task_ids", False)) if reset is None else bool(reset))


_FIXED = ("ewc", "distill", "task_ids", "seed")  # set by the strategy's name and the run's seed
OPTION_KEYS = tuple(f.name for f in fields(RetentionConfig) if f.name not in _FIXED)
_NEEDS = {
    "ewc": ("ewc_strength", "ewc_decay", "ewc_average", "fisher_samples"),
    "distill": ("distill_coef", "replay_batch", "distill_every"),
    "task_ids": ("new_task_gain", "start_from_best", "probe_episodes"),
}
"""Options that only act with one part of a strategy: given without it they would do nothing."""
_PARTS = {  # each strategy's parts: ewc, distill, task_ids
    "ewc": (True, False, False),
    "distill": (False, True, False),
    "ewc+distill": (True, True, False),
    "nb2": (False, True, True),
    "nb2+ewc": (True, True, True),
}


_DEFAULTS: dict[str, dict[str, Any]] = {
    "nb2": {"distill_every": 2},
    "nb2+ewc": {"distill_every": 2},
}
"""Each strategy's own defaults over :class:`RetentionConfig`'s. ``nb2`` distils on every second
optimizer step at twice the coefficient: on cartpole-variants at full length (seed 0, side by
side with ``none``), its retention time fell from 205.7 s to 90.9 s and its wall time from 1.39
to 1.27 times ``none``'s, with every task kept (README, "Knowledge retention")."""


def _factory(name: str, **flags: bool) -> Any:
    def make(**options: Any) -> RetentionStrategy:
        unknown = sorted(set(options) - set(OPTION_KEYS))
        if unknown:
            raise UsageError(f"unknown retention option(s) {unknown}; valid: {', '.join(OPTION_KEYS)}")
        for part, keys in _NEEDS.items():
            idle = sorted(set(options) & set(keys))
            if idle and not flags[part]:
                acting = [other for other in _PARTS if _flags(other)[part]]
                raise UsageError(
                    f"retention option(s) {idle} do nothing with {name!r}, which has no {part}; "
                    f"they act with {', '.join(acting)}"
                )
        try:
            return RetentionStrategy(RetentionConfig(**flags, **{**_DEFAULTS.get(name, {}), **options}), name)
        except (TypeError, ValueError) as err:
            raise UsageError(str(err)) from err

    return make


def _flags(name: str) -> dict[str, bool]:
    return dict(zip(("ewc", "distill", "task_ids"), _PARTS[name], strict=True))


for _name in _PARTS:
    register_strategy(_name, _factory(_name, **_flags(_name)))
