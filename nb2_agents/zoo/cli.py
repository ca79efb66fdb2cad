"""``nb2 zoo list | evaluate | build``: the policy zoo on the command line.

``nb2 zoo evaluate NAME`` exits with 1 when the score lands outside the card's tolerance, so
a changed library or machine that moves a teacher shows up in scripts and CI.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from nb2_agents.cli_common import add_executor_options, steps_arg

EXIT_DIFFERS = 1


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``zoo`` and its subcommands to ``nb2``'s subparsers."""
    p = sub.add_parser(
        "zoo",
        parents=[common],
        help="the policy zoo: small pretrained teachers and NB2 students (zoo:NAME)",
        description="List, evaluate and rebuild the entries of policies/zoo/. Any model path also "
        "accepts zoo:NAME, e.g. nb2 evaluate zoo:cartpole-ppo-mlp.",
    )
    zoo = p.add_subparsers(dest="zoo_command", required=True, metavar="ZOO_COMMAND", parser_class=type(p))
    ls = zoo.add_parser("list", parents=[common], help="every entry with its env, algorithm and score")
    ls.add_argument("--json", action="store_true", help="print one JSON list of the cards")
    ev = zoo.add_parser("evaluate", parents=[common], help="evaluate an entry and compare with its card")
    ev.add_argument("name", metavar="NAME", help="a zoo entry (see nb2 zoo list)")
    ev.add_argument("--episodes", type=steps_arg, help="default: the card's (20)")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    bd = zoo.add_parser("build", parents=[common], help="retrain entries from their cards' recipes")
    bd.add_argument("names", nargs="*", metavar="NAME", help="entries to rebuild (default: the whole zoo)")
    bd.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_executor_options(bd, "entries")


def _list(args: argparse.Namespace) -> int:
    from nb2_agents.zoo.registry import entries

    cards = entries()
    if args.json:
        print(json.dumps([{**c.to_dict(), "model": str(c.model_path)} for c in cards.values()]))
        return 0
    rows = [("name", "kind", "env", "algorithm", "steps", "score", "size")]
    for card in cards.values():
        b = card.built
        teacher = f" from {', '.join(card.teachers)}" if card.teachers else ""
        if b is None:
            rows.append(
                (card.name, card.kind + teacher, card.env, "-", "-", f"not built: {card.command}", "-")
            )
            continue
        score = f"{b.score.mean_return:.2f} ± {b.score.std_return:.2f}"
        size = f"{b.size_bytes / 1e3:.0f} KB"
        rows.append((card.name, card.kind + teacher, card.env, b.algorithm, f"{b.steps:,}", score, size))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from nb2_agents.zoo.build import measure
    from nb2_agents.zoo.card import expected_return, tolerance
    from nb2_agents.zoo.registry import get, resolve

    card = get(args.name)
    result = measure(card, resolve(card.name), episodes=args.episodes, device=args.device)
    expected, tol = expected_return(card, result.episodes), tolerance(card)
    difference = result.mean_return - expected
    within = abs(difference) <= tol
    if args.json:
        extra = {"zoo": card.name, "card_mean_return": expected, "difference": difference, "tolerance": tol}
        print(json.dumps({**result.to_dict(), **extra, "within_tolerance": within}))
    else:
        assert card.built is not None
        same = min(result.episodes, len(card.built.score.returns))
        print(f"{card.name}: {result.summary()}")
        print(
            f"card: {expected:.2f} over its first {same} episodes ({card.built.score.text()}); "
            f"difference {difference:+.2f}, {'within' if within else 'OUTSIDE'} the tolerance {tol:.2f}"
        )
    if not within:
        print(
            f"nb2 zoo evaluate: {card.name} differs from its card; rebuild it: {card.command}",
            file=sys.stderr,
        )
        return EXIT_DIFFERS
    return 0


def _build(args: argparse.Namespace) -> int:
    from nb2_agents.zoo.build import build_many

    progress = not args.no_progress and sys.stderr.isatty()
    build_many(args.names, progress=progress, workers=args.workers, address=args.address)
    return 0


def run(args: argparse.Namespace) -> int:
    """The handler of ``nb2 zoo``."""
    handlers = {"list": _list, "evaluate": _evaluate, "build": _build}
    return handlers[args.zoo_command](args)
