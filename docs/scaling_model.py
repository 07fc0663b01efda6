#!/usr/bin/python3
"""The cost model of docs/scaling.md: time per outer iteration of aidcg at P ranks, fitted to
`bilevel-bench scale` summaries, for per-feature logistic regression (synthetic at 100x, 20 Newsgroups
ngram2) and hyper-cleaning with 5M samples.

usage: docs/scaling_model.py [--set NAME=VALUE ...] BIG_1RANK.json SMALL_1RANK.json [BYTES_P.json ...]
                             [--split MODEL_1RANK.json MODEL_2RANK.json] [--ngram2 ngram2-columns.json]
                             [--ngram2-runs SOLVE_1RANK.json SOLVE_2RANK.json]
  BIG/SMALL: two 1-rank runs with the same --cols and different --rows (they separate the per-nonzero cost
    from the per-model-entry cost of an oracle call); BYTES_*: runs at several rank counts (oversubscribed
    is fine: only their byte counts are used); --split: a model-dominated problem (many columns, few
    nonzeros) at 1 and 2 ranks: its 1-rank run gives c_model for a model that does not fit in cache, and with
    --set fit_split=1 its 2-rank run fits the share s of model-sized work split over the owners (else
    INPUTS["split_share"]); --ngram2: the counts of docs/scaling-data/ngram2_columns.py; --ngram2-runs: the
    summaries of `bilevel-solve` on that problem at 1 and 2 ranks (scale-news20-ngram2's command): the 1-rank
    run calibrates the compute constants for this data set (one factor on c_nz and c_model: its skewed
    columns and long rows do not cost what uniform random ones do), the 2-rank run checks the prediction.
  --set NAME=VALUE overrides one of INPUTS below, e.g. --set ns_per_nonzero=2.5 after the HVP kernel changed.

Per outer iteration of C oracle calls (HVPs, gradients, the JVP: each one pass over the rank's rows), in the
"owners" design the code uses for wide models (-bilevel_logreg_model_comm owners/auto):
  T(P) = C [c_nz nnz_max(P) + c_model (s d/P + (1 - s) k(P)) + t_comm(P)] + t_coord(P)
  c_nz      seconds per nonzero per call: the data pass (the HVP kernel). ONE INPUT: INPUTS["ns_per_nonzero"]
            (None: fitted from BIG and SMALL); the lead updates it when the HVP kernel changes.
  c_model   seconds per model entry per call (fitted from BIG and SMALL at d = cols + 1): the model-sized
            work of a call. A share s of it runs on the entries a rank owns (d/P: the regulariser, exp(x), CG's
            vector updates), the rest on the compressed arrays of the k(P) columns its rows use (the scatter
            buffers and the partial sums); k(1) = d.
  t_comm    h exchanges per call, each sending the (P-1)/P of its k(P) entries that other ranks own:
            h [a min(P - 1, k(P)) + 8 k(P) (P - 1)/P / b]; h fitted to the byte counts
            (bytes per iteration = C h 8 k(P) (P - 1)/P, k(P) = d (1 - exp(-nnz/(P d))) for random columns).
  t_coord   the coordinator: 3 reductions of a few scalars per iteration (the boundary decision, two NaN
            checks), 3 (2 a L), L = ceil(log2 P), plus rank 0's own decision work (coordinator_fraction T(1)).
Compute constants are scaled to a quiet machine: c * triad_measured / INPUTS["triad_quiet"] (the reference
is the 1-rank triad of the quiet machine the fit runs were taken on, so predicted seconds are that machine's). Network
constants are assumptions (no network here): a = 2 us per message, b = 10 GB/s per rank.
"""
import json
import math
import sys

INPUTS = {
    # seconds per nonzero per oracle call on a quiet machine, in ns; None = fitted from the two 1-rank runs.
    # The HVP kernel (src/problems/logreg_hvp.cpp) sets it: update it here or with --set when that changes.
    "ns_per_nonzero": None,
    "split_share": 0.5,  # share of model-sized work on the entries a rank owns (the rest: on its k(P) columns)
    "fit_split": 0,  # 1: fit split_share from the --split 2-rank run (only on a quiet machine: 2 ranks need 2 cores)
    # GB/s, one rank: the quiet 2-vCPU AMD EPYC of the fit runs in docs/scaling-data/ (their 1-rank triads:
    # 26.9-31.1). The Intel machine of shared/reference/performance-facts.md measured 15.
    "triad_quiet": 29.0,
    "alpha": 2e-6,  # s per message (InfiniBand-class latency incl. software)
    "beta": 10e9,  # bytes/s per rank
}


def load(path):
    with open(path) as f:
        return json.load(f)


def calls(s):
    return s["hvp_per_iteration"] + s["grad_g_per_iteration"] + s["grad_f_per_iteration"] + s["jvp_per_iteration"]


def random_columns(d, nnz):
    """Expected distinct columns among nnz uniformly drawn ones out of d."""
    return d * (1 - math.exp(-nnz / d))


def quiet(s, seconds):
    return seconds * s["triad_bandwidth_gbs"] / INPUTS["triad_quiet"]


def fit(big, small, byte_runs, split_runs):
    nnz = lambda s: s["rows"] * s["nnz_per_row"]
    d = big["cols"] + 1  # w and the intercept
    t_big = quiet(big, big["iteration_seconds"] / calls(big))
    t_small = quiet(small, small["iteration_seconds"] / calls(small))
    c_nz_fit = (t_big - t_small) / (nnz(big) - nnz(small))
    c_nz = c_nz_fit if INPUTS["ns_per_nonzero"] is None else INPUTS["ns_per_nonzero"] * 1e-9
    c_model = max(0.0, (t_small - c_nz_fit * nnz(small)) / d)
    # bytes per iteration = C h 8 k(P) (P-1)/P: least squares for h over the runs with P > 1
    rows = []
    for s in byte_runs:
        p = s["ranks"]
        if p < 2:
            continue
        k = random_columns(s["cols"] + 1, nnz(s) / p)
        rows.append((p, s["bytes_communicated_per_iteration"], calls(s) * 8 * k * (p - 1) / p))
    h = sum(b * x for _, b, x in rows) / sum(x * x for _, _, x in rows) if rows else 2.0
    share = INPUTS["split_share"]
    share_note = "assumed"
    model_note = f"from the {small['rows']:,}-row run, d = {d:,}"
    if split_runs:
        one, two = split_runs
        dm, n = one["cols"] + 1, nnz(one)
        t1 = quiet(one, one["iteration_seconds"] / calls(one))
        t2 = quiet(two, two["iteration_seconds"] / calls(two))
        # a model of d = 1M entries does not fit in cache, as in the workloads predicted: c_model from it
        c_model = max(0.0, (t1 - c_nz_fit * n) / dm)
        model_note = f"from the model-dominated run, d = {dm:,}"
        k2 = random_columns(dm, n / 2)
        # t2 = c_nz n/2 + c_model (s dm/2 + (1-s) k2) (+ the shared-memory exchange, neglected)
        if c_model > 0 and abs(dm / 2 - k2) > 1 and INPUTS.get("fit_split", 0):
            share = min(1.0, max(0.0, ((t2 - c_nz_fit * n / 2) / c_model - k2) / (dm / 2 - k2)))
            share_note = "fitted from the 2-rank run"
    coord = quiet(big, big["coordinator_fraction"] * big["iteration_seconds"])
    return dict(c_nz=c_nz, c_nz_fit=c_nz_fit, c_model=c_model, C=calls(big), h=h, share=share,
                share_note=share_note, model_note=model_note, coord=coord, residual=[(p, b, x * h) for p, b, x in rows])


def iteration(m, w, p):
    """Parts of T(P) in seconds: data pass, model-sized work, communication, coordinator."""
    a, b = INPUTS["alpha"], INPUTS["beta"]
    L = math.ceil(math.log2(p)) if p > 1 else 0
    d, C, k, f = w["d"], w.get("C", m["C"]), w["k"](p), w.get("factor", 1.0)
    data = f * C * m["c_nz"] * w["nnz_max"](p)
    model = f * C * m["c_model"] * (m["share"] * d / p + (1 - m["share"]) * (d if p == 1 else k))
    comm = 0.0 if p == 1 else C * m["h"] * (a * min(p - 1, k) + 8 * k * (p - 1) / p / b)
    coord = m["coord"] + 3 * 2 * a * L
    return data, model, comm, coord


def table(m, name, w):
    t1 = sum(iteration(m, w, 1))
    print(f"\n**{name}, C = {w.get('C', m['C']):.1f} calls per iteration: T(1) = {t1:.3f} s**\n")
    print("| ranks | T(P) s | data pass | model-sized | communication | coordinator (serial) | serial share | "
          "efficiency |")
    print("|---|---|---|---|---|---|---|---|")
    for p in (1, 2, 64, 256, 1024):
        data, model, comm, coord = iteration(m, w, p)
        t = data + model + comm + coord
        print(f"| {p} | {t:.4f} | {data:.4f} | {model:.4f} | {comm:.4f} | {coord:.6f} | "
              f"{coord / t * 100:.3f}% | {t1 / (p * t) * 100:.0f}% |")


def main():
    args = sys.argv[1:]
    files, split, ngram2, ngram2_runs = [], [], None, []
    while args:
        a = args.pop(0)
        if a == "--set":
            name, value = args.pop(0).split("=", 1)
            if name not in INPUTS:
                sys.exit(f"--set: unknown input {name}; known: {', '.join(INPUTS)}")
            INPUTS[name] = None if value == "None" else float(value)
        elif a == "--split":
            split = [load(args.pop(0)), load(args.pop(0))]
        elif a == "--ngram2":
            ngram2 = load(args.pop(0))
        elif a == "--ngram2-runs":
            ngram2_runs = [load(args.pop(0)), load(args.pop(0))]
        else:
            files.append(a)
    if len(files) < 2:
        sys.exit(__doc__)
    big, small = load(files[0]), load(files[1])
    m = fit(big, small, [load(p) for p in files[2:]], split)
    print(f"inputs: {INPUTS}")
    print(f"fitted (quiet-machine seconds): c_nz = {m['c_nz'] * 1e9:.2f} ns per nonzero per call "
          f"(fit {m['c_nz_fit'] * 1e9:.2f}), c_model = {m['c_model'] * 1e9:.2f} ns per model entry per call "
          f"({m['model_note']}), "
          f"split share s = {m['share']:.2f} ({m['share_note']}), C = {m['C']:.0f} calls per iteration, "
          f"h = {m['h']:.2f} exchanges per call, coordinator work {m['coord'] * 1e6:.1f} us per iteration")
    for p, measured, model in m["residual"]:
        print(f"  bytes per iteration at {p} ranks: measured {measured / 1e6:.2f} MB, model {model / 1e6:.2f} MB")
    # synthetic at 100x: 400M rows x 20M features, 40 per row; rows balanced by nonzeros
    syn_nnz, syn_d = 400e6 * 40, 20e6
    synthetic = dict(d=syn_d, nnz_max=lambda p: syn_nnz / p, k=lambda p: random_columns(syn_d, syn_nnz / p))
    table(m, "synthetic at 100x (400M x 20M, 16e9 nonzeros)", synthetic)
    # 20 Newsgroups unigram + bigram training file, rows balanced by nonzeros: nnz_max and k(P) counted on the
    # file (docs/scaling-data/ngram2_columns.py); between the counted P, k and nnz_max are interpolated.
    if ngram2:
        r = ngram2["ranks"]
        # C measured on this problem (-log_view of scale-news20-ngram2's 1-rank run: 319 HVPs, 62 gradients and
        # 20 JVPs in 20 aidcg iterations), not the synthetic problem's
        ng = dict(d=ngram2["features"] + 1, nnz_max=lambda p: r[str(p)]["nnz_max"], k=lambda p: r[str(p)]["k_max"],
                  C=(319 + 62 + 20) / 20)
        if ngram2_runs:
            # One factor on the compute constants so that T(1) is the measured 1-rank time per iteration; the
            # communication and the coordinator keep their fitted/assumed constants.
            one, two = ngram2_runs
            per_it = lambda s: s["wall_time_s"] / s["outer_iterations"]
            data, model, comm, coord = iteration(m, ng, 1)
            ng["factor"] = (per_it(one) - coord) / (data + model)
            t2 = sum(iteration(m, ng, 2))
            k2 = r["2"]["k_max"]
            print(f"20 Newsgroups ngram2 calibration: measured {per_it(one):.3f} s per iteration at 1 rank, uniform-"
                  f"column constants give {data + model + coord:.3f} s: factor {ng['factor']:.2f} on c_nz and c_model; "
                  f"check at 2 ranks: measured {per_it(two):.3f} s, model {t2:.3f} s; bytes per iteration at 2 "
                  f"ranks: measured {two['bytes_communicated_per_iteration'] / 1e6:.1f} MB, model "
                  f"{ng['C'] * m['h'] * 8 * k2 / 2 / 1e6:.1f} MB")
        table(m, f"20 Newsgroups ngram2 per-feature ({ngram2['rows']:,} x {ngram2['features']:,}, "
                 f"{ngram2['nonzeros']:,} nonzeros)", ng)
    # hyper-cleaning, 5M samples of 784 pixels, 10 classes: a call is one dense pass over the rank's rows
    # (docs/performance.md: an HVP takes 132 ms for 50,000 dense rows at 1 rank -> 2.6 us per row), the model
    # (785 x 10 = 7,850 entries) is gathered and reduced whole (tiny), x (5M weights) lives with the rows and
    # its Adam step costs ~10 ns per entry on its owner. C = 17 calls per iteration (measured on
    # Fashion-MNIST: 43 HVPs + 3 gradients + 3 JVPs in 3 iterations).
    a, b = INPUTS["alpha"], INPUTS["beta"]
    print("\n**hyper-cleaning, 5M samples (model 7,850 entries, x = 5M weights owner-computed)**\n")
    print("| ranks | T(P) s | data pass | x step | communication | replicated (model, preconditioner) | "
          "coordinator | serial + replicated | efficiency |")
    print("|---|---|---|---|---|---|---|---|---|")
    t1 = None
    for p in (1, 2, 64, 256, 1024):
        L = math.ceil(math.log2(p)) if p > 1 else 0
        C, d, n = 17, 7850, 5e6
        data = C * 2.6e-6 * n / p
        xstep = 10e-9 * n / p
        comm = 0.0 if p == 1 else C * (3 * 2 * a * L + 3 * 2 * 8 * d / b)
        # model-sized work per call (gathered whole: replicated), and the replicated Kronecker preconditioner
        # (kron_preconditioner.hpp: two triangular solves, 2 (nf+1)^2 K flops per application, one per call,
        # at 16 GFLOP/s)
        rep = C * m["c_model"] * d + C * 2 * 785**2 * 10 / 16e9
        coord = m["coord"] + 3 * 2 * a * L
        t = data + xstep + comm + rep + coord
        t1 = t if p == 1 else t1
        print(f"| {p} | {t:.4f} | {data:.4f} | {xstep:.6f} | {comm:.5f} | {rep:.4f} | {coord:.6f} | "
              f"{(rep + coord) / t * 100:.2f}% | {t1 / (p * t) * 100:.0f}% |")


if __name__ == "__main__":
    main()
