"""Curricula: one NB2 agent across a sequence of Gymnasium tasks, and what it kept.

* :mod:`.spec`: curriculum YAML files (built-ins in ``envs/``) as dataclasses;
* :mod:`.variants`: the ``nb2/`` parametric Gymnasium ids;
* :mod:`.adapter`: one observation and action space for tasks whose spaces differ;
* :mod:`.runner`: sequential and multitask training, reference runs, the run folder;
  :mod:`.results` (config, metrics.json, CSVs) and :mod:`.references` (the reference cache);
* :mod:`.evaluator`: every task evaluated during training; :mod:`.metrics`: what it means;
* :mod:`.strategies`: the hooks retention strategies plug into.
"""

from typing import TYPE_CHECKING

from nb2_agents.lazy import lazy_exports

if TYPE_CHECKING:
    from nb2_agents.curriculum.runner import CurriculumResult, run_curriculum, run_references
    from nb2_agents.curriculum.spec import CurriculumSpec, TaskSpec, builtin_curricula, load_curriculum

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "CurriculumResult": "nb2_agents.curriculum.runner",
        "run_curriculum": "nb2_agents.curriculum.runner",
        "run_references": "nb2_agents.curriculum.runner",
        "CurriculumSpec": "nb2_agents.curriculum.spec",
        "TaskSpec": "nb2_agents.curriculum.spec",
        "builtin_curricula": "nb2_agents.curriculum.spec",
        "load_curriculum": "nb2_agents.curriculum.spec",
    },
)

__all__ = [
    "CurriculumResult",
    "CurriculumSpec",
    "TaskSpec",
    "builtin_curricula",
    "load_curriculum",
    "run_curriculum",
    "run_references",
]
