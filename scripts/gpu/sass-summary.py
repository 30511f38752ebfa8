#!/usr/bin/env python3
"""Instruction counts of the kernels in `cuobjdump -sass` output, for the GPU machine (this machine has no
disassembler). Usage: sass-summary.py ALL.sass [NAME_SUBSTRING]

Per kernel whose mangled name contains NAME_SUBSTRING: the static instruction count (NOPs apart), the opcode histogram
(most frequent first), and the counts that say whether the attention kernels' hot paths compiled as intended:
MUFU.EX2 and how many of them sit in exp2f's subnormal wrapper (an FSETP.GEU just before, an FMUL just after),
LDGSTS (cp.async) and the integer arithmetic around them, HGMMA (wgmma)."""
import re
import shutil
import subprocess
import sys
from collections import Counter

FUNC = re.compile(r"Function\s*:\s*(\S+)")
INSTR = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)")


def parse(path):
    kernels, name, body = [], None, []
    with open(path, errors="replace") as f:
        for line in f:
            m = FUNC.search(line)
            if m:
                if name:
                    kernels.append((name, body))
                name, body = m.group(1), []
                continue
            m = INSTR.search(line)
            if m and name:
                body.append(m.group(1))
    if name:
        kernels.append((name, body))
    return kernels


def demangle(names):
    if not shutil.which("c++filt"):
        return {n: n for n in names}
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    return dict(zip(names, out)) if len(out) == len(names) else {n: n for n in names}


def summary(name, ops):
    real = [o for o in ops if o != "NOP"]
    base = Counter(o.split(".")[0] for o in real)
    ex2 = [i for i, o in enumerate(ops) if o.startswith("MUFU.EX2")]
    wrapped = sum(1 for i in ex2 if any(o.startswith("FSETP.GEU") for o in ops[max(0, i - 3):i]))
    lines = [f"{name}", f"  instructions {len(real)}  MUFU.EX2 {len(ex2)} (in the subnormal wrapper: {wrapped})  "
             f"LDGSTS {base['LDGSTS']}  HGMMA {base['HGMMA']}  HMMA {base['HMMA']}  BAR {base['BAR']}"]
    lines.append("  " + "  ".join(f"{op} {n}" for op, n in base.most_common(24)))
    return "\n".join(lines)


def main():
    path = sys.argv[1]
    want = sys.argv[2] if len(sys.argv) > 2 else ""
    kernels = [(n, b) for n, b in parse(path) if want in n]
    if not kernels:
        print(f"no kernel matching {want!r} in {path}")
        return 1
    names = demangle([n for n, _ in kernels])
    for n, b in sorted(kernels, key=lambda k: names[k[0]]):
        print(summary(names[n], b))
    return 0


if __name__ == "__main__":
    sys.exit(main())
