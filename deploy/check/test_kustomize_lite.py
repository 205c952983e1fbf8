"""Table tests for kustomize_lite's strategic merge and patch handling (run by scripts/check-deploy.sh)."""

from __future__ import annotations

import pathlib
import tempfile
import textwrap
import unittest

import yaml

import kustomize_lite


def pod(init_env: list[dict[str, str]], volumes: list[str] | None = None) -> dict:
    spec: dict = {"initContainers": [{"name": "etagd", "image": "etagd", "env": init_env}]}
    if volumes is not None:
        spec["volumes"] = [{"name": v} for v in volumes]
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app"}, "spec": spec}


class StrategicMergeTest(unittest.TestCase):
    def check(self, base: dict, patch: dict, expected: dict) -> None:
        self.assertEqual(kustomize_lite.strategic_merge(base, patch), expected)

    def test_table(self) -> None:
        a, b = {"name": "A", "value": "1"}, {"name": "B", "value": "2"}
        cases = [
            # Items the patch names come first, merged, in the patch's order; the others follow in their order
            # (as `kubectl kustomize` does).
            (
                pod([a, b]),
                {"spec": {"initContainers": [{"name": "etagd", "env": [{"name": "B", "value": "9"}]}]}},
                pod([{"name": "B", "value": "9"}, a]),
            ),
            (pod([a]), {"spec": {"initContainers": [{"name": "etagd", "env": [b]}]}}, pod([b, a])),
            # The case checked against kubectl kustomize 5.5: add D, change B, delete A, keep C.
            (
                pod([a, b, {"name": "C", "value": "3"}]),
                {
                    "spec": {
                        "initContainers": [
                            {
                                "name": "etagd",
                                "env": [
                                    {"name": "D", "value": "4"},
                                    {"name": "B", "value": "9"},
                                    {"name": "A", "$patch": "delete"},
                                ],
                            }
                        ]
                    }
                },
                pod([{"name": "D", "value": "4"}, {"name": "B", "value": "9"}, {"name": "C", "value": "3"}]),
            ),
            # `$patch: delete` on a list item removes just that item.
            (
                pod([a, b]),
                {"spec": {"initContainers": [{"name": "etagd", "env": [{"name": "A", "$patch": "delete"}]}]}},
                pod([b]),
            ),
            # A null deletes a key.
            ({"x": 1, "y": 2}, {"y": None}, {"x": 1}),
            # Lists without a merge key are replaced whole.
            ({"args": ["-m", "64"]}, {"args": ["-m", "256"]}, {"args": ["-m", "256"]}),
            # Volumes merge on their name.
            (pod([], ["a"]), {"spec": {"volumes": [{"name": "b"}]}}, pod([], ["b", "a"])),
        ]
        for base, patch, expected in cases:
            with self.subTest(patch=patch):
                self.check(base, patch, expected)

    def test_list_item_without_merge_key_is_refused(self) -> None:
        with self.assertRaises(kustomize_lite.RenderError):
            kustomize_lite.strategic_merge(pod([]), {"spec": {"initContainers": [{"image": "x"}]}})


class RenderTest(unittest.TestCase):
    def render(self, files: dict[str, str], at: str = "overlay") -> list[dict]:
        with tempfile.TemporaryDirectory() as tmp:
            root = pathlib.Path(tmp)
            for name, text in files.items():
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_text(textwrap.dedent(text))
            return kustomize_lite.render(root / at)

    BASE = {
        "base/kustomization.yaml": "resources: [things.yaml]\n",
        "base/things.yaml": """\
            apiVersion: v1
            kind: Service
            metadata: {name: mc}
            ---
            apiVersion: apps/v1
            kind: Deployment
            metadata: {name: app}
            spec: {replicas: 2}
            """,
    }

    def test_delete_and_merge(self) -> None:
        out = self.render(
            {
                **self.BASE,
                "overlay/kustomization.yaml": """\
                resources: [../base]
                patches:
                  - patch: |-
                      $patch: delete
                      apiVersion: v1
                      kind: Service
                      metadata: {name: mc}
                  - path: replicas.yaml
                """,
                "overlay/replicas.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app}\n"
                "spec: {replicas: 3}\n",
            }
        )
        self.assertEqual(out, [yaml.safe_load(self.BASE["base/things.yaml"].split("---")[1].replace("2", "3"))])

    def test_refusals(self) -> None:
        cases = [
            # A field this renderer does not implement.
            "resources: [../base]\nimages: [{name: etagd, newTag: '1'}]\n",
            # A patch whose target does not exist.
            "resources: [../base]\npatches: [{patch: 'apiVersion: v1\n\nkind: Secret\n\nmetadata: {name: nope}'}]\n",
            # A targeted (non-strategic-merge) patch.
            "resources: [../base]\npatches: [{path: x.yaml, target: {kind: Service}}]\n",
            # A missing resource file.
            "resources: [../base, missing.yaml]\n",
        ]
        for kustomization in cases:
            with self.subTest(kustomization=kustomization), self.assertRaises(kustomize_lite.RenderError):
                self.render({**self.BASE, "overlay/kustomization.yaml": kustomization})


if __name__ == "__main__":
    unittest.main()
