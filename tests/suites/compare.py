"""Compares two JUnit reports of one suite: which tests pass on the first target and not on the
second, grouped by the first line of their failure.

    python3 tests/suites/compare.py BASE.xml OTHER.xml
"""

import collections
import re
import sys
import xml.etree.ElementTree as ET


def outcomes(path):
    result = {}
    for case in ET.parse(path).iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        if failure is not None:
            text = (failure.get("message") or failure.text or "").strip()
            result[name] = ("failed", text.splitlines()[0][:160] if text else "")
        elif case.find("skipped") is not None:
            result[name] = ("skipped", "")
        else:
            result[name] = ("passed", "")
    return result


def main():
    base, other = outcomes(sys.argv[1]), outcomes(sys.argv[2])
    passed = [n for n, (o, _) in base.items() if o == "passed"]
    lost = [n for n in passed if other.get(n, ("missing", ""))[0] != "passed"]
    print(f"passed on base: {len(passed)}; of those, passed on other: {len(passed) - len(lost)}"
          f" ({100 * (len(passed) - len(lost)) / max(len(passed), 1):.1f}%)")
    groups = collections.defaultdict(list)
    for n in lost:
        outcome, why = other.get(n, ("missing", ""))
        # Numbers and quoted names vary between instances of one cause.
        key = re.sub(r"\d+", "N", f"{outcome}: {why}")
        groups[key].append(n)
    for key, names in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        print(f"\n{len(names):4d}  {key}")
        for n in names[:4]:
            print(f"        {n}")
        if len(names) > 4:
            print(f"        ... {len(names) - 4} more")


if __name__ == "__main__":
    main()
