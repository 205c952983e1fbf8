"""Renders (with `kubectl kustomize`) and checks the deploy files: the Kubernetes kustomizations, their etagd.toml,
and docker-compose.yml.

Run by scripts/check-deploy.sh inside its venv (it needs PyYAML and kubernetes-validate); the shell script adds
the checks that need outside tools (compose JSON schema, hadolint, nginx -t). Prints what it checked, writes each
rendering to --out for inspection, and exits 1 if anything is wrong.
"""

from __future__ import annotations

import argparse
import copy
import pathlib
import subprocess
import sys
from typing import Any

import kubernetes_validate
import yaml

import compose_policy
import etagd_config
import k8s_policy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=pathlib.Path, required=True, help="the repository root")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="where to write the renderings")
    parser.add_argument("--k8s-version", action="append", required=True, help="validate against this version")
    parser.add_argument(
        "--kubectl",
        action="append",
        required=True,
        help="render with `KUBECTL kustomize`; given several times, every one must render the same objects",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    problems: list[str] = []
    renderings = _render_all(args.root / "deploy" / "kubernetes", args.out, args.kubectl, problems)
    for name, resources in renderings.items():
        problems += _validate(name, resources, args.k8s_version)
        problems += k8s_policy.check(resources, name)
    problems += _strict_canary(renderings, args.k8s_version)
    print(f"policy: runAsNonRoot, native sidecar, probes, selectors, references, servers: {len(renderings)} renderings")

    base_config = _check_configs(renderings, problems)
    problems += _check_compose(args.root, base_config)

    if problems:
        print(f"\n{len(problems)} problem(s):", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    return 0


def _render_all(
    kube: pathlib.Path, out: pathlib.Path, kubectls: list[str], problems: list[str]
) -> dict[str, list[dict[str, Any]]]:
    """Renders every kustomization with each `kubectl kustomize`; the first is the rendering checked further, and
    every other one must give the same objects in the same order."""
    directories = [kube / "base"] + sorted(p.parent for p in (kube / "overlays").glob("*/kustomization.yaml"))
    renderings: dict[str, list[dict[str, Any]]] = {}
    for directory in directories:
        name = str(directory.relative_to(kube))
        by_kubectl = {}
        for kubectl in kubectls:
            try:
                by_kubectl[kubectl] = _kustomize(kubectl, directory)
            except RenderError as e:
                problems.append(f"{name}: {e}")
        if len(by_kubectl) != len(kubectls):
            continue
        reference, resources = next(iter(by_kubectl.items()))
        for kubectl, theirs in by_kubectl.items():
            if theirs != resources:
                ours = {_key(r): r for r in resources}
                other = {_key(r): r for r in theirs}
                differ = sorted(k for k in ours.keys() | other.keys() if ours.get(k) != other.get(k)) or ["the order"]
                problems.append(f"{name}: `{reference} kustomize` and `{kubectl} kustomize` disagree on {differ}")
        renderings[name] = resources
        target = out / (name.replace("/", "-") + ".yaml")
        target.write_text(yaml.safe_dump_all(resources, sort_keys=False))
        kinds = ", ".join(f"{r['kind']}/{r['metadata']['name']}" for r in resources)
        print(f"render {name}: {len(resources)} resources -> {target} ({kinds})")
        print(f"render {name}: the same objects from {len(by_kubectl)} kustomize versions")
    return renderings


class RenderError(Exception):
    """`kubectl kustomize` failed or printed no objects."""


def _kustomize(kubectl: str, directory: pathlib.Path) -> list[dict[str, Any]]:
    run = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=False)
    if run.returncode != 0:
        raise RenderError(f"`{kubectl} kustomize` failed: {run.stderr.strip()[:2000]}")
    # Empty documents are dropped: old kustomize versions print `{}` where newer ones print nothing.
    resources = [r for r in yaml.safe_load_all(run.stdout) if r]
    if not resources:
        raise RenderError(f"`{kubectl} kustomize` rendered no objects")
    return resources


def _key(resource: dict[str, Any]) -> tuple[str, str, str]:
    return (resource["apiVersion"], resource["kind"], resource["metadata"]["name"])


def _validate(name: str, resources: list[dict[str, Any]], versions: list[str]) -> list[str]:
    problems = []
    for version in versions:
        for resource in resources:
            where = f"{name}: {resource['kind']}/{resource['metadata']['name']} (Kubernetes {version})"
            try:
                kubernetes_validate.validate(resource, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                problems.append(f"{where}: {path}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError:
                problems.append(f"{where}: no such kind in apiVersion {resource['apiVersion']}")
    print(f"validate {name}: {len(resources)} resources, strict, against Kubernetes {', '.join(versions)}")
    return problems


def _strict_canary(renderings: dict[str, list[dict[str, Any]]], versions: list[str]) -> list[str]:
    """A misspelt field must fail validation; if it does not, every green run above means nothing."""
    deployment = next(r for r in renderings.get("base", []) if r["kind"] == "Deployment")
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["initContainers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    for version in versions:
        try:
            kubernetes_validate.validate(broken, version, strict=True)
        except kubernetes_validate.ValidationError:
            continue
        return [f"canary: a misspelt field passed validation against Kubernetes {version}; strict mode is broken"]
    print("canary: a misspelt field in the Deployment is rejected, as it must be")
    return []


def _check_configs(renderings: dict[str, list[dict[str, Any]]], problems: list[str]) -> dict[str, Any] | None:
    base_config = None
    for name, resources in renderings.items():
        for where, text in k8s_policy.etagd_configs(resources):
            config, found = etagd_config.check(text, f"{name}: {where}")
            problems += found
            if name == "base":
                base_config = config
            routes = len(config.get("route") or [])
            print(f"etagd.toml {name}: {where}: {routes} routes, namespace {config.get('namespace')!r}")
    if base_config is None:
        problems.append("base: no ConfigMap carries an etagd.toml")
    return base_config


def _check_compose(root: pathlib.Path, base_config: dict[str, Any] | None) -> list[str]:
    path = root / "docker-compose.yml"
    try:
        compose = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        return [f"docker-compose.yml: cannot read: {e}"]
    problems, configs = compose_policy.check(compose, root)
    for config_path in configs:
        where = str(config_path.relative_to(root))
        try:
            config, found = etagd_config.check(config_path.read_text(), where)
        except OSError as e:
            problems.append(f"{where}: cannot read: {e}")
            continue
        problems += found
        if base_config is not None and config != base_config:
            problems.append(
                f"{where} differs from the etagd.toml in deploy/kubernetes/app/etagd-config.yaml; keep them identical"
            )
    print(
        f"compose: {len(compose.get('services') or {})} services, references, mounts, etagd wiring, nginx upstreams; "
        f"{len(configs)} etagd.toml file(s) equal to the ConfigMap's"
    )
    return problems


if __name__ == "__main__":
    sys.exit(main())
