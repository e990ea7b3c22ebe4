"""What a killed process leaves behind: names that say which process made a file or
directory, and whether that process is gone.

A tag is ``<boot id>.<pid namespace>.<pid>.<start time>`` (Linux ``/proc``). A process
is known dead only when the tag was made on this boot, in this pid namespace, and its
pid is no longer running or now belongs to a process that started at another time (a
reused pid). A tag from elsewhere (another host or container sharing the directory) is
never judged here: callers fall back to an age threshold. Blocking: call in a thread.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile

_PROC = "/proc"
_TAG = re.compile(r"^([0-9a-f]{32})\.(\d+)\.(\d+)\.(\d+)$")


def _start_time(pid: int | str) -> int | None:
    """The process's start time in clock ticks since boot; None if there is no such
    process (or it is a zombie, whose files nobody will finish)."""
    try:
        with open(f"{_PROC}/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after it.
    fields = stat.rpartition(b")")[2].split()
    if len(fields) < 20 or fields[0] == b"Z":
        return None
    return int(fields[19])


def _here() -> tuple[str, int] | None:
    """This boot's id and this process's pid namespace."""
    try:
        with open(f"{_PROC}/sys/kernel/random/boot_id", "rb") as f:
            boot = f.read().decode().strip().replace("-", "")
        namespace = os.stat(f"{_PROC}/self/ns/pid").st_ino
    except OSError:
        return None
    return boot, namespace


def process_tag() -> str | None:
    """This process's tag; None where ``/proc`` cannot say (no crash clean-up then)."""
    here, start = _here(), _start_time("self")
    if here is None or start is None:
        return None
    return f"{here[0]}.{here[1]}.{os.getpid()}.{start}"


def is_dead(tag: str) -> bool:
    """Whether the process that made ``tag`` is known to be gone (see module doc)."""
    match, here = _TAG.match(tag), _here()
    if match is None or here is None:
        return False
    boot, namespace, pid, start = match.groups()
    if (boot, int(namespace)) != here:
        return False
    return _start_time(int(pid)) != int(start)


def make_dir(parent: str | None, prefix: str) -> str:
    """A new private directory ``<prefix><tag>.<random>`` under ``parent`` (the system
    temp dir when None), after removing those of dead processes: a process killed
    before its clean-up ran leaves its directory to the next one that starts."""
    tag = process_tag()
    if tag is None:
        return tempfile.mkdtemp(prefix=prefix, dir=parent)
    remove_dead_dirs(parent or tempfile.gettempdir(), prefix)
    return tempfile.mkdtemp(prefix=f"{prefix}{tag}.", dir=parent)


def remove_dead_dirs(parent: str, prefix: str) -> list[str]:
    """Remove ``parent``'s directories named by ``make_dir`` for processes now dead."""
    removed: list[str] = []
    uid = os.getuid()
    with contextlib.suppress(FileNotFoundError), os.scandir(parent) as entries:
        for entry in entries:
            if not entry.name.startswith(prefix):
                continue
            tag = entry.name[len(prefix) :].rpartition(".")[0]
            with contextlib.suppress(OSError):
                # Only our user's: with /proc's hidepid, others' processes look dead.
                if (
                    entry.is_dir(follow_symlinks=False)
                    and entry.stat(follow_symlinks=False).st_uid == uid
                    and is_dead(tag)
                ):
                    shutil.rmtree(entry.path, ignore_errors=True)
                    removed.append(entry.path)
    return removed
