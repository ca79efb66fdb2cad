"""Run an exported policy: :class:`ExportedPolicy`, with SB3's ``predict`` signature.

>>> policy = ExportedPolicy("runs/CartPole-v1__ppo__nano__s0__20250101-120000/model.onnx")  # doctest: +SKIP
>>> actions, _ = policy.predict(obs)  # doctest: +SKIP

``.onnx`` files run through onnxruntime, ``.pt`` / ``.ts`` files through ``torch.jit.load``.
The sidecar (``<file>.json``) is read and checked before anything runs: missing, malformed or
written for another file (sha256), it raises :class:`~nb2_agents.errors.UsageError`; so do
observations whose keys or shapes the graph was not built for, and envs whose spaces differ
from the ones it was exported with (:meth:`ExportedPolicy.check_spaces`).
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from nb2_agents.errors import UsageError
from nb2_agents.export.sidecar import read_sidecar
from nb2_agents.export.spaces import GraphInput, space_from_json
from nb2_agents.safe_files import check_archive

SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript"}
"""File suffix → export format."""
ONNX_INSTALL = "pip install 'nb2-agents[export]' (onnx, onnxscript, onnxruntime)"

Runner = Callable[[list[np.ndarray]], list[np.ndarray]]
"""Inputs in graph order → every output in graph order (actions, logits, and with memory over
time the memory to feed back), batched."""


def is_exported(path: str | Path) -> bool:
    """Whether ``path`` names an exported model file (by its suffix)."""
    return Path(path).suffix.lower() in SUFFIXES


def onnx_runner(file: Path, input_names: list[str], threads: int = 1) -> Runner:
    """An onnxruntime session on ``file`` (CPU, ``threads`` intra-op threads)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UsageError(f"running {file} needs onnxruntime: {ONNX_INSTALL}") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: not the optimizer's notes on unfoldable casts
    try:
        session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types
        raise UsageError(f"onnxruntime cannot load {file}: {' '.join(str(err).split())[:300]}") from err
    names = [i.name for i in session.get_inputs()]
    if names != input_names:
        raise UsageError(
            f"{file} takes inputs {names} but its metadata sidecar lists {input_names}; re-export it"
        )

    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        return list(session.run(None, dict(zip(names, inputs, strict=True))))

    return run


def torchscript_runner(file: Path, threads: int | None = None) -> Runner:
    """``torch.jit.load`` of ``file`` on the CPU, run in inference mode; the archive is checked
    first (:func:`~nb2_agents.safe_files.check_archive`: a TorchScript file is a zip)."""
    try:
        with zipfile.ZipFile(file) as archive:
            check_archive(file, archive)
    except (zipfile.BadZipFile, OSError) as err:
        raise UsageError(f"torch.jit.load cannot read {file}: not a TorchScript archive ({err})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated upstream
            module = torch.jit.load(str(file), map_location="cpu")
    except (RuntimeError, ValueError) as err:
        raise UsageError(f"torch.jit.load cannot read {file}: {' '.join(str(err).split())[:300]}") from err
    module.eval()

    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            outputs = module(*(torch.from_numpy(x) for x in inputs))
        return [t.numpy() for t in outputs]

    return run


class ExportedPolicy:
    """An exported NB2 (or SB3) policy with SB3's ``predict``; deterministic actions only.

    :param path: an ``.onnx``, ``.pt`` or ``.ts`` file written by :func:`nb2_agents.export`
    :param threads: onnxruntime intra-op threads (TorchScript uses torch's setting)
    :param env: an env (or vec env) to check the spaces against (:meth:`check_spaces`)
    """

    def __init__(self, path: str | Path, threads: int = 1, env: Any = None) -> None:
        self.path = Path(path)
        fmt = SUFFIXES.get(self.path.suffix.lower())
        if fmt is None:
            raise UsageError(
                f"{self.path} is not an exported model; expected one of {', '.join(sorted(SUFFIXES))}"
            )
        self.meta = read_sidecar(self.path)
        if self.meta["format"] != fmt:
            raise UsageError(
                f"{self.path} is named as {fmt} but its metadata sidecar says {self.meta['format']}; "
                "re-export it"
            )
        self.format = fmt
        self.observation_space = space_from_json(self.meta["observation_space"], "observation space")
        self.action_space = space_from_json(self.meta["action_space"], "action space")
        try:
            self.inputs = [
                GraphInput(str(i["name"]), str(i["dtype"]), tuple(i["shape"][1:]))
                for i in self.meta["inputs"]
            ]
        except (KeyError, TypeError, IndexError) as err:
            raise UsageError(
                f"malformed inputs in the metadata sidecar of {self.path} ({err!r}); re-export it"
            ) from err
        self.keys = (
            list(self.observation_space.spaces) if isinstance(self.observation_space, spaces.Dict) else []
        )
        self.memory: dict[str, Any] | None = self.meta.get("memory")
        """With memory over time: K and C of the memory inputs that follow the observation's."""
        self.obs_inputs = self.inputs[:-2] if self.memory else self.inputs
        names = [i.name for i in self.inputs]
        self._run = onnx_runner(self.path, names, threads) if fmt == "onnx" else torchscript_runner(self.path)
        self.algo = str(self.meta.get("algo") or "")
        self.num_timesteps = int(self.meta.get("num_timesteps") or 0)
        if env is not None:
            name = getattr(getattr(env, "spec", None), "id", None) or type(env).__name__
            self.check_spaces(env.observation_space, env.action_space, name)

    @property
    def model(self) -> ExportedPolicy:
        """Itself: :func:`nb2_agents.evaluate` reads it as it reads a loaded model."""
        return self

    def check_spaces(
        self, observation_space: spaces.Space, action_space: spaces.Space, env: str = "the env"
    ) -> None:
        """Raise :class:`UsageError` unless the env's spaces are the ones this file was exported for."""
        for what, mine, theirs in (
            ("observations", self.observation_space, observation_space),
            ("actions", self.action_space, action_space),
        ):
            if mine != theirs:
                raise UsageError(
                    f"{env}'s {what} {theirs} do not match {self.path}'s {mine} (its metadata sidecar); "
                    "pass the env it was exported for"
                )

    def _batch(self, obs: Any) -> tuple[list[np.ndarray], bool]:
        """Observation(s) → graph inputs (batched), and whether a single observation came in."""
        if self.keys:
            if not isinstance(obs, dict) or set(obs) != set(self.keys):
                got = sorted(obs) if isinstance(obs, dict) else type(obs).__name__
                raise UsageError(f"{self.path} expects a Dict observation with keys {self.keys}; got {got}")
            parts = [obs[k] for k in self.keys]
        else:
            parts = [obs]
        arrays, single = [], None
        for spec, part in zip(self.obs_inputs, parts, strict=True):
            x = np.asarray(part)
            image = spec.dtype == "uint8"
            if x.shape == spec.shape or (image and _transposed(x.shape, spec.shape, 0)):
                x, one = x[None], True
            elif x.shape[1:] == spec.shape or (image and _transposed(x.shape, spec.shape, 1)):
                one = False
            else:
                raise UsageError(
                    f"{self.path}: input {spec.name!r} expects shape {spec.shape} or (batch, *{spec.shape}); "
                    f"got {x.shape}"
                )
            if x.shape[1:] != spec.shape:  # an HWC image for a CHW graph, as SB3's predict accepts
                x = np.moveaxis(x, -1, 1)
            single = one if single is None else single and one
            arrays.append(np.ascontiguousarray(x, dtype=np.dtype(spec.dtype)))
        return arrays, bool(single)

    def predict(
        self,
        observation: Any,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
        action_masks: np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """SB3's ``predict``: (actions, state). ``action_masks`` as sb3-contrib's MaskablePPO.

        ``state`` is None, except with memory over time, where it is the memory (summaries,
        validity) as ``RecurrentPPO``'s state is: pass None at the first step, then what came
        back, with ``episode_start`` true for the envs whose episode starts."""
        if not deterministic:
            raise UsageError(
                f"{self.path} holds the deterministic policy only; use deterministic actions "
                "(nb2 evaluate: drop --stochastic)"
            )
        inputs, single = self._batch(observation)
        memory = self._memory(state, episode_start, len(inputs[0])) if self.memory else []
        actions, logits, *new_memory = self._run(inputs + memory)
        if action_masks is not None:
            actions = self._masked(actions, logits, np.asarray(action_masks))
        actions = actions.reshape((-1, *(self.action_space.shape or ())))
        return (actions[0] if single else actions), (tuple(new_memory) if self.memory else None)

    def _memory(
        self, state: tuple[np.ndarray, ...] | None, episode_start: np.ndarray | None, n: int
    ) -> list[np.ndarray]:
        """The memory inputs for ``n`` envs: ``state`` (zeros for None), emptied where an episode starts."""
        assert self.memory is not None
        k, c = int(self.memory["k"]), int(self.memory["d_model"])
        if state is None:
            past, valid = np.zeros((n, k, c), np.float32), np.zeros((n, k), np.float32)
        else:
            past, valid = (np.array(s, dtype=np.float32) for s in state)
            if past.shape != (n, k, c) or valid.shape != (n, k):
                raise UsageError(
                    f"{self.path}: state must be the (memory, memory_valid) predict returned, of shapes "
                    f"{(n, k, c)} and {(n, k)}; got {past.shape} and {valid.shape}"
                )
        if episode_start is not None:
            starts = np.asarray(episode_start, dtype=bool).reshape(-1)
            past[starts], valid[starts] = 0.0, 0.0
        return [past, valid]

    def run(self, observation: Any, state: tuple[np.ndarray, ...] | None = None) -> list[np.ndarray]:
        """Every graph output for a batch of observations (or one): actions, logits and, with
        memory over time, the memory after this step (``state`` the one before, None: empty)."""
        inputs, _ = self._batch(observation)
        memory = self._memory(state, None, len(inputs[0])) if self.memory else []
        return self._run(inputs + memory)

    def _masked(self, actions: np.ndarray, logits: np.ndarray, masks: np.ndarray) -> np.ndarray:
        masks = masks.reshape(logits.shape[0], -1).astype(bool)
        if masks.all():
            return actions
        space = self.action_space
        if isinstance(space, spaces.Discrete):
            return np.where(masks, logits, -np.inf).argmax(axis=-1)
        if isinstance(space, spaces.MultiDiscrete):
            cuts = np.cumsum(np.asarray(space.nvec).ravel())[:-1]
            parts = zip(np.split(masks, cuts, axis=-1), np.split(logits, cuts, axis=-1), strict=True)
            picks = [np.where(m, lg, -np.inf).argmax(axis=-1) for m, lg in parts]
            return np.stack(picks, axis=-1)
        raise UsageError(f"{self.path}: action masks apply to Discrete or MultiDiscrete actions, not {space}")


def _transposed(shape: tuple[int, ...], expected: tuple[int, ...], batch: int) -> bool:
    """Whether ``shape`` is the channels-last form of a channels-first image ``expected``."""
    if len(expected) != 3 or len(shape) != 3 + batch:
        return False
    c, h, w = expected
    return tuple(shape[batch:]) == (h, w, c)
