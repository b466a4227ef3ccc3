#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""check-rename-order.py MODEL C_SOURCE - tie rename_locked() to its model.

models/registry.pml proves the rename protocol for one order of five
steps (link the new node, untrust the old one, switch entry->name, trust
the new one, unlink the old one); its BROKEN_MARK_LATE and
BROKEN_TRUST_EARLY variants show that the order matters. Nothing in a
test run can observe that order deterministically: the steps run under
the registry mutex in a few nanoseconds and a lookup racing them sees a
wrong order only by luck. This check reads both files instead: it takes
the renamer's steps from the model as the model is checked (no BROKEN_*
macro defined), finds the statement that does each step in
rename_locked(), and fails unless each is there exactly once, in the
model's order, with the release stores the model's ordering argument
relies on (the switch and the trusting of the new node).

Exit status 0 when they agree, 1 (with the reason) when not.
"""
import re
import sys

# Model statement -> (step, regex of the C statement that does it).
STEPS = [
    (r"linked\[m\]\s*=\s*true", "link the new node",
     r"cds_lfht_add\(reg->by_name,"),
    (r"trusted\[o\]\s*=\s*false", "untrust the old node",
     r"atomic_store_explicit\(&cur->trusted,\s*false,"),
    (r"\bcur\s*=\s*m\b", "switch entry->name (release)",
     r"atomic_store_explicit\(&e->name,\s*n,\s*memory_order_release\)"),
    (r"trusted\[m\]\s*=\s*true", "trust the new node (release)",
     r"atomic_store_explicit\(&n->trusted,\s*true,\s*memory_order_release\)"),
    (r"linked\[o\]\s*=\s*false", "unlink the old node",
     r"cds_lfht_del\(reg->by_name,\s*&cur->node\)"),
]


def body(text, start_re, what):
    """The lines from the line matching start_re to the next '}' in column 0."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.search(start_re, line):
            for j in range(i + 1, len(lines)):
                if lines[j].startswith("}"):
                    return lines[i:j]
            break
    sys.exit(f"check-rename-order: {what} not found")


def model_steps(path):
    """Model step indices in execution order, BROKEN_* macros undefined."""
    live, stack, order = True, [], []
    for line in body(open(path).read(), r"^proctype renamer\(", "proctype renamer in " + path):
        s = line.strip()
        m = re.match(r"#(ifdef|ifndef)\s+(\w+)", s)
        if m:
            stack.append(live)
            live = live and (m.group(1) == "ifndef")  # nothing is defined
            continue
        if s.startswith("#else"):
            live = stack[-1] and not live
            continue
        if s.startswith("#endif"):
            live = stack.pop()
            continue
        if not live:
            continue
        for k, (model_re, _, _) in enumerate(STEPS):
            if re.search(model_re, s):
                order.append(k)
    return order


def c_steps(path):
    """C step indices in source order within rename_locked()."""
    order = []
    code = "\n".join(body(open(path).read(), r"^static int rename_locked\(",
                          "rename_locked() in " + path))
    # Statements may wrap; match on the whole body, comments removed.
    code = re.sub(r"/\*.*?\*/", "", code, flags=re.S)
    hits = []
    for k, (_, _, c_re) in enumerate(STEPS):
        found = [m.start() for m in re.finditer(c_re, code)]
        if len(found) != 1:
            sys.exit(f"check-rename-order: rename_locked() has {len(found)} statements that "
                     f"{STEPS[k][1]} (/{c_re}/), expected exactly one")
        hits.append((found[0], k))
    order = [k for _, k in sorted(hits)]
    return order


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: check-rename-order.py MODEL C_SOURCE")
    want, got = model_steps(sys.argv[1]), c_steps(sys.argv[2])
    if sorted(want) != list(range(len(STEPS))):
        sys.exit(f"check-rename-order: the model's renamer has steps {want}, "
                 f"expected each of 0..{len(STEPS) - 1} once")
    if want != got:
        fmt = lambda o: "; ".join(STEPS[k][1] for k in o)
        print(f"check-rename-order: rename_locked() does the steps in another order than "
              f"models/registry.pml checked.\n  model: {fmt(want)}\n  C:     {fmt(got)}",
              file=sys.stderr)
        return 1
    print("check-rename-order: rename_locked() follows models/registry.pml: " +
          "; ".join(STEPS[k][1] for k in got))
    return 0


if __name__ == "__main__":
    sys.exit(main())
