"""Opening a downloaded export: zip member names that are safe to extract, and the extraction.

Zip members must be relative paths with no ``..``, no absolute path and no drive letter, so
extracting a download cannot write outside the folder it is extracted into. The writer
(:mod:`lowrank_lab.export.archive`) names members with the same rule.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

from lowrank_lab.errors import CheckpointError

_DRIVE = re.compile(r"^[A-Za-z]:$")


def safe_member_name(name: str) -> str:
    """Sanitise a zip member name: relative, forward slashes, no ``..``, ``.`` or drive letters.

    ``"/etc/passwd"`` → ``"etc/passwd"``; ``"a/../../b"`` → ``"a/b"``; ``"C:\\\\x"`` → ``"x"``.

    Raises:
        CheckpointError: nothing is left of the name.
    """
    parts = [p for p in str(name).replace("\\", "/").split("/") if p not in ("", ".", "..") and not _DRIVE.match(p)]
    if not parts:
        raise CheckpointError(f"{name!r} is not a usable file name inside a zip")
    return "/".join(parts)


def is_safe_member_name(name: str) -> bool:
    """True when extracting ``name`` stays inside the target folder."""
    try:
        return safe_member_name(name) == name.rstrip("/")
    except CheckpointError:
        return False


def extract_zip(zip_path: Path, dest: Path) -> Path:
    """Extract a zip export into ``dest`` and return its top folder (the shallowest with a config).

    Raises:
        CheckpointError: the file is not a zip, a member name is unsafe (absolute, ``..``),
            or the archive holds no config.json / adapter_config.json.
    """
    zip_path, dest = Path(zip_path), Path(dest)
    try:
        with zipfile.ZipFile(zip_path) as zf:
            bad = [n for n in zf.namelist() if not is_safe_member_name(n)]
            if bad:
                raise CheckpointError(
                    f"{zip_path} holds unsafe file names ({', '.join(map(json.dumps, bad[:3]))}); it is not extracted"
                )
            zf.extractall(dest)
    except zipfile.BadZipFile as err:
        raise CheckpointError(f"{zip_path} is not a valid zip file ({err}); download it again") from None
    configs = sorted([*dest.rglob("config.json"), *dest.rglob("adapter_config.json")], key=lambda p: len(p.parts))
    if not configs:
        raise CheckpointError(f"{zip_path} holds no config.json, so it is not a model export")
    return configs[0].parent
