#!/usr/bin/python3
"""Counts, for the 20 Newsgroups ngram2 training file, what the cost model of docs/scaling.md needs at P ranks
with rows balanced by nonzeros (weighted_owner, src/data/dataset.cpp): the largest rank's nonzeros and the
most distinct columns one rank's rows touch (k(P), the entries it fetches from their owners per call).
usage: docs/scaling-data/ngram2_columns.py FILE.libsvm.xz [P ...]  -> JSON on stdout"""
import json, lzma, math, sys

path, ranks = sys.argv[1], [int(p) for p in sys.argv[2:]] or [1, 2, 64, 256, 1024]
rows = []
with lzma.open(path, "rt") as f:
    for line in f:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        rows.append([int(t.split(":", 1)[0]) for t in line.split()[1:] if ":" in t and not t.startswith("qid:")])
weights = [len(r) + 1 for r in rows]
total = sum(weights)
out = {"rows": len(rows), "nonzeros": sum(len(r) for r in rows), "longest_row": max(len(r) for r in rows),
       "features": max(max(r) for r in rows if r), "ranks": {}}
for p in ranks:
    cols = [set() for _ in range(p)]
    nnz = [0] * p
    before = 0
    for r, w in zip(rows, weights):
        q = min(p - 1, max(0, math.floor((2 * before + w) * p / (2 * total))))
        before += w
        cols[q].update(r)
        nnz[q] += len(r)
    out["ranks"][str(p)] = {"nnz_max": max(nnz), "k_max": max(len(c) for c in cols)}
print(json.dumps(out, indent=1))
