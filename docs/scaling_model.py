#!/usr/bin/python3
"""The cost model of docs/scaling.md: time per outer iteration of aidcg at P ranks, fitted to
`bilevel-bench scale` summaries, for per-feature logistic regression (synthetic, 20 Newsgroups ngram2)
and hyper-cleaning with 5M samples.

usage: docs/scaling_model.py BIG_1RANK.json SMALL_1RANK.json BYTES_P1.json BYTES_P2.json ...
  BIG/SMALL: two 1-rank runs with the same --cols and different --rows (they separate the per-nonzero cost
  from the per-feature cost of an oracle call); BYTES_*: runs at several rank counts (oversubscribed is
  fine: only their byte counts are used). Prints the fitted constants and the prediction tables.

Per outer iteration (C oracle calls: HVPs, gradients and the JVP, each one pass over the rank's rows):
  T(P) = C [c_nz nnz_max(P) + t_model(P) + t_comm(P)] + t_coord(P)
  c_nz, c_model: from the iteration times of the two 1-rank runs (same d, different nnz), per call: per
    nonzero, and per model entry (the gathers, reduction, regulariser and exp(x) of the call, and the
    method's vector work on y per call, CG's updates: the latter is split over the ranks even today, so
    design A below, which counts all of c_model d as replicated, is pessimistic by that share).
    Iteration times (C calls each) are steadier under load than the HVP timing rounds.
  design A, "whole model" (the code measured): every call gathers the whole model on every rank (g gathers)
    and sums a model-sized result over the ranks (r reductions), and repeats c_model d of model-sized work:
      t_model = c_model d (replicated),  t_comm = g [a L + (P-1)/P 8d/b] + r [2 a L + 2 (P-1)/P 8d/b],  L = ceil(log2 P)
  design B, "features distributed" (issue 13 item 4): each rank owns d/P features; a call fetches the
    k(P) columns its rows touch and returns its partial results for them to their owners:
      t_model = c_model d/P,  t_comm = (g + r) [a min(P-1, k(P)) + 8 k(P)/b]
  t_coord = 3 reductions of a few scalars per iteration (the boundary decisions and the two NaN checks):
      3 (2 a L) + (rank 0's own decision work, measured: coordinator_fraction T(1))
Compute constants are scaled to a quiet machine: c * triad_measured / TRIAD_QUIET (performance-facts.md:
14.6-17.0 GB/s at 1 rank on the development machine when nothing else runs). Network constants are
assumptions (no network here): a = 2 us per message, b = 10 GB/s per rank.
"""
import json
import math
import sys

TRIAD_QUIET = 15.0  # GB/s, one rank, quiet development machine (shared/reference/performance-facts.md)
ALPHA = 2e-6  # s per message (InfiniBand-class latency incl. software)
BETA = 10e9  # bytes/s per rank


def load(path):
    with open(path) as f:
        return json.load(f)


def calls(s):
    return s["hvp_per_iteration"] + s["grad_g_per_iteration"] + s["grad_f_per_iteration"] + s["jvp_per_iteration"]


def fit(big, small, byte_runs):
    """Quiet-machine constants: c_nz, c_model, c_vec; calls per iteration; gathers, reductions per call."""
    def nnz(s):
        return s["rows"] * s["nnz_per_row"]

    def quiet(s, seconds):
        return seconds * s["triad_bandwidth_gbs"] / TRIAD_QUIET
    d = big["cols"] + 1  # w and the intercept
    t_big = quiet(big, big["iteration_seconds"] / calls(big))
    t_small = quiet(small, small["iteration_seconds"] / calls(small))
    c_nz = (t_big - t_small) / (nnz(big) - nnz(small))
    c_model = max(0.0, (t_small - c_nz * nnz(small)) / d)
    # bytes(P) = C 8d [g (P-1)/P + r]: least squares in (g, r) over the runs with P > 1
    rows = [(s, s["ranks"]) for s in byte_runs if s["ranks"] > 1]
    a11 = a12 = a22 = b1 = b2 = 0.0
    for s, p in rows:
        scale = calls(s) * 8 * (s["cols"] + 1)
        x1, x2, y = (p - 1) / p, 1.0, s["bytes_communicated_per_iteration"] / scale
        a11 += x1 * x1
        a12 += x1 * x2
        a22 += x2 * x2
        b1 += x1 * y
        b2 += x2 * y
    det = a11 * a22 - a12 * a12
    ok = rows and abs(det) > 1e-12
    g = (b1 * a22 - b2 * a12) / det if ok else 2.0
    r = (a11 * b2 - a12 * b1) / det if ok else 1.0
    coord = quiet(big, big["coordinator_fraction"] * big["iteration_seconds"])
    residual = [(p, s["bytes_communicated_per_iteration"], calls(s) * 8 * (s["cols"] + 1) * (g * (p - 1) / p + r))
                for s, p in rows]
    return dict(c_nz=c_nz, c_model=c_model, C=calls(big), g=g, r=r, coord=coord, residual=residual,
                t1_big=quiet(big, big["iteration_seconds"]))


def iteration(m, w, p, design):
    """Parts of T(P) in seconds: data pass, model-sized work, communication, coordinator."""
    L = math.ceil(math.log2(p)) if p > 1 else 0
    d, C = w["d"], m["C"]
    data = C * m["c_nz"] * w["nnz_max"](p)
    if design == "A":
        model = C * m["c_model"] * d
        comm = 0.0 if p == 1 else C * (m["g"] * (ALPHA * L + (p - 1) / p * 8 * d / BETA) +
                                       m["r"] * (2 * ALPHA * L + 2 * (p - 1) / p * 8 * d / BETA))
    else:
        model = C * m["c_model"] * d / p
        k = w["k"](p)
        comm = 0.0 if p == 1 else C * (m["g"] + m["r"]) * (ALPHA * min(p - 1, k) + 8 * k / BETA)
    coord = m["coord"] + 3 * 2 * ALPHA * L
    return data, model, comm, coord


def table(m, name, w, design):
    t1 = sum(iteration(m, w, 1, design))
    what = "replicated on every rank" if design == "A" else "split over the ranks"
    print(f"\n{name}, design {design} (model-sized work {what}): T(1) = {t1:.3f} s")
    print("| ranks | T(P) s | data pass | model-sized | communication | coordinator | serial + replicated | "
          "efficiency |")
    print("|---|---|---|---|---|---|---|---|")
    for p in (1, 2, 64, 256, 1024):
        data, model, comm, coord = iteration(m, w, p, design)
        t = data + model + comm + coord
        serial = coord + (model if design == "A" else 0.0)
        print(f"| {p} | {t:.4f} | {data:.4f} | {model:.4f} | {comm:.4f} | {coord:.6f} | "
              f"{serial / t * 100:.1f}% | {t1 / (p * t) * 100:.0f}% |")


def random_columns(d, nnz):
    """Distinct columns among nnz uniformly drawn ones out of d."""
    return d * (1 - math.exp(-nnz / d))


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    big, small = load(sys.argv[1]), load(sys.argv[2])
    byte_runs = [load(p) for p in sys.argv[3:]]
    m = fit(big, small, byte_runs)
    print(f"fitted (quiet-machine seconds): c_nz = {m['c_nz'] * 1e9:.2f} ns per nonzero per call, "
          f"c_model = {m['c_model'] * 1e9:.2f} ns per model entry per call, C = {m['C']:.0f} calls per iteration, "
          f"g = {m['g']:.2f} model gathers and r = {m['r']:.2f} model reductions per call, "
          f"coordinator work {m['coord'] * 1e6:.1f} us per iteration")
    for p, measured, model in m["residual"]:
        print(f"  bytes per iteration at {p} ranks: measured {measured / 1e6:.1f} MB, model {model / 1e6:.1f} MB")
    # synthetic at 100x: 400M rows x 20M features, 40 per row; rows balanced by nonzeros
    syn_nnz, syn_d = 400e6 * 40, 20e6
    synthetic = dict(d=syn_d, nnz_max=lambda p: syn_nnz / p, k=lambda p: random_columns(syn_d, syn_nnz / p))
    # 20 Newsgroups unigram + bigram train file: 11,314 rows, 4,696,188 nonzeros, 1,181,803 features; the
    # largest row has 14,059 nonzeros (a floor for nnz_max when rows are balanced by nonzeros); k(P): the
    # most distinct columns one rank's block of rows touches, counted on the file for P = 64, 256, 1024
    ng_k = {1: 1181803, 2: 687818, 64: 94639, 256: 45263, 1024: 40496}
    ngram2 = dict(d=1181803, nnz_max=lambda p: max(4696188 / p, 14059), k=lambda p: ng_k[p])
    for name, w in (("synthetic at 100x (400M x 20M, 16e9 nonzeros)", synthetic),
                    ("20 Newsgroups ngram2 per-feature", ngram2)):
        for design in ("A", "B"):
            table(m, name, w, design)
    # hyper-cleaning, 5M samples of 784 pixels, 10 classes: a call is one dense pass over the rank's rows
    # (docs/performance.md: an HVP takes 132 ms for 50,000 dense rows at 1 rank -> 2.6 us per row), the model
    # (785 x 10 = 7,850 entries) is gathered and reduced whole (tiny), x (5M weights) lives with the rows and
    # its Adam step costs ~10 ns per entry on its owner. C = 17 calls per iteration (measured on
    # Fashion-MNIST: 43 HVPs + 3 gradients + 3 JVPs in 3 iterations).
    print("\nhyper-cleaning, 5M samples (model 7,850 entries, x = 5M weights owner-computed)")
    print("| ranks | T(P) s | data pass | x step | communication | replicated (model, preconditioner) | "
          "coordinator | serial + replicated | efficiency |")
    print("|---|---|---|---|---|---|---|---|---|")
    t1 = None
    for p in (1, 2, 64, 256, 1024):
        L = math.ceil(math.log2(p)) if p > 1 else 0
        C, d, n = 17, 7850, 5e6
        data = C * 2.6e-6 * n / p
        xstep = 10e-9 * n / p
        comm = 0.0 if p == 1 else C * (3 * 2 * ALPHA * L + 3 * 2 * 8 * d / BETA)
        # model-sized work per call, and the replicated Kronecker preconditioner (kron_preconditioner.hpp:
        # two triangular solves, 2 (nf+1)^2 K flops per application, one per call, at 16 GFLOP/s)
        rep = C * m["c_model"] * d + C * 2 * 785**2 * 10 / 16e9
        coord = m["coord"] + 3 * 2 * ALPHA * L
        t = data + xstep + comm + rep + coord
        t1 = t if p == 1 else t1
        print(f"| {p} | {t:.4f} | {data:.4f} | {xstep:.6f} | {comm:.5f} | {rep:.4f} | {coord:.6f} | "
              f"{(rep + coord) / t * 100:.2f}% | {t1 / (p * t) * 100:.0f}% |")


if __name__ == "__main__":
    main()
