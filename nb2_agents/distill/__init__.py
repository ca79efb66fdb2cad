"""Knowledge distillation: teacher policies (any SB3 model, or a wider NB2) into NB2 students.

* :mod:`.sb3_zip`: reading an SB3 model zip without unpickling it;
* :mod:`.teachers`: loading a teacher (safely, or with ``trust``) and what it says about states;
* :mod:`.policies`: a policy's outputs (action distribution, value) in one form;
* :mod:`.losses`: the distillation loss, as pure functions of tensors;
* :mod:`.labels`: the teachers' targets for the student's states (one env, or one teacher per task);
* :mod:`.student`: the student (PPO + NB2), ``pure`` and ``kickstart`` training;
* :mod:`.plan`, :mod:`.run`, :mod:`.report`: ``nb2 distill`` as a function, its run folder;
* :mod:`.cli`: the ``nb2 distill`` subcommand.
"""

from typing import TYPE_CHECKING

from nb2_agents.lazy import lazy_exports

if TYPE_CHECKING:
    from nb2_agents.distill.run import DistillResult, distill
    from nb2_agents.distill.teachers import Teacher, load_teacher, resolve_teacher_path

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "DistillResult": "nb2_agents.distill.run",
        "distill": "nb2_agents.distill.run",
        "Teacher": "nb2_agents.distill.teachers",
        "load_teacher": "nb2_agents.distill.teachers",
        "resolve_teacher_path": "nb2_agents.distill.teachers",
    },
)

__all__ = ["DistillResult", "Teacher", "distill", "load_teacher", "resolve_teacher_path"]
