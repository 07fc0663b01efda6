#!/bin/bash
# The measurement behind -bilevel_logreg_model_comm auto (docs/scaling.md, "Choosing owners or gather"):
# bytes and HVP time of owners vs gather on generated problems of growing model size.
#   docs/scaling-data/model_comm.sh BUILD_DIR NP OUT_DIR [COLS...]
# Byte counts do not depend on the load (run oversubscribed at 3-4 ranks); times only mean something on a
# quiet machine (check `uptime`).
set -eu
build=$1; np=$2; out=$3; shift 3
cols=${*:-"256 1024 4096 16384 65536 262144 1048576"}
mkdir -p "$out"
for c in $cols; do
  for mode in gather owners; do
    nice -n 5 mpirun --allow-run-as-root --oversubscribe -np "$np" "$build/apps/bilevel-bench" scale \
      --rows 20000 --cols "$c" --nnz-per-row 10 --seed 1 --iterations 2 --repeat 40 --data-dir "$out" \
      --summary "$out/mc-$mode-c$c-np$np.json" -bilevel_logreg_model_comm "$mode" > "$out/mc-$mode-c$c-np$np.log" 2>&1
  done
done
/usr/bin/python3 - "$out" "$np" $cols <<'PYEOF'
import json, sys
out, np, cols = sys.argv[1], sys.argv[2], sys.argv[3:]
print(f"| model entries | gather: bytes/iteration | owners: bytes/iteration | gather: HVP ms | owners: HVP ms | ranks {np} |")
print("|---|---|---|---|---|---|")
for c in cols:
    g, o = (json.load(open(f"{out}/mc-{m}-c{c}-np{np}.json")) for m in ("gather", "owners"))
    print(f"| {int(c) + 1:,} | {g['bytes_communicated_per_iteration']:,.0f} | {o['bytes_communicated_per_iteration']:,.0f} | "
          f"{g['hvp_seconds'] * 1e3:.3f} | {o['hvp_seconds'] * 1e3:.3f} | |")
PYEOF
