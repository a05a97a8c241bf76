"""What safe text costs the outputs: keysweep.textsafe against plain ``json.dumps``, in one run (ratios).

python bench/textsafe_cost.py [FINDINGS]  ->  per-path cost of safe_text, and the JSON report's time both ways
"""

from __future__ import annotations

import json
import sys
import time

from keysweep.textsafe import dumps_json, safe_text


def _best(fn: object, rounds: int = 3) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return min(times)


def main(count: int) -> None:
    paths = [f"/srv/app{i}/config/settings.d/file{i}.env" for i in range(count)]
    hostile = [p + "\x1b[2J\u202e" for p in paths]
    doc = {
        "findings": [
            {
                "rule": "aws-access-key-id",
                "key_id": "AKIAXYZDQCEN4B6JSJQI",
                "fingerprint": "ab" * 16,
                "location": {"kind": "file", "path": p, "line": 3},
                "verification": None,
                "severity": "critical",
                "has_secret": True,
            }
            for p in paths
        ]
    }
    plain = _best(lambda: [safe_text(p) for p in paths])
    escaped = _best(lambda: [safe_text(p) for p in hostile])
    raw = _best(lambda: json.dumps(doc, indent=2, ensure_ascii=False))
    safe = _best(lambda: dumps_json(doc, indent=2))
    print(
        f"safe_text: {plain / count * 1e6:.2f} us per plain path, {escaped / count * 1e6:.2f} us per path with escapes"
    )
    print(
        f"JSON of {count} findings: json.dumps {raw * 1000:.0f} ms, textsafe.dumps_json {safe * 1000:.0f} ms "
        f"(ratio {safe / raw:.2f})"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000)
