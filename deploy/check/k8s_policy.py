"""Checks on rendered Kubernetes manifests that neither schema validation nor checkov (run by
scripts/check-deploy.sh for container hardening) makes: runAsNonRoot itself, the shape of the etagd sidecar, and
references between objects (selectors, ConfigMaps, Secrets, the Memcached server list against the StatefulSet that
serves it).

Each check returns problems as strings; an empty list means the rendering passed.
"""

from __future__ import annotations

import pathlib
import posixpath
import re
from collections.abc import Iterator
from typing import Any

WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet"}
# Secrets the operator creates before `kubectl apply` (docs/deploying.md): they hold credentials, never in git.
EXTERNAL_SECRETS = {"etagd-admin"}
# Every environment variable etagd reads: the README's configuration table lists each one (crates/etagd's tidy
# test fails when a flag's variable is missing there), so it is read from there rather than kept twice.
ETAGD_ENV = set(
    re.findall(r"`(ETAGD_[A-Z_]+)`", (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text())
)
ETAGD_REQUIRED_ENV = {"ETAGD_LISTEN", "ETAGD_UPSTREAM", "ETAGD_MEMCACHED", "ETAGD_ADMIN_LISTEN"}


def check(resources: list[dict[str, Any]], where: str) -> list[str]:
    """Returns every problem found in one rendering (`where` names it in the messages)."""
    problems: list[str] = []
    for resource in resources:
        at = f"{where}: {resource['kind']}/{resource['metadata']['name']}"
        if resource["kind"] in WORKLOADS:
            problems += [f"{at}: {p}" for p in _hardening(resource["spec"]["template"]["spec"])]
            problems += [f"{at}: {p}" for p in _references(resource["spec"]["template"]["spec"], resources)]
            problems += [f"{at}: {p}" for p in _selector(resource)]
            for container in _containers(resource["spec"]["template"]["spec"]):
                if _is_etagd(container):
                    problems += [
                        f"{at}: container {container['name']}: {p}"
                        for p in _etagd_sidecar(resource, container, resources)
                    ]
        elif resource["kind"] in {"Service", "PodDisruptionBudget", "NetworkPolicy"}:
            problems += [f"{at}: {p}" for p in _selects_something(resource, resources)]
        if resource["kind"] == "StatefulSet":
            problems += [f"{at}: {p}" for p in _governing_service(resource, resources)]
    return problems


def etagd_configs(resources: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    """Yields (where, text) for every etagd.toml carried by a ConfigMap."""
    for resource in resources:
        if resource["kind"] == "ConfigMap":
            for key, text in (resource.get("data") or {}).items():
                if key.endswith(".toml"):
                    yield f"ConfigMap/{resource['metadata']['name']} {key}", text


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return list(pod.get("initContainers") or []) + list(pod.get("containers") or [])


def _is_etagd(container: dict[str, Any]) -> bool:
    return any(e["name"].startswith("ETAGD_") for e in container.get("env") or [])


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env") or []}


def _hardening(pod: dict[str, Any]) -> list[str]:
    """What checkov's CKV_K8S_23 does not require: runAsNonRoot itself. checkov accepts a non-zero runAsUser alone,
    but the kubelet refuses to start a container as root only when runAsNonRoot is true, which is what protects
    against an image or an overlay that switches to uid 0. The rest of the hardening (resources, privilege
    escalation, read-only root, capabilities, seccomp, image tags) is checkov's, run by scripts/check-deploy.sh."""
    context = pod.get("securityContext") or {}
    if context.get("runAsNonRoot") is not True:
        return ["pod securityContext needs runAsNonRoot: true (the kubelet enforces it; a runAsUser alone is not)"]
    return []


def _references(pod: dict[str, Any], resources: list[dict[str, Any]]) -> list[str]:
    config_maps = {r["metadata"]["name"]: r for r in resources if r["kind"] == "ConfigMap"}
    secrets = {r["metadata"]["name"] for r in resources if r["kind"] == "Secret"} | EXTERNAL_SECRETS
    problems = []
    for volume in pod.get("volumes") or []:
        name = (volume.get("configMap") or {}).get("name")
        if name is not None and name not in config_maps:
            problems.append(f"volume {volume['name']}: ConfigMap {name} is not in the rendering")
        name = (volume.get("secret") or {}).get("secretName")
        if name is not None and name not in secrets:
            problems.append(f"volume {volume['name']}: Secret {name} is neither rendered nor a documented prerequisite")
    for container in _containers(pod):
        for env in container.get("env") or []:
            source = env.get("valueFrom") or {}
            if "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                if ref["key"] not in (config_maps.get(ref["name"], {}).get("data") or {}):
                    problems.append(f"env {env['name']}: ConfigMap {ref['name']} key {ref['key']} is not rendered")
            if "secretKeyRef" in source and source["secretKeyRef"]["name"] not in secrets:
                problems.append(
                    f"env {env['name']}: Secret {source['secretKeyRef']['name']} is neither rendered "
                    "nor a documented prerequisite"
                )
    return problems


def _selector(workload: dict[str, Any]) -> list[str]:
    wanted = workload["spec"]["selector"].get("matchLabels") or {}
    labels = workload["spec"]["template"]["metadata"].get("labels") or {}
    if not wanted or any(labels.get(k) != v for k, v in wanted.items()):
        return ["spec.selector.matchLabels must be set and match the pod template's labels"]
    return []


def _pod_labels(resources: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, str]]]:
    return [(r, r["spec"]["template"]["metadata"].get("labels") or {}) for r in resources if r["kind"] in WORKLOADS]


def _selected(selector: dict[str, str], resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [w for w, labels in _pod_labels(resources) if all(labels.get(k) == v for k, v in selector.items())]


def _selects_something(resource: dict[str, Any], resources: list[dict[str, Any]]) -> list[str]:
    spec = resource["spec"]
    if resource["kind"] == "Service":
        selectors = [spec.get("selector") or {}]
    elif resource["kind"] == "PodDisruptionBudget":
        selectors = [spec["selector"].get("matchLabels") or {}]
    else:
        selectors = [spec["podSelector"].get("matchLabels") or {}]
        for rule in spec.get("ingress") or []:
            selectors += [(peer.get("podSelector") or {}).get("matchLabels") or {} for peer in rule.get("from") or []]
    problems = [
        f"selector {s} matches no workload in the rendering" for s in selectors if not s or not _selected(s, resources)
    ]
    if resource["kind"] == "Service" and not problems:
        problems += _target_ports(resource, _selected(selectors[0], resources))
    return problems


def _target_ports(service: dict[str, Any], workloads: list[dict[str, Any]]) -> list[str]:
    problems = []
    for port in service["spec"].get("ports") or []:
        target = port.get("targetPort", port["port"])
        for workload in workloads:
            declared = [p for c in _containers(workload["spec"]["template"]["spec"]) for p in c.get("ports") or []]
            if not any(target in (p["containerPort"], p.get("name")) for p in declared):
                problems.append(
                    f"port {port.get('name', port['port'])}: targetPort {target} is not a container port of "
                    f"{workload['kind']}/{workload['metadata']['name']}"
                )
    return problems


def _governing_service(statefulset: dict[str, Any], resources: list[dict[str, Any]]) -> list[str]:
    name = statefulset["spec"].get("serviceName")
    services = [r for r in resources if r["kind"] == "Service" and r["metadata"]["name"] == name]
    if not services or services[0]["spec"].get("clusterIP") != "None":
        return [f"serviceName {name} must be a headless Service (clusterIP: None) in the rendering"]
    return []


def _etagd_sidecar(workload: dict[str, Any], container: dict[str, Any], resources: list[dict[str, Any]]) -> list[str]:
    pod = workload["spec"]["template"]["spec"]
    env = _env(container)
    problems = [
        f"unknown variable {n}: etagd reads {', '.join(sorted(ETAGD_ENV))}"
        for n in env
        if n.startswith("ETAGD_") and n not in ETAGD_ENV
    ]
    problems += [f"needs {n}" for n in sorted(ETAGD_REQUIRED_ENV - env.keys())]
    if container not in (pod.get("initContainers") or []) or container.get("restartPolicy") != "Always":
        problems.append("etagd must be a native sidecar: in initContainers with restartPolicy: Always")
    admin = env.get("ETAGD_ADMIN_LISTEN", {}).get("value", "")
    if (
        admin
        and not admin.startswith("127.")
        and "secretKeyRef" not in (env.get("ETAGD_ADMIN_TOKEN", {}).get("valueFrom") or {})
    ):
        problems.append("an admin port off loopback needs ETAGD_ADMIN_TOKEN from a Secret (secretKeyRef)")
    admin_port = int(admin.rsplit(":", 1)[1]) if ":" in admin else None
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports") or []}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = (container.get(probe) or {}).get("httpGet") or {}
        port = ports.get(get.get("port"), get.get("port"))
        if get.get("path") != path or port != admin_port:
            problems.append(f"{probe} must be httpGet {path} on the admin port {admin_port}")
    problems += _config_mount(pod, container, env, resources)
    problems += _memcached_servers(env.get("ETAGD_MEMCACHED", {}).get("value", ""), resources)
    upstream = env.get("ETAGD_UPSTREAM", {}).get("value", "")
    for other in _containers(pod):
        listen = _env(other).get("DEMO_ORIGIN_LISTEN", {}).get("value")
        if listen and upstream != f"http://{listen}":
            problems.append(f"ETAGD_UPSTREAM {upstream} is not the app's DEMO_ORIGIN_LISTEN {listen}")
    return problems


def _config_mount(
    pod: dict[str, Any], container: dict[str, Any], env: dict[str, dict[str, Any]], resources: list[dict[str, Any]]
) -> list[str]:
    path = env.get("ETAGD_CONFIG", {}).get("value")
    if path is None:
        return []
    directory, filename = posixpath.split(path)
    mounts = [m for m in container.get("volumeMounts") or [] if m["mountPath"] == directory]
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    for mount in mounts:
        name = (volumes.get(mount["name"], {}).get("configMap") or {}).get("name")
        for resource in resources:
            if resource["kind"] == "ConfigMap" and resource["metadata"]["name"] == name:
                if filename in (resource.get("data") or {}):
                    return []
    return [f"ETAGD_CONFIG {path} is not a key of a ConfigMap mounted at {directory}"]


def _memcached_servers(servers: str, resources: list[dict[str, Any]]) -> list[str]:
    """The list must name each pod of each in-cluster Memcached StatefulSet it uses, and only existing pods.

    Short names (`pod.service`, one dot or none) must resolve inside the rendering; fully qualified names are
    external servers (the external-memcached overlay) and are taken as given.
    """
    problems = []
    entries = [s.strip() for s in servers.split(",") if s.strip()]
    if not entries:
        return ["ETAGD_MEMCACHED lists no servers"]
    if len(set(entries)) != len(entries):
        problems.append(f"ETAGD_MEMCACHED lists a server twice: {servers}")
    statefulsets = {r["spec"].get("serviceName"): r for r in resources if r["kind"] == "StatefulSet"}
    used: dict[str, set[str]] = {}
    for entry in entries:
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit():
            problems.append(f"ETAGD_MEMCACHED entry {entry!r} is not host:port")
            continue
        labels = host.split(".")
        if len(labels) > 2:
            continue
        if len(labels) == 2 and labels[1] in statefulsets:
            used.setdefault(labels[1], set()).add(entry)
            continue
        problems.append(
            f"ETAGD_MEMCACHED entry {entry} names nothing in the rendering "
            "(in-cluster names are <statefulset>-<n>.<headless service>; external servers need a full DNS name)"
        )
    for service, names in used.items():
        statefulset = statefulsets[service]
        port = next(
            p["containerPort"]
            for c in statefulset["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports") or []
        )
        expected = {
            f"{statefulset['metadata']['name']}-{i}.{service}:{port}"
            for i in range(statefulset["spec"].get("replicas", 1))
        }
        if names != expected:
            problems.append(
                f"ETAGD_MEMCACHED must list every pod of StatefulSet/{statefulset['metadata']['name']} and no other: "
                f"expected {','.join(sorted(expected))}"
            )
    return problems
