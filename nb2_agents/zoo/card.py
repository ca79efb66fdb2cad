"""Model cards of the zoo: ``policies/zoo/<name>/card.yaml``, parsed and checked once.

A card has two halves. The hand-written half says what to build and how to score it::

    name: cartpole-ppo-mlp        # the folder's name
    kind: teacher                 # teacher: plain SB3, trained by SB3 | student: made by nb2 distill
    env: CartPole-v1
    description: one line
    recipe:                       # teacher: algorithm, policy, steps, seed, n_envs, hyperparams, source
      ...                         # student: command: nb2 distill --teacher zoo:<teacher> ...
    evaluation: {episodes: 20, seed: 10000, deterministic: true}

``nb2 zoo build <name>`` writes the other half from the model it made: ``algorithm``,
``policy``, ``steps``, ``seed``, ``score`` (mean ± std of the returns and each episode's return),
``size_bytes``, ``train_seconds`` and ``built_with`` (library versions). A card without them
is an entry that was never built. Every error names the card file and the key.
"""

from __future__ import annotations

import itertools
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from nb2_agents.counts import parse_steps
from nb2_agents.errors import UsageError
from nb2_agents.hyperparams import ALGOS, read_yaml
from nb2_agents.zoo.teachers import check_hyperparams

KINDS = ("teacher", "student")
PREFIX = "zoo:"
"""``zoo:NAME`` names a zoo entry wherever a model path is accepted."""
MAX_BYTES = 1_000_000
"""The size limit of one entry's model file (1 MB)."""

_HAND_KEYS = ("name", "kind", "env", "description", "recipe", "evaluation")
_BUILT_KEYS = ("algorithm", "policy", "steps", "seed", "score", "size_bytes", "train_seconds", "built_with")
_TEACHER_KEYS = ("algorithm", "policy", "steps", "seed", "n_envs", "hyperparams", "source")
_STUDENT_KEYS = ("command",)
_EVAL_KEYS = ("episodes", "seed", "deterministic")
_SCORE_KEYS = ("mean_return", "std_return", "mean_length", "success_rate", "returns")


class _CardDumper(yaml.SafeDumper):
    """Block style, but a list of plain values (``returns``, ``net_arch``) on one line."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.SequenceNode:
    flat = not any(isinstance(v, (list, dict)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


_CardDumper.add_representer(list, _represent_list)
_YAML_STYLE: dict[str, Any] = {
    "sort_keys": False,
    "default_flow_style": False,
    "width": 100,
    "allow_unicode": True,
}


def option_values(words: list[str], flag: str) -> list[str]:
    """The values given to ``flag`` in a command line, as ``--flag VALUE`` or ``--flag=VALUE``."""
    values = [b for a, b in itertools.pairwise(words) if a == flag]
    return values + [w.split("=", 1)[1] for w in words if w.startswith(f"{flag}=")]


@dataclass(frozen=True)
class TeacherRecipe:
    """A plain SB3 model trained by SB3 itself: ``ALGO(policy, env, **hyperparams).learn(steps)``."""

    algorithm: str
    """An ``nb2 train --algo`` name: ppo, a2c, dqn, sac, td3, maskable_ppo."""
    policy: str
    """An SB3 policy alias: MlpPolicy, CnnPolicy or MultiInputPolicy."""
    steps: int
    seed: int
    n_envs: int
    hyperparams: dict[str, Any]
    """Constructor arguments as YAML values; ``lin_X`` decays linearly from X to 0 (RL Zoo)."""
    source: str
    """Where the hyperparameters come from."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm,
            "policy": self.policy,
            "steps": self.steps,
            "seed": self.seed,
            "n_envs": self.n_envs,
            "hyperparams": self.hyperparams,
            "source": self.source,
        }


@dataclass(frozen=True)
class StudentRecipe:
    """An NB2 student: the ``nb2 distill`` command line that makes it, teachers named ``zoo:NAME``."""

    command: str

    @property
    def argv(self) -> list[str]:
        """The command's arguments after ``nb2``."""
        return shlex.split(self.command)[1:]

    @property
    def teachers(self) -> list[str]:
        """The zoo entries named by ``--teacher zoo:NAME``, in order."""
        return [v[len(PREFIX) :] for v in option_values(self.argv, "--teacher") if v.startswith(PREFIX)]

    def to_dict(self) -> dict[str, Any]:
        return {"command": self.command}


@dataclass(frozen=True)
class EvalSettings:
    """How an entry is scored: ``nb2 zoo evaluate`` and the tests use the same settings."""

    episodes: int = 20
    seed: int = 10_000
    deterministic: bool = True


@dataclass(frozen=True)
class Score:
    """The measured evaluation: returns over ``EvalSettings.episodes`` episodes."""

    mean_return: float
    std_return: float
    mean_length: float
    success_rate: float | None
    returns: list[float]

    def text(self) -> str:
        out = f"{self.mean_return:.2f} ± {self.std_return:.2f} over {len(self.returns)} episodes"
        return out if self.success_rate is None else f"{out}, success {100 * self.success_rate:.0f}%"

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean_return": round(self.mean_return, 4),
            "std_return": round(self.std_return, 4),
            "mean_length": round(self.mean_length, 2),
            "success_rate": self.success_rate,
            "returns": [round(r, 4) for r in self.returns],
        }


@dataclass(frozen=True)
class Built:
    """What ``nb2 zoo build`` made and measured."""

    algorithm: str
    policy: str
    steps: int
    seed: int
    score: Score
    size_bytes: int
    train_seconds: float
    built_with: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Card:
    """One zoo entry's card."""

    name: str
    kind: str
    env: str
    description: str
    recipe: TeacherRecipe | StudentRecipe
    evaluation: EvalSettings
    path: Path
    """The card file; the model is ``model.zip`` next to it."""
    built: Built | None = None
    """None for an entry that was never built."""

    @property
    def model_path(self) -> Path:
        return self.path.parent / "model.zip"

    @property
    def command(self) -> str:
        """The command that reproduces the entry (model and card)."""
        return f"nb2 zoo build {self.name}"

    @property
    def teachers(self) -> list[str]:
        return self.recipe.teachers if isinstance(self.recipe, StudentRecipe) else []

    def with_built(self, built: Built) -> Card:
        return replace(self, built=built)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "env": self.env,
            "description": self.description,
            "command": self.command,
        }
        settings = self.evaluation
        evaluation = {
            "episodes": settings.episodes,
            "seed": settings.seed,
            "deterministic": settings.deterministic,
        }
        if self.built is None:
            return {**data, "evaluation": evaluation, "recipe": self.recipe.to_dict()}
        b = self.built
        return {
            **data,
            "algorithm": b.algorithm,
            "policy": b.policy,
            "steps": b.steps,
            "seed": b.seed,
            "evaluation": evaluation,
            "score": b.score.to_dict(),
            "size_bytes": b.size_bytes,
            "recipe": self.recipe.to_dict(),
            "train_seconds": b.train_seconds,
            "built_with": b.built_with,
        }

    def to_yaml(self) -> str:
        what = (
            "a plain SB3 model trained by SB3" if self.kind == "teacher" else "an NB2 student (nb2 distill)"
        )
        header = (
            f"# Zoo entry {self.name}: {what}.\n"
            f"# `{self.command}` remakes it from `recipe` and rewrites model.zip and this card.\n"
            "# Edit the name, description, evaluation settings and recipe; the other fields are measured.\n"
        )
        return header + yaml.dump(self.to_dict(), Dumper=_CardDumper, **_YAML_STYLE)


def _where(path: Path, key: str) -> str:
    return f"{path}: {key}"


def _mapping(value: Any, path: Path, key: str, valid: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UsageError(f"{_where(path, key)}: expected a mapping with keys {list(valid)}, got {value!r}")
    for k in value:
        if k not in valid:
            raise UsageError(f"{_where(path, f'{key}.{k}')}: unknown key; valid keys: {list(valid)}")
    return value


def _require(data: dict[str, Any], keys: tuple[str, ...], path: Path, prefix: str = "") -> None:
    missing = [k for k in keys if k not in data]
    if missing:
        raise UsageError(
            f"{path}: missing {', '.join(prefix + k for k in missing)}; a card needs {list(keys)}"
        )


def _int(value: Any, path: Path, key: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{_where(path, key)}: expected a whole number >= {minimum}, got {value!r}")
    return value


def _text(value: Any, path: Path, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{_where(path, key)}: expected a non-empty string, got {value!r}")
    return value


def _teacher_recipe(raw: dict[str, Any], path: Path) -> TeacherRecipe:
    _require(raw, _TEACHER_KEYS, path, "recipe.")
    algo = raw["algorithm"]
    if algo not in ALGOS:
        raise UsageError(
            f"{_where(path, 'recipe.algorithm')}: unknown algorithm {algo!r}; valid: {list(ALGOS)}"
        )
    aliases = list(ALGOS[algo].policy_aliases)
    if raw["policy"] not in aliases:
        raise UsageError(
            f"{_where(path, 'recipe.policy')}: {raw['policy']!r} is not an SB3 policy of {algo}; "
            f"valid: {aliases}"
        )
    hyperparams = raw["hyperparams"] or {}
    check_hyperparams(algo, hyperparams, f"{path}: recipe.hyperparams")
    return TeacherRecipe(
        algorithm=algo,
        policy=raw["policy"],
        steps=parse_steps(raw["steps"], _where(path, "recipe.steps")),
        seed=_int(raw["seed"], path, "recipe.seed"),
        n_envs=parse_steps(raw["n_envs"], _where(path, "recipe.n_envs")),
        hyperparams=dict(hyperparams),
        source=_text(raw["source"], path, "recipe.source"),
    )


def _student_recipe(raw: dict[str, Any], path: Path, env: str) -> StudentRecipe:
    _require(raw, _STUDENT_KEYS, path, "recipe.")
    command = _text(raw["command"], path, "recipe.command")
    example = f"nb2 distill --teacher zoo:NAME --env {env} --preset nano --mode pure --steps 50000 --seed 0"
    try:
        words = shlex.split(command)
    except ValueError as err:
        raise UsageError(f"{_where(path, 'recipe.command')}: cannot split it into words ({err})") from None
    recipe = StudentRecipe(command)
    if words[:2] != ["nb2", "distill"] or not recipe.teachers:
        raise UsageError(
            f"{_where(path, 'recipe.command')}: expected an `nb2 distill` command line whose teachers are "
            f"zoo entries, e.g. {example!r}; got {command!r}"
        )
    if any(w == "--runs-dir" or w.startswith("--runs-dir=") for w in words):
        raise UsageError(
            f"{_where(path, 'recipe.command')}: drop --runs-dir; nb2 zoo build chooses the folder"
        )
    if option_values(words, "--env") != [env]:
        raise UsageError(
            f"{_where(path, 'recipe.command')}: expected --env {env} (the card's env); got {command!r}"
        )
    return recipe


def _score(raw: Any, path: Path, episodes: int) -> Score:
    raw = _mapping(raw, path, "score", _SCORE_KEYS)
    _require(raw, _SCORE_KEYS, path, "score.")
    returns = raw["returns"]
    if not isinstance(returns, list) or len(returns) != episodes:
        raise UsageError(
            f"{_where(path, 'score.returns')}: expected one return per evaluation episode ({episodes}), "
            f"got {returns!r}; rebuild the entry"
        )
    success = raw["success_rate"]
    return Score(
        mean_return=float(raw["mean_return"]),
        std_return=float(raw["std_return"]),
        mean_length=float(raw["mean_length"]),
        success_rate=None if success is None else float(success),
        returns=[float(r) for r in returns],
    )


def _built(data: dict[str, Any], path: Path, episodes: int) -> Built | None:
    present = [k for k in _BUILT_KEYS if k in data]
    if not present:
        return None
    if len(present) != len(_BUILT_KEYS):
        name = data.get("name", path.parent.name)
        raise UsageError(
            f"{path}: has {', '.join(present)} but not {', '.join(k for k in _BUILT_KEYS if k not in data)}; "
            f"these are written together by `nb2 zoo build {name}`"
        )
    versions = data["built_with"]
    if not isinstance(versions, dict):
        raise UsageError(f"{_where(path, 'built_with')}: expected a mapping of package -> version")
    return Built(
        algorithm=_text(data["algorithm"], path, "algorithm"),
        policy=_text(data["policy"], path, "policy"),
        steps=_int(data["steps"], path, "steps", 1),
        seed=_int(data["seed"], path, "seed"),
        score=_score(data["score"], path, episodes),
        size_bytes=_int(data["size_bytes"], path, "size_bytes", 1),
        train_seconds=float(data["train_seconds"]),
        built_with={str(k): str(v) for k, v in versions.items()},
    )


def _evaluation(raw: Any, path: Path) -> EvalSettings:
    raw = _mapping(raw, path, "evaluation", _EVAL_KEYS)
    _require(raw, _EVAL_KEYS, path, "evaluation.")
    if not isinstance(raw["deterministic"], bool):
        raise UsageError(f"{_where(path, 'evaluation.deterministic')}: expected true or false")
    return EvalSettings(
        episodes=_int(raw["episodes"], path, "evaluation.episodes", 1),
        seed=_int(raw["seed"], path, "evaluation.seed"),
        deterministic=raw["deterministic"],
    )


def read_card(path: Path) -> Card:
    """Parse and check one ``card.yaml``; raises :class:`UsageError` naming the file and key."""
    data = read_yaml(path)
    valid = (*_HAND_KEYS, "command", *_BUILT_KEYS)
    data = _mapping(data, path, "(top level)", valid)
    _require(data, ("name", "kind", "env", "recipe", "evaluation"), path)
    name = _text(data["name"], path, "name")
    if name != path.parent.name:
        raise UsageError(f"{_where(path, 'name')}: {name!r} differs from its folder {path.parent.name!r}")
    kind = data["kind"]
    if kind not in KINDS:
        raise UsageError(f"{_where(path, 'kind')}: {kind!r} is not a kind; valid: {list(KINDS)}")
    env = _text(data["env"], path, "env")
    if kind == "teacher":
        recipe: TeacherRecipe | StudentRecipe = _teacher_recipe(
            _mapping(data["recipe"], path, "recipe", _TEACHER_KEYS), path
        )
    else:
        recipe = _student_recipe(_mapping(data["recipe"], path, "recipe", _STUDENT_KEYS), path, env)
    evaluation = _evaluation(data["evaluation"], path)
    return Card(
        name=name,
        kind=kind,
        env=env,
        description=str(data.get("description") or ""),
        recipe=recipe,
        evaluation=evaluation,
        path=path,
        built=_built(data, path, evaluation.episodes),
    )


def expected_return(card: Card, episodes: int) -> float:
    """The card's mean return over its first ``episodes`` evaluation episodes (all of them if fewer).

    Evaluation runs its episodes one after another from the card's seed, so the first k of
    20 are the same k episodes that ``--episodes k`` plays.
    """
    if card.built is None:
        raise UsageError(f"zoo entry {card.name!r} has no score yet; run {card.command}")
    returns = card.built.score.returns
    head = returns[:episodes] if episodes <= len(returns) else returns
    return sum(head) / len(head)


def tolerance(card: Card) -> float:
    """How far a re-evaluation may land from the card: the larger of the returns' std and 5 % of
    the mean (floating point differs between machines, and one flipped action changes an episode)."""
    if card.built is None:
        raise UsageError(f"zoo entry {card.name!r} has no score yet; run {card.command}")
    score = card.built.score
    return max(score.std_return, 0.05 * abs(score.mean_return), 1e-6)
