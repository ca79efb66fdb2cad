"""Memory over time on partially observable tasks: NB2 with memory against NB2 without it, sb3-contrib's
``RecurrentPPO`` (``MlpLstmPolicy``) and frame stacking (``VecFrameStack`` + ``MlpPolicy``).

``python -m benchmarks.memory [--rows cartpole-novel,memory-s7,repeat-previous] [--methods ...]
[--seeds 0,1,2] [--steps-scale 1.0] [--set KEY=VALUE ...] [--workers 2]
[--runs-dir runs/benchmarks/memory] [--quick]``.

Rows (:data:`ROWS`): the env's entry of ``policies/ppo.yaml`` sets the budget, the hyperparameters
and K (``policy_kwargs.memory``). ``--set`` changes the entry of every row as ``nb2 train --set``
does (``--set n_epochs=10 --set policy_kwargs.memory=8``), validated as the file is; give such a
variant its own ``--runs-dir``.

=================  ================================  ========================================
row                env                               why
=================  ================================  ========================================
cartpole-novel     nb2/CartPoleNoVel-v1              CartPole without velocities (RL Zoo's test
                                                     of RecurrentPPO); solved = return >= 475
memory-s7          MiniGrid-MemoryS7-v0              a cue seen at the start decides the exit
                                                     (skipped without MiniGrid)
repeat-previous    popgym-RepeatPreviousEasy-v0      POPGym: output the card seen 4 steps ago
                                                     (skipped without ``nb2-agents[popgym]``)
=================  ================================  ========================================

Methods, each with the entry's PPO hyperparameters (n_envs, n_steps, batch size, epochs, learning
rate, ...): ``nb2-memory`` (NB2Policy, ``MemoryWindow`` of K), ``nb2`` (NB2Policy, no memory),
``lstm`` (RecurrentPPO ``MlpLstmPolicy`` with RL Zoo's CartPoleNoVel policy settings: LSTM of 64
for actor and critic, ``net_arch`` 64, ReLU, no orthogonal init) and ``stack`` (``MlpPolicy`` on
the last K observations, ``VecFrameStack``). MiniGrid cells are ids, not pixels: no method divides
them by 255.

Per run: the training curve (the mean return of SB3's last 100 training episodes,
``ep_info_buffer``, at :data:`CURVE_POINTS` points of the budget: what a recipe is chosen on),
held-out return (one episode on each of :data:`EPISODES` env seeds ``10_000_000 + 1000 s
+ e``, never seen in training; greedy actions, MiniGrid's sampled), training steps per second
(``learn`` alone, side by side with the other runs: a ratio between methods of one invocation is the
figure, not the absolute), and the memory each env carries while acting, in bytes (NB2: the window
of K observations plus the cached K summaries; LSTM: hidden and cell states of both LSTMs; stack:
K float32 observations). Per row and method: per-seed returns, mean with a 95 % bootstrap CI, worst
seed.

The cost row measures rollout steps per second (``collect_rollouts`` alone: acting, env steps,
the window) of NB2 with K = 1, 8 and 32 on CartPoleNoVel, in this process, interleaved over
rounds (median ratio): target K = 32 >= 0.5 x K = 1.

Targets (printed, never asserted): CartPoleNoVel, ``nb2-memory`` >= 475 on 3 of 3 seeds and
``nb2`` below it; MemoryS7, ``nb2-memory``'s mean >= ``lstm``'s; cost, the ratio above.

Resume: each finished (row, method, seed) is kept under ``{runs-dir}/measured/``; a later invocation
reuses those of exactly the same job.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

from benchmarks.common import (
    MEASURED_DIR,
    add_run_options,
    interleave,
    median_ratio,
    names_of,
    parse_run_options,
    run_jobs,
)
from nb2_agents.errors import UsageError
from nb2_agents.hyperparams import assignments

if TYPE_CHECKING:
    from nb2_agents.hyperparams import Hyperparams

EPISODES = 10
SEEDS = (0, 1, 2)
WORKERS = 2
RUNS_DIR = Path("runs/benchmarks/memory")
QUICK_RUNS_DIR = Path("runs/benchmarks/memory-quick")
QUICK_STEPS = 2_000
EVAL_SEED_BASE = 10_000_000
METHODS = ("nb2-memory", "nb2", "lstm", "stack")
COST_KS = (1, 8, 32)
CURVE_POINTS = 40


@dataclass(frozen=True)
class Task:
    env: str
    package: str | None
    """The module it needs (None: always there)."""
    solved: float | None = None


ROWS: dict[str, Task] = {
    "cartpole-novel": Task("nb2/CartPoleNoVel-v1", None, solved=475.0),
    "memory-s7": Task("MiniGrid-MemoryS7-v0", "minigrid"),
    "repeat-previous": Task("popgym-RepeatPreviousEasy-v0", "popgym"),
}


@dataclass(frozen=True)
class Job:
    row: str
    env: str
    method: str
    seed: int
    steps: int
    episodes: int
    device: str
    threads: int
    overrides: tuple[tuple[str, Any], ...] = ()
    """``--set`` (key, value) pairs on the env's entry."""

    @property
    def label(self) -> str:
        return f"{self.row} {self.method} s{self.seed}"


@dataclass
class Outcome:
    job: Job
    returns: list[float] = field(default_factory=list)
    steps_per_s: float = 0.0
    train_s: float = 0.0
    memory_bytes: int = 0
    k: int = 0
    curve: list[tuple[int, float]] = field(default_factory=list)
    """(step, mean return of the last 100 training episodes)."""
    error: str | None = None

    def summary(self) -> str:
        last = f", training {self.curve[-1][1]:.3g} at the end" if self.curve else ""
        return (
            f"held-out return {np.mean(self.returns):.3g}{last}, {self.steps_per_s:.0f} steps/s, "
            f"{self.memory_bytes} B/env"
        )


# --------------------------------------------------------------------------- one run


def _entry(env: str, overrides: Sequence[tuple[str, Any]] = ()) -> Hyperparams:
    """The env's entry of ``policies/ppo.yaml`` with ``overrides`` (``--set``) on top; it must set
    ``policy_kwargs.memory``."""
    from stable_baselines3 import PPO

    from nb2_agents.hyperparams import DATA_DIR, load_entry, parse_entry, set_dotted

    entry, labels = load_entry(DATA_DIR / "policies" / "ppo.yaml", env)
    for key, value in overrides:
        set_dotted(entry, key, value)
        labels[key.split(".")[0]] = "--set "
    hp = parse_entry(PPO, entry, labels)
    if hp.memory is None:
        raise ValueError(f"policies/ppo.yaml [{env}] sets no policy_kwargs.memory")
    return hp


def _make_env(job: Job, n_envs: int, seed: int, k: int) -> Any:
    from stable_baselines3.common.vec_env import VecFrameStack

    from nb2_agents.envs_util import EnvSpec, check_env_id
    from nb2_agents.memory import MemoryWindow

    check_env_id(job.env)
    spec = EnvSpec(job.env, {}, "ppo")
    if job.method == "nb2-memory":
        return MemoryWindow(spec.make_vec(n_envs, seed), k)
    if job.method == "stack":  # VecFrameStack stacks Boxes: a Discrete observation as its one-hot
        probe = spec.make()
        flat = not isinstance(probe.observation_space, gym.spaces.Box)
        probe.close()

        def one_hot(**_: Any) -> gym.Env:
            return gym.wrappers.FlattenObservation(gym.make(job.env, **spec.gym_kwargs))

        return VecFrameStack(spec.make_vec(n_envs, seed, make=one_hot if flat else None), k)
    return spec.make_vec(n_envs, seed)


def _model(job: Job, kwargs: dict[str, Any], env: Any, k: int) -> Any:
    from sb3_contrib import RecurrentPPO
    from stable_baselines3 import PPO
    from torch import nn

    kwargs = dict(kwargs)
    policy_kwargs = dict(kwargs.pop("policy_kwargs", {}))
    kwargs.pop("policy", None)
    cells = job.env.startswith("MiniGrid-")  # cell ids, not pixels
    common = dict(seed=job.seed, device=job.device, verbose=0)
    if job.method == "nb2-memory":
        return PPO("NB2Policy", env, policy_kwargs={**policy_kwargs, "memory": k}, **common, **kwargs)
    if job.method == "nb2":
        policy_kwargs.pop("memory", None)
        return PPO("NB2Policy", env, policy_kwargs=policy_kwargs, **common, **kwargs)
    mlp: dict[str, Any] = {"normalize_images": False} if cells else {}
    if job.method == "stack":
        return PPO("MlpPolicy", env, policy_kwargs=mlp, **common, **kwargs)
    lstm = dict(
        ortho_init=False,
        activation_fn=nn.ReLU,
        lstm_hidden_size=64,
        enable_critic_lstm=True,
        net_arch=dict(pi=[64], vf=[64]),
        **mlp,
    )
    return RecurrentPPO("MlpLstmPolicy", env, policy_kwargs=lstm, **common, **kwargs)


def memory_bytes(model: Any, job: Job, k: int) -> int:
    """What one env carries between steps while acting, in bytes, after two steps of one env."""
    space = model.observation_space
    if job.method == "nb2":
        return 0
    if job.method == "nb2-memory":
        venv = _make_env(job, 1, 0, k)
        obs = venv.reset()
        for _ in range(2):
            action, _ = model.predict(obs)
            obs, *_ = venv.step(action)
        net = model.policy.nb2_networks()[0]
        venv.close()
        return int(venv.window.nbytes() + net._cache.nbytes())
    if job.method == "stack":
        return int(np.prod(space.shape)) * np.dtype(space.dtype).itemsize
    lstm = model.policy.lstm_actor
    per = 2 * lstm.num_layers * lstm.hidden_size * 4  # hidden and cell state, float32
    return per * (2 if model.policy.lstm_critic is not None else 1)


def probe_bytes(job: Job) -> int:
    """:func:`memory_bytes` of an untrained model for ``job``'s env and method (it does not depend
    on training), so that runs kept by earlier versions are reported by today's measure."""
    hp = _entry(job.env, job.overrides)
    k = int(hp.memory or 0)
    model = _model(job, {}, _make_env(job, 1, 0, k), k)
    return memory_bytes(model, job, k)


def run_job(job: Job) -> Outcome:
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.utils import set_random_seed

    torch.set_num_threads(job.threads)
    hp = _entry(job.env, job.overrides)
    n_envs, k = hp.n_envs, int(hp.memory or 0)
    kwargs = {key: v(1.0) if key == "ent_coef" and callable(v) else v for key, v in hp.algo_kwargs.items()}
    if job.steps < kwargs.get("n_steps", 2048) * n_envs:  # --quick: one short rollout
        kwargs["n_steps"] = max(job.steps // n_envs, 8)
        kwargs["batch_size"] = min(kwargs.get("batch_size", 64), kwargs["n_steps"] * n_envs)
    env = _make_env(job, n_envs, job.seed, k)
    model = _model(job, kwargs, env, k)
    curve = Curve(max(job.steps // CURVE_POINTS, 1))
    start = time.perf_counter()
    model.learn(job.steps, callback=curve)
    train_s = time.perf_counter() - start
    deterministic = not job.env.startswith("MiniGrid-")
    returns = []
    for e in range(job.episodes):
        seed = EVAL_SEED_BASE + 1000 * job.seed + e
        vec = _make_env(job, 1, seed, k)
        set_random_seed(seed)
        rewards, _ = evaluate_policy(model, vec, 1, deterministic=deterministic, return_episode_rewards=True)
        returns += [float(r) for r in rewards]
        vec.close()
    env.close()
    return Outcome(
        job, returns, model.num_timesteps / train_s, train_s, memory_bytes(model, job, k), k,
        curve.points,
    )  # fmt: skip


class Curve(BaseCallback):
    """Keeps (step, mean return of SB3's last 100 training episodes) every ``every`` steps."""

    def __init__(self, every: int) -> None:
        super().__init__()
        self.every = every
        self.points: list[tuple[int, float]] = []
        self._next = every

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        buffer = self.model.ep_info_buffer
        if self.num_timesteps >= self._next and buffer:
            self.points.append((self.num_timesteps, float(np.mean([e["r"] for e in buffer]))))
            self._next += self.every


# --------------------------------------------------------------------------- the cost of K


def rollout_rates(ks: Sequence[int], rounds: int, n_steps: int = 64) -> dict[int, list[float]]:
    """Seconds per rollout step of NB2 on CartPoleNoVel (8 envs) for each K, interleaved."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import CallbackList

    models = {}
    for k in ks:
        job = Job("cost", "nb2/CartPoleNoVel-v1", "nb2-memory", 0, 0, 0, "cpu", 1)
        model = PPO(
            "NB2Policy",
            _make_env(job, 8, 0, k),
            n_steps=n_steps,
            policy_kwargs={"memory": k},
            device="cpu",
            seed=0,
        )
        model._setup_learn(n_steps * 8, CallbackList([]))
        models[k] = model

    def collect(model: Any) -> float:
        callback = CallbackList([])
        callback.init_callback(model)
        start = time.perf_counter()
        model.collect_rollouts(model.env, callback, model.rollout_buffer, n_steps)
        return (time.perf_counter() - start) / (n_steps * model.n_envs)

    for model in models.values():
        collect(model)  # warm up
    times = interleave({str(k): (lambda m=model: collect(m)) for k, model in models.items()}, rounds)
    return {int(k): v for k, v in times.items()}


# --------------------------------------------------------------------------- figures


def _ci(values: list[float]) -> tuple[float, float]:
    from nb2_agents.curriculum.metrics import bootstrap_ci

    _, low, high = bootstrap_ci(values)
    return low, high


def figures(outcomes: list[Outcome]) -> dict[str, dict[str, Any]]:
    """Per row and method: per-seed held-out returns, mean, CI, worst, speed and memory."""
    out: dict[str, dict[str, Any]] = {}
    for o in outcomes:
        if o.error:
            continue
        cell = out.setdefault(o.job.row, {}).setdefault(
            o.job.method, {"per_seed": {}, "steps_per_s": [], "memory_bytes": o.memory_bytes}
        )
        cell["per_seed"][o.job.seed] = float(np.mean(o.returns))
        cell["steps_per_s"].append(o.steps_per_s)
    for methods in out.values():
        for cell in methods.values():
            values = list(cell["per_seed"].values())
            cell["mean"] = float(np.mean(values))
            cell["ci"] = _ci(values)
            cell["worst"] = float(min(values))
            cell["steps_per_s"] = float(np.median(cell["steps_per_s"]))
    return out


def checks(figs: dict[str, dict[str, Any]], cost: dict[int, float] | None) -> list[dict[str, Any]]:
    rows = []
    novel = figs.get("cartpole-novel", {})
    if "nb2-memory" in novel:
        seeds = novel["nb2-memory"]["per_seed"]
        solved = sum(v >= 475 for v in seeds.values())
        rows.append(
            {
                "metric": "CartPoleNoVel: nb2-memory seeds >= 475",
                "value": f"{solved} of {len(seeds)}",
                "goal": "3 of 3",
                "met": solved == len(seeds) >= 3,
            }
        )
    if "nb2" in novel:
        seeds = novel["nb2"]["per_seed"]
        failed = sum(v < 475 for v in seeds.values())
        rows.append(
            {
                "metric": "CartPoleNoVel: nb2 without memory fails",
                "value": f"{failed} of {len(seeds)} below 475",
                "goal": "fails",
                "met": failed == len(seeds),
            }
        )
    s7 = figs.get("memory-s7", {})
    if "nb2-memory" in s7 and "lstm" in s7:
        a, b = s7["nb2-memory"]["mean"], s7["lstm"]["mean"]
        rows.append(
            {
                "metric": "MemoryS7: nb2-memory mean vs lstm",
                "value": f"{a:.3f} vs {b:.3f}",
                "goal": ">= lstm",
                "met": a >= b,
            }
        )
    if cost:
        ratio = cost[max(cost)]
        rows.append(
            {
                "metric": f"rollout steps/s, K={max(cost)} / K=1",
                "value": f"{ratio:.2f}",
                "goal": ">= 0.5",
                "met": ratio >= 0.5,
            }
        )
    return rows


def table(figs: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| row | method | per seed | mean [95 % CI] | worst | train steps/s | bytes / env |",
        "|---|---|---|---|---|---|---|",
    ]
    for row, methods in figs.items():
        for method in METHODS:
            if method not in methods:
                continue
            c = methods[method]
            per = ", ".join(f"{v:.3g}" for _, v in sorted(c["per_seed"].items()))
            lines.append(
                f"| {row} | {method} | {per} | {c['mean']:.3g} [{c['ci'][0]:.3g}, {c['ci'][1]:.3g}] | "
                f"{c['worst']:.3g} | {c['steps_per_s']:.0f} | {c['memory_bytes']:,} |"
            )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=names_of(list(ROWS), "row"), default=list(ROWS))
    parser.add_argument("--methods", type=names_of(METHODS, "method"), default=list(METHODS))
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="default 0,1,2")
    parser.add_argument("--steps-scale", type=float, default=1.0)
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="change every row's entry, e.g. --set n_epochs=10 --set policy_kwargs.memory=8",
    )  # fmt: skip
    parser.add_argument("--episodes", type=int, default=EPISODES)
    parser.add_argument("--cost-rounds", type=int, default=10, help="0: skip the cost of K")
    parser.add_argument("--quick", action="store_true", help=f"seed 0, {QUICK_STEPS} steps, 2 episodes")
    add_run_options(parser, WORKERS, RUNS_DIR, QUICK_RUNS_DIR)
    args, opts = parse_run_options(parser, argv)
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    runs_dir = opts["runs_dir"] or (QUICK_RUNS_DIR if args.quick else RUNS_DIR)
    episodes = 2 if args.quick else args.episodes
    device = "cpu" if opts["device"] == "auto" else opts["device"]

    overrides = tuple(assignments(args.set).items())
    jobs, skipped = [], {}
    for row in args.rows:
        task = ROWS[row]
        if task.package and importlib.util.find_spec(task.package) is None:
            skipped[row] = f"{task.package} is not installed"
            continue
        try:
            budget = _entry(task.env, overrides).n_timesteps
        except UsageError as err:  # a bad --set: named, before any run starts
            parser.error(str(err))
        steps = QUICK_STEPS if args.quick else int(budget * args.steps_scale)
        jobs += [
            Job(row, task.env, m, s, steps, episodes, device, args.threads, overrides)
            for m in args.methods
            for s in seeds
        ]
    print(f"## Memory over time: {len(jobs)} runs, {opts['workers']} side by side; {runs_dir}", flush=True)
    for row, why in skipped.items():
        print(f"   {row}: skipped ({why})")

    def where(job: Job) -> Path:
        return runs_dir / MEASURED_DIR / f"{job.row}__{job.method}__s{job.seed}.json"

    outcomes = run_jobs(
        jobs,
        opts["workers"],
        run_job,
        where,
        lambda job, data: Outcome(**{**data, "job": job, "curve": [tuple(p) for p in data.get("curve", [])]}),
        lambda job, error: Outcome(job, error=error),
    )
    probed: dict[tuple[str, str], int] = {}
    for o in outcomes:  # today's measure, also for runs kept by an earlier version
        key = (o.job.row, o.job.method)
        if key not in probed:
            probed[key] = probe_bytes(o.job)
        o.memory_bytes = probed[key]
    cost = None
    if args.cost_rounds:
        times = rollout_rates(COST_KS, 2 if args.quick else args.cost_rounds)
        cost = {k: median_ratio(times[COST_KS[0]], times[k]) for k in COST_KS}
        print("   rollout steps/s relative to K=1: " + ", ".join(f"K={k}: {r:.2f}" for k, r in cost.items()))
    figs = figures(outcomes)
    report = {
        "config": {
            "overrides": dict(overrides),
            "seeds": seeds,
            "episodes": episodes,
            "steps_scale": args.steps_scale,
            "quick": args.quick,
        },
        "skipped": skipped,
        "figures": figs,
        "cost_vs_k1": cost,
        "checks": checks(figs, cost),
        "runs": [asdict(o) for o in outcomes],
    }
    runs_dir.mkdir(parents=True, exist_ok=True)
    (runs_dir / "summary.json").write_text(json.dumps(report, indent=1, default=str))
    text = (
        table(figs)
        + "\n\n"
        + "\n".join(
            f"- {c['metric']}: {c['value']} (goal {c['goal']}: {'met' if c['met'] else 'missed'})"
            for c in report["checks"]
        )
    )
    (runs_dir / "summary.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
