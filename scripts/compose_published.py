#!/usr/bin/env python3
"""Compose one bundled fixture per Intel CPU generation from register values published
on the web (scripts/data/published-vmx.json: each entry has the address it was read from
and where in that page). The host around the registers is composed: four CPUs on one
node, every CPU given the published values. Nothing here is presented as recorded.

Run: python3 scripts/compose_published.py  (rewrites fixtures/pub-*.json)
"""

from __future__ import annotations

import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from hostgen import ECX_VMX, Reading, compose, v  # noqa: E402

# One source per generation: the fullest published set, preferring a log that also
# gives the CPUID signature and IA32_FEATURE_CONTROL.
CHOICES = {
    "penryn": "lydiatgit/mytestproject",
    "westmere": "VmxCaps 370M",
    "sandy-bridge": "VmxCaps 2320",
    "ivy-bridge": "jrweis01/RedHat",
    "haswell": "quyenxl0106/",
    "broadwell": "hrmshandy/homestead-7",
    "skylake": "ShaGichara/",
    "skylake-x": "VmxCaps 9980XE",
    "kaby-lake": "bsuareztiret/",
    "coffee-lake": "jayowsh/",
    "ice-lake": "dineshreddy11/",
    "tiger-lake": "maxengel/",
    "raptor-lake": "mrexodia/",
}


def pick(entries, key):
    if key.startswith("VmxCaps "):
        label = key.split(" ", 1)[1]
        found = [e for e in entries if "VmxCaps" in e["source_url"] and f"'{label}'" in e["cpu"]]
    else:
        found = [e for e in entries if key in (e.get("source_repo_path") or e["source_url"])]
    if len(found) != 1:
        raise SystemExit(f"{key}: {len(found)} matching entries")
    return found[0]


def main():
    entries = json.load(open(os.path.join(HERE, "data", "published-vmx.json")))
    out = os.path.join(os.path.dirname(HERE), "fixtures")
    for slug, key in CHOICES.items():
        e = pick(entries, key)
        msrs = {int(k, 16): int(val, 16) for k, val in e["msrs"].items()}
        sig = int(e["cpuid_signature"], 16) if e.get("cpuid_signature") else None
        m = re.search(r"Hst: ([0-9a-f]{8}) ([0-9a-f]{8}) ([0-9a-f]{8}) ([0-9a-f]{8})", e["locator"])
        ecx = int(m.group(3), 16) if m else ECX_VMX
        notes = [f"Registers published for {e['cpu']} ({e['environment']}).",
                 f"Where: {e['locator']}"]
        if e.get("notes"):
            notes.append(e["notes"])
        notes.append("Composed around them: 4 CPUs on one node, each CPU given the same values.")
        if 0x3A not in msrs:
            notes.append("IA32_FEATURE_CONTROL was not published: 0x5 (lock | VMX outside SMX) is composed.")
        if not m:
            notes.append("CPUID leaf 1 ECX carries only the VMX bit (not published).")
        if sig is None:
            notes.append("The CPUID signature was not published: family/model/stepping are left 0.")
        fc = msrs.pop(0x3A, 0x5)
        basic = msrs.pop(0x480)
        doc = compose(
            f"pub-{slug}", f"{e['generation']}: {e['cpu'].split(' (')[0]}, published VMX registers",
            [{"what": "IA32_VMX_BASIC and the other VMX capability MSRs", "url": e["source_url"]}],
            " ".join(notes), nodes={0: [0, 1, 2, 3]}, signature=sig or 0, ecx=ecx,
            model_name=e["cpu"].split(" (")[0], flags="fpu tsc msr pae apic lm vmx",
            feat_ctl=v(fc), vmx_basic=v(basic),
            extra_msrs={i: Reading(value=val) for i, val in msrs.items()})
        with open(os.path.join(out, f"pub-{slug}.json"), "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        print(f"fixtures/pub-{slug}.json  0x{basic:016x}  {e['source_url']}")


if __name__ == "__main__":
    main()
