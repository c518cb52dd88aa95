#!/usr/bin/env python3
"""Fails when the library's modules import each other in a circle.

Reads every non-test module under src/ (not src/bin), collects the paths it names through
`crate::` and `super::` in code (comments and doc comments are skipped), and checks two
graphs for cycles: the crate's top-level modules (relay, call, server, ...) and, inside each
of them, its direct children (server::http, server::handshake, ...). A module's own
children do not count as an edge (a parent may use what it declares).

    python3 scripts/check-imports.py [src ...]   (one crate's src/ each; default: src)
"""

import os
import re
import sys



def module_of(root, path):
    parts = os.path.relpath(path, root)[:-3].split(os.sep)
    if parts[0] == "bin":
        return None
    if parts[-1] in ("lib", "mod"):
        parts = parts[:-1]
    return tuple(parts)


def code(text):
    """The file without comments and without its `#[cfg(test)] mod tests { ... }` tail."""
    text = re.split(r"#\[cfg\(test\)\]\s*mod tests\s*\{", text)[0]
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//")[0] for line in text.splitlines())


HEAD = re.compile(r"\b(crate|super)::")
NAME = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*")


def paths(text):
    """Every `crate::…` / `super::…` path, with `{a, b::c}` groups expanded to their items'
    first names: [("crate", ["relay", "Ending"]), ("super", ["super", "http"]), ...]."""
    out = []

    def walk(i, prefix, head):
        names = list(prefix)
        while True:
            m = NAME.match(text, i)
            if m:
                names.append(m.group(1))
                i = m.end()
                if text.startswith("::", i):
                    i += 2
                    continue
                out.append((head, names))
                return i
            if text.startswith("{", i):
                depth, j, start, items = 1, i + 1, i + 1, []
                while j < len(text) and depth:
                    if text[j] == "{":
                        depth += 1
                    elif text[j] == "}":
                        depth -= 1
                    if depth == 1 and text[j] == "," or depth == 0:
                        items.append(text[start:j])
                        start = j + 1
                    j += 1
                for item in items:
                    m = NAME.match(item)
                    if m and m.group(1) != "self":
                        out.append((head, names + [m.group(1)]))
                    elif names:
                        out.append((head, names))
                return j
            if names:
                out.append((head, names))
            return i

    for m in HEAD.finditer(text):
        walk(m.end(), [], m.group(1))
    return out


def edges(root):
    found = {}
    for directory, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(directory, name)
            module = module_of(root, path)
            if module is None or "tests" in module:
                continue
            with open(path, encoding="utf-8") as f:
                text = code(f.read())
            for head, names in paths(text):
                if head == "crate":
                    target = names
                else:
                    ups = 1
                    while names and names[0] == "super":
                        ups += 1
                        names = names[1:]
                    target = list(module[: len(module) - ups]) + names
                if target:
                    found.setdefault(module, set()).add(tuple(target))
    return found


def graph(found, depth):
    """Edges between modules `depth` levels deep that share their parent."""
    g = {}
    for source, targets in found.items():
        if len(source) < depth:
            continue
        a = source[:depth]
        for target in targets:
            if len(target) < depth:
                continue
            b = target[:depth]
            if a == b or a[:-1] != b[:-1]:
                continue
            g.setdefault(a, set()).add(b)
    return g


def cycles(g):
    state, stack, out = {}, [], []

    def visit(u):
        state[u] = "open"
        stack.append(u)
        for v in sorted(g.get(u, ())):
            if state.get(v) == "open":
                out.append(stack[stack.index(v):] + [v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = "done"

    for u in sorted(g):
        if u not in state:
            visit(u)
    return out


def check(root):
    found = edges(root)
    bad = []
    for depth in (1, 2):
        for cycle in cycles(graph(found, depth)):
            bad.append(" -> ".join("::".join(m) for m in cycle))
    if bad:
        print(f"import circles between modules of {root}:", file=sys.stderr)
        for line in bad:
            print("  " + line, file=sys.stderr)
        for depth in (1, 2):
            g = graph(found, depth)
            for cycle in cycles(g):
                for a, b in zip(cycle, cycle[1:]):
                    users = sorted(
                        "::".join(s)
                        for s, ts in found.items()
                        if s[:depth] == a and any(t[:depth] == b for t in ts)
                    )
                    print(f"  {'::'.join(a)} -> {'::'.join(b)}: in {', '.join(users)}", file=sys.stderr)
        return 1
    print(f"imports: {root}: no circles among {len(found)} modules (top level, and children of each)")
    return 0


def main():
    roots = sys.argv[1:] or ["src"]
    return max(check(root) for root in roots)


if __name__ == "__main__":
    sys.exit(main())
