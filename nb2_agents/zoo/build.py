"""``nb2 zoo build``: remake entries from their cards' recipes, score them, rewrite model + card.

A teacher is trained by SB3 (:mod:`nb2_agents.zoo.teachers`); a student is made by running
its card's ``nb2 distill`` command line into a temporary runs folder. Either way the model is
scored with :func:`nb2_agents.evaluation.evaluate` under the card's evaluation settings, checked
against the 1 MB limit, and only then moved into place (atomically), followed by the card.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import torch

from nb2_agents.cli_common import common_options
from nb2_agents.envs_util import import_gym_packages
from nb2_agents.errors import UsageError
from nb2_agents.evaluation import EvalResult, evaluate, load_model
from nb2_agents.executor import check_address, run_jobs
from nb2_agents.runs import atomic_write, resolve_model, save_model
from nb2_agents.zoo.card import MAX_BYTES, Built, Card, Score, StudentRecipe, TeacherRecipe
from nb2_agents.zoo.registry import ZOO_DIR, build_waves, entries, get
from nb2_agents.zoo.teachers import drop_optimizer_state, train_teacher

_PACKAGES = ("nb2-agents", "stable-baselines3", "sb3-contrib", "torch", "gymnasium", "numpy")


def measure(card: Card, model: Path, episodes: int | None = None, device: str = "cpu") -> EvalResult:
    """Evaluate ``model`` on the card's env with the card's settings (``episodes`` overrides)."""
    settings = card.evaluation
    return evaluate(
        model,
        env=card.env,
        episodes=episodes or settings.episodes,
        deterministic=settings.deterministic,
        seed=settings.seed,
        device=device,
    )


def _install(path: Path, write: Callable[[Path], object]) -> None:
    """Write ``path`` atomically, readable by all (the zoo ships in the package, unlike a run's files)."""

    def write_public(tmp: Path) -> None:
        write(tmp)
        tmp.chmod(0o644)

    atomic_write(path, write_public)


def _versions(env_id: str) -> dict[str, str]:
    names = [*_PACKAGES, *(["minigrid"] if env_id.startswith(("MiniGrid-", "BabyAI-")) else [])]
    return {"python": platform.python_version(), **{n: importlib.metadata.version(n) for n in names}}


def _make_teacher(card: Card, recipe: TeacherRecipe, out: Path, progress: bool) -> None:
    model = train_teacher(
        card.env,
        recipe.algorithm,
        recipe.policy,
        recipe.steps,
        recipe.seed,
        recipe.n_envs,
        recipe.hyperparams,
        where=f"{card.path}: recipe",
        progress=progress,
    )
    drop_optimizer_state(model)
    meta = {
        "algo": recipe.algorithm,
        "env": card.env,
        "env_kwargs": {},
        "seed": recipe.seed,
        "eval_seed": card.evaluation.seed,
        "deterministic_eval": card.evaluation.deterministic,
        "zoo": card.name,
    }
    save_model(model, out, meta)


def _make_student(card: Card, recipe: StudentRecipe, out: Path) -> None:
    """Run the card's ``nb2 distill ...`` command (its own parser and handler: the zoo sits below
    the ``nb2`` command line, which lists the zoo's subcommand) and keep the student it made."""
    from nb2_agents.distill import cli as distill_cli

    if recipe.argv[:1] != ["distill"]:
        raise UsageError(
            f"{card.path}: recipe.command must be an `nb2 distill ...` command, got {recipe.command}"
        )
    parser = argparse.ArgumentParser(prog="nb2")
    distill_cli.add_parser(parser.add_subparsers(dest="command", required=True), common_options())
    runs = out.parent / "runs"
    try:
        args = parser.parse_args([*recipe.argv, "--runs-dir", str(runs)])
    except SystemExit as exit_:  # argparse printed what it refused
        raise UsageError(
            f"{card.path}: recipe.command is not a valid nb2 distill command: {recipe.command}"
        ) from exit_
    import_gym_packages(args.gym_packages)
    code = distill_cli.handle(args)
    if code != 0:
        raise RuntimeError(f"{card.path}: recipe.command exited with {code}: {recipe.command}")
    made = sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
    if len(made) != 1:
        raise RuntimeError(f"{card.path}: recipe.command made {len(made)} run folders in {runs}, expected 1")
    model, _ = resolve_model(made[0])
    shutil.copyfile(model, out)


def build(name: str, root: Path = ZOO_DIR, progress: bool = False) -> Card:
    """Remake entry ``name`` from its recipe, score it, and rewrite its model.zip and card.yaml.

    Nothing in the zoo changes unless the new model is made, scored and within 1 MB.
    """
    card = get(name, root)
    torch.set_num_threads(1)  # as nb2 train: repeatable on one machine, and fastest for small nets
    with tempfile.TemporaryDirectory(prefix=f"nb2-zoo-{card.name}-") as tmp:
        model_path = Path(tmp) / "model.zip"
        start = time.perf_counter()
        if isinstance(card.recipe, TeacherRecipe):
            _make_teacher(card, card.recipe, model_path, progress)
        else:
            _make_student(card, card.recipe, model_path)
        seconds = time.perf_counter() - start
        size = model_path.stat().st_size
        if size > MAX_BYTES:
            raise UsageError(
                f"{card.path}: the model is {size:,} bytes, over the zoo's {MAX_BYTES:,}; "
                "make the recipe's network smaller (policy_kwargs.net_arch)"
            )
        result = measure(card, model_path)
        loaded = load_model(model_path, device="cpu")
        seed = loaded.meta.get("seed", loaded.model.seed)
        built = Built(
            algorithm=loaded.algo,
            policy=card.recipe.policy
            if isinstance(card.recipe, TeacherRecipe)
            else type(loaded.model.policy).__name__,
            steps=int(loaded.model.num_timesteps),
            seed=int(seed) if seed is not None else 0,
            score=Score(
                mean_return=result.mean_return,
                std_return=result.std_return,
                mean_length=result.mean_length,
                success_rate=result.success_rate,
                returns=result.returns,
            ),
            size_bytes=size,
            train_seconds=round(seconds, 1),
            built_with=_versions(card.env),
        )
        _install(card.model_path, lambda tmp_file: shutil.copyfile(model_path, tmp_file))
    new_card = card.with_built(built)
    _install(card.path, lambda tmp_file: tmp_file.write_text(new_card.to_yaml()))
    return new_card


def build_many(
    names: Sequence[str] = (),
    root: Path = ZOO_DIR,
    progress: bool = False,
    log: Callable[[str], None] = print,
    workers: int = 1,
    address: str | None = None,
) -> list[Card]:
    """Build ``names`` (default: the whole zoo), each after the teachers it is distilled from.

    ``workers`` > 1 or ``address``: the entries of each wave (:func:`build_waves`) are built side by
    side as Ray tasks (:mod:`nb2_agents.executor`); each entry's build is the same as alone."""
    address = check_address(address)
    cards = entries(root)
    chosen = [get(n, root).name for n in names] if names else list(cards)
    done: list[Card] = []
    for wave in build_waves(chosen, cards):
        for name in wave:
            card = cards[name]
            if isinstance(card.recipe, TeacherRecipe):
                r = card.recipe
                what = f"{r.algorithm} {r.policy}, {r.steps:,} steps, seed {r.seed}"
            else:
                what = card.recipe.command
            log(f"building {name} ({card.env}): {what}")
        side_by_side = len(wave) > 1 and (workers > 1 or address is not None)
        one = partial(build, root=root, progress=progress and not side_by_side)
        built = run_jobs(one, wave, workers, address)
        for new in built:
            assert new.built is not None
            size, seconds = new.built.size_bytes / 1e3, new.built.train_seconds
            log(f"  {new.name}: {new.built.score.text()}, {size:.0f} KB, trained in {seconds:.0f} s")
        done.extend(built)
    return done
