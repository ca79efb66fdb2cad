"""``learn`` up to a total number of steps, from scratch or from a checkpoint: the step every
resumable job (``nb2 train``, ``nb2 distill``) shares."""

from __future__ import annotations

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList

from nb2_agents.checkpoint.run_state import RunParts, restore
from nb2_agents.checkpoint.store import Checkpoint


def learn_until(
    model: BaseAlgorithm,
    total: int,
    callbacks: list[BaseCallback],
    parts: RunParts,
    ckpt: Checkpoint | None,
    command: str,
    verbose: int,
) -> None:
    """Train ``model`` until ``num_timesteps`` reaches ``total``. With ``ckpt``, ``parts`` are put
    in its state first and learning continues from its step, its counters kept (``parts`` are
    what the checkpoints of ``callbacks`` capture)."""
    if ckpt is not None:
        callbacks = [restore(parts, ckpt), *callbacks]
        if verbose:
            print(f"nb2 {command}: resuming {parts.run_dir} at {model.num_timesteps:,} of {total:,} steps "
                  f"(checkpoint {ckpt.path})", flush=True)  # fmt: skip
    remaining = total - model.num_timesteps
    if remaining > 0:
        model.learn(remaining, callback=CallbackList(callbacks), reset_num_timesteps=ckpt is None)
