"""``nb2 evaluate`` as a function: load a model (run folder or zip) and measure it.

>>> result = evaluate("runs/CartPole-v1__ppo__nano__s0__20250101-120000")  # doctest: +SKIP
>>> result.mean_return, result.success_rate  # doctest: +SKIP
(500.0, None)
"""

from __future__ import annotations

import importlib.util
import json
import os
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from sb3_contrib import MaskablePPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import VecEnv

from nb2_agents.envs_util import EnvSpec, check_env_id
from nb2_agents.errors import UsageError
from nb2_agents.hyperparams import ALGOS
from nb2_agents.memory.wrapper import with_memory_of
from nb2_agents.normalize import evaluation_env, read_stats, stats_for
from nb2_agents.runs import read_meta
from nb2_agents.sb3.algos import recognise_data
from nb2_agents.zoo.registry import resolve_any

DEFAULT_EPISODES = 20
EVAL_SEED_OFFSET = 10_000
"""A run's evaluations use seed + 10000, so they never replay its training episodes."""


@dataclass
class EvalResult:
    """What ``nb2 evaluate --json`` prints (and a run's ``eval.json`` holds)."""

    mean_return: float
    std_return: float
    episodes: int
    success_rate: float | None
    """Share of episodes with ``info["is_success"]``; None where the env reports no success."""
    mean_length: float
    std_length: float
    env: str
    seed: int
    deterministic: bool
    model: str
    algo: str
    steps_trained: int
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        text = (
            f"{self.env}: return {self.mean_return:.2f} ± {self.std_return:.2f}, "
            f"length {self.mean_length:.1f} over {self.episodes} episodes "
            f"({'deterministic' if self.deterministic else 'stochastic'}, seed {self.seed})"
        )
        if self.success_rate is not None:
            text += f", success {100 * self.success_rate:.0f}%"
        return text


def guess_algo(path: Path) -> str:
    """The ``--algo`` name of a model zip: nb2's metadata, else from SB3's saved data."""
    try:
        meta = read_meta(path)
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data"))
    except (KeyError, ValueError, zipfile.BadZipFile, OSError) as err:
        raise UsageError(f"{path}: not an SB3 model zip with a readable data member ({err})") from err
    found = recognise_data(data, meta) if isinstance(data, dict) else None
    if found is None:
        raise UsageError(f"{path}: cannot tell which algorithm saved it; valid algorithms: {sorted(ALGOS)}")
    return found


@dataclass
class LoadedModel:
    """A model with what nb2 knows about it."""

    model: BaseAlgorithm
    algo: str
    path: Path
    """The model zip."""
    meta: dict[str, Any]
    """nb2's metadata from the zip (env, env_kwargs, preset, seed, eval_seed); {} for plain SB3 zips."""
    run_dir: Path | None


def load_model(path: str | Path, device: str = "auto", trust_pickle: bool = False) -> LoadedModel:
    """Load a run folder's model.zip or a model zip, checking the file first. Nothing in it is
    unpickled (:mod:`nb2_agents.safe_load`) unless ``trust_pickle`` (``--trust-pickle``)."""
    from nb2_agents.safe_load import load_algorithm

    model_path, run_dir = resolve_any(path)
    try:
        model, algo = load_algorithm(model_path, device, trust_pickle)
    except UsageError:
        raise
    except Exception as err:  # SB3's load after --trust-pickle: anything unpickled code may raise
        why = " ".join(str(err).split())[:300]
        raise UsageError(
            f"cannot load model file {model_path} with SB3's load: {type(err).__name__}: {why}"
        ) from err
    return LoadedModel(model, algo, model_path, read_meta(model_path), run_dir)


def _success_collector(store: list[bool], key: str) -> Any:
    def callback(locals_: dict[str, Any], _globals: dict[str, Any]) -> None:
        if locals_["done"]:
            success = locals_["info"].get(key)
            if success is not None:
                store.append(bool(success))

    return callback


def run_episodes(
    model: BaseAlgorithm,
    vec: VecEnv,
    episodes: int,
    deterministic: bool,
    success_key: str = "is_success",
) -> tuple[list[float], list[int], list[bool]]:
    """SB3's ``evaluate_policy`` (the masked one for MaskablePPO): returns, lengths and the
    ``info[success_key]`` of each finished episode that reports one."""
    successes: list[bool] = []
    evaluate_fn: Any = evaluate_policy
    # the masked variant passes each step's action masks (exported MaskablePPO files take them too)
    if isinstance(model, MaskablePPO) or getattr(model, "algo", None) == "maskable_ppo":
        from sb3_contrib.common.maskable.evaluation import evaluate_policy as evaluate_fn
    returns, lengths = evaluate_fn(
        model,
        vec,
        n_eval_episodes=episodes,
        deterministic=deterministic,
        return_episode_rewards=True,
        callback=_success_collector(successes, success_key),
    )
    assert isinstance(returns, list) and isinstance(lengths, list)
    return [float(r) for r in returns], [int(n) for n in lengths], successes


def evaluate(
    path: str | Path,
    env: str | None = None,
    episodes: int = DEFAULT_EPISODES,
    deterministic: bool | None = None,
    seed: int | None = None,
    video: str | Path | None = None,
    env_kwargs: dict[str, Any] | None = None,
    device: str = "auto",
    trust_pickle: bool = False,
) -> EvalResult:
    """Evaluate a run folder's ``model.zip`` (or any model zip, or an ``.onnx`` / ``.pt`` file
    from ``nb2 export``, deterministic actions only) for ``episodes`` episodes.

    :param env: env id; default: the one the model was trained on
    :param seed: seeds the env and the action sampling; default: the run's evaluation seed
        (training seed + 10000), so ``evaluate(run)`` reproduces the run's ``eval.json``
    :param deterministic: greedy (True) or sampled (False) actions; default: as the run's own
        evaluations (greedy, except MiniGrid: sampled, as RL Zoo)
    :param video: folder for Gymnasium's RecordVideo (one mp4 per episode; needs moviepy)
    :param trust_pickle: load a model zip that needs unpickling (``--trust-pickle``); without it
        nothing in the file is unpickled (:mod:`nb2_agents.safe_load`)
    """
    if episodes < 1:
        raise UsageError(f"--episodes must be a positive integer, got {episodes}")
    from nb2_agents.export.loader import ExportedPolicy, is_exported

    # an `nb2 export` file runs through onnxruntime / TorchScript; its sidecar has nb2's metadata
    exported = ExportedPolicy(path) if is_exported(path) else None
    loaded: Any = exported or load_model(path, device=device, trust_pickle=trust_pickle)
    model, meta, algo = loaded.model, loaded.meta, loaded.algo
    env_id = env or meta.get("env")
    if not env_id:
        raise UsageError(f"{path} does not record its env (not saved by nb2 train); pass --env ENV_ID")
    check_env_id(env_id)
    if env_kwargs is not None:
        kwargs = dict(env_kwargs)
    else:  # the run's env kwargs apply to the run's env only
        kwargs = dict(meta.get("env_kwargs") or {}) if env_id == meta.get("env") else {}
    if seed is None:
        seed = int(meta.get("eval_seed", 0))
    if deterministic is None:  # the run's choice, else RL Zoo's: sampled actions for MiniGrid
        deterministic = bool(meta.get("deterministic_eval", not env_id.startswith(("MiniGrid-", "BabyAI-"))))
    spec = EnvSpec(env_id, kwargs, algo)
    make = None
    if video is not None:
        if importlib.util.find_spec("moviepy") is None:
            raise UsageError(
                "--video needs moviepy to write mp4 files: pip install 'nb2-agents[video]' (or moviepy)"
            )
        folder = Path(video)
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame renders off-screen

        def make(**_: Any) -> gym.Env:
            inner = gym.make(env_id, render_mode="rgb_array", **spec.gym_kwargs)
            return gym.wrappers.RecordVideo(
                inner,
                str(folder),
                episode_trigger=lambda episode: episode < episodes,  # not the reset after the last
                name_prefix=env_id.replace("/", "-"),
                disable_logger=True,
            )

    vec = spec.make_vec(1, seed, make=make)
    if exported is not None:  # an exported graph normalises inside itself
        exported.check_spaces(vec.observation_space, vec.action_space, env_id)
    else:
        stats = stats_for(read_stats(loaded.path), env_id, loaded.path)
        vec = vec if stats is None else evaluation_env(vec, stats)
    vec = with_memory_of(vec, model.observation_space)
    if vec.observation_space != model.observation_space:
        raise UsageError(
            f"{env_id}'s observations {vec.observation_space} do not match the model's "
            f"{model.observation_space}; pass the env it was trained on"
        )
    set_random_seed(seed)
    try:
        returns, lengths, successes = run_episodes(model, vec, episodes, deterministic)
    finally:
        vec.close()
    return EvalResult(
        mean_return=float(np.mean(returns)),
        std_return=float(np.std(returns)),
        episodes=len(returns),
        success_rate=float(np.mean(successes)) if successes else None,
        mean_length=float(np.mean(lengths)),
        std_length=float(np.std(lengths)),
        env=env_id,
        seed=seed,
        deterministic=deterministic,
        model=str(loaded.path),
        algo=algo,
        steps_trained=int(model.num_timesteps),
        returns=returns,
        lengths=lengths,
    )


def read_eval(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "eval.json"
    return json.loads(path.read_text()) if path.is_file() else None
