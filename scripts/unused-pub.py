#!/usr/bin/env python3
"""Unused public items: every `pub` fn, struct, enum, union, const, static, trait,
type or mod declared in a crate's `src/` whose name appears nowhere else in the
workspace's Rust sources or the fuzz targets (`fuzz/`) (comments do not count: an item only documented is unused).

A name counts as used when it occurs anywhere besides its declaration (any file,
tests and benches included), so the check errs towards "used" (a common name such
as `new` is never reported). Items that are API on purpose although nothing in the
workspace uses them go into scripts/unused-pub.allow as `path:name  reason`.

Usage: scripts/unused-pub.py [--root DIR] [--all]
  --all  list allowed items too (marked "allowed: reason")
Exit status: 1 when an unused item is not allowed (or an allow line is stale).

Hand-written rather than a crate: rustc's dead_code lint does not look at `pub`
items of a library, and `unreachable_pub` reports items that are used but could
be narrower, not items that are unused across the workspace.
"""

import argparse
import collections
import os
import re
import sys

DECL = re.compile(
    r"^\s*pub\s+(?:(?:const|async|unsafe|extern\s+\"[^\"]*\")\s+)*"
    r"(fn|struct|enum|union|const|static|trait|type|mod)\s+(?:mut\s+)?"
    r"([A-Za-z_][A-Za-z0-9_]*)"
)
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SKIP_DIRS = {"target", ".git", ".cache", "build", "node_modules"}


def strip_comments(text):
    """Drops // and /* */ comments (doc comments included); keeps strings, so names
    used in attributes such as #[serde(default = "x")] still count."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == "'" and i + 2 < n and (text[i + 2] == "'" or text[i + 1] == "\\"):
            # A char literal ('"' must not open a string); lifetimes fall through.
            j = text.find("'", i + 2 if text[i + 1] == "\\" else i + 1)
            j = i + 2 if j < 0 else j
            out.append(text[i : j + 1])
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def rust_files(root):
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in SKIP_DIRS)
        for f in sorted(files):
            if f.endswith(".rs"):
                yield os.path.join(d, f)


def load_allow(path):
    allow = {}
    if not os.path.exists(path):
        return allow
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, _, reason = line.partition(" ")
            if ":" not in key or not reason.strip():
                sys.exit(f"{path}:{no}: want `path:name  reason`, got {line!r}")
            allow[key] = (reason.strip(), no)
    return allow


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=os.path.join(os.path.dirname(__file__), ".."))
    ap.add_argument("--all", action="store_true")
    args = ap.parse_args()
    root = os.path.normpath(args.root)
    allow = load_allow(os.path.join(root, "scripts", "unused-pub.allow"))

    uses = collections.Counter()
    decls = []
    # The fuzz targets (fuzz/, a workspace of its own) use crate items too.
    paths = [p for d in ("crates", "fuzz") for p in rust_files(os.path.join(root, d))]
    for path in paths:
        rel = os.path.relpath(path, root)
        with open(path, encoding="utf-8") as f:
            code = strip_comments(f.read())
        uses.update(IDENT.findall(code))
        if "/src/" not in rel or not rel.startswith("crates"):
            continue
        for no, line in enumerate(code.splitlines(), 1):
            m = DECL.match(line)
            if m:
                decls.append((rel, no, m.group(1), m.group(2)))

    unused, seen_allow = [], set()
    for rel, no, kind, name in decls:
        if uses[name] > 1:
            continue
        key = f"{rel}:{name}"
        if key in allow:
            seen_allow.add(key)
            if args.all:
                print(f"{rel}:{no}: {kind} {name} (allowed: {allow[key][0]})")
            continue
        unused.append(f"{rel}:{no}: {kind} {name}")
    stale = [k for k in allow if k not in seen_allow]
    for line in unused:
        print(line)
    for k in stale:
        print(f"scripts/unused-pub.allow:{allow[k][1]}: {k} is used (or gone): remove the line")
    if unused or stale:
        print(
            f"{len(unused)} unused public item(s), {len(stale)} stale allow line(s): "
            "remove or use them, or allow them with a reason in scripts/unused-pub.allow",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
