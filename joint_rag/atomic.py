"""The one write-to-a-temporary-path-then-rename helper, for files and for folders.

A reader never sees a half-written result: a failed or interrupted write leaves the previous
content (or nothing) in place and removes its temporary path. The temporary path lies next to
the target (same file system, so the rename is atomic) and is named
``.NAME.tmp-PID@HOST-*``: the writing process and a tag of its host. A process killed outright
(SIGKILL, power loss) cannot remove its own; the next write to the same target does
(``remove_stale``), once that process is gone. ``terminate_as_interrupt`` makes SIGTERM unwind
like Ctrl-C, so a terminated command cleans up as an interrupted one does.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: exit status of a command ended by SIGTERM (the shell's 128 + signal number)
SIGTERM_EXIT = 128 + signal.SIGTERM


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _usual_modes(path: Path) -> None:
    """mkstemp/mkdtemp (and safetensors) create owner-only entries: give them the umask modes."""
    mask = _umask()
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        p.chmod((0o777 if p.is_dir() else 0o666) & ~mask)


def _host_tag() -> str:
    """8 hex digits naming this host, so a temporary path on a shared file system is only ever
    judged by a process on the host that wrote it."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _tmp_prefix(target: Path) -> str:
    return f".{target.name}.tmp-{os.getpid()}@{_host_tag()}-"


def _owner_alive(pid: int, host: str) -> bool:
    """Whether the process that named a temporary path may still be writing it (another host's
    process, or one that cannot be probed, counts as alive: such paths are kept)."""
    if host != _host_tag() or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_stale(target: str | os.PathLike) -> list[Path]:
    """Remove the temporary paths that killed writes to ``target`` left next to it.

    Only paths whose writing process is gone (on this host) are touched: another live write to
    the same target keeps its own. A folder a killed write had just moved aside (``*.old``, the
    window between the two renames of ``atomic_dir``) is put back when ``target`` is missing,
    and removed otherwise. Paths of the earlier naming (no process id) are left alone.

    Returns:
        the paths removed (or restored).
    """
    target = Path(target)
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.tmp-(\d+)@([0-9a-f]{{8}})-.+$")
    done = []
    try:
        entries = list(target.parent.iterdir())
    except OSError:  # no parent yet, or not listable: nothing of ours can be there
        return done
    for path in sorted(entries, key=lambda p: p.name.endswith(".old")):  # .old last
        match = pattern.match(path.name)
        if match is None or _owner_alive(int(match[1]), match[2]):
            continue
        if path.name.endswith(".old") and path.is_dir() and not path.is_symlink() and not target.exists():
            os.replace(path, target)  # the previous content, moved aside by a killed replace
        elif path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        done.append(path)
    return done


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` through a temporary file and a rename.

    Creates the parent folders; removes temporary files of killed writes to ``path``. Returns
    the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    fd, tmp_name = tempfile.mkstemp(prefix=_tmp_prefix(path), dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        _usual_modes(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """``obj`` as indented JSON (UTF-8, non-ASCII kept), written atomically."""
    return atomic_write(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> Path:
    """One JSON object per line (UTF-8, non-ASCII kept), written atomically."""
    return atomic_write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


@contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``target``; rename it to ``target`` when the block
    succeeds (an existing ``target`` is replaced, and restored if that rename fails).

    When the block raises (including KeyboardInterrupt, and SystemExit under
    ``terminate_as_interrupt``), the temporary folder and any parent folders this call created
    are removed and ``target`` is left as it was. Temporary folders of killed writes to
    ``target`` are removed first (``remove_stale``).
    """
    target = Path(target)
    created = [p for p in [target.parent, *target.parent.parents] if not p.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(target), dir=target.parent))
    try:
        yield tmp
        _usual_modes(tmp)
        if target.exists():
            old = target.parent / f"{tmp.name}.old"
            os.replace(target, old)
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(old, target)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in created:  # deepest first
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        raise


@contextmanager
def terminate_as_interrupt(prog: str) -> Iterator[None]:
    """Within the block, SIGTERM raises ``SystemExit(SIGTERM_EXIT)`` in the main thread, so
    ``atomic_dir`` and ``atomic_write`` remove their temporary paths as they do on Ctrl-C
    (Python's default SIGTERM ends the process without unwinding). The previous handler is put
    back afterwards. Outside the main thread this does nothing (signals are only handled there).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
        sys.stderr.write(f"{prog}: terminated (SIGTERM); removing partial output\n")
        raise SystemExit(SIGTERM_EXIT)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
