"""Training throughput: SB3's MlpPolicy vs NB2-nano (vs a flat transformer, PPO), per algorithm.

Steps per second of ``model.learn`` (rollouts and updates together), every model of a
comparison in this one process, in interleaved rounds. PPO on CartPole-v1 with RL Zoo's
hyperparameters; off-policy, DQN on CartPole-v1 and SAC on Pendulum-v1 with the entries of
``policies/dqn.yaml`` and ``policies/sac.yaml`` (RL Zoo's values), NB2's entry against the same
entry with ``MlpPolicy`` (as :mod:`benchmarks.reliability` pairs them), each past its
``learning_starts`` before timing, so every round collects and trains.

NB2 on CartPole sees 4 tokens, a single group, so its encoder runs max(n_local_layers,
n_global_layers) blocks of attention over all of them: flat attention at that depth. The flat
baseline (``attention: flat``, NB2's tokenizer and decoder) runs n_local + n_global blocks, so
the two differ by depth alone here.

``(eager inference)``: the same NB2 with its traced forward without autograd switched off
(``NB2.traced_inference``), so the rollouts' share of the gap shows side by side.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

import nb2_agents  # noqa: F401  (registers "NB2Policy")
from benchmarks.common import Point, Row, check, interleave, median, median_ratio
from nb2_agents.nn.config import get_config

ENV_ID = "CartPole-v1"
N_ENVS = 8
# rl-baselines3-zoo hyperparams/ppo.yml, CartPole-v1 (the linear schedules taken as constants)
ZOO_PPO: dict[str, Any] = dict(
    n_steps=32,
    batch_size=256,
    gae_lambda=0.8,
    gamma=0.98,
    n_epochs=20,
    ent_coef=0.0,
    learning_rate=1e-3,
    clip_range=0.2,
)
GOAL_VS_MLP = 0.5
OFF_POLICY = {
    "DQN on CartPole-v1": ("CartPole-v1", "dqn", 512),
    "SAC on Pendulum-v1": ("Pendulum-v1", "sac", 256),
}
"""Name → (env, algo, env steps per round): DQN trains 128 gradient steps every 256 env steps."""
GOAL_OFF_POLICY = 0.3


EAGER = " (eager inference)"
"""Suffix of a contender whose NB2 networks run eager without autograd too (``traced_inference``
off): the traced rollout path's share of the throughput, side by side."""


def eager_inference(model: Any) -> Any:
    """``model`` with every NB2 network's traced forward switched off."""
    for net in model.policy.nb2_networks():
        net.traced_inference = False
    return model


def policies(preset: str) -> dict[str, tuple[Any, dict[str, Any]]]:
    """Name → (policy, policy_kwargs) for every contender."""
    cfg = get_config(preset)
    flat_depth = cfg.n_local_layers + cfg.n_global_layers
    return {
        "Mlp": ("MlpPolicy", {}),
        f"NB2-{preset}": ("NB2Policy", {"preset": preset}),
        f"NB2-{preset}{EAGER}": ("NB2Policy", {"preset": preset}),
        f"flat-{preset} ({flat_depth} blocks)": (
            "NB2Policy",
            {"preset": preset, "nb2_kwargs": {"attention": "flat", "sampling": False}},
        ),
    }


def make_model(policy: Any, policy_kwargs: dict[str, Any], seed: int = 0) -> PPO:
    env = make_vec_env(ENV_ID, n_envs=N_ENVS, seed=seed)
    return PPO(policy, env, seed=seed, device="cpu", verbose=0, policy_kwargs=policy_kwargs, **ZOO_PPO)


def steps_per_second(model: PPO, steps: int) -> float:
    """Continue training for ``steps`` env steps; return the rate achieved."""
    before = model.num_timesteps
    start = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    return (model.num_timesteps - before) / (time.perf_counter() - start)


def run(quick: bool = False, preset: str = "nano") -> list[Row]:
    rounds, steps, warmup = (3, 2048, 512) if quick else (5, 4096, 1024)
    contenders = policies(preset)
    models = {name: make_model(policy, kwargs) for name, (policy, kwargs) in contenders.items()}
    for name, model in models.items():
        if name.endswith(EAGER):
            eager_inference(model)
    print(f"\n## Throughput: PPO on {ENV_ID}, {N_ENVS} envs, RL Zoo hyperparameters")
    print(f"   warm-up {warmup} steps each, then {rounds} interleaved rounds x {steps} steps each")
    print("   Mlp: SB3's defaults (pi/vf [64, 64] tanh, Adam); transformers: NB2 heads, fused Adam")
    for name, model in models.items():
        n_params = sum(p.numel() for p in model.policy.parameters())
        print(f"   {name:<22} {n_params:>7,d} parameters")
    for model in models.values():
        steps_per_second(model, warmup)
    rates = interleave(
        {name: partial(steps_per_second, model, steps) for name, model in models.items()}, rounds
    )

    rows: list[Row] = []
    for name, values in rates.items():
        per_round = ", ".join(f"{v:.0f}" for v in values)
        print(f"   {name:<22} {median(values):8.0f} steps/s   (rounds: {per_round})")
        point = Point("PPO on CartPole-v1", name, median(values), "steps/s")
        rows.append(Row("throughput", f"{name} steps/s", f"{median(values):.0f}", points=(point,)))
    nb2 = f"NB2-{preset}"
    vs_mlp = median_ratio(rates[nb2], rates["Mlp"])
    print(f"   {nb2} / Mlp = {vs_mlp:.2f}  (goal >= {GOAL_VS_MLP})")
    rows.append(
        Row("throughput", f"{nb2} / Mlp", f"{vs_mlp:.2f}", f">= {GOAL_VS_MLP}", check(vs_mlp, GOAL_VS_MLP))
    )
    for name in rates:
        if name.startswith("flat") or name.endswith(EAGER):
            ratio = median_ratio(rates[nb2], rates[name])
            print(f"   {nb2} / {name} = {ratio:.2f}")
            rows.append(Row("throughput", f"{nb2} / {name}", f"{ratio:.2f}"))
    return rows + run_off_policy(quick)


def off_policy_model(env_id: str, algo: str, policy: str) -> Any:
    """``policies/<algo>.yaml``'s entry for ``env_id`` as ``nb2 train`` builds it, with NB2
    (``policy="nb2"``) or with ``MlpPolicy`` and without NB2's options (``"mlp"``)."""
    from benchmarks.reliability import policy_overrides
    from benchmarks.reliability_figures import Spec
    from nb2_agents.config import resolve_config
    from nb2_agents.envs_util import EnvSpec
    from nb2_agents.hyperparams import ALGOS, parse_entry
    from nb2_agents.training import make_algorithm

    cfg = resolve_config(env=env_id, algo=algo, overrides=policy_overrides(Spec(env_id, algo), policy))
    hp = parse_entry(ALGOS[algo], cfg.hyperparams, f"policies/{algo}.yaml [{env_id}]")
    vec = EnvSpec(env_id, {}, algo).make_vec(hp.n_envs, 0)
    model, _ = make_algorithm(algo, hp, vec, 0, "cpu")
    return model


def run_off_policy(quick: bool = False) -> list[Row]:
    rounds = 3 if quick else 5
    rows: list[Row] = []
    print("\n## Throughput, off-policy: NB2-nano vs MlpPolicy on the same policies/ entry")
    for name, (env_id, algo, steps) in OFF_POLICY.items():
        models = {policy: off_policy_model(env_id, algo, policy) for policy in ("nb2", "mlp")}
        models["nb2-eager"] = eager_inference(off_policy_model(env_id, algo, "nb2"))
        for model in models.values():  # past learning_starts, so that every round trains
            steps_per_second(model, int(getattr(model, "learning_starts", 0)) + steps)
        rates = interleave({p: partial(steps_per_second, m, steps) for p, m in models.items()}, rounds)
        ratio = median_ratio(rates["nb2"], rates["mlp"])
        traced = median_ratio(rates["nb2"], rates["nb2-eager"])
        print(
            f"   {name}: NB2 {median(rates['nb2']):.0f} steps/s, MLP {median(rates['mlp']):.0f} steps/s, "
            f"NB2 / MLP = {ratio:.2f} (goal >= {GOAL_OFF_POLICY}); NB2 / NB2 with eager inference "
            f"= {traced:.2f}"
        )
        goal = f">= {GOAL_OFF_POLICY}"
        rows.append(
            Row("throughput", f"{name}: NB2-nano / Mlp", f"{ratio:.2f}", goal, check(ratio, GOAL_OFF_POLICY))
        )
        rows.append(Row("throughput", f"{name}: NB2-nano / NB2-nano{EAGER}", f"{traced:.2f}"))
    return rows
