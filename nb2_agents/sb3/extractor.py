"""NB2 as an SB3 features extractor, plus the options every NB2 policy shares."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from nb2_agents.nn.config import NB2Config, get_config
from nb2_agents.nn.model import NB2


class NB2Extractor(BaseFeaturesExtractor):
    """Runs NB2 and returns its query outputs side by side, (B, n_queries * d_model).

    :param observation_space: any space the NB2 tokenizer supports
    :param config: the architecture
    :param n_queries: decoder queries (2 for actor + critic, 1 for a Q-network or an actor)
    :param check_finite: raise ``ValueError`` on NaN / Inf observations
    :param normalize_images: the policy's SB3 option, for the past steps of a memory-carrying
        observation (NB2 preprocesses them as SB3 preprocesses the current one)
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        config: NB2Config,
        n_queries: int = 2,
        check_finite: bool = True,
        normalize_images: bool = True,
    ) -> None:
        super().__init__(observation_space, features_dim=n_queries * config.d_model)
        self.net = NB2(observation_space, config, n_queries, check_finite, normalize_images)

    def forward(self, observations: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        return self.net(observations).flatten(1)  # (B, nq, C) → (B, nq*C)

    def reset_parameters(self) -> None:
        self.net.reset_parameters()


# SB3's extractor options: read by _nb2_setup, and replaced by NB2's own names when saved
_SB3_EXTRACTOR_KEYS = ("features_extractor_class", "features_extractor_kwargs", "share_features_extractor")
_FE = "policy_kwargs['features_extractor_kwargs']"
_NB2_FIELDS = tuple(sorted(f.name for f in dataclasses.fields(NB2Config)))
EXTRACTOR_KWARGS = tuple(sorted((*_NB2_FIELDS, "check_finite", "features_dim")))
"""The ``features_extractor_kwargs`` keys NB2 policies accept."""


def _agree(name_a: str, a: Any, name_b: str, b: Any) -> None:
    """Two names for one option: both given with different values is an error naming both."""
    if a is not None and b is not None and a != b:
        raise ValueError(f"{name_a}={a!r} and {name_b}={b!r} set the same option; give one of them")


def resolve_share_encoder(policy: str, share_encoder: bool | None, kwargs: dict[str, Any]) -> bool | None:
    """``share_encoder``, or SB3's name for it, ``share_features_extractor`` (popped from ``kwargs``).

    None when neither is given.
    """
    sb3_value = kwargs.pop("share_features_extractor", None)
    _agree(
        "policy_kwargs['share_encoder']",
        share_encoder,
        "policy_kwargs['share_features_extractor']",
        sb3_value,
    )
    value = share_encoder if share_encoder is not None else sb3_value
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"{policy}: share_encoder must be True or False, got {value!r}")
    return value


def _apply_features_dim(fe: dict[str, Any], nb2_kwargs: dict[str, Any] | None, n_queries: int) -> Any:
    """Replace ``features_dim`` in ``fe`` by the ``d_model`` it means; return it (None: not given).

    SB3's ``features_dim`` is the extractor's output width, ``n_queries * d_model`` for NB2.
    """
    features_dim = fe.pop("features_dim", None)
    if features_dim is None:
        return None
    if not isinstance(features_dim, int) or isinstance(features_dim, bool) or features_dim < 1:
        raise ValueError(f"{_FE}['features_dim'] must be a positive integer, got {features_dim!r}")
    if features_dim % n_queries:
        raise ValueError(
            f"{_FE}['features_dim']={features_dim}: NB2's output is n_queries * d_model with "
            f"{n_queries} queries here, so features_dim must be a multiple of {n_queries}"
        )
    d_model = features_dim // n_queries
    given = (("features_extractor_kwargs", fe), ("nb2_kwargs", nb2_kwargs or {}))
    for where, options in given:
        if options.get("d_model", d_model) != d_model:
            raise ValueError(
                f"{_FE}['features_dim']={features_dim} means d_model {d_model} ({n_queries} queries), "
                f"but policy_kwargs[{where!r}]['d_model']={options['d_model']!r}; give one of them"
            )
    fe["d_model"] = d_model
    return features_dim


def _check_extractor_keys(extractor_kwargs: Any) -> dict[str, Any]:
    if not isinstance(extractor_kwargs, dict):
        raise ValueError(f"{_FE} must be a dict, got {extractor_kwargs!r}")
    hints = {
        "config": "; pass an NB2Config as policy_kwargs['preset']",
        "n_queries": "; the policy sets it (2: actor + critic, 1: one per network off-policy)",
    }
    for key in extractor_kwargs:
        if key not in EXTRACTOR_KWARGS:
            raise ValueError(
                f"{_FE}[{key!r}] has no meaning for NB2{hints.get(key, '')}; accepted keys: "
                f"{list(EXTRACTOR_KWARGS)}"
            )
    return dict(extractor_kwargs)


def resolve_nb2_options(
    preset: str | NB2Config,
    sampling: bool | None,
    check_finite: bool | None,
    nb2_kwargs: dict[str, Any] | None,
    extractor_kwargs: dict[str, Any] | None,
    n_queries: int,
) -> tuple[NB2Config, dict[str, Any]]:
    """Fold SB3's ``features_extractor_kwargs`` into NB2's own options and build the config.

    Returns the config and the options in NB2's names only (``preset``, ``sampling``,
    ``check_finite``, ``nb2_kwargs``), which rebuild the same policy when saved.

    >>> cfg, opts = resolve_nb2_options("nano", None, None, None, {"features_dim": 48}, 2)
    >>> cfg.d_model, opts["nb2_kwargs"]
    (24, {'d_model': 24})
    """
    fe = _check_extractor_keys(extractor_kwargs if extractor_kwargs is not None else {})
    if "check_finite" in fe:
        _agree("policy_kwargs['check_finite']", check_finite, f"{_FE}['check_finite']", fe["check_finite"])
        check_finite = fe.pop("check_finite")
    if "sampling" in fe:
        _agree("policy_kwargs['sampling']", sampling, f"{_FE}['sampling']", fe["sampling"])
        sampling = fe.pop("sampling")
    features_dim = _apply_features_dim(fe, nb2_kwargs, n_queries)
    merged = dict(nb2_kwargs or {})
    for key, value in fe.items():
        _agree(f"policy_kwargs['nb2_kwargs'][{key!r}]", merged.get(key), f"{_FE}[{key!r}]", value)
        merged[key] = value
    overrides = dict(merged)
    if sampling is not None:
        overrides["sampling"] = sampling
    try:
        config = get_config(preset, **overrides)
    except ValueError as err:
        if features_dim is None:
            raise
        raise ValueError(
            f"{_FE}['features_dim']={features_dim} gives d_model {features_dim // n_queries} "
            f"({n_queries} queries): {err}"
        ) from err
    options = dict(
        preset=preset,
        sampling=sampling,
        check_finite=True if check_finite is None else check_finite,
        nb2_kwargs=merged if merged or nb2_kwargs is not None else None,
    )
    return config, options


def _drop_reshaped_state(optimizer: torch.optim.Optimizer) -> None:
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            if any(
                isinstance(v, torch.Tensor) and v.dim() and v.shape != param.shape for v in state.values()
            ):
                del optimizer.state[param]


def reject_options(policy: str, kwargs: dict[str, Any], reasons: dict[str, str]) -> None:
    """Raise for SB3 options that have no meaning for ``policy``, saying why."""
    for key, reason in reasons.items():
        if key in kwargs:
            raise ValueError(f"{policy}: policy_kwargs[{key!r}] does not apply: {reason}")


class NB2PolicyMixin:
    """Options shared by every NB2 policy, and the SB3 plumbing they need.

    Every NB2 policy takes, through ``policy_kwargs``:

    * ``preset``: ``"nano"``, ``"small"`` or ``"base"`` (or an :class:`NB2Config`);
    * ``sampling``: adaptive token sampling on / off (default: the preset's, on);
    * ``nb2_kwargs``: other :class:`NB2Config` fields to override;
    * ``check_finite``: reject NaN / Inf observations (default True).

    SB3's own extractor options keep their meaning: ``features_extractor_class`` may only be
    :class:`NB2Extractor` (these policies *are* NB2; use ``"MlpPolicy"`` and friends for another
    extractor), and ``features_extractor_kwargs`` takes ``features_dim`` (the extractor's output
    width, ``n_queries * d_model``), ``check_finite`` and any :class:`NB2Config` field.
    """

    nb2_config: NB2Config
    _nb2_options: dict[str, Any]

    def _nb2_setup(
        self,
        preset: str | NB2Config,
        sampling: bool | None,
        check_finite: bool | None,
        nb2_kwargs: dict[str, Any] | None,
        n_queries: int,
        kwargs: dict[str, Any],
        adam_defaults: dict[str, Any],
    ) -> dict[str, Any]:
        """Validate the NB2 options and return the features-extractor kwargs for SB3.

        Pops ``features_extractor_class`` and ``features_extractor_kwargs`` from ``kwargs``.
        Also defaults the optimizer to fused Adam (``adam_defaults`` are the algorithm's
        usual Adam kwargs): NB2 has many small parameter tensors, and the per-tensor loop of
        plain Adam cost ~2 ms of every update on a CPU (fused: ~0.4 ms).
        """
        extractor_class = kwargs.pop("features_extractor_class", NB2Extractor)
        if extractor_class is not NB2Extractor:
            name = getattr(extractor_class, "__name__", repr(extractor_class))
            raise ValueError(
                f"policy_kwargs['features_extractor_class']={name}: {type(self).__name__} is NB2 "
                "as the features extractor (NB2Extractor) with SB3's heads on top; to use another "
                "extractor, use SB3's 'MlpPolicy' / 'CnnPolicy' / 'MultiInputPolicy' with it"
            )
        self.nb2_config, self._nb2_options = resolve_nb2_options(
            preset,
            sampling,
            check_finite,
            nb2_kwargs,
            kwargs.pop("features_extractor_kwargs", None),
            n_queries,
        )
        if (
            kwargs.get("optimizer_kwargs") is None
            and kwargs.get("optimizer_class", torch.optim.Adam) is torch.optim.Adam
        ):
            kwargs["optimizer_kwargs"] = {**adam_defaults, "fused": True}
        return dict(
            config=self.nb2_config,
            n_queries=n_queries,
            check_finite=self._nb2_options["check_finite"],
            normalize_images=kwargs.get("normalize_images", True),
        )

    def _forget_reshaped_optimizer_state(self) -> None:
        """Have every optimizer of this policy drop, when it loads a saved state, the state of any
        parameter whose shape has changed since it was saved, so that parameter starts afresh
        instead of failing the next step. A model saved before NB2's per-task adapters holds
        Adam's moments of ``task_gain`` (tasks, queries) where ``task_film`` (tasks, queries, 2,
        C) now stands; the network converts the weights themselves (``nn/decoder.py``)."""
        for module in self.modules():  # type: ignore[attr-defined]
            optimizer = getattr(module, "optimizer", None)
            if isinstance(optimizer, torch.optim.Optimizer):
                optimizer.register_load_state_dict_post_hook(_drop_reshaped_state)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data: dict[str, Any] = super()._get_constructor_parameters()  # type: ignore[misc]
        for key in _SB3_EXTRACTOR_KEYS:
            data.pop(key, None)  # saved in NB2's names instead: one name per option
        data.update(self._nb2_options)
        return data

    def nb2_networks(self) -> list[NB2]:
        """Every distinct NB2 network inside this policy (shared encoders counted once)."""
        found: dict[int, NB2] = {}
        for module in self.modules():  # type: ignore[attr-defined]
            if isinstance(module, NB2):
                found.setdefault(id(module), module)
        return list(found.values())
