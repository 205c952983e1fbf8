"""Turns a real etagd /metrics scrape into a `promtool test rules` file, and checks the rules and the hand-written
rule tests against it.

Run by scripts/check-prometheus.sh after it has started a real etagd and sent it traffic. It exits 1 when:
  - a metric the rules name is not in the scrape (the rules would never fire), or
  - a series of a hand-written test (tests/*.yml) has a name or a label that the scrape has not (the test proves
    nothing about the real sidecar).
Otherwise it writes a test file whose input series are the scrape's own samples, each counter growing by its
scraped value every minute (so a rate over 5m is value/60 per second) and each gauge constant, with the recording
rules' values expected from the scraped numbers and the alerts expected from them too.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import re
import sys

import yaml

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
# A metric name, not the middle of a recording rule's level:metric:operations name.
RULE_METRIC = re.compile(r"(?<![:\w])etagd_[a-z0-9_]+(?![:\w])")
# Labels Prometheus adds at scrape time; the tests set them as a scrape of job "etagd" would.
TARGET_LABELS = {"job": "etagd", "instance": "sidecar-1"}
MINUTES = 20


def parse_scrape(text: str) -> tuple[dict[str, str], list[tuple[str, dict[str, str], float]]]:
    """Returns (type by metric family, [(sample name, labels, value)]) of Prometheus or OpenMetrics text."""
    types: dict[str, str] = {}
    samples = []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(maxsplit=3)
            types[family] = kind
        elif line and not line.startswith("#"):
            match = SAMPLE.match(line)
            if match:
                labels = dict(LABEL.findall(match.group(2) or ""))
                samples.append((match.group(1), labels, float(match.group(3))))
    return types, samples


def family_of(sample: str, types: dict[str, str]) -> str | None:
    for suffix in ("", "_total", "_bucket", "_sum", "_count", "_created"):
        if suffix == "" or sample.endswith(suffix):
            base = sample[: len(sample) - len(suffix)] if suffix else sample
            if base in types:
                return base
    return None


def series_text(name: str, labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def annotations(rules: dict, alert: str, labels: dict[str, str]) -> dict[str, str]:
    """The alert's annotations as Prometheus renders them, for templates that use only `{{ $labels.NAME }}`."""
    rule = next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == alert)
    rendered = {}
    for key, template in (rule.get("annotations") or {}).items():
        text = re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: labels[m.group(1)], template)
        if "{{" in text:
            raise ValueError(f"{alert}: annotation {key} uses a template this script does not render: {template}")
        rendered[key] = text
    return rendered


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scrape", type=pathlib.Path, required=True)
    parser.add_argument("--rules", type=pathlib.Path, required=True)
    parser.add_argument("--tests", type=pathlib.Path, nargs="+", required=True, help="hand-written rule tests")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="the test file to write")
    args = parser.parse_args()

    types, samples = parse_scrape(args.scrape.read_text())
    names = {name for name, _, _ in samples}
    label_keys: dict[str, set[str]] = {}
    for name, labels, _ in samples:
        label_keys.setdefault(name, set()).update(labels)
    problems = []

    rules = yaml.safe_load(args.rules.read_text())
    used = {m for g in rules["groups"] for r in g["rules"] for m in RULE_METRIC.findall(r["expr"])}
    problems += [f"{args.rules}: {m} is not in a real etagd scrape" for m in sorted(used - names)]

    for test_file in args.tests:
        for test in yaml.safe_load(test_file.read_text())["tests"]:
            for series in test.get("input_series", []):
                match = SAMPLE.match(series["series"] + " 0")
                name = match.group(1)
                keys = set(dict(LABEL.findall(match.group(2) or ""))) - set(TARGET_LABELS)
                if name not in names:
                    problems.append(f"{test_file}: series {name} is not in a real etagd scrape")
                elif keys - label_keys[name]:
                    problems.append(f"{test_file}: {name} has labels {sorted(keys - label_keys[name])} etagd never sets")
                elif "outcome" in keys:
                    outcome = dict(LABEL.findall(match.group(2)))["outcome"]
                    if outcome not in OUTCOMES:
                        problems.append(f"{test_file}: outcome {outcome!r} is not one etagd counts")

    if problems:
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1

    input_series = []
    counters: dict[tuple[str, str], float] = {}
    for name, labels, value in samples:
        family = family_of(name, types)
        if name.endswith("_created") or family is None:
            continue
        full = {**labels, **TARGET_LABELS}
        cumulative = types[family] in {"counter", "histogram", "summary"}
        values = f"0+{value:g}x{MINUTES}" if cumulative else f"{value:g}x{MINUTES}"
        input_series.append({"series": series_text(name, full), "values": values})
        if name == "etagd_requests_total":
            counters[("outcome", labels["outcome"])] = value
        elif cumulative or name == "etagd_memcached_servers_down":
            counters[(name, "")] = value

    requests = {k[1]: v for k, v in counters.items() if k[0] == "outcome"}
    answered = sum(requests.get(o, 0) for o in ("hit", "not_modified", "stale"))
    cacheable = answered + requests.get("miss", 0)
    at = f"{MINUTES - 5}m"
    expr_tests = [
        {
            # Per minute, rounded: promtool compares floats exactly, and rates are off in the last bit.
            "expr": "round(job_outcome:etagd_requests:rate5m * 60)",
            "eval_time": at,
            "exp_samples": [
                {"labels": series_text("", {"job": "etagd", "outcome": o}), "value": v}
                for o, v in sorted(requests.items())
            ],
        }
    ]
    if cacheable:
        expr_tests.append(
            {
                # In parts per 10 000, rounded half up as PromQL's round() does.
                "expr": "round(job:etagd_cache_hit_ratio:rate5m * 10000)",
                "eval_time": at,
                "exp_samples": [
                    {"labels": series_text("", {"job": "etagd"}), "value": math.floor(answered / cacheable * 10000 + 0.5)}
                ],
            }
        )
    weakened = counters.get(("etagd_weakened_validators_total", ""), 0)
    down = counters.get(("etagd_memcached_servers_down", ""), 0)
    alert_tests = [
        {
            "alertname": "EtagdWeakenedValidatorsSeen",
            "eval_time": at,
            "exp_alerts": [
                {
                    "exp_labels": {"severity": "info", "job": "etagd"},
                    "exp_annotations": annotations(rules, "EtagdWeakenedValidatorsSeen", {"job": "etagd"}),
                }
            ]
            if weakened
            else [],
        },
        {"alertname": "EtagdMemcachedServersDown", "eval_time": at, "exp_alerts": []},
        {"alertname": "EtagdStoreErrors", "eval_time": at, "exp_alerts": []},
        {"alertname": "EtagdHitRatioCollapsed", "eval_time": at, "exp_alerts": []},
        {"alertname": "EtagdOriginSlow", "eval_time": at, "exp_alerts": []},
    ]
    if down:
        print(f"the scrape reports {down:g} Memcached server(s) down; a healthy sidecar was expected", file=sys.stderr)
        return 1
    test = {
        "rule_files": [str(args.rules.resolve())],
        "evaluation_interval": "1m",
        "tests": [
            {
                "name": "a real etagd scrape, each counter growing by its scraped value per minute",
                "interval": "1m",
                "input_series": input_series,
                "promql_expr_test": expr_tests,
                "alert_rule_test": alert_tests,
            }
        ],
    }
    args.out.write_text(json.dumps(test, indent=1))
    print(
        f"{args.out}: {len(input_series)} series from the scrape, outcomes {dict(sorted(requests.items()))}, "
        f"hit ratio {answered:g}/{cacheable:g}, weakened validators {weakened:g}; every metric of the rules and "
        f"every series of {len(args.tests)} hand-written test file(s) is in the scrape"
    )
    return 0


# The outcome label values etagd counts (crates/etagd/src/metrics.rs).
OUTCOMES = {"hit", "not_modified", "miss", "pass", "stale", "bypass", "error"}

if __name__ == "__main__":
    sys.exit(main())
