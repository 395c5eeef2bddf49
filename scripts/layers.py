#!/usr/bin/env python3
"""Checks that imports between the top-level modules of src/ point down only.

Reads every `crate::...` path (grouped `use crate::{a::b, c}` included, and inline paths in
code) of each file, and fails naming the file and the import when a module imports a layer
above its own, or two modules import each other. Inside a module, two files importing each
other fail too. The binary's files (main.rs, jobs_command.rs) use `bulkfhir::` for the crate.

Usage: scripts/layers.py [--graph]   (from anywhere; --graph prints who imports whom)
"""

import re
import sys
from collections import defaultdict
from pathlib import Path

# Higher imports lower. Modules of one rank may import each other one way only.
RANKS = {
    "api": 6, "startup": 6, "main": 6, "jobs_command": 6,
    "config": 5,
    "auth": 4, "export": 4, "load": 4,
    "store": 3, "output": 3, "anonymize": 3,
    # Utilities: importable by store and output, so they import nothing above the model.
    "telemetry": 2, "https": 2, "low_priority_runtime": 2,
    "model": 1,
    "fhir": 0,
}
BINARY = {"main", "jobs_command"}  # compiled in the binary crate: the library is `bulkfhir::`

SRC = Path(__file__).resolve().parent.parent / "src"


def strip_comments_and_strings(text):
    """Blanks comments and string literals (keeping line breaks) so only code is searched."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = '"' + hashes
            j = text.find(end, i + len(hashes) + 2)
            j = n if j < 0 else j + len(end)
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]) or text.startswith("'\\u{", i):
            j = text.find("'", i + 1 if text[i + 1] != "\\" else i + 3)
            out.append("' '")
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand(tree):
    """`a::{b::{c, d}, e}` -> ['a::b::c', 'a::b::d', 'a::e']."""
    tree = tree.strip()
    brace = tree.find("{")
    if brace < 0:
        return [re.sub(r"\s+as\s+\w+$", "", tree)] if tree else []
    prefix, inner = tree[:brace], tree[brace + 1:tree.rfind("}")]
    parts, depth, start = [], 0, 0
    for k, ch in enumerate(inner):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(inner[start:k])
            start = k + 1
    parts.append(inner[start:])
    return [prefix + p for part in parts for p in expand(part)]


def module_of(path):
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".rs")


def imports(path):
    """(line, crate path) for each path into the crate from this file."""
    code = strip_comments_and_strings(path.read_text())
    root = "bulkfhir" if module_of(path) in BINARY else "crate"
    found = []
    use = re.compile(r"\buse\s+(?:::)?" + root + r"::([^;]*);", re.S)
    for m in use.finditer(code):
        line = code.count("\n", 0, m.start()) + 1
        found += [(line, p.replace(" ", "").replace("\n", "")) for p in expand(m.group(1))]
    spans = [m.span() for m in use.finditer(code)]
    for m in re.finditer(r"(?<![\w:])" + root + r"::(\w+(?:::\w+)*)", code):
        if not any(a <= m.start() < b for a, b in spans):
            found.append((code.count("\n", 0, m.start()) + 1, m.group(1)))
    return found


def main():
    graph = defaultdict(lambda: defaultdict(list))  # importer -> imported -> [where]
    problems = []
    files = sorted(p for p in SRC.rglob("*.rs") if p.name != "lib.rs")
    file_edges = defaultdict(set)
    upward = {}
    for path in files:
        importer = module_of(path)
        if importer not in RANKS:
            problems.append(f"{path.relative_to(SRC.parent)}: module '{importer}' has no layer in scripts/layers.py")
            continue
        for line, target in imports(path):
            imported = target.split("::")[0]
            if imported in ("", "self", "super"):
                continue
            where = f"{path.relative_to(SRC.parent)}:{line}: crate::{target}"
            if imported == importer:
                file_edges[path].add(resolve(target))
                continue
            if imported not in RANKS:
                problems.append(f"{where}: module '{imported}' has no layer in scripts/layers.py")
                continue
            graph[importer][imported].append(where)
            if RANKS[imported] > RANKS[importer]:
                upward.setdefault((path, line, imported), []).append(target)
    for (path, line, imported), targets in upward.items():
        problems.append(
            f"{path.relative_to(SRC.parent)}:{line}: '{module_of(path)}' imports '{imported}', a layer above it"
            f" (crate::{', crate::'.join(targets)})"
        )
    for a in sorted(graph):
        for b in sorted(graph[a]):
            if a < b and a in graph.get(b, {}):
                problems.append(
                    f"'{a}' and '{b}' import each other: {graph[a][b][0]} and {graph[b][a][0]}"
                )
    problems += mutual_files(files, file_edges)
    if "--graph" in sys.argv:
        for a in sorted(graph, key=lambda m: (-RANKS.get(m, 0), m)):
            print(f"{a} -> {', '.join(sorted(graph[a]))}")
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"layers: {len(problems)} import(s) point the wrong way (layers in scripts/layers.py)", file=sys.stderr)
        return 1
    print("layers: imports point down only")
    return 0


def resolve(target):
    """The file a crate path names, as far as the tree shows: `export::job::JobId` -> src/export/job.rs."""
    path = SRC
    for segment in target.split("::"):
        if (path / segment).is_dir():
            path = path / segment
        elif (path / f"{segment}.rs").is_file():
            return path / f"{segment}.rs"
        else:
            break
    return path / "mod.rs" if path.is_dir() else path


def super_edges(path):
    """Files named through `super::` paths, resolved from this file's folder."""
    code = strip_comments_and_strings(path.read_text())
    base = path.parent if path.name != "mod.rs" else path.parent.parent
    out = set()
    chunks = [p for m in re.finditer(r"\buse\s+super::([^;]*);", code, re.S) for p in expand(m.group(1))]
    chunks += re.findall(r"(?<![\w:])super::(\w+(?:::\w+)*)", code)
    for chunk in chunks:
        target, folder = chunk.replace(" ", "").replace("\n", ""), base
        while target.startswith("super::"):
            target, folder = target[len("super::"):], folder.parent
        first = target.split("::")[0]
        if (folder / f"{first}.rs").is_file():
            out.add(folder / f"{first}.rs")
        elif (folder / first / "mod.rs").is_file():
            out.add(folder / first / "mod.rs")
    return out


def mutual_files(files, file_edges):
    edges = defaultdict(set)
    for path in files:
        edges[path] |= {t for t in file_edges.get(path, set()) if t.is_file()} | super_edges(path)
        edges[path].discard(path)
    problems = []
    for a in files:
        for b in sorted(edges[a]):
            # A folder's mod.rs and the files in it are one unit: mod.rs declares them.
            if b.name == "mod.rs" and a.parent == b.parent or a.name == "mod.rs" and b.parent == a.parent:
                continue
            if str(a) < str(b) and a in edges.get(b, set()):
                problems.append(
                    f"{a.relative_to(SRC.parent)} and {b.relative_to(SRC.parent)} import each other"
                )
    return problems


if __name__ == "__main__":
    sys.exit(main())
