#!/usr/bin/env python3
"""Checks that src/ keeps the layers src/lib.rs documents.

The crate doc's "# Layers" section is a numbered list; each item names its modules as
[`module`] links. This script reads that list, finds which top-level module names which
(`crate::a` in production code; `#[cfg(test)]` modules left out), and fails when
- a top-level module is missing from the list, or listed twice;
- a module imports one from a higher layer (a smaller number);
- modules of one layer import each other around a loop.
So the documented map and the code cannot drift apart.

usage: python3 scripts/check_layers.py [SRC]   (default: src)
"""
import os
import re
import sys

SRC = sys.argv[1] if len(sys.argv) > 1 else "src"


def read_layers(lib_rs):
    """{module: layer number} from the '# Layers' list of the crate doc."""
    layers, number, inside = {}, None, False
    for line in open(lib_rs, encoding="utf-8"):
        if not line.startswith("//!"):
            continue
        text = line[3:].strip()
        if text.startswith("#"):
            inside = text == "# Layers"
            continue
        if not inside:
            continue
        item = re.match(r"(\d+)\.\s", text)
        if item:
            number = int(item.group(1))
        if number is None:
            continue
        for name in re.findall(r"\[`([a-z_][a-z0-9_]*)(?:::[^`]*)?`\]", text):
            if name in layers and layers[name] != number:
                sys.exit(f"check_layers: `{name}` is listed in layers {layers[name]} and {number}")
            layers[name] = number
    if not layers:
        sys.exit(f"check_layers: no '# Layers' list with [`module`] links in {lib_rs}")
    return layers


def production_code(path):
    text = open(path, encoding="utf-8").read()
    text = text.split("#[cfg(test)]")[0]
    return re.sub(r"//.*", "", text)


def top_level_modules(src):
    """{module: [files]} for every top-level module (a file or a folder) except lib and main."""
    modules = {}
    for entry in sorted(os.listdir(src)):
        path = os.path.join(src, entry)
        if entry.endswith(".rs") and entry not in ("lib.rs", "main.rs"):
            modules[entry[:-3]] = [path]
        elif os.path.isdir(path):
            modules[entry] = [
                os.path.join(root, f)
                for root, _, files in os.walk(path)
                for f in files
                if f.endswith(".rs")
            ]
    return modules


def imports(files, names):
    """The top-level modules these files name as `crate::x` (or in `use crate::{x, …}`)."""
    found = set()
    for path in files:
        text = production_code(path)
        found.update(re.findall(r"crate::([a-z_][a-z0-9_]*)", text))
        for block in re.findall(r"use crate::\{([^;]*)\};", text, re.S):
            found.update(re.findall(r"(?:^|[,{\s])([a-z_][a-z0-9_]*)(?=::|\s*[,}]|\s*$)", block))
    return {n for n in found if n in names}


def cycles(nodes, edges):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return found


def main():
    layers = read_layers(os.path.join(SRC, "lib.rs"))
    modules = top_level_modules(SRC)
    problems = []
    for name in sorted(set(modules) - set(layers)):
        problems.append(f"`{name}` is not in src/lib.rs's layer list: add it to the right layer")
    for name in sorted(set(layers) - set(modules)):
        problems.append(f"src/lib.rs lists `{name}`, which is not a module of {SRC}")
    edges = {m: imports(files, set(modules)) - {m} for m, files in modules.items()}
    for m in sorted(edges):
        for t in sorted(edges[m]):
            if m in layers and t in layers and layers[t] < layers[m]:
                problems.append(
                    f"`{m}` (layer {layers[m]}) imports `{t}` (layer {layers[t]}, above it)"
                )
    for component in cycles(modules, edges):
        problems.append("import cycle: " + ", ".join(f"`{m}`" for m in component))
    if problems:
        print("check_layers: src/ does not keep the layers src/lib.rs documents:")
        for p in problems:
            print("  - " + p)
        sys.exit(1)
    count = len(set(layers.values()))
    print(f"check_layers: {len(modules)} modules in {count} layers, every import points down, no cycle")


if __name__ == "__main__":
    main()
