"""Who is calling on the local channel: Unix peer credentials of the control socket's client
(SO_PEERCRED for uid/gid/pid, SO_PEERGROUPS for its supplementary groups), or the CLI's own
credentials when it writes without a daemon. Admitted: root, the agent's own user, and
members of ``[commands] local_group`` (default ``cityedge``).

SO_PEERGROUPS rather than /proc/<pid>/status: the unit's ``ProtectProc=invisible`` hides other
processes from the agent, and in its user namespace (``PrivateUsers=yes``) the kernel maps the
peer's groups for us: the unit's own group (the static ``cityedge`` group install.sh creates)
stays visible, every other group reads as nobody. So does the uid of any user but root and the
agent's own: a technician admitted by the group would be audited as "nobody", so the CLI sends
its user name, and the audit records it marked as claimed (``with_claim``).
"""

from __future__ import annotations

import array
import dataclasses
import grp
import os
import pwd
import socket
import struct

from agent.control.model import PeerCred

SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # asm-generic value (x86, arm, arm64)
OVERFLOW_UID = 65534  # a uid outside the agent's user namespace (kernel.overflowuid)
_UCRED = struct.Struct("3i")


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def of_socket(sock: socket.socket) -> PeerCred:
    pid, uid, gid = _UCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    )
    groups: tuple[int, ...] = ()
    try:
        raw = sock.getsockopt(
            socket.SOL_SOCKET, SO_PEERGROUPS, 1024
        )  # CPython caps buflen at 1024: 256 groups
        groups = tuple(array.array("I", raw[: len(raw) - len(raw) % 4]))
    except OSError:
        pass  # a kernel before 4.13: the primary group still counts
    return PeerCred(pid, uid, gid, groups, user_name(uid))


def with_claim(peer: PeerCred, claimed: object) -> PeerCred:
    """``peer`` named by the user name its CLI sent, when the user namespace hides its uid;
    the name is marked as claimed (the kernel vouches for the group, not for the name)."""
    if peer.uid != OVERFLOW_UID or not isinstance(claimed, str) or not claimed.isprintable():
        return peer
    return dataclasses.replace(peer, user=f"{claimed[:32]} (claimed; uid hidden from the agent)")


def of_process() -> PeerCred:
    """The CLI's own credentials (the local channel without a daemon)."""
    uid = os.getuid()
    return PeerCred(os.getpid(), uid, os.getgid(), tuple(os.getgroups()), user_name(uid))


def refusal(peer: PeerCred | None, group: str) -> str | None:
    """None when ``peer`` may send local commands, else the reason it may not. Without a
    daemon the CLI is the agent, so its own account qualifies as the daemon's does; it still
    needs write access to the state directory (the audit trail), checked by the CLI."""
    if peer is None:
        return "local commands need the caller's credentials"
    if peer.uid in (0, os.geteuid()):
        return None
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return f"user '{peer.user}' is not root and the group '{group}' does not exist"
    if gid == peer.gid or gid in peer.groups:
        return None
    return f"user '{peer.user}' is neither root nor in group '{group}'"


def may_name_users(peer: PeerCred | None) -> bool:
    """Whether ``peer`` may name the person a local write is made for (``onBehalfOf``): root
    and the agent's own user only. The commissioning page runs as one of them (as the agent's
    user under cityedge-ui.service, or as root by sudo) and names the user it logged in; a
    member of the local group writes as itself and cannot put another name in the trail."""
    return peer is not None and peer.uid in (0, os.geteuid())
