"""NB2: tokenizer → hierarchical encoder → decoder with dynamic attention and token sampling."""

from __future__ import annotations

from collections.abc import Callable

import torch
from gymnasium import spaces
from stable_baselines3.common.preprocessing import preprocess_obs
from torch import nn

from nb2_agents.memory.layout import PREFIX, VALID_KEY, MemoryLayout
from nb2_agents.nn.blocks import init_weights
from nb2_agents.nn.config import NB2Config, ParamReport
from nb2_agents.nn.decoder import Decoder
from nb2_agents.nn.dormant import dormant_fraction, recording_mlp_activations
from nb2_agents.nn.encoder import HierarchicalEncoder
from nb2_agents.nn.inference import TracedForward
from nb2_agents.nn.probes import recording
from nb2_agents.nn.temporal import SummaryCache, TemporalStage, encode_valid, param_version
from nb2_agents.nn.tokenizer import Tokenizer


class NB2(nn.Module):
    """The NB2 network for one observation space.

    ``forward(obs)`` takes SB3-preprocessed observations and returns (B, n_queries, C): one
    feature vector per learned query (for example actor and critic).

    >>> import gymnasium as gym, torch
    >>> net = NB2(gym.spaces.Box(-1, 1, (4,)), NB2Config(), n_queries=2)
    >>> net(torch.zeros(3, 4)).shape
    torch.Size([3, 2, 32])

    An observation space that carries each env's last K steps (``memory/layout.py``) adds the
    temporal stage (``temporal.py``): each past step is encoded alone into its summary, and the
    current step's global stage attends over them. ``normalize_images`` is SB3's option, which
    the past steps are preprocessed with as SB3 preprocesses the current one.
    """

    TASK_PARAMS = ("encoder.task_embed.weight", "decoder.task_film")
    """The parameters with one row per task: what a task has of its own (its embedding, which
    also conditions the decoder's head gates, and its output adapters)."""

    def __init__(
        self,
        observation_space: spaces.Space,
        cfg: NB2Config,
        n_queries: int = 2,
        check_finite: bool = True,
        normalize_images: bool = True,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.check_finite = check_finite
        self.normalize_images = normalize_images
        self.layout = MemoryLayout.of(observation_space)
        """Where the observation keeps each env's past steps; None without memory."""
        step_space = observation_space if self.layout is None else self.layout.step_space
        self.tokenizer = Tokenizer(step_space, cfg)
        self.encoder = HierarchicalEncoder(cfg, self.tokenizer.n_groups, self.tokenizer.group_len)
        self.temporal = None if self.layout is None else TemporalStage(cfg, self.layout.k)
        self.decoder = Decoder(cfg, n_queries)
        self._cache = SummaryCache()
        self.traced_inference = True
        """Without autograd, run the forward as a traced graph (``inference.py``): same outputs,
        1.3-2.8x less time at the batch sizes that act in an env. False: always eager."""
        self._traced = TracedForward()
        self.reset_parameters()

    def __getstate__(self) -> dict[str, object]:
        # a copy or pickle traces its own graphs: these ones hold this network's tensors
        state = dict(self.__dict__)
        state["_traced"] = TracedForward()
        state["_cache"] = SummaryCache()
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        state.setdefault("traced_inference", True)  # a network pickled before traced inference
        state.setdefault("layout", None)  # or before memory over time
        state.setdefault("temporal", None)
        state.setdefault("normalize_images", True)
        state["_traced"] = TracedForward()
        state["_cache"] = SummaryCache()
        super().__setstate__(state)

    def reset_parameters(self) -> None:
        """Re-initialise every weight (gates start near the identity / open)."""
        self.apply(init_weights)  # Linear, Conv, Embedding, LayerNorm, gated residuals
        self.tokenizer.reset_parameters()
        self.decoder.reset_parameters()
        if self.temporal is not None:
            self.temporal.reset_parameters()
        # zero global offset and pooling seeds: uniform pooling reads at init, no constant offset
        nn.init.zeros_(self.encoder.global_token)
        nn.init.zeros_(self.encoder.task_embed.weight)
        for level in self.encoder.level_list:
            nn.init.zeros_(level.pool.seed)

    def forward(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        # Checked where observations enter: rollouts and predictions run without autograd,
        # while updates re-read observations that were already checked then.
        if not torch.is_grad_enabled():
            if self.check_finite:
                check_finite(obs)
            if self.traced_inference and self.layout is None:
                return self._traced(self, obs)
        return self.run(obs)

    def run(self, obs: torch.Tensor | dict[str, torch.Tensor], in_place: bool = False) -> torch.Tensor:
        """The forward itself, eager, without the input check: (B, n_queries, C).

        ``in_place`` samples tokens by masking rather than gathering (``encoder.py``): the same
        result, with shapes that depend on the batch size alone (for export)."""
        if self.layout is None:
            return self.decoder(self.encoder(self.tokenizer(obs), in_place))
        assert isinstance(obs, dict), "a memory-carrying observation is a Dict"
        valid = obs[VALID_KEY] > 0.5  # (B, K)

        def past(current: torch.Tensor) -> torch.Tensor:
            return self.past_summaries(obs, valid, current, in_place)  # (B, K, C)

        return self.step(self._step(obs), past, valid, in_place)[0]

    def step(
        self,
        step: torch.Tensor | dict[str, torch.Tensor],
        past: torch.Tensor | Callable[[torch.Tensor], torch.Tensor],
        valid: torch.Tensor,
        in_place: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step with memory: (B, n_queries, C) and this step's own summary (B, C), which
        becomes the most recent past step of the next one.

        ``step`` is the current observation (SB3-preprocessed), ``past`` the summaries (B, K, C)
        of the last K steps, or a function of this step's summary that gives them, and ``valid``
        (B, K) which of them belong to the episode. Export runs this with the summaries as an
        input (``export/module.py``)."""
        assert self.temporal is not None, "this network has no memory over time"
        mem = self.encoder(self.tokenizer(step), in_place)
        summaries = past(mem.global_token) if callable(past) else past  # (B, K, C)
        return self.decoder(self.temporal(mem, summaries, valid)), mem.global_token

    def _step(self, obs: dict[str, torch.Tensor]) -> torch.Tensor | dict[str, torch.Tensor]:
        """The current step of a memory-carrying observation, as the tokenizer takes it."""
        assert self.layout is not None
        if not self.layout.is_dict:
            return obs[self.layout.step_keys[0]]
        return {key: obs[key] for key in self.layout.step_keys}

    def _past(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every past step, preprocessed as SB3 preprocesses the current one: (B*K, ...) per key."""
        assert self.layout is not None
        out: dict[str, torch.Tensor] = {}
        for key in self.layout.past_keys:
            x = obs[PREFIX + key].flatten(0, 1)  # (B, K, *shape) → (B*K, *shape), cast to float by SB3
            step = preprocess_obs(x, self.layout.step_part(key), self.normalize_images)
            assert isinstance(step, torch.Tensor)
            out[key] = step
        return out

    def _encode_past(
        self, past: dict[str, torch.Tensor], index: torch.Tensor, in_place: bool
    ) -> torch.Tensor:
        """The summaries (n, C) of the past steps at flat indices ``index`` (n,) of ``past``.

        Each distinct observation is encoded once: an update's minibatch holds K past steps per
        sample, and where observations repeat (MiniGrid's egocentric views: 3,472 valid past
        steps of a MemoryS7 minibatch were 86 distinct views) the encoder runs on the distinct
        ones only. A summary depends on its observation alone, so the result is the same, and
        the gradient of each distinct one sums those of its copies. Not under export's tracing
        (``in_place``), whose shapes cannot depend on the data."""
        assert self.layout is not None
        n = index.shape[0]
        rows = {key: x.index_select(0, index) for key, x in past.items()}  # (n, ...)
        inverse = None
        if not in_place and n > 1:
            flat = torch.cat([x.reshape(n, -1) for x in rows.values()], dim=1)  # (n, F)
            distinct, inverse = torch.unique(flat, dim=0, return_inverse=True)  # (u, F), (n,)
            if distinct.shape[0] < n:
                first = torch.full((distinct.shape[0],), n, dtype=torch.long, device=index.device)
                first = first.scatter_reduce(0, inverse, torch.arange(n, device=index.device), "amin")  # (u,)
                rows = {key: x.index_select(0, first) for key, x in rows.items()}  # (u, ...)
            else:
                inverse = None
        step = rows if self.layout.is_dict else rows[self.layout.step_keys[0]]
        summaries = self.encoder(self.tokenizer(step), in_place).global_token  # (n or u, C)
        return summaries if inverse is None else summaries.index_select(0, inverse)  # (n, C)

    def past_summaries(
        self, obs: dict[str, torch.Tensor], valid: torch.Tensor, current: torch.Tensor, in_place: bool = False
    ) -> torch.Tensor:
        """The summaries (B, K, C) of the past steps ``obs`` carries (zero where not ``valid``).

        With autograd every valid past step is encoded again (the update: exact, with gradients
        through the past); without it, :class:`~nb2_agents.nn.temporal.SummaryCache` reuses each
        env's summaries from the last call where they still hold. ``current`` (B, C) is this
        step's own summary, kept for the next call."""
        past = self._past(obs)
        c = current.shape[-1]

        def encode(index: torch.Tensor) -> torch.Tensor:
            return self._encode_past(past, index, in_place)

        if torch.is_grad_enabled() or in_place:
            return encode_valid(valid, encode, c, current.dtype)
        assert self.layout is not None
        b, k = valid.shape
        past_flat = torch.cat([x.reshape(b, k, -1) for x in past.values()], dim=-1)  # (B, K, F)
        step_flat = torch.cat([obs[key].reshape(b, -1) for key in self.layout.past_keys], dim=-1)  # (B, F)
        version = param_version(self)
        summaries = self._cache.summaries(version, past_flat, valid, encode, c)
        self._cache.store(version, step_flat, current, past_flat, summaries, valid)
        return summaries

    def task_state(self, task: int) -> dict[str, torch.Tensor]:
        """Task ``task``'s own rows of :attr:`TASK_PARAMS`, cloned."""
        params = dict(self.named_parameters())
        return {name: params[name][task].detach().clone() for name in self.TASK_PARAMS}

    @torch.no_grad()
    def set_task_state(self, task: int, state: dict[str, torch.Tensor]) -> None:
        """Give task ``task`` the rows in ``state`` (from :meth:`task_state`, of any task)."""
        params = dict(self.named_parameters())
        for name in self.TASK_PARAMS:
            params[name][task] = state[name]

    @torch.no_grad()
    def diagnostics(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> dict[str, float]:
        """What TensorBoard's ``nb2/`` keys show, from one extra forward pass on ``obs``.

        Attention entropy (nats) per level of the hierarchy (``level0``, ``level1``, ...,
        ``global``, ``decoder``; pooling included in its level), the share of fine tokens kept
        by sampling, the mean decoder head gate, and the share of dormant MLP units per block
        (``dormant_frac/<block>``) and in all (``dormant_frac``), as ReDo defines them
        (``dormant.py``).
        """
        with recording(self, entropy=True) as rec, recording_mlp_activations(self) as hidden:
            self.run(obs)
        by_level: dict[str, list[float]] = {}
        for name, entropy in rec.entropy.items():
            by_level.setdefault(_level_of(name), []).append(entropy)
        out = {f"attention_entropy/{lvl}": sum(v) / len(v) for lvl, v in sorted(by_level.items())}
        out["kept_fraction"] = 1.0 if rec.kept is None else float(rec.kept.mean())
        if rec.gates is not None:
            out["head_gate_mean"] = float(rec.gates.mean())
        for name, activations in hidden.items():
            out[f"dormant_frac/{name}"] = dormant_fraction(activations)
        if hidden:
            units = sum(a.shape[-1] for a in hidden.values())
            dormant = sum(out[f"dormant_frac/{name}"] * a.shape[-1] for name, a in hidden.items())
            out["dormant_frac"] = dormant / units  # share of every MLP unit of the network
        return out

    def param_report(self) -> ParamReport:
        """Parameter counts in total and per block (tokenizer, encoder, decoder)."""

        def count(m: nn.Module) -> int:
            return sum(p.numel() for p in m.parameters())

        blocks = {"tokenizer": self.tokenizer, "encoder": self.encoder, "decoder": self.decoder}
        return ParamReport(count(self), {k: count(m) for k, m in blocks.items()})


def _level_of(module_name: str) -> str:
    """``encoder.levels.1.blocks.0.attn`` → ``level1``; global / local-single → ``global``."""
    parts = module_name.split(".")
    if parts[0] == "decoder":
        return "decoder"
    if parts[1] == "levels":
        return f"level{parts[2]}"
    return "global"  # global blocks, and the single-group stage where local and global coincide


def check_finite(obs: torch.Tensor | dict[str, torch.Tensor]) -> None:
    """Raise ``ValueError`` naming the key and feature index of the first NaN / Inf."""
    items = obs.items() if isinstance(obs, dict) else [("", obs)]
    for key, x in items:
        if not x.is_floating_point() or bool(torch.isfinite(x).all()):
            continue
        row, *feature = (~torch.isfinite(x)).nonzero()[0].tolist()
        value = x[(row, *feature)].item()
        where = f"observation key {key!r}" if key else "observation"
        raise ValueError(
            f"{where} feature {tuple(feature) if len(feature) > 1 else feature[0]} is {value} "
            f"(batch row {row}); fix the environment or wrap it (e.g. VecCheckNan), "
            "or pass check_finite=False in policy_kwargs to skip this check"
        )


def preset_param_counts(
    observation_space: spaces.Space, presets: dict[str, NB2Config] | None = None, n_queries: int = 2
) -> dict[str, ParamReport]:
    """Parameter counts of NB2 for ``observation_space`` under each preset.

    >>> import gymnasium as gym
    >>> counts = preset_param_counts(gym.spaces.Box(-1, 1, (4,)))
    >>> sorted(counts) == ["base", "nano", "nano-flat", "small", "small-flat"]
    True
    """
    from nb2_agents.nn.config import PRESETS

    chosen = PRESETS if presets is None else presets
    return {name: NB2(observation_space, cfg, n_queries).param_report() for name, cfg in chosen.items()}
