"""Checks an etagd.toml as the deploy files ship it: valid TOML, only the keys etagd reads, values of the right type.

This mirrors the config schema of crates/etagd (namespace, max_body_bytes, [[route]] tables). It catches typos
such as `stale_while_revalidte` that TOML itself accepts. When etagd learns a new key, add it to the tables here.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

TOP_LEVEL: dict[str, type] = {"namespace": str, "max_body_bytes": int, "route": list}
ROUTE: dict[str, type] = {
    "prefix": str,
    "ttl": str,
    "tags": list,
    "stale_while_revalidate": str,
    "stale_if_error": str,
}
# "30s", "10m", "1h", "1d", "500ms", or "forever" (until invalidated) for a ttl.
DURATION = re.compile(r"^[0-9]+(ms|s|m|h|d)$")


def check(text: str, where: str) -> tuple[dict[str, Any], list[str]]:
    """Parses `text` and returns it with a list of problems, each prefixed with `where`."""
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        return {}, [f"{where}: not valid TOML: {e}"]
    problems = _check_table(config, TOP_LEVEL, where)
    if not config.get("namespace"):
        problems.append(f"{where}: `namespace` must be set: every app sharing the Memcached servers needs its own")
    for number, route in enumerate(config.get("route") or [], start=1):
        at = f"{where} [[route]] #{number}"
        if not isinstance(route, dict):
            problems.append(f"{at}: must be a table")
            continue
        problems += _check_table(route, ROUTE, at)
        if not str(route.get("prefix", "")).startswith("/"):
            problems.append(f"{at}: `prefix` must be a path starting with /")
        for key in ("ttl", "stale_while_revalidate", "stale_if_error"):
            value = route.get(key)
            if isinstance(value, str) and not (DURATION.match(value) or (key == "ttl" and value == "forever")):
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
