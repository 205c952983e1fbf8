"""Checks on docker-compose.yml that the compose-spec JSON schema cannot make: references between services, files
that must exist, the etagd sidecars' wiring, and nginx's upstreams against the etagd services.

Each check returns problems as strings; an empty list means the file passed.
"""

from __future__ import annotations

import pathlib
import re
from typing import Any

UPSTREAM_SERVER = re.compile(r"^\s*server\s+([A-Za-z0-9_.-]+):([0-9]+)\b", re.MULTILINE)
ETAGD_REQUIRED_ENV = {"ETAGD_LISTEN", "ETAGD_UPSTREAM", "ETAGD_MEMCACHED", "ETAGD_ADMIN_LISTEN"}


def check(compose: dict[str, Any], root: pathlib.Path) -> tuple[list[str], list[pathlib.Path]]:
    """Returns (problems, etagd.toml files mounted into etagd services) for the compose file in `root`."""
    services: dict[str, dict[str, Any]] = compose.get("services") or {}
    problems: list[str] = []
    configs: list[pathlib.Path] = []
    for name, service in services.items():
        at = f"docker-compose.yml: service {name}"
        problems += [f"{at}: {p}" for p in _references(service, services)]
        problems += [f"{at}: {p}" for p in _files(service, root)]
        if any(k.startswith("ETAGD_") for k in _env(service)):
            found, config = _etagd(service, services, root)
            problems += [f"{at}: {p}" for p in found]
            if config is not None and config not in configs:
                configs.append(config)
    etagds = {n: s for n, s in services.items() if "ETAGD_MEMCACHED" in _env(s)}
    memcached_sets = {frozenset(_servers(_env(s)["ETAGD_MEMCACHED"])) for s in etagds.values()}
    if len(memcached_sets) > 1:
        problems.append("docker-compose.yml: every etagd must list the same Memcached servers (one shared cache)")
    problems += _nginx(services, etagds, root)
    return problems, configs


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _servers(value: str) -> list[str]:
    return [s.strip() for s in value.split(",") if s.strip()]


def _namespace_owner(service: dict[str, Any]) -> str | None:
    mode = service.get("network_mode", "")
    return mode.split(":", 1)[1] if mode.startswith("service:") else None


def _references(service: dict[str, Any], services: dict[str, Any]) -> list[str]:
    problems = []
    depends = service.get("depends_on") or []
    for other in depends if isinstance(depends, list) else depends.keys():
        if other not in services:
            problems.append(f"depends_on names a service that does not exist: {other}")
    owner = _namespace_owner(service)
    if owner is not None:
        if owner not in services:
            problems.append(f"network_mode names a service that does not exist: {owner}")
        for key in ("ports", "networks", "expose"):
            if key in service:
                problems.append(f"`{key}` conflicts with network_mode service:{owner}; put it on {owner}")
    return problems


def _files(service: dict[str, Any], root: pathlib.Path) -> list[str]:
    problems = []
    build = service.get("build")
    if build is not None:
        context = root / (build if isinstance(build, str) else build.get("context", "."))
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        if not (context / dockerfile).is_file():
            problems.append(f"build: {context / dockerfile} does not exist")
    for volume in service.get("volumes") or []:
        source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
        if source.startswith(("./", "../", "/")) and not (root / source).exists():
            problems.append(f"volume source {source} does not exist")
    return problems


def _etagd(
    service: dict[str, Any], services: dict[str, Any], root: pathlib.Path
) -> tuple[list[str], pathlib.Path | None]:
    env = _env(service)
    problems = [f"needs {n}" for n in sorted(ETAGD_REQUIRED_ENV - env.keys())]
    for server in _servers(env.get("ETAGD_MEMCACHED", "")):
        host, _, port = server.rpartition(":")
        if host not in services or not port.isdigit():
            problems.append(f"ETAGD_MEMCACHED entry {server} is not <memcached service>:<port>")
    admin = env.get("ETAGD_ADMIN_LISTEN", "")
    if admin and not admin.startswith("127.") and not env.get("ETAGD_ADMIN_TOKEN"):
        problems.append("an admin port off loopback needs ETAGD_ADMIN_TOKEN")
    owner = _namespace_owner(service)
    listen = _env(services.get(owner, {})).get("DEMO_ORIGIN_LISTEN") if owner else None
    if listen and env.get("ETAGD_UPSTREAM") != f"http://{listen}":
        problems.append(f"ETAGD_UPSTREAM {env.get('ETAGD_UPSTREAM')} is not {owner}'s DEMO_ORIGIN_LISTEN {listen}")
    config = None
    if "ETAGD_CONFIG" in env:
        for volume in service.get("volumes") or []:
            parts = volume.split(":") if isinstance(volume, str) else [volume.get("source"), volume.get("target")]
            if len(parts) >= 2 and parts[1] == env["ETAGD_CONFIG"]:
                config = root / parts[0]
        if config is None:
            problems.append(f"ETAGD_CONFIG {env['ETAGD_CONFIG']} is not a mounted file")
    return problems, config


def _nginx(services: dict[str, Any], etagds: dict[str, Any], root: pathlib.Path) -> list[str]:
    """nginx must spread traffic over every etagd (reached at its network namespace's name) and nothing else."""
    problems = []
    # An etagd that joins another service's network namespace is reached by that service's name.
    expected = {
        (_namespace_owner(s) or n, _env(s)["ETAGD_LISTEN"].rsplit(":", 1)[1])
        for n, s in etagds.items()
        if ":" in _env(s).get("ETAGD_LISTEN", "")
    }
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if not source.endswith("nginx.conf") or not (root / source).is_file():
                continue
            upstreams = set(UPSTREAM_SERVER.findall((root / source).read_text()))
            if upstreams != expected:
                problems.append(
                    f"{source} (service {name}): upstream servers {sorted(upstreams)} must be exactly the etagd "
                    f"sidecars {sorted(expected)}"
                )
    return problems
