"""Container health check: ask the worker running in this container for ``/health``.

The image runs any ``driftline`` command. The service comes from the container's main command
line (``driftline <service> worker``) and the port from the same settings the worker reads, so the
check cannot drift from them. A container running another command (``driftline topics create``)
serves no endpoint and counts as healthy. Exit 0 when healthy, 1 otherwise (Docker's contract).

Given URLs as arguments it asks each of them instead: the chart's `helm test` pod checks every
component's Service that way (``python /opt/driftline/healthcheck.py http://...:6061/health ...``).
"""

from __future__ import annotations

import itertools
import sys
import urllib.error
import urllib.request
from pathlib import Path

from shared.settings import SERVICE_SETTINGS, DriftlineSettings, load

_ANY_ADDRESS = ("", "0.0.0.0", "::")


def service_of(argv: list[str]) -> str | None:
    """The service a ``driftline <service> worker`` command line runs, or None."""
    for word, following in itertools.pairwise(argv):
        if word in SERVICE_SETTINGS and following == "worker":
            return word
    return None


def health_url(service: str) -> str:
    """Where this container's worker of `service` answers, from its settings."""
    host = load(DriftlineSettings).web_host
    port = load(SERVICE_SETTINGS[service]).web_port
    if host in _ANY_ADDRESS:
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/health"


def healthy(name: str, url: str) -> bool:
    """Whether `url` answers 200; prints why not."""
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            if response.status == 200:
                return True
            print(f"{name}: {url} answered {response.status}", file=sys.stderr)
    except (urllib.error.URLError, OSError) as exc:
        print(f"{name}: {url} did not answer 200: {exc}", file=sys.stderr)
    return False


def main(urls: list[str], cmdline: Path = Path("/proc/1/cmdline")) -> int:
    """Check every URL given, else the worker that PID 1 runs; print why one is unhealthy."""
    if urls:
        answers = [healthy(url, url) for url in urls]
        return 0 if all(answers) else 1
    argv = [arg.decode() for arg in cmdline.read_bytes().split(b"\0") if arg]
    service = service_of(argv)
    if service is None:
        return 0
    return 0 if healthy(service, health_url(service)) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
