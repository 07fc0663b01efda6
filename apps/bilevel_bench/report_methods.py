#!/usr/bin/python3
"""Plots and time-to-target tables of a `bilevel-bench methods` output folder.

    /usr/bin/python3 apps/bilevel_bench/report_methods.py DIR [--img-dir D] [--img-link PREFIX] [--markdown FILE]

Reads DIR/runs.csv, DIR/failures.txt and the per-run traces DIR/<problem>/<method>-seed<k>.csv (+ .json)
and writes, per problem, one PNG (DIR/img/methods-<problem>.png by default) with four panels:

    upper objective       vs time | vs oracle calls
    test accuracy         vs time | vs oracle calls
(quadratic: |f - F*| and the true hypergradient norm ||grad F(x_k)||, both on a log scale)

each method as the mean over seeds with a min/max band, and a markdown report (DIR/report.md by default)
with one table per problem. Definitions (also in docs/benchmarks.md):

* time: the trace's wall_time_s (the solver's clock without its own monitoring evaluations);
* oracle calls: grad_f + grad_g + hvp + jvp (cumulative; every Hessian- or Jacobian-vector product counts
  one, a gradient of f counts one for both partial gradients, whatever the batch size: a minibatch call
  of a stochastic method counts as much as a full-batch one; runs.csv also has the samples touched);
  value evaluations are not counted;
* final values: the last trace row, mean ± half the range over the seeds that did not diverge;
* objective target: F_best + 0.01 |F_best|, F_best the smallest upper objective of any trace row of any
  run on the problem (all methods, all seeds), or F* where the problem has a closed form (quadratic: an
  iterate with y_k far from y*(x_k) can have f(x_k, y_k) < F*); a run reaches it at its first row with
  F <= target;
* accuracy target: 0.99 * A_best, A_best the largest test accuracy of any row; reached at the first row
  with accuracy >= target;
* quadratic gradient target: 1e-4 times the median over runs of ||grad F|| at the first record.

Needs only numpy and matplotlib (Debian's python3-numpy, python3-matplotlib); draws with the Agg backend.
"""
import argparse
import csv
import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

PROBLEM_ORDER = ["quadratic", "finite_sum_quadratic", "spectral_logsumexp", "logreg", "hyperclean"]
# problems with a closed-form F* and true hypergradient in their summaries and traces
CLOSED_FORM = ("quadratic", "finite_sum_quadratic")
ORACLES = ("grad_f", "grad_g", "hvp", "jvp")
# Problem-specific keys of the summaries shown as extra table columns (hyperclean's detection of the
# corrupted samples: sigma(x_i) < 1/2).
SUMMARY_COLUMNS = {"detection_f1": "final detection F1"}


def read_runs(folder):
    path = os.path.join(folder, "runs.csv")
    if not os.path.exists(path):
        sys.exit(f"report_methods.py: no {path}: run `bilevel-bench methods --out {folder}` first")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_failures(folder):
    failures = {}
    path = os.path.join(folder, "failures.txt")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                key, _, message = line.partition(": ")
                failures[key.strip()] = message.strip()
    return failures


def column(rows, name):
    return np.array([float(r[name]) if r.get(name, "") not in ("", None) else np.nan for r in rows])


def read_trace(path):
    """Arrays of one trace CSV, or None when it has no rows."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    t = {
        "time": column(rows, "wall_time_s"),
        "objective": column(rows, "upper_objective"),
        "true_grad": column(rows, "true_hypergradient_norm"),
        "accuracy": column(rows, "test_accuracy"),
        "calls": sum(column(rows, k) for k in ORACLES),
    }
    return t


class Run:
    def __init__(self, row, trace, summary):
        self.problem = row["problem"]
        self.method = row["method"]
        self.seed = int(row["seed"])
        self.status = row["status"]
        self.reason = row["converged_reason"]
        self.trace = trace
        self.summary = summary or {}

    def first_reach(self, key, target, larger_is_better=False):
        """(time, calls) at the first record that meets the target, or None."""
        v = self.trace[key]
        with np.errstate(invalid="ignore"):
            hit = v >= target if larger_is_better else v <= target
        idx = np.flatnonzero(hit)
        if idx.size == 0:
            return None
        i = idx[0]
        return float(self.trace["time"][i]), float(self.trace["calls"][i])

    def blew_up(self):
        """Finite but exploded: the last objective is more than 10 times the first (objectives >= 0)."""
        v = self.trace["objective"]
        return bool(np.isfinite(v[0]) and v[0] > 0 and self.final("objective") > 10 * v[0])

    def final(self, key):
        v = self.trace[key]
        finite = v[np.isfinite(v)]
        return float(finite[-1]) if finite.size else math.nan


def load(folder):
    runs, errors = {}, {}
    for row in read_runs(folder):
        problem, method = row["problem"], row["method"]
        stem = os.path.join(folder, problem, f"{method}-seed{row['seed']}")
        trace = read_trace(stem + ".csv") if os.path.exists(stem + ".csv") else None
        summary = None
        if os.path.exists(stem + ".json"):
            with open(stem + ".json") as f:
                summary = json.load(f)
        if row["status"] == "error" or trace is None:
            errors.setdefault(problem, {}).setdefault(method, []).append(row)
            continue
        runs.setdefault(problem, {}).setdefault(method, []).append(Run(row, trace, summary))
    return runs, errors


def optimal_objective(runs):
    for r in runs:
        if r.summary.get("optimal_upper_objective") is not None:
            return float(r.summary["optimal_upper_objective"])
    return None


def targets(problem, by_method):
    all_runs = [r for rs in by_method.values() for r in rs]
    out = {}
    objectives = np.concatenate([r.trace["objective"] for r in all_runs])
    objectives = objectives[np.isfinite(objectives)]
    f_star = optimal_objective(all_runs)
    if f_star is not None:
        out["objective"] = (f_star, f_star + 0.01 * abs(f_star))
    elif objectives.size:
        best = float(objectives.min())
        out["objective"] = (best, best + 0.01 * abs(best))
    accuracies = np.concatenate([r.trace["accuracy"] for r in all_runs])
    accuracies = accuracies[np.isfinite(accuracies)]
    if accuracies.size:
        best = float(accuracies.max())
        out["accuracy"] = (best, 0.99 * best)
    first_grads = [r.trace["true_grad"][0] for r in all_runs if np.isfinite(r.trace["true_grad"][0])]
    if first_grads:
        g0 = float(np.median(first_grads))
        out["true_grad"] = (g0, 1e-4 * g0)
    return out


def spread(values):
    """'mean ± half-range' over seeds (finite values only)."""
    v = np.array([x for x in values if np.isfinite(x)])
    if v.size == 0:
        return "n/a", math.nan
    mean = float(v.mean())
    half = float(v.max() - v.min()) / 2
    return (f"{mean:.6g} ± {half:.2g}" if v.size > 1 else f"{mean:.6g}"), mean


def reach_cell(runs, key, target, larger_is_better=False):
    """('time cell', 'calls cell', sort key) for a target."""
    hits = [r.first_reach(key, target, larger_is_better) for r in runs]
    reached = [h for h in hits if h is not None]
    n = len(runs)
    if not reached:
        return "not reached", "not reached", math.inf
    t = np.mean([h[0] for h in reached])
    c = np.mean([h[1] for h in reached])
    tag = f" ({len(reached)}/{n})"
    return f"{t:.3g}{tag}", f"{c:.3g}{tag}", t if len(reached) == n else 1e12 + t


def table(problem, by_method, errors, failures, tg):
    quadratic = problem in CLOSED_FORM
    f_star = optimal_objective([r for rs in by_method.values() for r in rs]) if quadratic else None
    lines = []
    if quadratic:
        head = ["method", "runs", "final f − F*", "final ‖∇F(x)‖", "time to F target (s)", "oracle calls to F target",
                "time to ‖∇F‖ target (s)", "oracle calls to ‖∇F‖ target"]
    else:
        head = ["method", "runs", "final upper objective", "final test accuracy", "time to F target (s)",
                "oracle calls to F target", "time to accuracy target (s)", "oracle calls to accuracy target"]
    all_runs = [r for rs in by_method.values() for r in rs]
    extra = [k for k in SUMMARY_COLUMNS if any(r.summary.get(k) is not None for r in all_runs)]
    head += [SUMMARY_COLUMNS[k] for k in extra]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    body = []
    for method, runs in by_method.items():
        ok = sum(r.status == "ok" for r in runs)
        n_err = len(errors.get(method, []))
        runs_cell = f"{ok}/{len(runs) + n_err}"
        diverged = [r for r in runs if r.status == "diverged"]
        if diverged:
            runs_cell += f" ({len(diverged)} diverged: {diverged[0].reason})"
        blown = [r for r in runs if r.status == "ok" and r.blew_up()]
        if blown:
            runs_cell += f" ({len(blown)} blew up: final F > 10 × first)"
        # Final values over the runs that did not diverge; for a method whose every run diverged, the best
        # objective reached before the divergence.
        finished = [r for r in runs if r.status == "ok"]
        if not finished:
            best = min(float(np.nanmin(r.trace["objective"])) for r in runs)
            final_obj, final_2 = f"all diverged (best before: {best:.6g})", "n/a"
        elif quadratic and f_star is not None:
            final_obj, _ = spread([r.final("objective") - f_star for r in finished])
            final_2, _ = spread([r.final("true_grad") for r in finished])
        else:
            final_obj, _ = spread([r.final("objective") for r in finished])
            final_2, _ = spread([r.final("accuracy") for r in finished])
        t1, c1, key1 = reach_cell(runs, "objective", tg["objective"][1]) if "objective" in tg else ("", "", math.inf)
        if quadratic and "true_grad" in tg:
            t2, c2, key1 = reach_cell(runs, "true_grad", tg["true_grad"][1])
        elif "accuracy" in tg:
            t2, c2, _ = reach_cell(runs, "accuracy", tg["accuracy"][1], larger_is_better=True)
        else:
            t2 = c2 = "n/a"
        final_sort = np.nanmean([r.final("true_grad" if quadratic else "objective") for r in finished] or [math.inf])
        cells = [method, runs_cell, final_obj, final_2, t1, c1, t2, c2]
        for k in extra:
            cells.append(spread([float(r.summary[k]) if r.summary.get(k) is not None else math.nan
                                 for r in finished])[0])
        body.append(((key1, final_sort), cells))
    for method, rows in errors.items():
        if method in by_method:
            continue
        key = f"{problem} {method} seed {rows[0]['seed']}"
        message = failures.get(key, rows[0]["converged_reason"])
        if len(message) > 110:
            message = message[:107] + "..."
        body.append(((math.inf, math.inf), [method, f"0/{len(rows)}", f"failed: {message}"] + [""] * (len(head) - 3)))
    body.sort(key=lambda b: b[0])
    lines += ["| " + " | ".join(cells) + " |" for _, cells in body]
    return "\n".join(lines)


def band(runs, xkey, ykey, transform=None, points=200):
    """Grid, mean, min, max over seeds of a step-interpolated y(x), on the x range every seed covers."""
    series = []
    for r in runs:
        x, y = r.trace[xkey], r.trace[ykey]
        if transform is not None:
            y = transform(y)
        keep = np.isfinite(x) & np.isfinite(y) & (x > 0)
        if keep.sum() >= 1:
            series.append((x[keep], y[keep]))
    if not series:
        return None
    lo = max(s[0][0] for s in series)
    hi = min(s[0][-1] for s in series)
    if not hi > lo:
        if len(series) == 1 or hi == lo:
            x, y = series[0]
            return x, y, y, y
        return None
    grid = np.geomspace(lo, hi, points)
    values = np.array([y[np.searchsorted(x, grid, side="right") - 1] for x, y in series])
    return grid, values.mean(axis=0), values.min(axis=0), values.max(axis=0)


def plot(problem, by_method, colors, tg, path):
    quadratic = problem in CLOSED_FORM
    all_runs = [r for rs in by_method.values() for r in rs]
    f_star = optimal_objective(all_runs) if quadratic else None
    has_accuracy = any(np.isfinite(r.trace["accuracy"]).any() for r in all_runs)
    if quadratic and f_star is not None:
        rows = [("objective", lambda y: np.abs(y - f_star), "|f(x_k, y_k) − F*|", True),
                ("true_grad", None, "‖∇F(x_k)‖ (exact)", True)]
    else:
        rows = [("objective", None, "upper objective (validation loss)", False)]
        if has_accuracy:
            rows.append(("accuracy", None, "test accuracy", False))
    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 3.6 * len(rows)), squeeze=False)
    for i, (ykey, transform, label, log_y) in enumerate(rows):
        for j, (xkey, xlabel) in enumerate([("time", "time (s, without monitoring)"),
                                            ("calls", "oracle calls (grad_f + grad_g + hvp + jvp)")]):
            ax = axes[i][j]
            for method, runs in by_method.items():
                b = band(runs, xkey, ykey, transform)
                if b is None:
                    continue
                grid, mean, lo, hi = b
                ax.plot(grid, mean, color=colors[method], label=method, lw=1.4)
                if len(runs) > 1:
                    ax.fill_between(grid, lo, hi, color=colors[method], alpha=0.18, lw=0)
            ax.set_xscale("log")
            if log_y:
                ax.set_yscale("log")
            elif ykey == "objective" and "objective" in tg:
                best, target = tg["objective"]
                starts = [r.trace["objective"][0] for r in all_runs if np.isfinite(r.trace["objective"][0])]
                top = float(np.median(starts)) if starts else best + 1
                pad = 0.05 * max(top - best, 1e-12)
                ax.set_ylim(best - pad, top + pad)
                ax.axhline(target, color="0.4", ls=":", lw=1)
            elif ykey == "accuracy" and "accuracy" in tg:
                best, target = tg["accuracy"]
                finals = [r.final("accuracy") for r in all_runs if np.isfinite(r.final("accuracy"))]
                low = min(min(finals), target) if finals else target
                ax.set_ylim(low - 0.02 * (best - low + 1e-3), best + 0.1 * (best - low + 1e-3))
                ax.axhline(target, color="0.4", ls=":", lw=1)
            if quadratic and ykey == "true_grad" and "true_grad" in tg:
                ax.axhline(tg["true_grad"][1], color="0.4", ls=":", lw=1)
            if quadratic and ykey == "objective" and f_star is not None and "objective" in tg:
                ax.axhline(tg["objective"][1] - f_star, color="0.4", ls=":", lw=1)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(label)
            ax.grid(True, which="major", alpha=0.3)
    axes[0][0].legend(fontsize=8, ncol=2)
    n_seeds = max(len(rs) for rs in by_method.values())
    fig.suptitle(f"{problem}: mean over {n_seeds} seed(s), band = min/max; dotted line = target", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", help="output folder of bilevel-bench methods (--out)")
    ap.add_argument("--img-dir", help="where the PNGs go (default FOLDER/img)")
    ap.add_argument("--img-link", help="path prefix of the images in the markdown (default: relative to it)")
    ap.add_argument("--markdown", help="markdown report (default FOLDER/report.md)")
    args = ap.parse_args()
    folder = args.folder
    img_dir = args.img_dir or os.path.join(folder, "img")
    markdown = args.markdown or os.path.join(folder, "report.md")
    os.makedirs(img_dir, exist_ok=True)
    runs, errors = load(folder)
    failures = read_failures(folder)
    methods = sorted({m for p in list(runs.values()) + list(errors.values()) for m in p})
    palette = plt.get_cmap("tab10").colors + plt.get_cmap("Dark2").colors
    colors = {m: palette[i % len(palette)] for i, m in enumerate(methods)}
    problems = [p for p in PROBLEM_ORDER if p in runs or p in errors]
    problems += sorted(p for p in set(runs) | set(errors) if p not in PROBLEM_ORDER)
    out = ["# bilevel-bench methods report", ""]
    plots = 0
    for problem in problems:
        by_method = dict(sorted(runs.get(problem, {}).items()))
        out += [f"## {problem}", ""]
        if not by_method:
            out += ["No run of this problem produced a trace.", ""]
            out += [table(problem, by_method, errors.get(problem, {}), failures, {}), ""]
            continue
        tg = targets(problem, by_method)
        f_star = optimal_objective([r for rs in by_method.values() for r in rs])
        if f_star is not None:
            out.append(f"- objective target: F* + 1% |F*| = {tg['objective'][1]:.6g} (F* = {f_star:.10g}, closed form)")
        elif "objective" in tg:
            out.append(f"- objective target: F_best + 1% |F_best| = {tg['objective'][1]:.6g} "
                       f"(F_best = {tg['objective'][0]:.6g})")
        if problem in CLOSED_FORM and "true_grad" in tg:
            out.append(f"- gradient target: 1e-4 × median first-record ‖∇F‖ = {tg['true_grad'][1]:.3g}")
        elif "accuracy" in tg:
            out.append(f"- accuracy target: 99% of A_best = {tg['accuracy'][1]:.4f} (A_best = {tg['accuracy'][0]:.4f})")
        baselines = {r.summary.get("baseline_test_accuracy") for rs in by_method.values() for r in rs} - {None}
        if baselines:
            out.append(f"- baseline (same model trained on the noisy labels, uniform weights): test accuracy "
                       f"{', '.join(f'{b:.4f}' for b in sorted(baselines))}")
        out.append("")
        out.append(table(problem, by_method, errors.get(problem, {}), failures, tg))
        out.append("")
        name = f"methods-{problem}.png"
        plot(problem, by_method, colors, tg, os.path.join(img_dir, name))
        plots += 1
        link = (args.img_link + name) if args.img_link is not None else os.path.relpath(
            os.path.join(img_dir, name), os.path.dirname(os.path.abspath(markdown)))
        out += [f"![{problem}]({link})", ""]
    if failures:
        out += ["## Failures (DIR/failures.txt)", ""] + [f"- {k}: {v}" for k, v in sorted(failures.items())] + [""]
    with open(markdown, "w") as f:
        f.write("\n".join(out))
    print(f"report_methods.py: wrote {markdown} and {plots} plot(s) in {img_dir}")


if __name__ == "__main__":
    main()
