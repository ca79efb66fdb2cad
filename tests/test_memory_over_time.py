"""Memory over time (``nb2_agents.memory``, ``nn/temporal.py``): each env's last K steps.

Exact PPO ratios with memory on (also across episode ends inside a rollout), memory cleared at
episode start, the rollout cache against a full recomputation, ``predict(state=...)`` and
``evaluate_policy`` on the plain env as ``RecurrentPPO`` does them, save / load, and bad input.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from sb3_contrib import MaskablePPO
from sb3_contrib.common.wrappers import ActionMasker
from stable_baselines3 import A2C, DQN, PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.utils import obs_as_tensor

import nb2_agents  # noqa: F401  (registers "NB2Policy" and nb2/CartPoleNoVel-v1)
from nb2_agents.errors import UsageError
from nb2_agents.hyperparams import parse_entry
from nb2_agents.memory import MemoryLayout, MemoryWindow
from nb2_agents.memory.layout import VALID_KEY
from nb2_agents.sb3 import algos

K = 4


def _all_valid(env: gym.Env) -> np.ndarray:
    return np.ones(2, dtype=bool)


def _venv(n_envs: int = 3, seed: int = 0, masks: bool = False) -> MemoryWindow:
    wrapper = (lambda env: ActionMasker(env, _all_valid)) if masks else None
    return MemoryWindow(
        make_vec_env("nb2/CartPoleNoVel-v1", n_envs=n_envs, seed=seed, wrapper_class=wrapper), K
    )


def _model(cls: type[BaseAlgorithm] = PPO, n_envs: int = 3, **kwargs: Any) -> BaseAlgorithm:
    kwargs = {"n_steps": 32, **kwargs}
    if cls is not A2C:
        kwargs.setdefault("batch_size", 32)
    venv = _venv(n_envs, masks=cls is MaskablePPO)
    return cls("NB2Policy", venv, policy_kwargs=dict(memory=K), seed=0, device="cpu", **kwargs)


def _collect(model: BaseAlgorithm) -> Any:
    """One more rollout, continuing from where the last one stopped; its buffer."""
    callback = CallbackList([])
    callback.init_callback(model)
    buffer = model.rollout_buffer  # type: ignore[attr-defined]
    model.collect_rollouts(model.env, callback, buffer, model.n_steps)  # type: ignore[attr-defined]
    return buffer


def _update_time_log_probs(model: BaseAlgorithm, buffer: Any) -> np.ndarray:
    obs = {key: torch.as_tensor(v).reshape(-1, *v.shape[2:]) for key, v in buffer.observations.items()}
    actions = torch.as_tensor(buffer.actions).reshape(-1)
    kwargs = {}
    if isinstance(model, MaskablePPO):
        kwargs["action_masks"] = torch.as_tensor(buffer.action_masks).reshape(len(actions), -1)
    with torch.no_grad():
        _, log_prob, _ = model.policy.evaluate_actions(obs, actions, **kwargs)
    return log_prob.numpy()


@pytest.mark.parametrize("cls", [PPO, A2C, MaskablePPO])
def test_rollout_and_update_log_probs_are_equal_across_episode_ends(cls: type[BaseAlgorithm]) -> None:
    model = _model(cls)
    model.learn(3 * 32 * 2)  # two rollouts and updates: the weights have moved since the first
    buffer = _collect(model)  # continues mid-episode: cached summaries from before the update
    assert buffer.episode_starts.sum() > 0, "no episode ended inside the rollout"
    assert buffer.observations[VALID_KEY][0].sum() > 0, "the rollout must start with a past"
    np.testing.assert_allclose(_update_time_log_probs(model, buffer), buffer.log_probs.reshape(-1), atol=1e-5)


def test_repeated_observations_are_encoded_once_with_the_same_log_probs() -> None:
    """Discrete observations repeat in every window: the update encodes each distinct past step
    once (``NB2._encode_past``) and still gives the rollout's log-probabilities."""
    from stable_baselines3.common.envs import IdentityEnv

    venv = MemoryWindow(make_vec_env(lambda: IdentityEnv(4), n_envs=3, seed=0), K)
    model = PPO("NB2Policy", venv, n_steps=32, batch_size=32, seed=0, device="cpu")
    model.learn(96)
    net = model.policy.nb2_networks()[0]
    sizes: list[int] = []
    net.encoder.register_forward_hook(lambda m, args, out: sizes.append(out.global_token.shape[0]))
    buffer = _collect(model)
    sizes.clear()
    np.testing.assert_allclose(_update_time_log_probs(model, buffer), buffer.log_probs.reshape(-1), atol=1e-5)
    assert sizes[1] <= 4, sizes  # the current steps, then at most 4 distinct past observations


def test_an_optimizer_step_outside_train_is_seen_by_the_rollout_cache() -> None:
    model = _model()
    model.learn(96)
    _collect(model)
    with torch.no_grad():  # weights move in place without set_training_mode: the cache must notice
        for p in model.policy.parameters():
            p.add_(0.01 * torch.randn_like(p))
    buffer = _collect(model)
    np.testing.assert_allclose(_update_time_log_probs(model, buffer), buffer.log_probs.reshape(-1), atol=1e-5)


def test_the_window_follows_each_envs_own_episode() -> None:
    venv = _venv(n_envs=2)
    obs = venv.reset()
    assert obs[VALID_KEY].sum() == 0
    seen: list[np.ndarray] = [obs["obs"].copy()]
    ended = 0
    for t in range(60):
        actions = np.array([t % 2, 0])  # env 1 falls fast, env 0 wobbles: resets at different times
        obs, _, dones, infos = venv.step(actions)
        for i in range(2):
            if dones[i]:
                ended += 1
                terminal = infos[i]["terminal_observation"]
                assert terminal["memory:valid"][0] == 1.0  # the ended episode's memory
                np.testing.assert_array_equal(terminal["memory:obs"][0], seen[-1][i])
                assert obs[VALID_KEY][i].sum() == 0 and not obs["memory:obs"][i].any()
            else:
                np.testing.assert_array_equal(obs["memory:obs"][i, 0], seen[-1][i])
        seen.append(obs["obs"].copy())
    assert ended >= 3
    assert obs[VALID_KEY][0].sum() != obs[VALID_KEY][1].sum() or ended


def test_actions_after_a_reset_do_not_depend_on_the_previous_episode() -> None:
    model = _model(n_envs=1)
    venv = model.get_env()
    obs = venv.reset()
    first = {key: value.copy() for key, value in obs.items()}
    other = {key: value.copy() for key, value in obs.items()}
    other["memory:obs"] = np.random.default_rng(0).normal(size=other["memory:obs"].shape).astype(np.float32)
    other[VALID_KEY][:] = 0.0  # a window emptied at episode start, whatever its slots still held
    policy = model.policy
    with torch.no_grad():
        a = policy.get_distribution(policy.obs_to_tensor(first)[0]).distribution.probs
        b = policy.get_distribution(policy.obs_to_tensor(other)[0]).distribution.probs
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # and through predict's state: a past episode's state with episode_start gives the same action
    raw = gym.make("nb2/CartPoleNoVel-v1")
    o, _ = raw.reset(seed=3)
    _, state = model.predict(o, state=None, episode_start=np.ones(1, bool), deterministic=True)
    for _ in range(5):
        _, state = model.predict(o, state=state, episode_start=np.zeros(1, bool), deterministic=True)
    fresh, _ = model.predict(o, state=None, episode_start=np.ones(1, bool), deterministic=True)
    again, _ = model.predict(o, state=state, episode_start=np.ones(1, bool), deterministic=True)
    assert fresh == again


def test_the_rollout_cache_gives_the_full_recomputation_and_encodes_one_step_per_env() -> None:
    model = _model(n_envs=3)
    net = model.policy.nb2_networks()[0]
    venv = model.get_env()
    obs = venv.reset()
    encoded: list[int] = []
    net.encoder.register_forward_hook(lambda m, args, out: encoded.append(out.global_token.shape[0]))
    for t in range(40):
        x = preprocess_obs(obs_as_tensor(obs, "cpu"), venv.observation_space)
        encoded.clear()
        with torch.no_grad():
            cached = net(x)
        steps_encoded = sum(encoded)
        full = net.run(x).detach()  # with autograd: every past step encoded again
        torch.testing.assert_close(cached, full, rtol=0, atol=1e-5)
        if t > 0:  # the current step of each env, plus the past of any env whose cache missed
            assert steps_encoded == 3, (t, encoded)
        obs, _, _, _ = venv.step(np.array([t % 2, 1, 0]))


def test_the_cache_keeps_observations_compact_and_still_compares_them_exactly() -> None:
    from nb2_agents.nn.temporal import SummaryCache, compact_form

    image = torch.arange(256, dtype=torch.uint8).float() / 255.0  # SB3's preprocess_obs of an image
    assert compact_form(torch.tensor([0.0, 7.0, 255.0])) == (torch.uint8, 1.0)  # cell ids, one-hot
    assert compact_form(image) == (torch.uint8, 255.0)
    assert compact_form(torch.tensor([0.5, 300.0])) == (torch.float16, 1.0)
    assert compact_form(torch.tensor([1 / 7])) == (torch.float32, 1.0)
    assert compact_form(torch.tensor([-1.0, 2.0])) == (torch.float16, 1.0)  # uint8 has no -1
    assert compact_form(torch.tensor([float("nan")])) == (torch.float32, 1.0)
    # the last step's form first: kept where it holds, the others tried where it does not
    assert compact_form(torch.tensor([0.0, 7.0]), first=(torch.float32, 1.0)) == (torch.float32, 1.0)
    assert compact_form(torch.tensor([0.5]), first=(torch.uint8, 1.0)) == (torch.float16, 1.0)

    b, k, f, c = 2, 3, 5, 4
    calls: list[int] = []

    def encode(index: torch.Tensor) -> torch.Tensor:
        calls.append(index.numel())
        return torch.ones(index.numel(), c)

    cache = SummaryCache()
    step = torch.randint(0, 11, (b, f)).float()  # MiniGrid-like: small integers as float32
    past = torch.randint(0, 11, (b, k, f)).float()
    valid = torch.ones(b, k, dtype=torch.bool)
    summaries = cache.summaries(0, past, valid, encode, c)
    cache.store(0, step, torch.zeros(b, c), past, summaries, valid)
    assert cache.past_flat is not None and cache.past_flat.dtype == torch.uint8
    assert cache.nbytes() == b * f + b * c * 4 + b * k * f + b * k * c * 4 + b * k  # flat: 1 byte each
    moved = torch.cat([step.unsqueeze(1), past[:, :-1]], dim=1)  # every env one step on
    calls.clear()
    out = cache.summaries(0, moved, valid, encode, c)
    assert calls == []  # every age holds what the cache has
    torch.testing.assert_close(out[:, 0], torch.zeros(b, c))  # reused: the step's stored summary
    moved[0, 1, 0] += 0.25  # a value uint8 cannot hold is not taken for its neighbour
    cache.summaries(0, moved, valid, encode, c)
    assert calls == [1]


def test_predict_with_state_on_the_plain_env_matches_the_wrapped_env_over_an_episode() -> None:
    model = _model(n_envs=1)
    model.learn(64)
    plain = gym.make("nb2/CartPoleNoVel-v1")
    wrapped = _venv(n_envs=1, seed=11)
    obs_w = wrapped.reset()
    obs_p, _ = plain.reset(seed=11)
    state, start = None, np.ones(1, dtype=bool)
    for _ in range(50):
        np.testing.assert_array_equal(obs_w["obs"][0], obs_p)
        a_w, none = model.predict(obs_w, deterministic=True)
        a_p, state = model.predict(obs_p, state=state, episode_start=start, deterministic=True)
        assert none is None and int(a_w[0]) == int(a_p)
        obs_w, _, done, _ = wrapped.step(a_w)
        obs_p, _, term, trunc, _ = plain.step(int(a_p))
        start = np.array([term or trunc])
        if done[0]:
            assert term or trunc
            break  # the wrapped env reset with its own seed sequence


def test_evaluate_policy_on_the_plain_env_equals_it_on_the_wrapped_env() -> None:
    model = _model(n_envs=1)
    plain = make_vec_env("nb2/CartPoleNoVel-v1", n_envs=2, seed=5)
    wrapped = _venv(n_envs=2, seed=5)
    a = evaluate_policy(model, plain, n_eval_episodes=4, deterministic=True, return_episode_rewards=True)
    b = evaluate_policy(model, wrapped, n_eval_episodes=4, deterministic=True, return_episode_rewards=True)
    assert a == b


def test_maskable_ppo_evaluates_with_memory_and_action_masks() -> None:
    from sb3_contrib.common.maskable.evaluation import evaluate_policy as masked_evaluate

    model = _model(MaskablePPO, n_envs=2)
    model.learn(64)
    wrapped = _venv(n_envs=2, seed=5, masks=True)
    returns, _ = masked_evaluate(
        model, wrapped, n_eval_episodes=2, deterministic=True, return_episode_rewards=True
    )
    assert len(returns) == 2
    plain = gym.make("nb2/CartPoleNoVel-v1")
    obs, _ = plain.reset(seed=1)
    action, state = model.predict(obs, episode_start=np.ones(1, bool), action_masks=np.array([False, True]))
    assert int(action) == 1 and state is not None  # the mask holds, and the memory comes back


def test_save_and_load_keep_the_memory(tmp_path: Any) -> None:
    model = _model()
    model.learn(96)
    model.save(tmp_path / "m.zip")
    loaded = PPO.load(tmp_path / "m.zip", device="cpu")
    assert loaded.policy.memory_layout.k == K and MemoryLayout.of(loaded.observation_space).k == K  # type: ignore[union-attr]
    venv = _venv(n_envs=3, seed=4)
    venv.reset()
    for _ in range(3):
        obs, *_ = venv.step(np.array([0, 1, 0]))
    x = loaded.policy.obs_to_tensor(obs)[0]
    with torch.no_grad():
        torch.testing.assert_close(
            model.policy.nb2_networks()[0].run(x), loaded.policy.nb2_networks()[0].run(x)
        )


def test_images_and_dicts_keep_their_past_in_the_layout_sb3_sees() -> None:
    from stable_baselines3.common.envs import SimpleMultiObsEnv

    venv = MemoryWindow(make_vec_env(SimpleMultiObsEnv, n_envs=2, seed=0), 3)
    assert venv.observation_space["img"].shape == (1, 64, 64)  # transposed to channels first
    assert venv.observation_space["memory:img"].shape == (3, 1, 64, 64)
    model = PPO("NB2Policy", venv, n_steps=16, batch_size=16, n_epochs=1, device="cpu", seed=0)
    assert model.policy.memory_layout.k == 3  # the window sets K when policy_kwargs leave it out
    model.learn(32)
    buffer = _collect(model)
    np.testing.assert_allclose(_update_time_log_probs(model, buffer), buffer.log_probs.reshape(-1), atol=1e-5)


@pytest.mark.parametrize("memory", [0, -2, 2.5, True, "4"])
def test_a_bad_memory_names_the_option(memory: Any) -> None:
    with pytest.raises(ValueError, match=r"policy_kwargs\['memory'\] must be a positive integer"):
        PPO("NB2Policy", _venv(), policy_kwargs=dict(memory=memory), device="cpu")
    with pytest.raises(UsageError, match="memory must be a positive integer"):
        parse_entry(PPO, {"policy_kwargs": {"memory": memory}}, "ppo.yaml [x]")


def test_memory_without_the_window_or_with_another_k_names_the_wrapper() -> None:
    with pytest.raises(ValueError, match=r"MemoryWindow\(venv, 4\)"):
        PPO("NB2Policy", "CartPole-v1", policy_kwargs=dict(memory=4), device="cpu")
    with pytest.raises(ValueError, match="keeps 4 steps"):
        PPO("NB2Policy", _venv(), policy_kwargs=dict(memory=8), device="cpu")


@pytest.mark.parametrize(("cls", "env_id"), [(DQN, "CartPole-v1"), (SAC, "Pendulum-v1")])
def test_off_policy_algorithms_refuse_memory_naming_those_that_carry_it(
    cls: type[BaseAlgorithm], env_id: str
) -> None:
    with pytest.raises(ValueError, match="the algorithms that can: ppo, a2c, maskable_ppo"):
        cls("NB2Policy", env_id, policy_kwargs=dict(memory=4), device="cpu")
    with pytest.raises(ValueError, match="the algorithms that can: ppo, a2c, maskable_ppo"):
        cls("NB2Policy", MemoryWindow(make_vec_env(env_id, n_envs=1), 4), device="cpu")
    with pytest.raises(UsageError, match=r"\[x\]\.policy_kwargs\.memory: .* the algorithms that can"):
        parse_entry(cls, {"policy_kwargs": {"memory": 4}}, "x.yaml [x]")
    assert algos.of(cls).name not in ("ppo", "a2c", "maskable_ppo")


CURRICULUM = """\
name: novel-pair
algo: ppo
preset: nano
hyperparams:
  n_envs: 2
  n_steps: 32
  batch_size: 64
  n_epochs: 1
  policy_kwargs: {memory: 3}
tasks:
  - {name: novel, env_id: nb2/CartPoleNoVel-v1, steps: 256, eval_episodes: 2, random_return: 20,
     reference_return: 500}
  - {name: cartpole, env_id: CartPole-v1, steps: 256, eval_episodes: 2, random_return: 22.69,
     reference_return: 500}
"""


def test_a_curriculum_with_memory_trains_retains_and_evaluates(tmp_path: Any) -> None:
    """Tasks of different observation sizes (padded), memory on, retention nb2 (replay of windowed
    observations, distillation, EWC); the saved model is evaluated per task with its memory."""
    from nb2_agents.curriculum import run_curriculum
    from nb2_agents.curriculum.evaluate import evaluate_curriculum

    path = tmp_path / "novel-pair.yaml"
    path.write_text(CURRICULUM)
    result = run_curriculum(
        path, retention="nb2", seeds=[0], evals_per_task=1, runs_dir=tmp_path, progress=False, verbose=0
    )
    model = PPO.load(result.run_dir / "s0" / "model.zip", device="cpu")
    layout = MemoryLayout.of(model.observation_space)
    assert layout is not None and layout.k == 3 and "obs_mask" in layout.past_keys
    scores = evaluate_curriculum(result.run_dir, episodes=2, device="cpu")
    assert [t.task for t in scores] == ["novel", "cartpole"]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_takes_the_memory_in_and_gives_it_back_step_by_step(tmp_path: Any, fmt: str) -> None:
    """50 steps of a plain env (episodes ending inside them): the exported file, fed its own memory
    back, acts and scores as PyTorch's ``predict`` with state does."""
    from nb2_agents.export import ExportedPolicy, export
    from nb2_agents.memory import ObsWindow

    model = _model(n_envs=1)
    model.learn(64)
    model.save(tmp_path / "m.zip")
    result = export(tmp_path / "m.zip", format=fmt)
    assert result.max_abs_logit_diff < 1e-3
    exported = ExportedPolicy(result.path)
    assert exported.memory is not None and exported.memory["k"] == K
    env = gym.make("nb2/CartPoleNoVel-v1")
    obs, _ = env.reset(seed=7)
    layout = model.policy.memory_layout
    state_torch = state_file = None
    start, episodes = np.ones(1, dtype=bool), 1
    for t in range(50):
        window = ObsWindow.from_state(layout, state_torch, 1)
        if start[0]:
            window.clear(start)
        with torch.no_grad():
            x = model.policy.obs_to_tensor(window.compose(obs[None]))[0]
            logits = model.policy.get_distribution(x).distribution.logits.numpy()
        file_logits = torch.as_tensor(exported.run(obs, None if start[0] else state_file)[1])
        np.testing.assert_allclose(file_logits.log_softmax(-1).numpy(), logits, atol=1e-4)  # normalised
        action, state_torch = model.predict(obs, state_torch, start, deterministic=True)
        file_action, state_file = exported.predict(obs, state_file, start, deterministic=True)
        assert int(file_action) == int(action), t
        obs, _, terminated, truncated, _ = env.step(int(action))
        start = np.array([terminated or truncated])
        if start[0]:
            obs, _ = env.reset(seed=100 + t)
            episodes += 1
    assert episodes >= 2, "no episode ended inside the 50 steps"
