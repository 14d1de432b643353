"""The project's own test hosts on this machine: network namespaces joined by veth pairs.

A hub namespace holds a bridge; each host (a namespace of its own, or this process's own
namespace as the client) hangs off it by a veth pair. Services run in the hub, bound to its
address, so the hosts reach them only over this network; cutting a host off is taking its
veth end out of the bridge, which drops its traffic silently, as a dead switch port does.
Everything created is named after a random tag and removed by :meth:`HostNetwork.close`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: Addresses come from 198.18.0.0/15, the range set aside for network tests (RFC 2544).
TEST_RANGE = ipaddress.ip_network("198.18.0.0/15")


class NetnsUnavailable(RuntimeError):
    """Raised when network namespaces cannot be made here (not root, or no `ip`)."""


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


@dataclass
class Host:
    """One host on the test network."""

    name: str
    address: str
    #: The namespace it lives in; None for this process's own namespace (the client).
    netns: str | None
    #: Its veth end in the hub, which the bridge forwards for while the host is connected.
    hub_end: str
    #: Its own veth end.
    host_end: str

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns] if self.netns else []


#: Every name starts with this, then the creating process's pid in 6 hex digits.
PREFIX = "ftq"


def _new_tag() -> str:
    return f"{PREFIX}{os.getpid():06x}{secrets.token_hex(1)}"


@dataclass
class HostNetwork:
    tag: str = field(default_factory=_new_tag)
    hosts: dict[str, Host] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    subnet: ipaddress.IPv4Network | None = None

    @property
    def hub(self) -> str:
        return f"{self.tag}-hub"

    @property
    def bridge(self) -> str:
        return f"{self.tag}br"

    @property
    def hub_address(self) -> str:
        assert self.subnet is not None
        return str(self.subnet.network_address + 1)

    def open(self) -> HostNetwork:
        """Make the hub namespace and its bridge (on a /24 no interface here uses yet)."""
        if os.geteuid() != 0 or shutil.which("ip") is None:
            raise NetnsUnavailable("network namespaces need root and iproute2's `ip`")
        remove_stale()
        self.subnet = _free_subnet()
        try:
            _ip("netns", "add", self.hub)
        except RuntimeError as exc:
            raise NetnsUnavailable(str(exc)) from None
        _ip("-n", self.hub, "link", "set", "lo", "up")
        _ip("-n", self.hub, "link", "add", self.bridge, "type", "bridge")
        _ip("-n", self.hub, "addr", "add", f"{self.hub_address}/24", "dev", self.bridge)
        _ip("-n", self.hub, "link", "set", self.bridge, "up")
        return self

    def add_host(self, name: str, *, own_namespace: bool = True) -> Host:
        """A host joined to the hub; own_namespace=False attaches this process's namespace."""
        assert self.subnet is not None
        index = len(self.hosts) + 1
        hub_end, host_end = f"{self.tag}h{index}", f"{self.tag}e{index}"
        netns = f"{self.tag}-{name}" if own_namespace else None
        address = str(self.subnet.network_address + (10 + index if own_namespace else 254))
        _ip("link", "add", hub_end, "type", "veth", "peer", "name", host_end)
        _ip("link", "set", hub_end, "netns", self.hub)
        _ip("-n", self.hub, "link", "set", hub_end, "master", self.bridge, "up")
        where: list[str] = []
        if netns is not None:
            _ip("netns", "add", netns)
            _ip("-n", netns, "link", "set", "lo", "up")
            _ip("link", "set", host_end, "netns", netns)
            where = ["-n", netns]
        _ip(*where, "addr", "add", f"{address}/24", "dev", host_end)
        _ip(*where, "link", "set", host_end, "up")
        host = Host(name, address, netns, hub_end, host_end)
        self.hosts[name] = host
        return host

    def run_in_hub(self, argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
        """Start a service inside the hub namespace (stopped by close)."""
        with log.open("ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.hub, *argv], stdout=out, stderr=subprocess.STDOUT
            )
        self.processes.append(proc)
        return proc

    def cut(self, host: Host) -> None:
        """Partition a host: its frames reach nothing and nothing reaches it; no link event."""
        _ip("-n", self.hub, "link", "set", host.hub_end, "nomaster")

    def heal(self, host: Host) -> None:
        _ip("-n", self.hub, "link", "set", host.hub_end, "master", self.bridge)

    def close(self) -> None:
        """Stop every process in the namespaces, then delete the namespaces and their veths."""
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        namespaces = [self.hub, *(h.netns for h in self.hosts.values() if h.netns)]
        for netns in namespaces:
            _kill_namespace(netns)
        # Deleting a namespace destroys the veth ends in it, and with them their peers.
        for host in self.hosts.values():
            if host.netns is None:
                with contextlib.suppress(RuntimeError):
                    _ip("link", "del", host.host_end)

    def leftovers(self) -> list[str]:
        """Namespaces or interfaces of this network that still exist (none after close)."""
        names = _ip("netns", "list") + _ip("-o", "link")
        return sorted({word for word in names.split() if word.startswith(self.tag)})


def _kill_namespace(netns: str) -> None:
    with contextlib.suppress(RuntimeError):
        for pid in _ip("netns", "pids", netns).split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    with contextlib.suppress(RuntimeError):
        _ip("netns", "del", netns)


def _free_subnet() -> ipaddress.IPv4Network:
    used = [
        ipaddress.ip_interface(word).network
        for word in _ip("-4", "-o", "addr").split()
        if "/" in word and word[0].isdigit()
    ]
    candidates = list(TEST_RANGE.subnets(new_prefix=24))
    for _ in range(50):
        subnet = candidates[secrets.randbelow(len(candidates))]
        if not any(subnet.overlaps(net) for net in used):
            return subnet
    raise NetnsUnavailable("no free /24 in 198.18.0.0/15")


def remove_stale() -> None:
    """Delete the namespaces of test runs whose process died before it could clean up."""
    for line in _ip("netns", "list").splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(PREFIX):
            continue
        try:
            pid = int(name[len(PREFIX) : len(PREFIX) + 6], 16)
        except ValueError:
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            _kill_namespace(name)
        except PermissionError:
            pass
