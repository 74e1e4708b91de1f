"""TODO docstring
"""

from __future__ import annotations

from pathlib import Path

from layerfuse.config import DATA_KEYS, DEFAULT_CONFIG
from layerfuse.errors import LayerfuseError
from layerfuse.validation import parse_list, validate_choices

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
    validate_choices(cfg["fusion"]["strategies"], cfg["fusion"]["heads"], cfg["selection"]["layers"], source)
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


def load_config_file(path) -> dict:
    import yaml

    p = Path(path)
    if not p.exists():
        raise LayerfuseError(f"config file {p} does not exist")
    try:
        user = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise LayerfuseError(f"{p}{where}: not valid YAML ({getattr(e, 'problem', e)})") from e
    return merge_config(user, str(p))
