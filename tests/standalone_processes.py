"""The processes of an ``airflow standalone`` seen from ``/proc``: free ports, who listens on one,
every process of an ``AIRFLOW_HOME``, and stopping them all. Linux only."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening_sockets(port: int) -> set[str]:
    """Inodes of the TCP sockets listening on ``port`` (any address, IPv4 or IPv6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(fields[9])
    return inodes


def _sockets_of(pid: int) -> set[str]:
    """Inodes of the sockets process ``pid`` has open."""
    try:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return set()
    return {link[len("socket:[") : -1] for link in links if link.startswith("socket:[")}


def port_taken(port: int, home: str, session: int) -> bool:
    """Whether ``port`` is listened on, and by no process of the standalone (see ``processes_of``)."""
    listening = _listening_sockets(port)
    ours = set().union(*(_sockets_of(pid) for pid in processes_of(home, session)))
    return bool(listening) and not listening & ours


def processes_of(home: str, session: int) -> dict[int, int]:
    """The live processes (not zombies) of one standalone, pid -> session id: those in its session,
    and those with ``AIRFLOW_HOME=home`` in their environment. Either alone misses some: a process can
    leave the session (setsid), and one that sets its title (the api-server) overwrites its environment."""
    marker = f"AIRFLOW_HOME={home}".encode()
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[-1].split()  # state ppid pgrp session
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if stat[0] not in "ZX" and (int(stat[3]) == session or marker in environ.split(b"\0")):
            found[int(entry)] = int(stat[3])
    return found


def stop_all(process: subprocess.Popen, home: str, grace: float = 15) -> None:
    """Stop a standalone started in a session of its own: SIGTERM to its process group, then SIGKILL to
    every process of it still alive after ``grace`` s (task processes run in process groups of their
    own, in the session). Raises if one survives, or if one had left the session (and so the group)."""
    session = process.pid
    _signal_group(session, signal.SIGTERM)
    left = _wait_gone(process, home, grace)
    escaped = sorted(pid for pid, sid in left.items() if sid != session)
    _signal_group(session, signal.SIGKILL)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait(timeout=10)
    if survivors := _wait_gone(process, home, 5):
        raise RuntimeError(f"processes of the standalone Airflow at {home} survived SIGKILL: {sorted(survivors)}")
    if escaped:
        raise RuntimeError(f"processes {escaped} left the standalone's session and had to be killed")


def _signal_group(group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signum)


def _wait_gone(process: subprocess.Popen, home: str, timeout: float) -> dict[int, int]:
    """Wait up to ``timeout`` s for every process of the standalone to exit; return those left."""
    deadline = time.monotonic() + timeout
    while (left := processes_of(home, process.pid)) or process.poll() is None:
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return left
