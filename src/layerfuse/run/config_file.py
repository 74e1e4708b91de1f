"""Run configurations: the defaults overlaid with a YAML file (or the command-line flags).

Every field is checked for its type and range when the configuration is read, so a bad value
fails in one line naming the file and the field before any model is loaded.
"""

from __future__ import annotations

import os
from pathlib import Path

from layerfuse.config import DATA_KEYS, DEFAULT_CONFIG, SEARCHES
from layerfuse.errors import LayerfuseError
from layerfuse.validation import check_choice, parse_list, validate_choices

__all__ = ["merge_config", "load_config_file"]


def merge_config(user: dict, source: str = "config") -> dict:
    """DEFAULT_CONFIG overlaid with ``user``; unknown keys are errors naming the field."""
    import copy

    if not isinstance(user, dict):
        raise LayerfuseError(f"{source}: the top level must be a mapping of sections ({', '.join(DEFAULT_CONFIG)})")
    cfg = copy.deepcopy(DEFAULT_CONFIG)
    for key, value in user.items():
        if key not in cfg:
            raise LayerfuseError(f"{source}: unknown section '{key}': expected one of {', '.join(DEFAULT_CONFIG)}")
        if isinstance(cfg[key], dict):
            if not isinstance(value, dict):
                raise LayerfuseError(f"{source}: '{key}' must be a mapping")
            allowed = DATA_KEYS if key == "data" else set(cfg[key])
            for sub in value:
                if sub not in allowed:
                    raise LayerfuseError(f"{source}: unknown field '{key}.{sub}': expected one of "
                                         f"{', '.join(sorted(allowed))}")
            if key == "data" and ("train" in value):
                cfg["data"].pop("dataset", None)
            cfg[key].update(value)
        else:
            cfg[key] = value
    cfg["models"] = parse_list(cfg["models"], f"{source}: models")
    cfg["extraction"]["pooling"] = parse_list(cfg["extraction"]["pooling"], f"{source}: extraction.pooling")
    cfg["fusion"]["strategies"] = parse_list(cfg["fusion"]["strategies"], f"{source}: fusion.strategies")
    cfg["fusion"]["heads"] = parse_list(cfg["fusion"]["heads"], f"{source}: fusion.heads")
    validate_choices(cfg["fusion"]["strategies"], cfg["fusion"]["heads"], cfg["selection"]["layers"], source,
                     rule=cfg["fusion"]["choose_by"], metric=cfg["fusion"]["choose_metric"])
    _check_fields(cfg, source)
    check_choice(cfg["fusion"]["search"], SEARCHES, f"{source}: fusion.search")
    check_choice(cfg["fusion"]["precision"], ("auto", "float32", "bfloat16"), f"{source}: fusion.precision")
    from layerfuse.scale.engine import validate_engine_config

    validate_engine_config(cfg, source)
    seeds = cfg["fusion"]["seeds"]
    if isinstance(seeds, int):
        seeds = list(range(seeds))
    try:
        cfg["fusion"]["seeds"] = [int(s) for s in seeds]
    except (TypeError, ValueError) as e:
        raise LayerfuseError(f"{source}: fusion.seeds must be a list of integers or a count") from e
    return cfg


# Per field: kind and smallest value (ints and floats), or None for "any string".
# Fields absent here (lists, seeds, output) are checked where they are parsed.
_FIELDS: dict[str, tuple[str, float | None, float | None]] = {
    "data.limit": ("int", 1, None),
    "data.test_fraction": ("float", 0.0, 1.0),
    "data.seed": ("int", None, None),
    "data.dataset": ("str", None, None),
    "data.train": ("data", None, None),
    "data.test": ("data", None, None),
    "data.text_column": ("str", None, None),
    "data.label_column": ("str", None, None),
    "data.encoding": ("str", None, None),
    "extraction.max_length": ("int", 2, None),
    "extraction.batch_tokens": ("int", 1, None),  # or "auto" (by dtype), checked in _check_fields
    "extraction.dtype": ("str", None, None),
    "extraction.device": ("str", None, None),
    "extraction.storage": ("str", None, None),
    "extraction.workers": ("int", 1, None),
    "extraction.compile": ("switch", None, None),
    "profile.folds": ("int", 2, None),
    "profile.windows": ("int", 1, None),
    "profile.eval_test": ("bool", None, None),
    "profile.window_shortlist": ("int", 0, None),
    "fusion.choose_by": ("str", None, None),
    "fusion.choose_metric": ("str", None, None),
    "fusion.search": ("str", None, None),
    "fusion.precision": ("str", None, None),
    "selection.layers": ("str", None, None),
    "selection.k": ("int", 1, None),
    "fusion.combos": ("str", None, None),
    "fusion.proj_dim": ("int", 1, None),
    "fusion.max_epochs": ("int", 1, None),
    "fusion.patience": ("int", 0, None),
    "fusion.val_fraction": ("float", 0.0, 1.0),
    "fusion.lr": ("float", 0.0, None),
    "fusion.batch_size": ("int", 1, None),
}
#: Fields that also take the word "auto".
_AUTO = {"extraction.batch_tokens"}
_OPTIONAL = {"profile.window_shortlist", "data.limit", "data.test", "data.train", "data.dataset", "data.label_column"}
_WORDS = {"switch": "auto, on or off", "int": "a whole number", "float": "a number", "bool": "true or false", "str": "a text",
          "data": "a file or folder path (or, from Python, a DataFrame or datasets table)"}


def _check_fields(cfg: dict, source: str) -> None:
    """Check (and normalise: ``"1e-3"`` → 0.001, ``"512"`` → 512) every field of :data:`_FIELDS`.

    Raises a :class:`LayerfuseError` naming ``source`` and the field (``fusion.proj_dim``, or
    ``--proj-dim`` when ``source`` is the command line) for a value of the wrong kind or range.
    """
    for dotted, (kind, lo, hi) in _FIELDS.items():
        section, name = dotted.split(".")
        if name not in cfg.get(section, {}):
            continue
        value = cfg[section][name]
        field = f"--{name.replace('_', '-')}" if source == "command line" else dotted
        if value is None and dotted in _OPTIONAL:
            continue
        if dotted in _AUTO and value == "auto":
            continue
        bad = LayerfuseError(f"{source}: {field} must be {_WORDS[kind]}"
                             + (f" >= {lo:g}" if lo is not None and kind == "int" else "")
                             + (f" between {lo:g} and {hi:g}" if hi is not None else "")
                             + (f" above {lo:g}" if lo is not None and hi is None and kind == "float" else "")
                             + (" or auto" if dotted in _AUTO else "") + f", got {value!r}")
        if kind == "str":
            if not isinstance(value, str):
                raise bad
            continue
        if kind == "data":
            from layerfuse.data.frames import is_table_like

            if not (isinstance(value, (str, os.PathLike)) or is_table_like(value)):
                raise bad
            continue
        if kind == "bool":
            if not isinstance(value, bool):
                raise bad
            continue
        if kind == "switch":  # auto / on / off, YAML's true / false taken as on / off
            from layerfuse.embed.compiled import normalise_compile

            try:
                cfg[section][name] = normalise_compile(value)
            except LayerfuseError:
                raise bad from None
            continue
        if isinstance(value, bool):
            raise bad
        try:
            number = (int(value) if kind == "int" and not isinstance(value, float) else float(value))
        except (TypeError, ValueError):
            raise bad from None
        if kind == "int" and (isinstance(value, float) and not value.is_integer()):
            raise bad
        number = int(number) if kind == "int" else number
        if number != number:  # NaN
            raise bad
        if hi is not None:
            if not lo < number < hi:
                raise bad
        elif lo is not None and (number < lo if kind == "int" else number <= lo):
            raise bad
        cfg[section][name] = number


def load_config_file(path) -> dict:
    """Read a YAML run configuration and merge it over the defaults (:func:`merge_config`)."""
    import yaml

    p = Path(path)
    if not p.exists():
        raise LayerfuseError(f"config file {p} does not exist")
    if p.is_dir():
        raise LayerfuseError(f"config file {p} is a folder: pass a YAML file")
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise LayerfuseError(f"{p}:{line}: byte 0x{data[e.start]:02x} is not UTF-8 text; a configuration is a YAML "
                             "text file (see docs/config.md)") from None
    if "\x00" in text:
        raise LayerfuseError(f"{p}: holds NUL bytes, so it is not a YAML text file (see docs/config.md)")
    try:
        user = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise LayerfuseError(f"{p}{where}: not valid YAML ({getattr(e, 'problem', e)})") from e
    return merge_config(user, str(p))
