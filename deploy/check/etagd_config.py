"""Checks an etagd.toml as the deploy files ship it: valid TOML, only the keys etagd reads, values of the right type.

This mirrors `FileConfig` in crates/etagd/src/config.rs and `FileRoute` in crates/etagd/src/config/route.rs, which reject unknown keys at start-up
(exit 64); checking here finds a typo such as `stale_while_revalidte` before a rollout instead of in a crash loop.
When etagd learns a new key, add it to the tables here.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

TOP_LEVEL: dict[str, type] = {
    "namespace": str,
    "max_body_bytes": int,
    "max_object_fraction": float,
    "validator": str,
    "stale_while_revalidate": str,
    "stale_if_error": str,
    "route": list,
}
VALIDATORS = {"timestamp", "content"}
NAMESPACE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
ROUTE: dict[str, type] = {
    "prefix": str,
    "ttl": str,
    "negative_ttl": str,
    "ttl_override": str,
    "ttl_max": str,
    "tags": list,
    "stale_while_revalidate": str,
    "stale_if_error": str,
}
# humantime durations as etagd parses them ("30s", "10m", "1h 30m", "500ms", "2days"), or "forever" (until
# invalidated) for a ttl.
UNIT = (
    r"(nsec|ns|usec|us|msec|ms|seconds|second|secs|sec|s|minutes|minute|mins|min|m|hours|hour|hrs|hr|h"
    r"|days|day|d|weeks|week|w|months|month|M|years|year|y)"
)
DURATION = re.compile(rf"^\s*([0-9]+\s*{UNIT}\s*)+$")


def check(text: str, where: str) -> tuple[dict[str, Any], list[str]]:
    """Parses `text` and returns it with a list of problems, each prefixed with `where`."""
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        return {}, [f"{where}: not valid TOML: {e}"]
    problems = _check_table(config, TOP_LEVEL, where)
    if not NAMESPACE.match(str(config.get("namespace", ""))):
        problems.append(
            f"{where}: `namespace` must be set, 1 to 32 of A-Z a-z 0-9 _ -: every app sharing the Memcached "
            "servers needs its own"
        )
    if "validator" in config and config["validator"] not in VALIDATORS:
        problems.append(f"{where}: `validator` must be one of {sorted(VALIDATORS)}")
    for key in ("stale_while_revalidate", "stale_if_error"):
        if isinstance(config.get(key), str) and not DURATION.match(config[key]):
            problems.append(f'{where}: `{key} = "{config[key]}"` is not a duration such as "30s", "10m", "1h"')
    for number, route in enumerate(config.get("route") or [], start=1):
        at = f"{where} [[route]] #{number}"
        if not isinstance(route, dict):
            problems.append(f"{at}: must be a table")
            continue
        problems += _check_table(route, ROUTE, at)
        if not str(route.get("prefix", "")).startswith("/"):
            problems.append(f"{at}: `prefix` must be a path starting with /")
        for key in ("ttl", "negative_ttl", "ttl_override", "ttl_max", "stale_while_revalidate", "stale_if_error"):
            value = route.get(key)
            lifetime = key in ("ttl", "negative_ttl", "ttl_override")
            if isinstance(value, str) and not (DURATION.match(value) or (lifetime and value == "forever")):
                problems.append(f'{at}: `{key} = "{value}"` is not a duration such as "30s", "10m", "1h"')
        if not all(isinstance(tag, str) and tag for tag in route.get("tags") or []):
            problems.append(f"{at}: `tags` must be non-empty strings")
    return config, problems


def _check_table(table: dict[str, Any], schema: dict[str, type], where: str) -> list[str]:
    problems = []
    for key, value in table.items():
        if key not in schema:
            problems.append(f"{where}: unknown key `{key}` (etagd reads {', '.join(schema)})")
        elif not isinstance(value, schema[key]) or isinstance(value, bool):
            problems.append(f"{where}: `{key}` must be a {schema[key].__name__}")
    return problems
