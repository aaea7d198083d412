"""``sayiir completion bash|zsh``: a completion script generated from the argument parser,
so it always lists the commands and options this version has (zsh loads it through
``bashcompinit``)."""

from __future__ import annotations

import argparse
import shlex

__all__ = ["bash_script"]


def _words(parser: argparse.ArgumentParser, path: str, out: dict[str, list[str]]) -> None:
    words: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                words.append(name)
                _words(sub, f"{path} {name}".strip(), out)
        else:
            words.extend(o for o in action.option_strings if o.startswith("--"))
            if action.choices is not None and not action.option_strings:
                words.extend(str(c) for c in action.choices)
    out[path] = words


def bash_script(parser: argparse.ArgumentParser) -> str:
    """A bash completion function for ``sayiir``: commands, subcommands, then options.

    >>> import argparse
    >>> p = argparse.ArgumentParser(prog="sayiir")
    >>> _ = p.add_subparsers().add_parser("runs")
    >>> "runs" in bash_script(p)
    True
    """
    table: dict[str, list[str]] = {}
    _words(parser, "", table)
    cases = "\n".join(
        f"        {shlex.quote(path or '_')}) words={shlex.quote(' '.join(words))} ;;"
        for path, words in sorted(table.items())
    )
    return f"""# sayiir completion (bash; zsh: autoload -U bashcompinit && bashcompinit)
_sayiir_complete() {{
    local cur path="" w words=""
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    for w in "${{COMP_WORDS[@]:1:COMP_CWORD-1}}"; do
        case "$w" in -*) ;; *) path="${{path:+$path }}$w" ;; esac
    done
    while :; do
        case "${{path:-_}}" in
{cases}
        *) if [[ "$path" == *" "* ]]; then path="${{path% *}}"; continue; fi; words="" ;;
        esac
        break
    done
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}
complete -F _sayiir_complete sayiir
"""
