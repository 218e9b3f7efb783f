"""Audit the installed dependencies for known vulnerabilities with pip-audit.

Fails (exit 1) when pip-audit reports a vulnerability. pip-audit asks PyPI's per-release
JSON API (or OSV) for advisories; a machine that reaches neither gets every package back
as "could not be audited". That is reported loudly — with how many packages went
unaudited — and recorded in .artifacts/audit.json for docs/reliability.md, rather than
passed off as a clean audit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / ".artifacts" / "audit.json"


def main() -> int:
    result = subprocess.run(
        [sys.executable, "-m", "pip_audit", "--skip-editable", "--progress-spinner", "off",
         "--format", "json"],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        print(result.stdout[-2000:] + result.stderr[-2000:], file=sys.stderr)
        print("pip-audit did not produce a report", file=sys.stderr)
        return 1
    dependencies = report.get("dependencies", [])
    audited = [d for d in dependencies if "skip_reason" not in d]
    skipped = [d for d in dependencies if "skip_reason" in d and d["name"] != "shelflife"]
    vulnerable = [d for d in audited if d.get("vulns")]
    for dependency in vulnerable:
        for vuln in dependency["vulns"]:
            fixed = ", ".join(vuln.get("fix_versions", [])) or "no fixed release yet"
            print(f"{dependency['name']} {dependency['version']}: {vuln['id']} (fixed in {fixed})")
    if audited:
        note = f"{len(audited)} packages checked against the advisory database"
    else:
        note = (
            "no advisory database was reachable from this machine (PyPI's per-release JSON "
            "API and OSV); nothing could be audited"
        )
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    RECORD.write_text(
        json.dumps(
            {
                "audited": len(audited),
                "skipped": len(skipped),
                "vulnerabilities": sum(len(d["vulns"]) for d in vulnerable),
                "note": note,
            }
        )
    )
    print(f"pip-audit: {note}; {len(skipped)} skipped, {len(vulnerable)} vulnerable")
    if not audited:
        print("WARNING: the dependency audit ran but audited nothing (see above)")
    return 1 if vulnerable else 0


if __name__ == "__main__":
    sys.exit(main())
