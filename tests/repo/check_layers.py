#!/usr/bin/env python3
"""Layers point one way (docs/architecture.md, "Layers").

Checks every header and source under src/ and include/bilevel/ of a project root:
  * an #include "bilevel/<layer>/..." is allowed only from a layer that may use <layer>;
  * src/core and src/problems name no registered method (tuned settings are data files, not code);
  * no file under src/ is longer than MAX_LINES lines.
Prints one line per violation and exits 1 if there is any. `--self-test` runs the checker on a small tree
with one violation of each kind and fails unless every one is reported (so the check itself can fail).
"""
import os
import re
import sys
import tempfile

ALLOWED = {  # what each folder may include of ours, besides itself
    "petsc": set(),
    "data": {"petsc"},
    "core": {"petsc"},
    "blocks": {"core", "petsc"},
    "problems": {"core", "data", "petsc"},
    "algorithms": {"blocks", "core", "petsc"},
    "capi": {"algorithms", "blocks", "core", "data", "petsc", "problems"},  # the C interface: all but apps
}
METHODS = ("aidcg", "stocbio", "qnbo", "nbo", "lancbio", "subbio", "pzobo", "bome", "itd", "amigo", "soba", "saba",
           "f2sa", "ttsa")
NO_METHOD_NAMES = ("core", "problems")
MAX_LINES = 600
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]bilevel/([a-z_]+)/', re.M)
METHOD = re.compile(r"(?<![A-Za-z0-9])(" + "|".join(METHODS) + r")(?![A-Za-z0-9])")


def check(root, max_lines=MAX_LINES, includes_only=False):
    problems = []
    for top in ("src", os.path.join("include", "bilevel")):
        base = os.path.join(root, top)
        for folder, _, files in os.walk(base):
            rel = os.path.relpath(folder, base)
            layer = None if rel == "." else rel.split(os.sep)[0]
            for name in sorted(files):
                if not name.endswith((".hpp", ".cpp", ".h", ".c")):
                    continue
                path = os.path.join(folder, name)
                shown = os.path.relpath(path, root)
                with open(path, encoding="utf-8", errors="replace") as f:
                    text = f.read()
                if top == "src" and not includes_only and text.count("\n") > max_lines:
                    problems.append(f"{shown}: {text.count(chr(10))} lines (at most {max_lines})")
                if layer in ALLOWED:
                    for m in INCLUDE.finditer(text):
                        used = m.group(1)
                        if used != layer and used not in ALLOWED[layer]:
                            line = text.count("\n", 0, m.start()) + 1
                            allowed = ", ".join(sorted(ALLOWED[layer])) or "nothing"
                            problems.append(f"{shown}:{line}: {layer}/ includes {used}/ (it may use {allowed})")
                if layer in NO_METHOD_NAMES and top == "src" and not includes_only:
                    for i, line in enumerate(text.splitlines(), 1):
                        m = METHOD.search(line)
                        if m:
                            problems.append(f"{shown}:{i}: names the method '{m.group(1)}' ({layer}/ knows no method)")
    return problems


def self_test():
    with tempfile.TemporaryDirectory() as d:
        files = {
            "src/core/solver.cpp": '#include "bilevel/blocks/upper_stepper.hpp"\n',
            "include/bilevel/data/dataset.hpp": '#include "bilevel/core/collective.hpp"\n',
            "src/problems/hyperclean.cpp": 'auto t = "pzobo_directions";\n',
            "src/blocks/long.cpp": "x\n" * 12,
            "src/algorithms/aidcg/aidcg.cpp": '#include "bilevel/blocks/implicit_step.hpp"\n',  # allowed
        }
        for rel, text in files.items():
            os.makedirs(os.path.dirname(os.path.join(d, rel)), exist_ok=True)
            with open(os.path.join(d, rel), "w") as f:
                f.write(text)
        found = check(d, max_lines=10)
        expect = ["src/core/solver.cpp:1: core/ includes blocks/", "include/bilevel/data/dataset.hpp:1: data/ includes core/",
                  "src/problems/hyperclean.cpp:1: names the method 'pzobo'", "src/blocks/long.cpp: 12 lines"]
        missed = [e for e in expect if not any(p.startswith(e) for p in found)]
        if missed or len(found) != len(expect):
            print("self-test FAILED: expected", expect, "got", found)
            return 1
    print(f"self-test passed: {len(expect)} planted violations reported, the allowed include not")
    return 0


def main():
    if sys.argv[1:2] == ["--self-test"]:
        return self_test()
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    root = args[0] if args else "."
    problems = check(root, includes_only="--includes-only" in sys.argv)
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} layering violations")
        return 1
    if "--includes-only" in sys.argv:
        print("layers point one way")
    else:
        print(f"layers point one way; no method names in core/ or problems/; no file under src/ over {MAX_LINES} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
