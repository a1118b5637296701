"""Opening a downloaded export: zip member names that are safe to extract, and the extraction.

Zip members must be relative paths with no ``..``, no absolute path and no drive letter, so
extracting a download cannot write outside the folder it is extracted into. The writer
(:mod:`lowrank_lab.export.archive`) names members with the same rule.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import zipfile
from pathlib import Path

from lowrank_lab.errors import CheckpointError

_DRIVE = re.compile(r"^[A-Za-z]:$")
# What a download may expand to. Our zips store weights (ratio 1) and deflate text (ratio
# under 20); a member that claims far more is a zip bomb.
MAX_EXTRACT_BYTES = 64 * 2**30
MAX_MEMBERS = 10_000
MAX_RATIO = 200
_RATIO_FLOOR = 2**20  # members smaller than this are never a bomb, whatever their ratio


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


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_zip_members(zf: zipfile.ZipFile, zip_path: Path, dest: Path) -> None:
    """Refuse a zip before extracting anything: unsafe names, too many members, a bomb, no room.

    Raises:
        CheckpointError: naming the member and the limit.
    """
    infos = zf.infolist()
    bad = [i.filename for i in infos if not is_safe_member_name(i.filename)]
    if bad:
        raise CheckpointError(
            f"{zip_path} holds unsafe file names ({', '.join(map(json.dumps, bad[:3]))}); it is not extracted"
        )
    if len(infos) > MAX_MEMBERS:
        raise CheckpointError(
            f"{zip_path} holds {len(infos):,} files, more than {MAX_MEMBERS:,}; it is not a model export"
        )
    for info in infos:
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > _RATIO_FLOOR and ratio > MAX_RATIO:
            raise CheckpointError(
                f"{zip_path}: {info.filename} would expand {ratio:,.0f}-fold to {_gib(info.file_size)} (a zip bomb?); "
                f"exports never compress more than {MAX_RATIO}-fold, so it is not extracted"
            )
    total = sum(i.file_size for i in infos)
    if total > MAX_EXTRACT_BYTES:
        raise CheckpointError(
            f"{zip_path} would expand to {_gib(total)}, more than the {_gib(MAX_EXTRACT_BYTES)} limit; "
            "extract it yourself and load the folder"
        )
    dest.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(dest).free
    if total > free:
        raise CheckpointError(f"{zip_path} needs {_gib(total)} to extract and {dest} has {_gib(free)} free; free space")


def _extract_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path) -> None:
    """Copy one member out, never more bytes than its header declares (whatever the stream holds)."""
    target = dest / info.filename
    if info.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with zf.open(info) as src, open(target, "wb") as out:
        while chunk := src.read(2**20):
            written += len(chunk)
            if written > info.file_size:
                raise CheckpointError(f"{info.filename} holds more bytes than its zip header declares; not extracted")
            out.write(chunk)


def extract_zip(zip_path: Path, dest: Path) -> Path:
    """Extract a zip export into ``dest`` and return its top folder (the shallowest with a config).

    Every member is checked before anything is written: names stay inside ``dest``, at most
    :data:`MAX_MEMBERS` members, no member expanding more than :data:`MAX_RATIO`-fold, at most
    :data:`MAX_EXTRACT_BYTES` in all and no more than the free space.

    Raises:
        CheckpointError: the file is not a zip, a member name is unsafe (absolute, ``..``), the
            archive breaks a limit, or it holds no config.json / adapter_config.json.
    """
    zip_path, dest = Path(zip_path).expanduser(), Path(dest)
    try:
        mode = zip_path.stat().st_mode
    except OSError as err:
        raise CheckpointError(f"{zip_path} cannot be read ({err.strerror}); give a .zip file") from None
    if not stat.S_ISREG(mode):
        raise CheckpointError(f"{zip_path} is not a regular file; give a .zip file")
    try:
        with zipfile.ZipFile(zip_path) as zf:
            check_zip_members(zf, zip_path, dest)
            for info in zf.infolist():
                _extract_member(zf, info, dest)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, ValueError) as err:
        raise CheckpointError(f"{zip_path} is not a valid zip file ({err}); download it again") from None
    except RuntimeError as err:  # an encrypted member
        raise CheckpointError(f"{zip_path} cannot be read ({err}); give an unencrypted zip") from None
    configs = sorted([*dest.rglob("config.json"), *dest.rglob("adapter_config.json")], key=lambda p: len(p.parts))
    if not configs:
        raise CheckpointError(f"{zip_path} holds no config.json, so it is not a model export")
    return configs[0].parent
