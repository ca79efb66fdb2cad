"""The main job of ``make run``: PPO + NB2-nano on CartPole-v1 with RL Zoo's hyperparameters.

Writes ``runs/{env}__ppo__{preset}__s{seed}__{time}/`` (TensorBoard logs, Monitor CSVs,
``model.zip``, ``eval.json``) and prints the evaluation. ``python -m nb2_agents.quickstart --help``
lists the few options; the full ``nb2 train`` CLI supersedes this.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

import nb2_agents  # noqa: F401  (registers "NB2Policy")
from nb2_agents.hyperparams import DATA_DIR, load_hyperparams


def run_dir(root: Path, env_id: str, algo: str, preset: str, seed: int) -> Path:
    """A fresh ``{env}__{algo}__{preset}__s{seed}__{time}`` folder; never reuses one."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = root / f"{env_id}__{algo}__{preset}__s{seed}__{stamp}"
    path, n = base, 1
    while path.exists():
        path, n = Path(f"{base}-{n}"), n + 1
    path.mkdir(parents=True)
    return path


def write_json(path: Path, data: dict) -> None:
    """Write atomically: a half-written eval.json never replaces a good one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="default: the hyperparameter file's")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--eval-episodes", type=int, default=20)
    args = parser.parse_args(argv)

    hp = load_hyperparams(PPO, args.env, DATA_DIR / "policies" / "ppo.yaml")
    preset = str(hp.algo_kwargs.get("policy_kwargs", {}).get("preset", "nano"))
    out = run_dir(args.runs_dir, args.env, "ppo", preset, args.seed)
    env = make_vec_env(args.env, n_envs=hp.n_envs, seed=args.seed, monitor_dir=str(out))
    model = PPO(hp.policy, env, seed=args.seed, tensorboard_log=str(out), verbose=0, **hp.algo_kwargs)
    steps = args.steps or hp.n_timesteps
    print(f"training PPO + NB2-{preset} on {args.env} for {steps} steps -> {out}")
    start = time.perf_counter()
    model.learn(steps, tb_log_name="tb", progress_bar=True)
    seconds = time.perf_counter() - start
    model.save(out / "model.zip")

    eval_env = Monitor(gym.make(args.env))
    eval_env.reset(seed=args.seed + 10_000)
    returns, lengths = evaluate_policy(
        model, eval_env, n_eval_episodes=args.eval_episodes, deterministic=True, return_episode_rewards=True
    )
    assert isinstance(returns, list) and isinstance(lengths, list)  # return_episode_rewards=True
    result = {
        "env": args.env,
        "algo": "ppo",
        "preset": preset,
        "seed": args.seed,
        "steps": model.num_timesteps,
        "train_seconds": round(seconds, 1),
        "episodes": len(returns),
        "mean_return": float(sum(returns) / len(returns)),
        "std_return": float(np.std(returns)),
        "mean_length": float(sum(lengths) / len(lengths)),
    }
    write_json(out / "eval.json", result)
    print(
        f"evaluation over {result['episodes']} episodes: {result['mean_return']:.1f} ± "
        f"{result['std_return']:.1f} (trained {result['steps']} steps in {seconds:.0f} s)\n"
        f"model: {out / 'model.zip'}\ntensorboard --logdir {args.runs_dir}"
    )
    return result


if __name__ == "__main__":
    main()
