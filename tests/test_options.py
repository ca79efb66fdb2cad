"""The options objects: one list of a subcommand's options, shared by the CLI and the Python API."""

from __future__ import annotations

import argparse
import dataclasses
from typing import cast

import pytest

from nb2_agents.cli import build_parser
from nb2_agents.cli_common import options_from_args
from nb2_agents.config import TrainOptions, resolve_config
from nb2_agents.curriculum.resolve import CurriculumOptions, curriculum_options, resolve
from nb2_agents.sweep import SweepOptions


def _subparser_dests(command: str) -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    choices = cast(dict[str, argparse.ArgumentParser], sub.choices)
    return {a.dest for a in choices[command]._actions}


@pytest.mark.parametrize(
    ("command", "cls"), [("train", TrainOptions), ("curriculum", CurriculumOptions), ("sweep", SweepOptions)]
)
def test_every_option_is_an_argument_of_the_same_name(command: str, cls: type) -> None:
    missing = {f.name for f in dataclasses.fields(cls)} - _subparser_dests(command)
    assert not missing, f"nb2 {command} has no argument for {sorted(missing)}"


def test_train_options_from_the_command_line() -> None:
    args = build_parser().parse_args(
        ["train", "--env", "CartPole-v1", "--steps", "2k", "--seed", "3", "--set", "n_steps=64"]
    )
    options = options_from_args(TrainOptions, args)
    assert (options.env, options.steps, options.seed, options.overrides) == (
        "CartPole-v1",
        2000,
        3,
        ["n_steps=64"],
    )
    cfg = resolve_config(options)
    assert (cfg.steps, cfg.seed, cfg.hyperparams["n_steps"]) == (2000, 3, 64)


def test_keywords_go_over_the_options_object() -> None:
    base = TrainOptions(env="CartPole-v1", steps=1000, seed=1)
    cfg = resolve_config(base, seed=2, overrides={"n_steps": 32})
    assert (cfg.steps, cfg.seed, cfg.hyperparams["n_steps"]) == (1000, 2, 32)
    assert base.seed == 1  # frozen: the caller's object is not changed
    with pytest.raises(TypeError, match="stepz"):
        resolve_config(base, stepz=5)


def test_curriculum_options_by_name_object_or_keywords() -> None:
    by_name = curriculum_options("cartpole-variants", {"retention": "nb2", "overrides": ["n_epochs=3"]})
    assert by_name == CurriculumOptions(retention="nb2", overrides=["n_epochs=3"])
    cfg, _, hp = resolve(by_name)
    assert cfg.retention == "nb2" and cfg.task_ids and hp.algo_kwargs["n_epochs"] == 3
    cfg2, _, _ = resolve("cartpole-variants", retention="nb2", overrides={"n_epochs": 3})
    assert cfg2.to_dict() == cfg.to_dict()


def test_a_run_rebuilds_its_own_configuration() -> None:
    cfg, _, _ = resolve("cartpole-variants", retention="nb2", seeds=[1, 2], checkpoint_freq=500)
    again, _, _ = resolve(CurriculumOptions.of_run(cfg.to_dict()))
    assert again.to_dict() == cfg.to_dict()
