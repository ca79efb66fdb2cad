"""The zoo's entries: one folder per entry under ``policies/zoo/``, each with ``card.yaml`` and
``model.zip``. The folder ships with the package (``nb2_agents/data/policies/zoo``), found the
way :mod:`nb2_agents.hyperparams` finds ``policies/``.

>>> resolve("cartpole-ppo-mlp")  # doctest: +SKIP
PosixPath('.../nb2_agents/data/policies/zoo/cartpole-ppo-mlp/model.zip')
"""

from __future__ import annotations

from pathlib import Path

from nb2_agents.errors import UsageError
from nb2_agents.hyperparams import DATA_DIR
from nb2_agents.runs import resolve_model
from nb2_agents.zoo.card import PREFIX, Card, read_card

ZOO_DIR = DATA_DIR / "policies" / "zoo"
"""``policies/zoo/`` as shipped with the package."""
CARD_NAME = "card.yaml"


def entries(root: Path = ZOO_DIR) -> dict[str, Card]:
    """Every entry's card, by name (sorted); each student's teachers must be entries too."""
    cards = {path.parent.name: read_card(path) for path in sorted(Path(root).glob(f"*/{CARD_NAME}"))}
    for card in cards.values():
        for teacher in card.teachers:
            if teacher not in cards or teacher == card.name:
                raise UsageError(
                    f"{card.path}: recipe.command names teacher {PREFIX}{teacher}, not another zoo entry; "
                    f"valid: {', '.join(n for n in cards if n != card.name)}"
                )
    return cards


def get(name: str, root: Path = ZOO_DIR) -> Card:
    """The card of entry ``name``; an unknown name raises :class:`UsageError` listing the valid ones."""
    cards = entries(root)
    if name.startswith(PREFIX):
        name = name[len(PREFIX) :]
    if name not in cards:
        valid = ", ".join(cards) or f"none (no */{CARD_NAME} under {root})"
        raise UsageError(f"unknown zoo entry {name!r}; valid: {valid} (see nb2 zoo list)")
    return cards[name]


def resolve(name: str, root: Path = ZOO_DIR) -> Path:
    """The model zip of entry ``name`` (``zoo:`` prefix optional)."""
    card = get(name, root)
    if card.built is None or not card.model_path.is_file():
        raise UsageError(f"zoo entry {card.name!r} is not built yet ({card.model_path}); run {card.command}")
    return card.model_path


def resolve_any(path: str | Path) -> tuple[Path, Path | None]:
    """A run folder, a model file or ``zoo:NAME`` → (model zip, run folder or None)."""
    return resolve_model(resolve(path) if isinstance(path, str) and is_zoo_ref(path) else path)


def is_zoo_ref(text: str | Path) -> bool:
    """True for ``zoo:NAME`` (a string; a Path is always a file path)."""
    return isinstance(text, str) and text.startswith(PREFIX)


def build_waves(names: list[str], cards: dict[str, Card]) -> list[list[str]]:
    """``names`` in waves: each entry in the first wave after every teacher of its (among
    ``names``), so that the entries of one wave can be built side by side."""
    wave_of: dict[str, int] = {}
    for name in build_order(names, cards):
        teachers = [wave_of[t] for t in cards[name].teachers if t in wave_of]
        wave_of[name] = 1 + max(teachers, default=-1)
    waves: list[list[str]] = [[] for _ in range(1 + max(wave_of.values(), default=-1))]
    for name, wave in wave_of.items():
        waves[wave].append(name)
    return waves


def build_order(names: list[str], cards: dict[str, Card]) -> list[str]:
    """``names`` with every entry after the teachers it is distilled from (those among ``names``)."""
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in path:
            raise UsageError(f"zoo entries distil from each other in a loop: {' -> '.join((*path, name))}")
        for teacher in cards[name].teachers:
            if teacher in names:
                visit(teacher, (*path, name))
        order.append(name)

    for name in names:
        visit(name, ())
    return order
