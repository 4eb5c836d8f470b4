"""Dropping corpus entries into a bucket's ``incoming/`` and fingerprinting a tree: shared by
``tests/test_corpus.py``, ``tests/test_corpus_dag.py`` and ``bench/reliability.py``."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

CORPUS = Path(__file__).resolve().parent
FILES = CORPUS / "files"


def drop(incoming: Path, name: str, mtime: float) -> Path:
    """Copy corpus entry ``name`` (a file, or a folder with its files) into ``incoming`` and give every copied
    file the modification time ``mtime`` (the arrival order ``list_incoming`` sees). Returns the copy's path."""
    src, dst = FILES / name, incoming / name
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst)
        paths = [p for p in dst.rglob("*") if p.is_file()]
    else:
        shutil.copyfile(src, dst)
        paths = [dst]
    for p in paths:
        os.utime(p, (mtime, mtime))
    return dst


def sha256_tree(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root`` (raw files must come out byte-identical)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
