"""One model for tasks whose spaces differ: the shared spaces, the task wrapper, and NB2's side of it
(padding masked out of attention, invalid actions masked out of the policy)."""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

import nb2_agents  # noqa: F401  (registers the nb2/ ids)
from nb2_agents.curriculum.adapter import (
    OBS_KEY,
    OBS_MASK_KEY,
    CommonSpaces,
    TaskAdapter,
    common_spaces,
)
from nb2_agents.errors import UsageError
from nb2_agents.nn import encoder as encoder_module
from nb2_agents.nn.tokenizer import ACTION_MASK_KEY, TASK_KEY
from nb2_agents.sb3.actor_critic import MaskableNB2Policy, NB2ActorCriticPolicy


@pytest.fixture(autouse=True)
def _sample_small_observations(monkeypatch: pytest.MonkeyPatch) -> None:
    """The padding tests run sampling on observations of fewer than ``MIN_SAMPLED_TOKENS``
    slots, which the time rule (tested in ``test_sampling.py``) would switch it off for."""
    monkeypatch.setattr(encoder_module, "MIN_SAMPLED_TOKENS", 1)


def _spaces_of(*ids: str) -> tuple[list[spaces.Space], list[spaces.Space]]:
    obs, act = [], []
    for env_id in ids:
        env = gym.make(env_id)
        obs.append(env.observation_space)
        act.append(env.action_space)
        env.close()
    return obs, act


def _common(*ids: str) -> CommonSpaces:
    obs, act = _spaces_of(*ids)
    return common_spaces(list(ids), obs, act)


def _check_env(env: gym.Env) -> None:
    """Gymnasium's checker; any finding fails, except those a wrapper with an unbounded Box gives."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=".*different from the unwrapped version")
        warnings.filterwarnings("ignore", message=".*Box observation space (min|max)imum value is -?infinity")
        # the close check re-makes the env from its spec, which a wrapper built by hand cannot give
        check_env(env, skip_render_check=True, skip_close_check=True)


class TwoDimActionEnv(gym.Env[np.ndarray, np.ndarray]):
    """A continuous-control toy: Box(3) observations, a 2-D action Box with uneven bounds."""

    observation_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = spaces.Box(np.array([0.0, -5.0], np.float32), np.array([10.0, 5.0], np.float32))

    def __init__(self) -> None:
        self.last_action: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        super().reset(seed=seed)
        return self.np_random.uniform(-1, 1, 3).astype(np.float32), {}

    def step(self, action: np.ndarray) -> Any:
        self.last_action = np.asarray(action)
        obs = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        return obs, 0.0, False, False, {}


# ---- common_spaces ---------------------------------------------------------------------------


def test_differing_vectors_and_action_counts_are_padded_and_masked() -> None:
    common = _common("CartPole-v1", "Acrobot-v1")
    obs = common.observation_space
    assert set(obs.spaces) == {OBS_KEY, OBS_MASK_KEY, TASK_KEY, ACTION_MASK_KEY}
    assert isinstance(obs[OBS_KEY], spaces.Box) and obs[OBS_KEY].shape == (6,)
    assert obs[OBS_MASK_KEY] == spaces.MultiBinary(6)
    assert obs[TASK_KEY] == spaces.Discrete(2)
    assert obs[ACTION_MASK_KEY] == spaces.MultiBinary(3)
    assert common.action_space == spaces.Discrete(3)
    assert common.discrete and common.padded and common.action_masked and not common.rescaled
    assert common.n_task_ids == 2
    np.testing.assert_array_equal(common.action_mask(0), [True, True, False])
    np.testing.assert_array_equal(common.action_mask(1), [True, True, True])


def test_more_task_ids_than_tasks() -> None:
    obs, act = _spaces_of("CartPole-v1", "Acrobot-v1")
    common = common_spaces(["a", "b"], obs, act, n_task_ids=5)
    assert common.observation_space[TASK_KEY] == spaces.Discrete(5) and common.n_task_ids == 5


def test_identical_spaces_need_no_padding() -> None:
    common = _common("CartPole-v1", "nb2/CartPole-LongPole-v0")
    cartpole_obs = gym.make("CartPole-v1").observation_space
    assert set(common.observation_space.spaces) == {OBS_KEY, TASK_KEY}
    assert common.observation_space[OBS_KEY] == cartpole_obs  # the task's own bounds, kept
    assert common.action_space == spaces.Discrete(2)
    assert not (common.padded or common.action_masked or common.rescaled)


def test_identical_dict_observations_keep_their_keys() -> None:
    space = spaces.Dict({"pos": spaces.Box(-1, 1, (2,)), "flag": spaces.Discrete(3)})
    common = common_spaces(["a", "b"], [space, space], [spaces.Discrete(2)] * 2)
    assert set(common.observation_space.spaces) == {"pos", "flag", TASK_KEY}
    assert not common.padded


def test_continuous_actions_share_a_rescaled_box() -> None:
    common = _common("Pendulum-v1", "MountainCarContinuous-v0")
    assert common.action_space == spaces.Box(-1.0, 1.0, (1,), np.float32)
    assert common.rescaled and not common.action_masked and not common.discrete
    assert ACTION_MASK_KEY not in common.observation_space.spaces
    assert common.observation_space[OBS_KEY].shape == (3,)  # Pendulum's 3 > MountainCar's 2
    pendulum = TaskAdapter(gym.make("Pendulum-v1"), common, 0)
    car = TaskAdapter(gym.make("MountainCarContinuous-v0"), common, 1)
    for adapter, (low, high) in ((pendulum, (-2.0, 2.0)), (car, (-1.0, 1.0))):
        np.testing.assert_allclose(adapter.action(np.array([-1.0], np.float32)), [low])
        np.testing.assert_allclose(adapter.action(np.array([1.0], np.float32)), [high])
        np.testing.assert_allclose(adapter.action(np.array([0.0], np.float32)), [(low + high) / 2])
        np.testing.assert_allclose(adapter.action(np.array([3.0], np.float32)), [high])  # clipped
        assert adapter.action(np.array([0.5], np.float32)).dtype == np.float32
        _check_env(adapter)
        adapter.close()


def test_wider_action_box_pads_and_the_extra_dims_are_ignored() -> None:
    pendulum = gym.make("Pendulum-v1")
    toy = TwoDimActionEnv()
    common = common_spaces(
        ["pendulum", "toy"],
        [pendulum.observation_space, toy.observation_space],
        [pendulum.action_space, toy.action_space],
    )
    assert common.action_space == spaces.Box(-1.0, 1.0, (2,), np.float32) and common.rescaled
    small = TaskAdapter(pendulum, common, 0)
    for second in (-1.0, 0.3, 1.0):  # Pendulum reads only the first dimension
        np.testing.assert_allclose(small.action(np.array([-1.0, second], np.float32)), [-2.0])
        np.testing.assert_allclose(small.action(np.array([0.5, second], np.float32)), [1.0])
    wide = TaskAdapter(toy, common, 1)
    np.testing.assert_allclose(wide.action(np.array([-1.0, -1.0], np.float32)), [0.0, -5.0])
    np.testing.assert_allclose(wide.action(np.array([1.0, 1.0], np.float32)), [10.0, 5.0])
    np.testing.assert_allclose(wide.action(np.array([0.0, 0.5], np.float32)), [5.0, 2.5])
    wide.reset(seed=0)
    wide.step(np.array([1.0, -1.0], np.float32))
    np.testing.assert_allclose(toy.last_action, [10.0, -5.0])  # the env saw its own bounds
    _check_env(small)
    small.close()


def test_equal_boxes_keep_their_space() -> None:
    common = _common("Pendulum-v1", "Pendulum-v1")
    assert common.action_space == gym.make("Pendulum-v1").action_space and not common.rescaled


def test_mixed_discrete_and_continuous_is_refused() -> None:
    obs, act = _spaces_of("CartPole-v1", "Pendulum-v1")
    with pytest.raises(UsageError, match=r"mixes discrete actions \(cart\).*continuous actions \(pend\)"):
        common_spaces(["cart", "pend"], obs, act, curriculum="curriculum mix")
    with pytest.raises(UsageError, match=r"^curriculum mix mixes"):
        common_spaces(["cart", "pend"], obs, act, curriculum="curriculum mix")


def test_unshareable_action_spaces_are_refused() -> None:
    box = spaces.Box(-1, 1, (3,))
    with pytest.raises(UsageError, match=r"b: MultiDiscrete.*cannot be shared"):
        common_spaces(["a", "b"], [box, box], [spaces.Discrete(2), spaces.MultiDiscrete([2, 2])])
    with pytest.raises(UsageError, match="must start at 0"):
        common_spaces(["a", "b"], [box, box], [spaces.Discrete(2), spaces.Discrete(3, start=1)])
    with pytest.raises(UsageError, match=r"task b's action space .* finite bounds"):
        common_spaces(["a", "b"], [box, box], [spaces.Box(-1, 1, (1,)), spaces.Box(-np.inf, np.inf, (2,))])


def test_differing_images_are_refused_with_a_resize_hint() -> None:
    big = spaces.Box(0, 255, (64, 64, 3), np.uint8)
    small = spaces.Box(0, 255, (32, 32, 3), np.uint8)
    act = [spaces.Discrete(3)] * 2
    with pytest.raises(UsageError, match=r"ResizeObservation") as err:
        common_spaces(["big", "small"], [big, small], act, curriculum="curriculum pics")
    assert "big: Box(64, 64, 3)" in str(err.value) and "small: Box(32, 32, 3)" in str(err.value)
    with pytest.raises(UsageError, match="ResizeObservation"):  # an image and a vector cannot share
        common_spaces(["img", "vec"], [big, spaces.Box(-1, 1, (4,))], act)
    same = common_spaces(["a", "b"], [big, big], act)  # equal images need nothing
    assert same.observation_space[OBS_KEY] == big and not same.padded


@pytest.mark.parametrize("key", [TASK_KEY, ACTION_MASK_KEY, OBS_MASK_KEY])
def test_reserved_dict_key_is_refused(key: str) -> None:
    space = spaces.Dict({key: spaces.Discrete(2), "pos": spaces.Box(-1, 1, (2,))})
    with pytest.raises(UsageError, match=f"task a's observation Dict uses a reserved key.*{key}"):
        common_spaces(["a", "b"], [space, space], [spaces.Discrete(2)] * 2)


# ---- TaskAdapter -----------------------------------------------------------------------------


def test_adapter_pads_observations_and_marks_them() -> None:
    common = _common("CartPole-v1", "Acrobot-v1")
    cart = TaskAdapter(gym.make("CartPole-v1"), common, 0)
    raw, _ = gym.make("CartPole-v1").reset(seed=3)
    obs, _ = cart.reset(seed=3)
    assert common.observation_space.contains(obs)
    np.testing.assert_array_equal(obs[OBS_KEY][:4], raw)
    np.testing.assert_array_equal(obs[OBS_KEY][4:], [0.0, 0.0])
    assert obs[OBS_KEY].dtype == np.float32
    np.testing.assert_array_equal(obs[OBS_MASK_KEY], [1, 1, 1, 1, 0, 0])
    assert obs[TASK_KEY] == 0
    np.testing.assert_array_equal(obs[ACTION_MASK_KEY], [1, 1, 0])
    obs, *_ = cart.step(1)
    assert common.observation_space.contains(obs) and obs[OBS_KEY][4:].tolist() == [0.0, 0.0]

    acro = TaskAdapter(gym.make("Acrobot-v1"), common, 1)
    obs, _ = acro.reset(seed=0)
    assert common.observation_space.contains(obs)
    np.testing.assert_array_equal(obs[OBS_MASK_KEY], np.ones(6))
    assert obs[TASK_KEY] == 1
    np.testing.assert_array_equal(obs[ACTION_MASK_KEY], [1, 1, 1])
    cart.close()
    acro.close()


def test_adapter_without_padding_wraps_the_observation() -> None:
    common = _common("CartPole-v1", "nb2/CartPole-LongPole-v0")
    env = TaskAdapter(gym.make("nb2/CartPole-LongPole-v0"), common, 1)
    obs, _ = env.reset(seed=0)
    assert set(obs) == {OBS_KEY, TASK_KEY} and obs[TASK_KEY] == 1 and obs[OBS_KEY].shape == (4,)
    np.testing.assert_array_equal(env.action_masks(), [True, True])
    assert env.action(1) == 1  # passed through
    _check_env(env)
    env.close()


def test_invalid_action_is_taken_modulo_the_task_count() -> None:
    common = _common("CartPole-v1", "Acrobot-v1")
    cart = TaskAdapter(gym.make("CartPole-v1"), common, 0)
    assert [cart.action(a) for a in (0, 1, 2)] == [0, 1, 0]
    assert cart.action(np.int64(2)) == 0
    twin = TaskAdapter(gym.make("CartPole-v1"), common, 0)
    cart.reset(seed=5)
    twin.reset(seed=5)
    for _ in range(5):  # action 2 (invalid for CartPole) behaves exactly as action 0
        a, b = cart.step(2), twin.step(0)
        np.testing.assert_array_equal(a[0][OBS_KEY], b[0][OBS_KEY])
        assert a[1:4] == b[1:4]
    acro = TaskAdapter(gym.make("Acrobot-v1"), common, 1)
    assert [acro.action(a) for a in (0, 1, 2)] == [0, 1, 2]
    for env in (cart, twin, acro):
        env.close()


def test_action_masks_for_maskable_ppo() -> None:
    common = _common("CartPole-v1", "Acrobot-v1")
    cart = TaskAdapter(gym.make("CartPole-v1"), common, 0)
    acro = TaskAdapter(gym.make("Acrobot-v1"), common, 1)
    masks = cart.action_masks()
    assert masks.dtype == bool
    np.testing.assert_array_equal(masks, [True, True, False])
    masks[0] = False  # a copy: the adapter's own mask stays
    np.testing.assert_array_equal(cart.action_masks(), [True, True, False])
    np.testing.assert_array_equal(acro.action_masks(), [True, True, True])
    cart.close()
    acro.close()


@pytest.mark.parametrize(
    ("ids", "task"),
    [
        (("CartPole-v1", "Acrobot-v1"), 0),
        (("CartPole-v1", "Acrobot-v1"), 1),
        (("CartPole-v1", "nb2/CartPole-Mirrored-v0"), 1),
        (("Pendulum-v1", "MountainCarContinuous-v0"), 1),
    ],
    ids=["cartpole-padded", "acrobot", "mirrored-unpadded", "mountaincar-rescaled"],
)
def test_wrapped_env_passes_check_env(ids: tuple[str, str], task: int) -> None:
    env = TaskAdapter(gym.make(ids[task]), _common(*ids), task)
    _check_env(env)
    env.close()


# ---- NB2: padding is invisible ----------------------------------------------------------------


def _padded_policy(
    small: int, big: int, sampling: bool, nb2_kwargs: dict[str, Any] | None
) -> tuple[NB2ActorCriticPolicy, CommonSpaces]:
    common = common_spaces(
        ["small", "big"],
        [spaces.Box(-1, 1, (small,), np.float32), spaces.Box(-1, 1, (big,), np.float32)],
        [spaces.Discrete(2), spaces.Discrete(3)],
    )
    policy = NB2ActorCriticPolicy(
        common.observation_space,
        common.action_space,
        lambda _: 1e-3,
        sampling=sampling,
        nb2_kwargs=nb2_kwargs,
    )
    policy.set_training_mode(False)
    return policy, common


def _batch(common: CommonSpaces, small: int, big: int, n: int, rng: np.random.Generator) -> dict[str, Any]:
    """``n`` samples, alternating the small task (padded) and the big one; padding zero as the adapter's."""
    task = np.arange(n) % 2
    vec = rng.standard_normal((n, big)).astype(np.float32)
    mask = np.ones((n, big), np.int8)
    vec[task == 0, small:] = 0.0
    mask[task == 0, small:] = 0
    actions = np.stack([common.action_mask(t) for t in task]).astype(np.int8)
    return {OBS_KEY: vec, OBS_MASK_KEY: mask, TASK_KEY: task, ACTION_MASK_KEY: actions}


def _outputs(policy: NB2ActorCriticPolicy, obs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    tensors, _ = policy.obs_to_tensor(obs)
    with torch.no_grad():
        probs = policy.get_distribution(tensors).distribution.probs
        values = policy.predict_values(tensors)
    return probs, values


def _assert_padding_invisible(
    small: int, big: int, sampling: bool, nb2_kwargs: dict[str, Any] | None
) -> None:
    policy, common = _padded_policy(small, big, sampling, nb2_kwargs)
    rng = np.random.default_rng(0)
    obs = _batch(common, small, big, 8, rng)
    probs, values = _outputs(policy, obs)
    assert torch.isfinite(probs).all() and torch.isfinite(values).all()
    for scale in (1.0, 100.0):
        changed = {**obs, OBS_KEY: obs[OBS_KEY].copy()}
        padded = obs[OBS_MASK_KEY] == 0
        changed[OBS_KEY][padded] = scale * rng.standard_normal(int(padded.sum())).astype(np.float32)
        probs2, values2 = _outputs(policy, changed)
        torch.testing.assert_close(probs2, probs, rtol=0, atol=1e-6)
        torch.testing.assert_close(values2, values, rtol=0, atol=1e-5)
    # the real scalars still matter
    moved = {**obs, OBS_KEY: obs[OBS_KEY] + (obs[OBS_MASK_KEY] == 1).astype(np.float32)}
    assert not torch.allclose(_outputs(policy, moved)[1], values)


# (small, big, nb2_kwargs, hierarchy): layouts in which no group of the padded sample is all padding
# and (for chunked vectors) every chunk is all real or all padding
INVISIBLE = [
    (4, 6, None, "single"),  # CartPole in Acrobot's space: one group, 6 tokens
    (5, 16, None, "single"),  # one full group of 16
    (36, 40, None, "multi"),  # 3 groups (16, 16, 8); the last one part real
    (72, 100, {"group_size": 8, "min_keep": 4}, "multi"),  # chunks of 8: 13 tokens in 2 groups
    (296, 300, {"group_size": 4, "min_keep": 2}, "levels"),  # 38 chunk tokens, 10 groups, 2 levels
]


def _hierarchy(policy: NB2ActorCriticPolicy) -> str:
    encoder = policy.features_extractor.net.encoder
    if encoder.single_group:
        return "single"
    return "multi" if len(encoder.level_list) == 1 else "levels"


@pytest.mark.parametrize("sampling", [True, False], ids=["sampling", "no-sampling"])
@pytest.mark.parametrize(("small", "big", "nb2_kwargs", "hierarchy"), INVISIBLE, ids=lambda v: str(v))
def test_padded_scalars_do_not_change_the_policy(
    small: int, big: int, nb2_kwargs: dict[str, Any] | None, hierarchy: str, sampling: bool
) -> None:
    policy, _ = _padded_policy(small, big, sampling, nb2_kwargs)
    assert _hierarchy(policy) == hierarchy
    tokenizer = policy.features_extractor.net.tokenizer
    assert tokenizer.keys == [OBS_KEY] and tokenizer.mask_keys == {OBS_KEY: OBS_MASK_KEY}
    if hierarchy != "single" and sampling:
        assert policy.features_extractor.net.encoder.sample  # sampling really runs on these tokens
    _assert_padding_invisible(small, big, sampling, nb2_kwargs)


# The hard cases: a group whose tokens are all padding keeps its first slot (TokenSet.keep_mask),
# and a chunk token can be part real, part padding; the tokenizer zeroes padded scalars, so
# neither lets padded values reach the output.
EDGE_CASES = [
    (20, 40, None),  # the third group (tokens 32..39) all padding
    (32, 100, {"group_size": 8}),  # the second group of chunk tokens all padding
    (70, 100, {"group_size": 8, "min_keep": 4}),  # chunk 8 (scalars 64..71) part padding
]


@pytest.mark.parametrize("sampling", [True, False], ids=["sampling", "no-sampling"])
@pytest.mark.parametrize(("small", "big", "nb2_kwargs"), EDGE_CASES, ids=lambda v: str(v))
def test_padding_in_whole_groups_or_part_chunks_is_invisible(
    small: int, big: int, nb2_kwargs: dict[str, Any] | None, sampling: bool
) -> None:
    _assert_padding_invisible(small, big, sampling, nb2_kwargs)


@pytest.mark.parametrize("sampling", [True, False], ids=["sampling", "no-sampling"])
@pytest.mark.parametrize(
    ("small", "big", "nb2_kwargs"),
    [(20, 40, None), (1, 40, None), (1, 100, {"group_size": 8, "min_keep": 4}), (3, 300, {"group_size": 4})],
    ids=lambda v: str(v),
)
def test_groups_made_only_of_padding_stay_finite(
    small: int, big: int, nb2_kwargs: dict[str, Any] | None, sampling: bool
) -> None:
    policy, common = _padded_policy(small, big, sampling, nb2_kwargs)
    assert _hierarchy(policy) != "single"
    obs = _batch(common, small, big, 6, np.random.default_rng(1))
    probs, values = _outputs(policy, obs)
    assert torch.isfinite(probs).all() and torch.isfinite(values).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(6))
    tensors, _ = policy.obs_to_tensor(obs)
    policy.set_training_mode(True)
    _, log_prob, entropy = policy.evaluate_actions(tensors, torch.zeros(6, dtype=torch.long))
    (log_prob.sum() + entropy.sum()).backward()  # gradients through the masked attention stay finite
    grads = [p.grad for p in policy.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


# ---- NB2: invalid actions get probability 0 -----------------------------------------------------

N_MASK = 256


def _masked_setup(
    cls: type[NB2ActorCriticPolicy] | type[MaskableNB2Policy], share_encoder: bool
) -> tuple[Any, dict[str, Any], np.ndarray, dict[str, torch.Tensor]]:
    common = _common("CartPole-v1", "Acrobot-v1")
    policy = cls(common.observation_space, common.action_space, lambda _: 1e-3, share_encoder=share_encoder)
    policy.set_training_mode(False)
    with torch.no_grad():  # make the masked action the favourite, so masking must do the work
        policy.action_net.bias[2] = 10.0
    obs = _batch(common, 4, 6, N_MASK, np.random.default_rng(2))
    tensors, _ = policy.obs_to_tensor(obs)
    return policy, obs, obs[TASK_KEY], tensors


POLICIES = [
    pytest.param(NB2ActorCriticPolicy, True, id="ppo-shared"),
    pytest.param(NB2ActorCriticPolicy, False, id="ppo-separate"),
    pytest.param(MaskableNB2Policy, True, id="maskable-shared"),
    pytest.param(MaskableNB2Policy, False, id="maskable-separate"),
]


@pytest.mark.parametrize(("cls", "share_encoder"), POLICIES)
def test_masked_action_has_probability_zero(cls: Any, share_encoder: bool) -> None:
    policy, obs, task, tensors = _masked_setup(cls, share_encoder)
    with torch.no_grad():
        probs = policy.get_distribution(tensors).distribution.probs
    assert torch.all(probs[task == 0, 2] == 0.0)
    assert torch.all(probs[task == 1, 2] > 0.99)  # unmasked rows keep the favourite
    torch.testing.assert_close(probs.sum(-1), torch.ones(N_MASK))
    actions, _ = policy.predict(obs, deterministic=True)  # predict reads the mask too
    assert not np.any(actions[task == 0] == 2) and np.all(actions[task == 1] == 2)


@pytest.mark.parametrize(("cls", "share_encoder"), POLICIES)
def test_forward_never_samples_a_masked_action(cls: Any, share_encoder: bool) -> None:
    policy, _, task, tensors = _masked_setup(cls, share_encoder)
    with torch.no_grad():
        actions, values, log_prob = policy(tensors)
        values2, log_prob2, entropy = policy.evaluate_actions(tensors, actions)
    actions = actions.numpy()
    assert not np.any(actions[task == 0] == 2)
    assert set(actions[task == 0].tolist()) == {0, 1}  # the valid actions are still sampled
    assert np.mean(actions[task == 1] == 2) > 0.95
    torch.testing.assert_close(log_prob2, log_prob)
    torch.testing.assert_close(values2, values)
    assert torch.isfinite(log_prob).all() and torch.isfinite(entropy).all()
    # half-and-half over two valid actions: close to log 2 for the masked rows, never more
    assert float(entropy[torch.as_tensor(task == 0)].max()) <= np.log(2) + 1e-5


def test_maskable_policy_combines_both_masks() -> None:
    policy, _, task, tensors = _masked_setup(MaskableNB2Policy, True)
    extra = np.ones((N_MASK, 3), dtype=bool)
    extra[:, 0] = False  # MaskablePPO's own mask (from action_masks()) forbids action 0 everywhere
    with torch.no_grad():
        probs = policy.get_distribution(tensors, action_masks=extra).distribution.probs
        actions, _, log_prob = policy(tensors, action_masks=extra)
        _, log_prob2, _ = policy.evaluate_actions(tensors, actions, action_masks=extra)
    assert torch.all(probs[:, 0] == 0.0) and torch.all(probs[task == 0, 2] == 0.0)
    assert np.all(actions.numpy()[task == 0] == 1)  # the only action both masks allow
    torch.testing.assert_close(log_prob2, log_prob)
