"""The student next to its teachers, each evaluated on the same episodes (same env seeds).

``teachers.json`` in the run folder holds, per teacher: what it is (path, algorithm, kind, how
it was loaded), its evaluation and the student's, and ``kept``: the student's share of the
teacher's score. For a curriculum the score is the task's normalised score
``(R − random) / (reference − random)`` (or its success rate); for one env it is the return
itself, so ``kept`` is given only when the teacher's mean return is positive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, cast

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.utils import set_random_seed

from nb2_agents.curriculum.evaluator import MAX_EVAL_ENVS, Evaluator, TaskEval
from nb2_agents.distill.plan import ALGO, Plan
from nb2_agents.distill.teachers import Teacher
from nb2_agents.envs_util import EnvSpec
from nb2_agents.evaluation import EvalResult, run_episodes


def _stats(returns: list[float], lengths: list[int], successes: list[bool]) -> dict[str, Any]:
    return {
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        "episodes": len(returns),
        "success_rate": float(np.mean(successes)) if successes else None,
        "mean_length": float(np.mean(lengths)),
    }


def evaluate_teacher(
    teacher: Teacher,
    env_spec: EnvSpec,
    episodes: int,
    seed: int,
    deterministic: bool,
    n_envs: int = 1,
    success_key: str = "is_success",
) -> dict[str, Any]:
    """The teacher's returns on ``env_spec`` with SB3's ``evaluate_policy``, seeded as ``nb2 evaluate``;
    the env wrapped for the teacher's algorithm (a MaskablePPO teacher reads action masks)."""
    vec = replace(env_spec, algo=teacher.algo).make_vec(n_envs, seed)
    set_random_seed(seed)
    try:
        model = cast(BaseAlgorithm, teacher)  # evaluate_policy needs only predict()
        return _stats(*run_episodes(model, vec, episodes, deterministic, success_key))
    finally:
        vec.close()


def _kept(student: float, teacher: float) -> float | None:
    return round(student / teacher, 4) if teacher > 0 else None


def env_report(plan: Plan, student: EvalResult) -> dict[str, Any]:
    """One env: the teacher and the student on the student's evaluation episodes."""
    assert plan.env_spec is not None
    teacher = plan.teachers[0]
    result = evaluate_teacher(teacher, plan.env_spec, student.episodes, student.seed, student.deterministic)
    mine = {
        k: getattr(student, k)
        for k in ("mean_return", "std_return", "episodes", "success_rate", "mean_length")
    }
    entry = {
        **teacher.describe(),
        "env": plan.name,
        "teacher": result,
        "student": mine,
        "kept": _kept(student.mean_return, result["mean_return"]),
    }
    return {
        "mode": plan.options.mode,
        "env": plan.name,
        "seed": student.seed,
        "deterministic": student.deterministic,
        "teachers": [entry],
    }


def curriculum_report(
    plan: Plan, student: Sequence[TaskEval], deterministic: Sequence[bool]
) -> dict[str, Any]:
    """A curriculum: each task's teacher and the student on that task's evaluation episodes."""
    assert plan.spec is not None
    entries = []
    for i, (task, teacher, mine) in enumerate(zip(plan.spec.tasks, plan.teachers, student, strict=True)):
        seed = plan.eval_seed + 1000 * i  # the Evaluator's seeds, so both meet the same episodes
        n_envs = min(task.eval_episodes, MAX_EVAL_ENVS)
        key = task.success_key or "is_success"
        result = evaluate_teacher(
            teacher, task.env_spec(ALGO), task.eval_episodes, seed, deterministic[i], n_envs, key
        )
        result["score"] = task.score(result["mean_return"], result["success_rate"])
        student_entry = {
            "mean_return": mine.mean_return,
            "std_return": mine.std_return,
            "success_rate": mine.success_rate,
            "score": mine.score,
        }
        entries.append(
            {
                **teacher.describe(),
                "task": task.name,
                "teacher": result,
                "student": student_entry,
                "kept": _kept(mine.score, result["score"]),
            }
        )
    return {"mode": plan.options.mode, "curriculum": plan.name, "seed": plan.eval_seed, "teachers": entries}


def deterministic_evals(plan: Plan) -> list[bool]:
    """Greedy evaluation per task, except MiniGrid (sampled, as RL Zoo and ``nb2 curriculum``)."""
    assert plan.spec is not None
    return [not t.env_id.startswith(("MiniGrid-", "BabyAI-")) for t in plan.spec.tasks]


def curriculum_evaluator(plan: Plan, record: bool = False) -> Evaluator:
    """Evaluation envs for every task of the curriculum (the student sees task ids); ``record``:
    for resumable checkpoints."""
    assert plan.spec is not None and plan.common is not None
    tasks, common, evals = plan.spec.tasks, plan.common, deterministic_evals(plan)
    return Evaluator(tasks, common, ALGO, plan.seed, evals, None, True, record=record)


def summary_lines(report: dict[str, Any]) -> list[str]:
    """One line per teacher: teacher and student, and the share kept."""
    lines = []
    for entry in report["teachers"]:
        where = entry.get("task") or entry.get("env")
        t, s = entry["teacher"], entry["student"]
        kept = "" if entry["kept"] is None else f", kept {100 * entry['kept']:.0f}%"
        score = f" (score {t['score']:.2f} → {s['score']:.2f})" if "score" in t else ""
        lines.append(
            f"{where}: teacher {t['mean_return']:.2f} ± {t['std_return']:.2f}, "
            f"student {s['mean_return']:.2f} ± {s['std_return']:.2f}{score}{kept}"
        )
    return lines
