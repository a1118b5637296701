"""The ownership rule for everything lowrank_lab writes: never lose a file it did not write.

Folders. Every folder lowrank_lab writes carries a manifest, :data:`MANIFEST`, that it wrote
itself: which function wrote the folder, when, and every file it wrote (with its size, and a
SHA-256 for files up to :data:`HASH_LIMIT`). A folder is written into a hidden temporary
sibling and renamed into place, so a failed write leaves nothing half-done
(:func:`staged_folder`). An existing folder is replaced only with ``overwrite`` and only when
its manifest lists every file in it, unchanged; then exactly the listed files are removed.
Anything else (no manifest, a file the manifest does not list or one changed since, a link)
makes the call refuse, naming the file.

Single files (a spectra table, a zip, a rank_pattern.json) are written to a temporary sibling
and renamed into place (:func:`staged_file`, :func:`write_file`). An existing file is replaced
only with ``overwrite``; a symbolic link is never written through, with or without it.

Every output is refused when it is, contains or lies inside a protected path (the source
model's folder), and every check runs before any work: :func:`check_output_folder` and
:func:`check_output_file` are what the command line and the API call first.

This module sits on the bottom floor: it imports only :mod:`lowrank_lab.errors`.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import stat
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lowrank_lab.errors import ArgumentTypeError, OutputError

MANIFEST = "lowrank_lab_manifest.json"
MANIFEST_FORMAT = "lowrank_lab.output"
MANIFEST_VERSION = 1
# Files up to this size are hashed: configs, cards, plans, tokenizers (what a person edits).
# Larger ones (weights) are checked by size: hashing them costs about a second per GB.
HASH_LIMIT = 64 * 2**20
_MAX_MANIFEST_BYTES = 16 * 2**20
_MAX_NAME_BYTES = 200  # leaves room for the ".tmp-xxxxxxxx" of the temporary sibling under 255
OVERWRITE_HINT = "pass --overwrite (overwrite=True in Python)"

PathLike = str | os.PathLike


@dataclass(frozen=True)
class FileRecord:
    """One file a manifest lists: its size, and its SHA-256 when it was small enough to hash."""

    bytes: int
    sha256: str | None = None


@dataclass(frozen=True)
class Manifest:
    """What a folder's manifest says lowrank_lab wrote into it.

    Attributes:
        writer: the function that wrote the folder (``save_compressed``, ``save_adapter``, ...).
        written_at: when, as an ISO 8601 UTC time.
        files: relative POSIX path → record, for every file but the manifest itself.
        folders: relative paths of the sub-folders it made.
    """

    writer: str
    written_at: str
    files: dict[str, FileRecord]
    folders: tuple[str, ...] = ()


# -- paths --------------------------------------------------------------------------------------


def as_path(path: object, what: str = "the output path") -> Path:
    """``path`` as an absolute :class:`Path` (``~`` expanded, ``..`` folded); links are not resolved.

    Raises:
        ArgumentTypeError: ``path`` is not a str or os.PathLike.
        OutputError: it is empty or holds a NUL character.
    """
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise ArgumentTypeError(f"{what} must be a str or pathlib.Path, got {type(path).__name__} {path!r}")
    text = os.fspath(path)
    if not isinstance(text, str) or not text.strip():
        raise OutputError(f"{what} is empty; give a file or folder name")
    if "\0" in text:
        raise OutputError(f"{what} {text!r} holds a NUL character; give a plain file or folder name")
    return Path(os.path.abspath(os.path.expanduser(text)))


def source_paths(source: object) -> tuple[Path, ...]:
    """The paths a model source occupies, to protect from outputs: its folder, or its zip.

    A folder protects itself; a ``.zip`` checkpoint protects the zip; any other file (a
    ``.safetensors`` with its config beside it) protects the folder it lies in. A name that
    is not an existing path (a built-in, a hub id) protects nothing.
    """
    if isinstance(source, (list, tuple)):
        return tuple(p for s in source for p in source_paths(s))
    if source is None or not isinstance(source, (str, os.PathLike)):
        return ()
    try:
        path = as_path(source, "the source")
    except OutputError:
        return ()
    if path.is_dir():
        return (path,)
    if path.is_file():
        return (path,) if path.suffix.lower() == ".zip" else (path.parent,)
    return ()


def _real(path: Path) -> Path:
    """``path`` with every link resolved, also when ``path`` itself does not exist yet."""
    return Path(os.path.realpath(path))


def _check_protected(out: Path, protect: Iterable[PathLike] | PathLike | None) -> None:
    if protect is None or isinstance(protect, (str, os.PathLike)):
        protect = () if protect is None else (protect,)
    real_out = _real(out)
    for guarded in protect:
        for p in source_paths(guarded):
            real = _real(p)
            if real_out == real:
                how = "is"
            elif real in real_out.parents:
                how = "lies inside"
            elif real_out in real.parents:
                how = "contains"
            else:
                continue
            raise OutputError(
                f"{out} {how} the source model {p}; writing there could replace or delete the model itself. "
                "Choose an output path outside the model's folder"
            )


def _check_name(path: Path) -> None:
    if path == path.parent or not path.name or path.name in (".", ".."):
        raise OutputError(f"{path} is not a file or folder name; give a path such as out/result")
    if len(path.name.encode("utf-8", "surrogateescape")) > _MAX_NAME_BYTES:
        raise OutputError(f"the name {path.name[:40]}… is too long ({len(path.name)} characters); use a shorter name")


def _check_parent(path: Path) -> None:
    """The folder that will hold ``path`` exists or can be made, and can be written to."""
    ancestor = path.parent
    while not ancestor.exists():
        if ancestor.is_symlink():
            raise OutputError(
                f"{ancestor} is a broken symbolic link, so {path} cannot be made under it; "
                "fix or remove the link, or choose another location"
            )
        if ancestor == ancestor.parent:
            break
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(
            f"{ancestor} is a file, not a folder, so {path} cannot be made under it; choose another location"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write into {ancestor} (no permission); choose a folder you can write to")


def _kind_of(path: Path) -> str:
    mode = path.lstat().st_mode
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


# -- single files -------------------------------------------------------------------------------


def check_output_file(path: PathLike, overwrite: bool = False, protect: Iterable[PathLike] = ()) -> Path:
    """Check, before any work, that a single file may be written at ``path``.

    Args:
        path: the file to write.
        overwrite: an existing regular file may be replaced.
        protect: paths (model sources) the output must not be, contain or lie inside.

    Returns:
        ``path`` as an absolute path.

    Raises:
        OutputError: ``path`` is a link, a folder, a device or FIFO, an existing file without
            ``overwrite``, inside a protected path, or under a file or an unwritable folder.
    """
    given = path
    path = as_path(path)
    _check_overwrite_flag(overwrite)
    _check_name(path)
    if os.fspath(given).endswith(("/", os.sep)):
        raise OutputError(f"{os.fspath(given)} ends with a slash, so it names a folder; give a file name")
    _check_protected(path, protect)
    if path.is_symlink():
        raise OutputError(
            f"{path} is a symbolic link; lowrank_lab never writes through a link (it would change the "
            "file the link points to). Give the real path, or remove the link"
        )
    if path.exists():
        if path.is_dir():
            raise OutputError(f"{path} is a folder; give a file name, e.g. {path / 'result'}{path.suffix}")
        if not path.is_file():
            raise OutputError(f"{path} is {_kind_of(path)}, not a file; choose a file path")
        if not overwrite:
            raise OutputError(f"{path} already exists; choose another name, or {OVERWRITE_HINT} to replace it")
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise OutputError(f"cannot replace {path}: no permission to write into {path.parent}")
        return path
    _check_parent(path)
    return path


def _check_overwrite_flag(overwrite: object) -> None:
    if not isinstance(overwrite, bool):
        raise ArgumentTypeError(f"overwrite must be True or False, got {type(overwrite).__name__} {overwrite!r}")


def _sibling(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{tag}-{uuid.uuid4().hex[:8]}")


@contextmanager
def staged_file(path: PathLike, overwrite: bool = False, protect: Iterable[PathLike] = ()) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; on success it is renamed to ``path``.

    The checks of :func:`check_output_file` run first and again just before the rename. On
    an exception the temporary file is removed and ``path`` is left as it was.

    Raises:
        OutputError: see :func:`check_output_file`.
    """
    path = check_output_file(path, overwrite, protect)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0), 0o644))
    try:
        yield tmp
        _commit_file(tmp, path, overwrite, protect)
    finally:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()


def _commit_file(tmp: Path, path: Path, overwrite: bool, protect: Iterable[PathLike]) -> None:
    check_output_file(path, overwrite, protect)  # something may have appeared while we worked
    if overwrite:
        os.replace(tmp, path)  # rename replaces a name; it never writes through a link
        return
    try:
        os.link(tmp, path)  # fails if the name was taken meanwhile: never replaces a file
    except FileExistsError:
        raise OutputError(f"{path} appeared while lowrank_lab was writing; it is left as it is") from None
    except OSError:  # a file system without hard links
        if path.exists() or path.is_symlink():
            raise OutputError(f"{path} appeared while lowrank_lab was writing; it is left as it is") from None
        os.rename(tmp, path)
        return
    tmp.unlink()


def write_file(path: PathLike, data: bytes | str, overwrite: bool = False, protect: Iterable[PathLike] = ()) -> Path:
    """Write ``data`` (text is written as UTF-8) to ``path`` atomically, under the rules above.

    Returns:
        The absolute path written.

    Raises:
        OutputError: see :func:`check_output_file`.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not isinstance(data, (bytes, bytearray)):
        raise ArgumentTypeError(f"write_file takes bytes or str, got {type(data).__name__}")
    with staged_file(path, overwrite, protect) as tmp:
        tmp.write_bytes(data)
    return as_path(path)


# -- folders ------------------------------------------------------------------------------------


def _safe_relative(name: object) -> bool:
    if not isinstance(name, str) or not name or "\0" in name or "\\" in name or name.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


def read_manifest(folder: PathLike) -> Manifest | None:
    """The manifest of ``folder``, or None when it has none (or one that lowrank_lab cannot have written)."""
    path = as_path(folder) / MANIFEST
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > _MAX_MANIFEST_BYTES:
            return None
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(raw, dict) or raw.get("format") != MANIFEST_FORMAT or not isinstance(raw.get("files"), dict):
        return None
    files = {}
    for name, entry in raw["files"].items():
        size = entry.get("bytes") if isinstance(entry, dict) else None
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        if not _safe_relative(name) or isinstance(size, bool) or not isinstance(size, int) or size < 0:
            return None
        if digest is not None and not isinstance(digest, str):
            return None
        files[name] = FileRecord(size, digest)
    folders = raw.get("folders", [])
    if not isinstance(folders, list) or not all(_safe_relative(f) for f in folders):
        return None
    return Manifest(str(raw.get("writer", "")), str(raw.get("written_at", "")), files, tuple(folders))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _walk(folder: Path) -> tuple[list[str], list[str], list[str]]:
    """(regular files, folders, anything else: links, FIFOs, devices) under ``folder``, relative, no link followed."""
    files, folders, others = [], [], []
    for root, dirs, names in os.walk(folder, followlinks=False):
        rel_root = Path(root).relative_to(folder)
        for d in list(dirs):
            rel = (rel_root / d).as_posix()
            if (Path(root) / d).is_symlink():
                others.append(rel)
                dirs.remove(d)
            else:
                folders.append(rel)
        for n in names:
            p = Path(root) / n
            rel = (rel_root / n).as_posix()
            (files if not p.is_symlink() and p.is_file() else others).append(rel)
    return sorted(files), sorted(folders), sorted(others)


def write_manifest(folder: PathLike, writer: str) -> Manifest:
    """List every file of ``folder`` in its manifest (the folder's writer calls this last).

    Raises:
        OutputError: the folder holds a link or a special file (lowrank_lab writes neither).
    """
    folder = as_path(folder)
    files, folders, others = _walk(folder)
    if others:
        raise OutputError(f"{folder / others[0]} is a link or a special file; lowrank_lab writes only plain files")
    records = {}
    for name in files:
        if name == MANIFEST:
            continue
        p = folder / name
        size = p.stat().st_size
        records[name] = FileRecord(size, _sha256(p) if size <= HASH_LIMIT else None)
    written_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    manifest = Manifest(writer, written_at, records, tuple(folders))
    body = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "note": "lowrank_lab wrote this folder; with overwrite it replaces the folder only while it holds "
        "exactly these files, unchanged",
        "writer": manifest.writer,
        "library": _library_version(),
        "written_at": manifest.written_at,
        "files": {
            name: {"bytes": r.bytes, **({"sha256": r.sha256} if r.sha256 else {})} for name, r in records.items()
        },
        "folders": list(manifest.folders),
    }
    (folder / MANIFEST).write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
    return manifest


def _library_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"lowrank_lab {version('lowrank-lab')}"
    except PackageNotFoundError:  # pragma: no cover - run from a source tree without install
        return "lowrank_lab"


def _check_owned(folder: Path) -> Manifest:
    """The manifest of an existing, non-empty ``folder`` that lowrank_lab may replace, or a refusal."""
    files, folders, others = _walk(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        example = (files or others or folders)[0]
        raise OutputError(
            f"{folder} holds files lowrank_lab did not write (it has no {MANIFEST}), e.g. {example}; "
            "nothing in it is replaced. Choose a new or empty folder"
        )
    if others:
        raise OutputError(
            f"{folder / others[0]} is a link or a special file, which lowrank_lab never writes; "
            f"{folder} is not replaced. Move it away or choose another folder"
        )
    for name in files:
        if name == MANIFEST:
            continue
        record = manifest.files.get(name)
        if record is None:
            raise OutputError(
                f"{folder / name} was not written by lowrank_lab (its {MANIFEST} does not list it); "
                f"{folder} is not replaced. Move that file away or choose another folder"
            )
        p = folder / name
        if p.stat().st_size != record.bytes or (record.sha256 is not None and _sha256(p) != record.sha256):
            raise OutputError(
                f"{folder / name} was changed after lowrank_lab wrote it; {folder} is not replaced. "
                "Keep your copy elsewhere, or choose another folder"
            )
    needed = set(manifest.folders) | {str(Path(n).parent.as_posix()) for n in manifest.files}
    for name in folders:
        if name not in needed and not any(n.startswith(name + "/") for n in manifest.files):
            raise OutputError(
                f"{folder / name} is a folder lowrank_lab did not make; {folder} is not replaced. "
                "Move it away or choose another folder"
            )
    return manifest


def check_output_folder(folder: PathLike, overwrite: bool = False, protect: Iterable[PathLike] = ()) -> Path:
    """Check, before any work, that a folder may be written at ``folder``.

    A folder that does not exist or is empty may be written. An existing one is replaced only
    with ``overwrite`` and only when lowrank_lab wrote it (see the module docstring).

    Args:
        folder: the folder to write.
        overwrite: replace a folder that lowrank_lab wrote.
        protect: paths (model sources) the output must not be, contain or lie inside.

    Returns:
        ``folder`` as an absolute path.

    Raises:
        OutputError: naming the file or the reason that stops the write.
    """
    folder = as_path(folder, "the output folder")
    _check_overwrite_flag(overwrite)
    _check_name(folder)
    _check_protected(folder, protect)
    if folder.is_symlink():
        raise OutputError(
            f"{folder} is a symbolic link; lowrank_lab never writes through a link. Give the real path, "
            "or remove the link"
        )
    if not folder.exists():
        _check_parent(folder)
        return folder
    if not folder.is_dir():
        raise OutputError(f"{folder} is a file, not a folder; choose a folder name for the output")
    try:
        first = next(iter(folder.iterdir()), None)
    except OSError as err:
        raise OutputError(f"cannot read {folder} ({err.strerror}); choose a folder you can read and write") from None
    if not os.access(folder.parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot replace {folder}: no permission to write into {folder.parent}")
    if first is None:
        return folder
    if not overwrite:
        raise OutputError(
            f"{folder} already exists and is not empty (it holds {first.name}); choose a new or empty folder, "
            f"or {OVERWRITE_HINT} to replace a folder lowrank_lab wrote"
        )
    _check_owned(folder)
    return folder


@contextmanager
def staged_folder(
    folder: PathLike, overwrite: bool = False, protect: Iterable[PathLike] = (), writer: str = "lowrank_lab"
) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``folder`` to write; on success it becomes ``folder``.

    The checks of :func:`check_output_folder` run first and again before the rename. The
    manifest is written last, listing every file the caller wrote. With ``overwrite`` an old
    folder that lowrank_lab wrote is moved aside and exactly the files its manifest lists are
    removed. On an exception the temporary folder is removed and ``folder`` is left as it was.

    Args:
        folder: the final folder.
        overwrite: replace a folder lowrank_lab wrote.
        protect: paths (model sources) the output must not be, contain or lie inside.
        writer: what writes it, for the manifest (e.g. ``save_compressed``).

    Raises:
        OutputError: see :func:`check_output_folder`.
    """
    folder = check_output_folder(folder, overwrite, protect)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(folder, "tmp")
    tmp.mkdir()
    try:
        yield tmp
        write_manifest(tmp, writer)
        _commit_folder(tmp, folder, overwrite, protect)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)  # our own temporary folder; rmtree never follows links


def _commit_folder(tmp: Path, folder: Path, overwrite: bool, protect: Iterable[PathLike]) -> None:
    check_output_folder(folder, overwrite, protect)  # again: something may have changed while we worked
    if not folder.exists():
        _rename(tmp, folder)
        return
    if not any(folder.iterdir()):
        _rename(tmp, folder)  # rename replaces an empty folder, and fails on a non-empty one
        return
    manifest = _check_owned(folder)
    old = _sibling(folder, "old")
    folder.rename(old)
    _rename(tmp, folder)
    _remove_listed(old, manifest)


def _rename(tmp: Path, folder: Path) -> None:
    try:
        tmp.rename(folder)
    except OSError as err:
        raise OutputError(
            f"cannot move the finished output into {folder} ({err.strerror}); it is left as it was"
        ) from None


def _remove_listed(old: Path, manifest: Manifest) -> None:
    """Remove what the manifest lists from the moved-aside folder, then the folder if it is empty.

    Anything unlisted (a file that appeared after the last check) is left where it is, in the
    hidden ``.<name>.old-*`` sibling, rather than deleted.
    """
    for name in [*manifest.files, MANIFEST]:
        p = old / name
        if p.is_file() and not p.is_symlink():
            p.unlink()
    for name in sorted({*manifest.folders, *(Path(n).parent.as_posix() for n in manifest.files)}, reverse=True):
        p = old / name
        if name != "." and p.is_dir() and not p.is_symlink() and not any(p.iterdir()):
            p.rmdir()
    if not any(old.iterdir()):
        old.rmdir()
