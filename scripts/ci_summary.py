"""One closing line over several pytest logs: the sum of their final summary counts.

    python3 scripts/ci_summary.py main-suite.log vulkan.log   ->   ci: 731 passed, 0 failed, 14 skipped
"""

from __future__ import annotations

import re
import sys

SUMMARY = re.compile(r"^=*\s*(\d+ (passed|failed|skipped|error|errors|deselected)[^=]*) in [\d.]+s")


def main(paths: list[str]) -> int:
    totals = {"passed": 0, "failed": 0, "skipped": 0}
    for path in paths:
        try:
            lines = open(path, errors="replace").read().splitlines()
        except FileNotFoundError:
            continue
        for line in lines:
            m = SUMMARY.match(line.strip())
            if not m:
                continue
            for n, what in re.findall(r"(\d+) (passed|failed|skipped|errors?)", m.group(1)):
                totals["failed" if what.startswith("error") else what] += int(n)
    print(f"ci: {totals['passed']} passed, {totals['failed']} failed, {totals['skipped']} skipped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
