#!/bin/bash
# A single-node Slurm on this machine, to check cluster/jobs/solve.sbatch end to end: stands up munged,
# slurmctld and slurmd (Debian's slurm-wlm and munge; installed with apt when missing) with their config,
# state and logs in a temporary folder and ports on the loopback address, submits the job from a folder
# outside the project, preempts it twice (the time-limit warning, `scancel --batch --signal=USR1`, after
# which the job requeues itself; then Slurm's own `scontrol requeue`), lets it finish, and checks that
# the result equals the same job run uninterrupted. One PASS/FAIL line per check; exit 0 only when all
# passed. Everything it started is stopped by pid and its folder removed, also on failure or Ctrl-C.
#
#   cluster/testing/local-slurm.sh [BUILD_DIR]      (as root; default BUILD_DIR: build in the project)
#   cluster/testing/local-slurm.sh --up [BUILD_DIR] only stand the cluster up, print its SLURM_CONF and
#                                                   keep it until Ctrl-C or SIGTERM (to try jobs by hand)
#
# The preempted job runs twice, under srun and under mpirun (LOCAL_SLURM_LAUNCHERS="srun mpirun"); the
# uninterrupted one with the job script's own choice. LOCAL_SLURM_ITERS (1000) and LOCAL_SLURM_DIM (20000)
# size the quadratic run; LOCAL_SLURM_KEEP=1 keeps the temporary folder with the logs. Not part of
# ctest: it takes minutes (docs/operations.md).
set -uo pipefail
hold=""; [ "${1:-}" = --up ] && { hold=1; shift; }
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-${BILEVEL_BUILD:-$root/build}}" 2> /dev/null && pwd) || { echo "FAIL: no build folder '${1:-build}'"; exit 1; }
exe=${BILEVEL_SOLVE:-$build/apps/bilevel-solve}
npass=0; nfail=0
pass() { echo "PASS: $*"; npass=$((npass + 1)); }
failc() { echo "FAIL: $*"; nfail=$((nfail + 1)); }
note() { echo "  $*"; }
finish() {  # the last line is the verdict (the acceptance check prints it)
  teardown
  if [ "$nfail" -eq 0 ] && [ "$npass" -gt 0 ]; then echo "PASS: local Slurm: all $npass checks passed ($SECONDS s)"; exit 0; fi
  echo "FAIL: local Slurm: $nfail of $((npass + nfail)) checks failed ($SECONDS s)"; exit 1
}
abort() { failc "$*"; finish; }

[ "$(id -u)" -eq 0 ] || { echo "FAIL: run as root (it installs packages and starts slurmctld, slurmd and munged)"; exit 1; }
[ -x "$exe" ] || { echo "FAIL: no program $exe (build the project first)"; exit 1; }

# ---- packages (apt only; nothing else is fetched) ----
missing=""
for p in slurmctld slurmd slurm-client munge; do
  dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "installing$missing (apt)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 \
      --no-install-recommends $missing; } > /tmp/local-slurm-apt.$$.log 2>&1 \
    || { echo "FAIL: apt-get install$missing: $(tail -n1 /tmp/local-slurm-apt.$$.log)"; exit 1; }
  rm -f /tmp/local-slurm-apt.$$.log
fi
pass "packages: $(slurmctld -V), munge $(dpkg-query -W -f='${Version}' munge)"

# ---- the temporary cluster ----
tmp=$(mktemp -d /tmp/bilevel-slurm.XXXXXX) || exit 1
chmod 755 "$tmp"   # munged wants every folder above its socket searchable by all
mkdir -p "$tmp/munge" "$tmp/run" "$tmp/state" "$tmp/spool" "$tmp/log" "$tmp/submit" "$tmp/results"
chmod 700 "$tmp/munge"
export SLURM_CONF="$tmp/slurm.conf"
torn=""
stop_pid() {  # stop_pid PIDFILE NAME: SIGTERM, then SIGKILL after 10 s
  local p
  [ -s "$1" ] || return 0
  p=$(cat "$1")
  kill -0 "$p" 2> /dev/null || return 0
  kill -TERM "$p" 2> /dev/null
  for _ in $(seq 50); do kill -0 "$p" 2> /dev/null || return 0; sleep 0.2; done
  echo "  $2 (pid $p) ignored SIGTERM; SIGKILL"; kill -KILL "$p" 2> /dev/null
}
teardown() {
  [ -z "$torn" ] || return 0
  torn=1
  if [ -s "$tmp/run/slurmctld.pid" ]; then
    scancel --quiet --user=root 2> /dev/null   # our jobs (this cluster only knows ours)
    for _ in $(seq 60); do [ -z "$(squeue -h 2> /dev/null)" ] && break; sleep 1; done
  fi
  stop_pid "$tmp/run/slurmd.pid" slurmd
  stop_pid "$tmp/run/slurmctld.pid" slurmctld
  stop_pid "$tmp/run/munged.pid" munged
  # anything left that works in our folder (a job step daemon orphaned by a job that died early, a rank)
  local p left=""
  for p in /proc/[0-9]*; do
    case "$(readlink "$p/cwd" 2> /dev/null)" in "$tmp" | "$tmp"/*) left="$left ${p#/proc/}" ;; esac
  done
  if [ -n "$left" ]; then
    echo "  stopping leftover processes in $tmp:$left"
    # shellcheck disable=SC2086
    kill -TERM $left 2> /dev/null; sleep 2; kill -KILL $left 2> /dev/null
  fi
  if [ "${LOCAL_SLURM_KEEP:-0}" = 1 ]; then echo "  kept $tmp"; else rm -rf "$tmp"; fi
}
trap 'teardown' EXIT
trap 'echo "interrupted"; abort "interrupted by a signal"' INT TERM HUP

free_port() {  # free_port FROM: the first TCP port >= FROM that nothing listens on
  local p=$1
  while ss -Htln "sport = :$p" 2> /dev/null | grep -q .; do p=$((p + 1)); done
  echo "$p"
}
ctld_port=$(free_port 16817); slurmd_port=$(free_port $((ctld_port + 1)))
host=$(hostname -s); ncpu=$(nproc)
mungekey --create --keyfile="$tmp/munge/munge.key" --force > /dev/null 2>&1 \
  || dd if=/dev/urandom of="$tmp/munge/munge.key" bs=1024 count=1 2> /dev/null
chmod 600 "$tmp/munge/munge.key"
munged --socket="$tmp/run/munge.sock" --key-file="$tmp/munge/munge.key" --pid-file="$tmp/run/munged.pid" \
  --log-file="$tmp/log/munged.log" --seed-file="$tmp/munge/seed" \
  || abort "munged did not start: $(tail -n1 "$tmp/log/munged.log" 2> /dev/null)"
if munge -S "$tmp/run/munge.sock" -n | unmunge -S "$tmp/run/munge.sock" > /dev/null; then pass "munged answers"; else abort "munge/unmunge through $tmp/run/munge.sock"; fi

# cred_expire: a requeued job waits this long (default 120 s) before it may start again.
cat > "$SLURM_CONF" << EOF
ClusterName=bilevel-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$tmp/run/munge.sock,cred_expire=10
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool/slurmd-%n
SlurmctldPidFile=$tmp/run/slurmctld.pid
SlurmdPidFile=$tmp/run/slurmd.pid
SlurmctldLogFile=$tmp/log/slurmctld.log
SlurmdLogFile=$tmp/log/slurmd.log
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
KillWait=30
MinJobAge=3600
ReturnToService=2
NodeName=$host NodeAddr=127.0.0.1 CPUs=$ncpu SocketsPerBoard=1 CoresPerSocket=$ncpu ThreadsPerCore=1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
t0=$SECONDS
slurmctld -i || abort "slurmctld did not start: $(tail -n2 "$tmp/log/slurmctld.log" 2> /dev/null)"
slurmd || abort "slurmd did not start: $(tail -n2 "$tmp/log/slurmd.log" 2> /dev/null)"
for _ in $(seq 60); do sinfo -h -o %T 2> /dev/null | grep -q '^idle' && break; sleep 1; done
if sinfo -h -o %T 2> /dev/null | grep -q '^idle'; then
  pass "Slurm $(sinfo -V | cut -d' ' -f2) up: node $host idle with $ncpu CPUs after $((SECONDS - t0)) s (ports $ctld_port/$slurmd_port)"
else abort "node not idle after 60 s: $(sinfo -h 2>&1 | head -n1); $(tail -n1 "$tmp/log/slurmd.log" 2> /dev/null)"; fi

if [ -n "$hold" ]; then
  echo "cluster up: export SLURM_CONF=$SLURM_CONF   (Ctrl-C or kill -TERM $$ stops it)"
  trap 'teardown; exit 0' INT TERM HUP
  while :; do sleep 5; done
fi

# ---- the job: the same command twice, uninterrupted and preempted ----
# aidcg on the quadratic problem, long enough to be stopped twice, a checkpoint every 5 iterations; the
# condition number keeps it far from converged at the end (|h| about 1e-3), so equal results mean an
# exact restart, not two runs that both reached the solution.
iters=${LOCAL_SLURM_ITERS:-1000}
cat > "$tmp/submit/quadratic.opts" << EOF
-bilevel_type aidcg
-bilevel_quadratic_dim_lower ${LOCAL_SLURM_DIM:-20000}
-bilevel_quadratic_condition 10000
-bilevel_checkpoint_interval 5
EOF
submit() {  # submit NAME [LAUNCHER] -> job id; from a folder outside the project, the script's path absolute
  (cd "$tmp/submit" && BILEVEL_RESULTS="$tmp/results" BILEVEL_SOLVE="$exe" BILEVEL_LAUNCH="${2:-auto}" sbatch --parsable --job-name="$1" \
    --time=20 --export=ALL "$root/cluster/jobs/solve.sbatch" quadratic.opts --problem quadratic \
    --max-iter "$iters" --seed 1 --quiet)
}
field() { scontrol show job -o "$1" 2> /dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n1; }
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll twice a second until COMMAND succeeds
  local limit=$1 what=$2; shift 2
  local end=$((SECONDS + limit))
  until "$@"; do
    [ $SECONDS -lt $end ] || { failc "$what: not after $limit s (job state $(field "${job:-0}" JobState))"; return 1; }
    sleep 0.5
  done
}
ended() {  # ended JOB: the job has reached a final state
  case "$(field "$1" JobState)" in COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | DEADLINE | BOOT_FAIL) return 0 ;; esac
  return 1
}
summary_key() { /usr/bin/python3 -c 'import json,sys; print(repr(json.load(open(sys.argv[1]))[sys.argv[2]]))' "$1" "$2" 2> /dev/null; }

job=$(submit reference) || abort "sbatch (reference): $job"
t0=$SECONDS
wait_for 900 "the reference job finishes" ended "$job" \
  || abort "reference job: $(tail -n3 "$tmp/submit/reference-$job.out" 2> /dev/null)"
ref="$tmp/results/reference-$job"
state=$(field "$job" JobState); ec=$(field "$job" ExitCode)
if [ "$state" = COMPLETED ] && [ -s "$ref/summary.json" ]; then
  pass "uninterrupted job $job: $state in $((SECONDS - t0)) s, $(summary_key "$ref/summary.json" outer_iterations) iterations, $(summary_key "$ref/summary.json" converged_reason); $(grep -o "launcher '[^']*'" "$tmp/submit/reference-$job.out" | head -n1)"
else
  abort "uninterrupted job $job: $state $ec: $(tail -n2 "$tmp/submit/reference-$job.out" 2> /dev/null)"
fi
ref_time=$((SECONDS - t0))

rows() { tail -n +2 "$1" 2> /dev/null | cut -d, -f1 | sort -n | uniq | wc -l; }

preempted_job() {  # preempted_job LAUNCHER: submit, stop twice, let it finish, compare with the reference
  local launcher=$1 res log ts n3 state ec restarts same a b k
  job=$(submit "preempted-$launcher" "$launcher") || { failc "sbatch (preempted, $launcher): $job"; return; }
  res="$tmp/results/preempted-$launcher-$job"; log="$tmp/submit/preempted-$launcher-$job.out"
  t0=$SECONDS
  note "job $job with BILEVEL_LAUNCH=$launcher"
  # 1) the time-limit warning (what --signal=B:USR1@120 sends): the job checkpoints and requeues itself,
  #    a quarter into the run (the trace is written row by row)
  wait_for 900 "job $job reaches iteration $((iters / 4)) with a checkpoint" \
    bash -c "[ \$(tail -n +2 '$res/trace.csv' 2>/dev/null | cut -d, -f1 | sort -n | tail -n1 | grep . || echo 0) -ge $((iters / 4)) ] && [ -e '$res/checkpoint' ]" || return
  scancel --batch --signal=USR1 "$job"; ts=$SECONDS
  note "$((SECONDS - t0)) s: scancel --batch --signal=USR1 $job"
  if wait_for 120 "job $job requeues itself after SIGUSR1" bash -c "grep -qs 'requeueing job' '$log' && [ \"\$(scontrol show job -o $job | grep -o 'Restarts=[0-9]*')\" = Restarts=1 ]"; then
    pass "$launcher: SIGUSR1 to the batch shell: ranks stopped ($(grep -o 'exit code [0-9]*' "$log" | head -n1)), job requeued itself $((SECONDS - ts)) s after the signal"
  else return; fi
  wait_for 300 "job $job runs again and continues from its checkpoint" bash -c "grep -qs 'start 2, continuing from' '$log' && [ \"\$(scontrol show job -o $job | grep -o 'JobState=[A-Z]*')\" = JobState=RUNNING ]" \
    && pass "$launcher: job $job started again and continued from its checkpoint ($((SECONDS - ts)) s after the signal)"
  # 2) Slurm's own requeue (preemption with PreemptMode=REQUEUE does the same): SIGTERM to every process
  wait_for 900 "job $job reaches iteration $((iters / 2))" \
    bash -c "[ \$(tail -n +2 '$res/trace.csv' 2>/dev/null | cut -d, -f1 | sort -n | tail -n1 | grep . || echo 0) -ge $((iters / 2)) ]"
  scontrol requeue "$job"; ts=$SECONDS
  note "$((SECONDS - t0)) s: scontrol requeue $job"
  wait_for 300 "job $job runs a third time from its checkpoint" bash -c "grep -qs 'start 3, continuing from' '$log'" \
    && pass "$launcher: scontrol requeue: job $job started a third time and continued from its checkpoint ($((SECONDS - ts)) s after the requeue)"
  n3=$(grep -c 'bilevel-solve ended with exit code 3' "$log")
  if [ "$n3" -ge 2 ]; then pass "$launcher: SIGTERM from Slurm (scontrol requeue): the ranks stopped with exit code 3 at an iteration boundary, as after SIGUSR1"
  else failc "$launcher: SIGTERM from Slurm (scontrol requeue): the ranks did not stop with exit code 3 ($n3 graceful stops in $log)"; fi
  # 3) the end
  wait_for 900 "job $job finishes" ended "$job"
  state=$(field "$job" JobState); ec=$(field "$job" ExitCode); restarts=$(field "$job" Restarts)
  if [ "$state" = COMPLETED ] && [ "$ec" = 0:0 ]; then
    pass "$launcher: preempted job $job: $state (exit $ec) after $restarts requeues, $((SECONDS - t0)) s in all (uninterrupted: $ref_time s)"
  else failc "$launcher: preempted job $job: $state exit $ec after $restarts requeues: $(tail -n2 "$log" 2> /dev/null)"; fi
  same=yes
  for k in outer_iterations upper_objective hypergradient_norm converged_reason; do
    a=$(summary_key "$ref/summary.json" $k); b=$(summary_key "$res/summary.json" $k)
    [ -n "$a" ] && [ "$a" = "$b" ] || same="no"
    note "$k: uninterrupted $a, preempted $b"
  done
  if [ "$same" = yes ]; then pass "$launcher: the preempted job's summary equals the uninterrupted job's (outer_iterations, upper_objective, hypergradient_norm)"
  else failc "$launcher: the preempted job's summary differs from the uninterrupted job's"; fi
  if [ "$(rows "$res/trace.csv")" -ge "$iters" ] && [ "$(rows "$res/trace.csv")" = "$(rows "$ref/trace.csv")" ]; then
    pass "$launcher: trace: $(rows "$res/trace.csv") distinct iterations, as many as uninterrupted"
  else failc "$launcher: trace: $(rows "$res/trace.csv") distinct iterations, uninterrupted $(rows "$ref/trace.csv")"; fi
}
for launcher in ${LOCAL_SLURM_LAUNCHERS:-srun mpirun}; do preempted_job "$launcher"; done
finish
