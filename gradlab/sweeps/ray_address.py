"""Ray cluster addresses, read as ``ray.init(address=...)`` reads them, and the check that
something listens there before a sweep waits on it (Ray itself retries a wrong address for
minutes). Imports nothing of Ray's."""

from __future__ import annotations

import os
import socket
from typing import NamedTuple

from gradlab.errors import GradlabError

CLIENT_PORT = 10001
"""The Ray Client server's port on a head node (``ray start --head`` serves it there)."""
ADDRESS_FORMS = "host:port (e.g. 10.0.0.1:6379), ray://host[:port], auto or local"
ENV_ADDRESS = "RAY_ADDRESS"
"""Where Ray (and ``ray job submit``) name the cluster when ``ray.init`` is given none."""


class Endpoint(NamedTuple):
    """Where a Ray address connects: a cluster's GCS, or a Ray Client server (``client``)."""

    host: str
    port: int
    client: bool
    port_given: bool

    def ray_address(self) -> str:
        """The address for ``ray.init``, with the Ray Client's port where it was left out
        (gRPC would otherwise try 443)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'ray://' if self.client else ''}{host}:{self.port}"


def parse_address(address: str, name: str | None = None) -> Endpoint | None:
    """Where ``address`` connects, read as ``ray.init(address=...)`` reads it: ``host:port``
    (a cluster's GCS, as ``ray start --head`` prints) or ``ray://host[:port]`` (a Ray Client
    server, port 10001 unless given); IPv6 hosts in brackets. None where there is nothing to
    check: ``auto`` (Ray looks for a cluster on this machine, or in RAY_ADDRESS), ``local``
    (Ray starts one) and other schemes (``module://...``, which Ray hands to that module).

    Raises GradlabError, with ``name`` (default ``--address ADDRESS``) first, for a form Ray
    would refuse: no port, a bad port, an HTTP URL.
    """
    name = name or f"--address {address}"
    text = address.strip()
    if text in ("auto", "local"):
        return None
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    elif scheme in ("http", "https"):
        raise GradlabError(
            f"{name}: Ray needs a cluster's address (host:port, as ray start --head prints) or "
            f"a Ray Client address (ray://host:{CLIENT_PORT}), not an HTTP URL"
        )
    elif scheme != "ray":
        return None  # another module's client (e.g. anyscale://): Ray hands it over
    rest = rest.rstrip("/")
    if rest.startswith("["):  # [IPv6] or [IPv6]:port
        host, bracket, after = rest[1:].partition("]")
        port = after[1:] if bracket and after.startswith(":") else None
        valid = bool(bracket) and (not after or port is not None)
    else:
        host, colon, port = rest.rpartition(":")
        if not colon:
            host, port = rest, None
        valid = ":" not in host  # an IPv6 host without brackets: its port is unclear
    given = port is not None
    if not given and scheme == "ray":
        port = str(CLIENT_PORT)
    if not (valid and host and port and port.isdigit() and 0 < int(port) < 65536):
        raise GradlabError(f"{name}: not a Ray address; expected {ADDRESS_FORMS}")
    return Endpoint(host, int(port), scheme == "ray", given)


def check_address(address: str, timeout: float = 5.0) -> None:
    """Fail fast, with one line, when nothing listens at a Ray ``--address`` (Ray itself
    retries a wrong one for minutes): a TCP connection to its host and port must open
    within ``timeout`` seconds. ``auto`` checks RAY_ADDRESS when that is set; ``local`` and
    other schemes are left to Ray. See :func:`parse_address` for the forms."""
    name = f"--address {address}"
    if address.strip() == "auto":
        address = os.environ.get(ENV_ADDRESS, "").strip()
        if address in ("", "auto", "local"):
            return
        name = f"{name} ({ENV_ADDRESS}={address})"
    check_endpoint(address, name, timeout)


def check_endpoint(address: str, name: str, timeout: float = 5.0) -> None:
    """:func:`check_address` for an address named ``name`` in the error line."""
    endpoint = parse_address(address, name)
    if endpoint is None:
        return
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout):
            pass
    except OSError as exc:
        if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError
            why = f"no answer within {timeout:g} s"
        elif isinstance(exc, socket.gaierror):
            why = f"unknown host {endpoint.host}: {exc.strerror or exc}"
        else:
            why = exc.strerror or str(exc) or type(exc).__name__
        there = "there" if endpoint.port_given else f"at port {endpoint.port}"
        raise GradlabError(
            f"{name}: cannot connect to a Ray cluster {there} ({why}); is it running? "
            "e.g. ray start --head"
        ) from None
