"""Options that take every following word, as hermes-agent's argparse `nargs="+"` does (`block ID --ids A B C`,
`archive --rm A B`). click options take one value per flag, so the words after such an option are rewritten to
one `--opt WORD` each before click parses them; parsing stops at the next word that starts with `-`, or `--`."""

from __future__ import annotations

from typing import Any

import click


class GreedyCommand(click.Command):
    """A command whose options named in `greedy` take every following word."""

    def __init__(self, *args: Any, greedy: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.greedy = greedy

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, expand(args, self.greedy))


def expand(args: list[str], greedy: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(args):
        word = args[i]
        if word == "--":
            out.extend(args[i:])
            break
        if word in greedy:
            i += 1
            taken = 0
            while i < len(args) and not args[i].startswith("-"):
                out += [word, args[i]]
                i += 1
                taken += 1
            if not taken:
                out.append(word)  # click reports the missing value
            continue
        out.append(word)
        i += 1
    return out
