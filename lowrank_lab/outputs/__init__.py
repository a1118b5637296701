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

This package sits on the bottom floor: it imports only :mod:`lowrank_lab.errors` (and the version
string for the manifest). Modules:
``paths`` (absolute paths, the protected source, writable folders), ``files`` (single files),
``manifest`` (what a folder holds) and ``folders`` (staged folders and their replacement).
"""

from __future__ import annotations

from lowrank_lab.outputs.files import check_output_file, staged_file, write_file
from lowrank_lab.outputs.folders import check_output_folder, staged_folder
from lowrank_lab.outputs.manifest import (
    HASH_LIMIT,
    MANIFEST,
    MANIFEST_FORMAT,
    MANIFEST_VERSION,
    FileRecord,
    Manifest,
    read_manifest,
    write_manifest,
)
from lowrank_lab.outputs.paths import OVERWRITE_HINT, as_path, source_paths

__all__ = [
    "HASH_LIMIT",
    "MANIFEST",
    "MANIFEST_FORMAT",
    "MANIFEST_VERSION",
    "OVERWRITE_HINT",
    "FileRecord",
    "Manifest",
    "as_path",
    "check_output_file",
    "check_output_folder",
    "read_manifest",
    "source_paths",
    "staged_file",
    "staged_folder",
    "write_file",
    "write_manifest",
]
