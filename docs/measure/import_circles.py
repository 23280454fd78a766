#!/usr/bin/env python3
"""Import circles between sibling modules of every crate of the workspace, and lines per crate.

A module (file) A imports module B when it names a path into B (`crate::x::y`, `super::x`, `self::x`, or a
child declared beside it). Two siblings import in a circle when each reaches the other, directly or through
other siblings under the same parent; an edge between a module and its own ancestor or descendant (a parent
re-exporting its children, a child using its parent's trait) is the ordinary layout of a Rust module tree and
is not counted. Usage: python3 docs/measure/import_circles.py [REPO] (default: the current directory).
"""
import os
import re
import sys


def crates(root):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in ("target", ".git", "fuzz", "node_modules")]
        if "Cargo.toml" in filenames and os.path.isdir(os.path.join(dirpath, "src")):
            yield dirpath


def modules(src):
    """Module path (tuple) -> file, for the files under src/ (lib.rs / main.rs / bin are roots)."""
    found = {}
    for dirpath, _, filenames in os.walk(src):
        for name in filenames:
            if not name.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, name), src)
            parts = rel[:-3].split(os.sep)
            if parts[-1] == "mod":
                parts = parts[:-1]
            if parts in (["lib"], ["main"]):
                parts = []
            if parts and parts[0] == "bin":
                continue
            found.setdefault(tuple(parts), os.path.join(dirpath, name))
    return found


PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP = re.compile(r"\buse\s+(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*)\}", re.S)
CHILD_USE = re.compile(r"^\s*(pub(?:\([^)]*\))?\s+)?use\s+([a-z_][a-z0-9_]*)::", re.M)


def resolve(mods, here, base, rest):
    if base == "crate":
        start = []
    elif base == "super":
        start = list(here[:-1])
        while rest and rest[0] == "super":
            start, rest = start[:-1], rest[1:]
    else:
        start = list(here)
    best = tuple(start)
    path = list(start)
    for part in rest:
        path.append(part)
        if tuple(path) in mods:
            best = tuple(path)
        else:
            break
    return best


def edges(mods):
    out = {m: set() for m in mods}
    for mod, path in mods.items():
        text = open(path, encoding="utf-8").read()
        text = re.sub(r"//[^\n]*", "", text)
        targets = []
        for base, rest in PATH.findall(text):
            targets.append(resolve(mods, mod, base, rest.strip(":").split("::")))
        for base, prefix, group in USE_GROUP.findall(text):
            for item in re.split(r"[,\s{}]+", group):
                first = item.split("::")[0]
                if first and first != "self":
                    targets.append(resolve(mods, mod, base, prefix.strip(":").split("::") + [first] if prefix else [first]))
        for public, child in CHILD_USE.findall(text):
            if public:
                continue  # a re-export of a child is the parent's interface, not a dependency
            if mod + (child,) in mods:
                targets.append(mod + (child,))
        for target in targets:
            if target != mod:
                out[mod].add(target)
    return out


def sibling_edges(graph):
    """(parent, child_a) -> child_b for edges between different subtrees of a common parent."""
    result = {}
    for a, targets in graph.items():
        for b in targets:
            common = 0
            while common < min(len(a), len(b)) and a[common] == b[common]:
                common += 1
            if common == len(a) or common == len(b):
                continue  # ancestor or descendant
            parent = a[:common]
            result.setdefault(parent, {}).setdefault(a[common], set()).add(b[common])
    return result


def cycles(graph):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "."
    total = 0
    for crate in sorted(crates(root)):
        src = os.path.join(crate, "src")
        mods = modules(src)
        lines = sum(sum(1 for _ in open(p, encoding="utf-8")) for p in mods.values())
        largest = max(mods.values(), key=lambda p: sum(1 for _ in open(p, encoding="utf-8")))
        largest_lines = sum(1 for _ in open(largest, encoding="utf-8"))
        found = []
        for parent, graph in sibling_edges(edges(mods)).items():
            for component in cycles(graph):
                found.append("::".join(("crate",) + parent) + ": " + " <-> ".join(component))
        total += len(found)
        name = os.path.relpath(crate, root)
        print(f"{name}: {lines} lines in src/, largest {os.path.relpath(largest, crate)} ({largest_lines}), "
              f"{len(found)} circle(s)")
        for circle in found:
            print(f"    circle {circle}")
    print(f"import circles: {total}")


if __name__ == "__main__":
    main()
