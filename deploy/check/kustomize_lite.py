"""A small kustomize build for the features deploy/kubernetes uses, so the manifests can be checked without kubectl.

Supported in kustomization.yaml: `resources` (files, or directories holding a kustomization.yaml) and `patches`
(strategic-merge patches given by `path` or inline `patch`, without `target`). Strategic merge covers what our
patches do: maps merge key by key, a null deletes a key, the pod-spec lists below merge item by item on their merge
key (other lists are replaced; a Service's `ports`, whose merge key differs, is refused), and `$patch: delete`
removes a whole resource or one list item.

Anything else (images, namePrefix, labels, generators, JSON 6902 patches, ...) is refused by name rather than
silently ignored: extend this file, or check with real kustomize (scripts/check-deploy.sh also renders with
`kubectl kustomize` when kubectl is installed and requires the two renderings to agree).
"""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import yaml

# Merge keys of the lists our patches touch, as in the Kubernetes API's `patchMergeKey` markers.
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
}

SUPPORTED_FIELDS = {"apiVersion", "kind", "resources", "patches"}
SUPPORTED_PATCH_FIELDS = {"path", "patch"}


class RenderError(Exception):
    """A kustomization this renderer cannot build; the message says which file and what to change."""


def render(directory: pathlib.Path) -> list[dict[str, Any]]:
    """Builds the kustomization in `directory` and returns its resources in the order they were listed."""
    kfile = directory / "kustomization.yaml"
    if not kfile.is_file():
        raise RenderError(f"{directory}: no kustomization.yaml; point at a kustomize base or overlay directory")
    kust = _load_one(kfile)
    unknown = set(kust) - SUPPORTED_FIELDS
    if unknown:
        raise RenderError(
            f"{kfile}: kustomize_lite does not support {sorted(unknown)}; "
            "extend deploy/check/kustomize_lite.py or use only resources and patches"
        )
    resources: list[dict[str, Any]] = []
    for entry in kust.get("resources") or []:
        path = (directory / entry).resolve()
        found = render(path) if path.is_dir() else _load_all(path)
        for resource in found:
            if any(_identity(r) == _identity(resource) for r in resources):
                raise RenderError(f"{kfile}: resource {_describe(resource)} is listed twice")
            resources.append(resource)
    for number, spec in enumerate(kust.get("patches") or [], start=1):
        for patch in _patch_documents(kfile, number, spec):
            resources = _apply(resources, patch, f"{kfile} patch {number}")
    return resources


def strategic_merge(base: Any, patch: Any, field: str | None = None) -> Any:
    """Returns `base` with the strategic-merge `patch` applied; `field` is the name of the list being merged."""
    if isinstance(patch, dict) and isinstance(base, dict):
        directive = patch.get("$patch")
        if directive not in (None, "merge"):
            raise RenderError(f"`$patch: {directive}` inside a map is not supported")
        merged = copy.deepcopy(base)
        for key, value in patch.items():
            if key == "$patch":
                continue
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = strategic_merge(merged[key], value, key)
            else:
                merged[key] = _strip_directives(value)
        return merged
    if isinstance(patch, list) and isinstance(base, list) and field in MERGE_KEYS:
        return _merge_list(base, patch, MERGE_KEYS[field], field)
    return _strip_directives(patch)


def _merge_list(base: list[Any], patch: list[Any], key: str, field: str) -> list[Any]:
    # Ordered as kustomize (Kubernetes' strategic merge) orders it: the patch's items first, in the patch's
    # order, then the base items the patch did not mention, in their order.
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise RenderError(f"every item patched into `{field}` needs its merge key `{key}`")
    by_key = {old.get(key): old for old in base}
    merged = []
    for item in patch:
        if item.get("$patch") == "delete":
            continue
        old = by_key.get(item[key])
        merged.append(_strip_directives(item) if old is None else strategic_merge(old, item))
    mentioned = {item[key] for item in patch}
    return merged + [copy.deepcopy(old) for old in base if old.get(key) not in mentioned]


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if k != "$patch"}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return copy.deepcopy(value)


def _apply(resources: list[dict[str, Any]], patch: dict[str, Any], where: str) -> list[dict[str, Any]]:
    matches = [i for i, r in enumerate(resources) if _matches(r, patch)]
    if len(matches) != 1:
        raise RenderError(f"{where}: {_describe(patch)} matches {len(matches)} resources, expected exactly one")
    at = matches[0]
    if patch.get("$patch") == "delete":
        return resources[:at] + resources[at + 1 :]
    patched = strategic_merge(resources[at], patch)
    return resources[:at] + [patched] + resources[at + 1 :]


def _patch_documents(kfile: pathlib.Path, number: int, spec: Any) -> list[dict[str, Any]]:
    if not isinstance(spec, dict) or set(spec) - SUPPORTED_PATCH_FIELDS or len(spec) != 1:
        raise RenderError(
            f"{kfile} patch {number}: only `path:` or inline `patch:` strategic-merge patches are supported "
            "(no target, no options)"
        )
    if "path" in spec:
        return _load_all(kfile.parent / spec["path"])
    return [d for d in yaml.safe_load_all(spec["patch"]) if d]


def _matches(resource: dict[str, Any], patch: dict[str, Any]) -> bool:
    return (
        _group(resource) == _group(patch)
        and resource.get("kind") == patch.get("kind")
        and _name(resource) == _name(patch)
    )


def _identity(resource: dict[str, Any]) -> tuple[str, str, str, str]:
    namespace = (resource.get("metadata") or {}).get("namespace", "")
    return (_group(resource), resource.get("kind", ""), namespace, _name(resource))


def _group(resource: dict[str, Any]) -> str:
    api_version = resource.get("apiVersion", "")
    return api_version.split("/")[0] if "/" in api_version else ""


def _name(resource: dict[str, Any]) -> str:
    return (resource.get("metadata") or {}).get("name", "")


def _describe(resource: dict[str, Any]) -> str:
    return f"{resource.get('kind')}/{_name(resource)}"


def _load_one(path: pathlib.Path) -> dict[str, Any]:
    documents = _load_all(path)
    if len(documents) != 1:
        raise RenderError(f"{path}: expected one YAML document, found {len(documents)}")
    return documents[0]


def _load_all(path: pathlib.Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise RenderError(f"{path}: no such file; fix the entry in its kustomization.yaml")
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as e:
        raise RenderError(f"{path}: not valid YAML: {e}") from e
    for document in documents:
        if not isinstance(document, dict):
            raise RenderError(f"{path}: every YAML document must be a mapping")
    return documents
