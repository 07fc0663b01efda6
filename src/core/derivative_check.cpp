#include "bilevel/core/derivative_check.hpp"

#include <algorithm>
#include <cmath>
#include <functional>

#include "bilevel/core/batch_sampler.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/handle.hpp"
#include "bilevel/petsc/options.hpp"
#include "bilevel/petsc/vec_access.hpp"

namespace bilevel {

DerivativeCheckOptions DerivativeCheckOptions::from_options(MPI_Comm comm) {
  petsc::OptionsReader reader(comm, "bilevel_test_derivatives_", "Derivative checker");
  DerivativeCheckOptions o;
  o.seed = static_cast<std::uint64_t>(
      reader.integer("seed", static_cast<PetscInt>(o.seed), "seed of the random directions", 0));
  o.directions = reader.integer("directions", o.directions, "random directions per oracle", 1);
  o.step = reader.real("step", o.step, "relative finite-difference step", 0.0);
  o.tolerance = reader.real("tolerance", o.tolerance, "largest relative error that passes", 0.0);
  return o;
}

bool DerivativeReport::passed(PetscReal tol) const {
  return std::all_of(entries.begin(), entries.end(), [tol](const DerivativeCheckEntry& e) {
    return e.skipped || e.relative_error <= tol;
  });
}

PetscReal DerivativeReport::max_error() const {
  PetscReal m = 0;
  for (const auto& e : entries)
    if (!e.skipped) m = std::max(m, e.relative_error);
  return m;
}

const DerivativeCheckEntry* DerivativeReport::find(const std::string& oracle) const {
  for (const auto& e : entries)
    if (e.oracle == oracle) return &e;
  return nullptr;
}

void DerivativeReport::print(MPI_Comm comm) const {
  BILEVEL_PETSC_CALL(PetscPrintf(comm,
                                 "Derivative check: central differences, step %g, %" PetscInt_FMT
                                 " direction(s), tolerance %g\n",
                                 static_cast<double>(step),
                                 directions,
                                 static_cast<double>(tolerance)));
  BILEVEL_PETSC_CALL(PetscPrintf(comm,
                                 "  %-10s %-44s %14s %14s %10s\n",
                                 "oracle",
                                 "compared with",
                                 "oracle value",
                                 "reference",
                                 "rel.error"));
  for (const auto& e : entries) {
    if (e.skipped) {
      BILEVEL_PETSC_CALL(PetscPrintf(
          comm, "  %-10s %-44s skipped (%s)\n", e.oracle.c_str(), e.reference.c_str(), e.note.c_str()));
      continue;
    }
    BILEVEL_PETSC_CALL(PetscPrintf(comm,
                                   "  %-10s %-44s %14.6e %14.6e %10.2e %s\n",
                                   e.oracle.c_str(),
                                   e.reference.c_str(),
                                   static_cast<double>(e.analytic),
                                   static_cast<double>(e.reference_value),
                                   static_cast<double>(e.relative_error),
                                   e.relative_error <= tolerance ? "ok" : "FAILED"));
  }
  BILEVEL_PETSC_CALL(PetscPrintf(comm,
                                 "Derivative check %s (largest relative error %.2e)\n",
                                 passed() ? "passed" : "FAILED",
                                 static_cast<double>(max_error())));
}

namespace {

constexpr std::uint64_t kDirectionStream = 0x64636865636b0000ull;  // "dcheck"

/// Fills v with independent standard normals indexed by global entry, then scales it to RMS 1 (2-norm
/// sqrt(N)), so that a step h moves each entry by about h whatever the dimension. Collective.
void random_direction(Vec v, std::uint64_t seed, std::uint64_t stream) {
  PetscInt lo = 0, hi = 0, n = 0;
  BILEVEL_PETSC_CALL(VecGetOwnershipRange(v, &lo, &hi));
  BILEVEL_PETSC_CALL(VecGetSize(v, &n));
  {
    petsc::WriteView w(v);
    for (PetscInt i = lo; i < hi; ++i)
      w[i - lo] = counter_normal(seed, stream, static_cast<std::uint64_t>(i));
  }
  PetscReal norm = 0;
  BILEVEL_PETSC_CALL(VecNormalize(v, &norm));
  BILEVEL_PETSC_CALL(VecScale(v, std::sqrt(static_cast<PetscReal>(std::max<PetscInt>(n, 1)))));
}

/// Root mean square of the entries of v. Collective.
PetscReal rms(Vec v) {
  PetscReal norm = 0;
  PetscInt n = 0;
  BILEVEL_PETSC_CALL(VecNorm(v, NORM_2, &norm));
  BILEVEL_PETSC_CALL(VecGetSize(v, &n));
  return norm / std::sqrt(static_cast<PetscReal>(std::max<PetscInt>(n, 1)));
}

/// F'(0) by the fourth-order central difference (8 (F(h) − F(−h)) − (F(2h) − F(−2h))) / 12h.
PetscReal central(const std::function<PetscReal(PetscReal)>& F, PetscReal h) {
  return (8 * (F(h) - F(-h)) - (F(2 * h) - F(-2 * h))) / (12 * h);
}

PetscReal relative(PetscReal a, PetscReal b, PetscReal floor) {
  const PetscReal scale = std::max({std::abs(a), std::abs(b), floor});
  const PetscReal diff = std::abs(a - b);
  return diff == 0 ? 0 : diff / scale;
}

PetscReal norm2(Vec v) {
  PetscReal n = 0;
  BILEVEL_PETSC_CALL(VecNorm(v, NORM_2, &n));
  return n;
}

PetscReal dot(Vec a, Vec b) {
  PetscScalar d = 0;
  BILEVEL_PETSC_CALL(VecDot(a, b, &d));
  return PetscRealPart(d);
}

/// Runs `check`; turns NotImplemented into a skipped entry. Collective.
void run(DerivativeReport& report,
         DerivativeCheckEntry entry,
         const std::function<void(DerivativeCheckEntry&)>& check) {
  try {
    check(entry);
  } catch (const NotImplemented& e) {
    entry.skipped = true;
    entry.note = e.what();
  }
  report.entries.push_back(entry);
}

DerivativeCheckEntry entry(const std::string& oracle, const std::string& reference) {
  DerivativeCheckEntry e;
  e.oracle = oracle;
  e.reference = reference;
  return e;
}

DerivativeCheckEntry skipped(const std::string& oracle,
                             const std::string& reference,
                             const std::string& why) {
  DerivativeCheckEntry e = entry(oracle, reference);
  e.skipped = true;
  e.note = why;
  return e;
}

/// Keeps the worst error over the directions, and the values of the first direction (so the report does
/// not depend on which direction's rounding happens to be worst).
void record(DerivativeCheckEntry& e, bool first, PetscReal analytic, PetscReal reference, PetscReal error) {
  e.relative_error = std::max(e.relative_error, error);
  if (first) {
    e.analytic = analytic;
    e.reference_value = reference;
  }
}

}  // namespace

DerivativeReport check_derivatives(BilevelProblem& problem,
                                   Vec x,
                                   Vec y,
                                   const DerivativeCheckOptions& options) {
  DerivativeReport report;
  report.tolerance = options.tolerance;
  report.step = options.step;
  report.directions = options.directions;
  const Capability caps = problem.capabilities();
  const Batch full = Batch::all();
  const PetscReal hy = options.step * std::max<PetscReal>(1, rms(y));
  const PetscReal hx = options.step * std::max<PetscReal>(1, rms(x));

  petsc::VecHandle dy = petsc::duplicate(y), dx = petsc::duplicate(x), wy = petsc::duplicate(y);
  petsc::VecHandle yt = petsc::duplicate(y), xt = petsc::duplicate(x);
  petsc::VecHandle gy = petsc::duplicate(y), gx = petsc::duplicate(x);
  petsc::VecHandle hv = petsc::duplicate(y), fd = petsc::duplicate(y), jw = petsc::duplicate(x);

  // the points y + t d and x + t d
  auto at_y = [&](Vec d, PetscReal t) -> Vec {
    BILEVEL_PETSC_CALL(VecWAXPY(yt, t, d, y));
    return yt;
  };
  auto at_x = [&](Vec d, PetscReal t) -> Vec {
    BILEVEL_PETSC_CALL(VecWAXPY(xt, t, d, x));
    return xt;
  };
  auto stream = [](std::uint64_t check, PetscInt k, std::uint64_t which) {
    return kDirectionStream + (check << 12) + (static_cast<std::uint64_t>(k) << 2) + which;
  };
  const PetscInt nd = options.directions;

  // ∇_y g against values of g
  if (has(caps, Capability::LowerValue)) {
    run(report, entry("grad_y g", "central differences of g along y"), [&](DerivativeCheckEntry& e) {
      problem.lower_grad_y(x, y, full, gy);
      for (PetscInt k = 0; k < nd; ++k) {
        random_direction(dy, options.seed, stream(1, k, 0));
        const PetscReal ref =
            central([&](PetscReal t) { return problem.lower_value(x, at_y(dy, t), full); }, hy);
        const PetscReal an = dot(gy, dy);
        record(e, k == 0, an, ref, relative(an, ref, options.floor));
      }
    });
  } else {
    report.entries.push_back(skipped("grad_y g", "central differences of g along y", "no LowerValue"));
  }

  // ∇_x g against values of g
  if (has(caps, Capability::LowerValue) && has(caps, Capability::LowerGradX)) {
    run(report, entry("grad_x g", "central differences of g along x"), [&](DerivativeCheckEntry& e) {
      problem.lower_grad_x(x, y, full, gx);
      for (PetscInt k = 0; k < nd; ++k) {
        random_direction(dx, options.seed, stream(2, k, 0));
        const PetscReal ref =
            central([&](PetscReal t) { return problem.lower_value(at_x(dx, t), y, full); }, hx);
        const PetscReal an = dot(gx, dx);
        record(e, k == 0, an, ref, relative(an, ref, options.floor));
      }
    });
  } else {
    report.entries.push_back(
        skipped("grad_x g", "central differences of g along x", "no LowerGradX or LowerValue"));
  }

  // ∇_y f and ∇_x f against values of f
  if (has(caps, Capability::UpperValue)) {
    petsc::VecHandle fy = petsc::duplicate(y), fx = petsc::duplicate(x);
    problem.upper_grad(x, y, full, fx, fy);
    run(report, entry("grad_y f", "central differences of f along y"), [&](DerivativeCheckEntry& e) {
      for (PetscInt k = 0; k < nd; ++k) {
        random_direction(dy, options.seed, stream(3, k, 0));
        const PetscReal ref =
            central([&](PetscReal t) { return problem.upper_value(x, at_y(dy, t), full); }, hy);
        const PetscReal an = dot(fy, dy);
        record(e, k == 0, an, ref, relative(an, ref, options.floor));
      }
    });
    run(report, entry("grad_x f", "central differences of f along x"), [&](DerivativeCheckEntry& e) {
      for (PetscInt k = 0; k < nd; ++k) {
        random_direction(dx, options.seed, stream(4, k, 0));
        const PetscReal ref =
            central([&](PetscReal t) { return problem.upper_value(at_x(dx, t), y, full); }, hx);
        const PetscReal an = dot(fx, dx);
        record(e, k == 0, an, ref, relative(an, ref, options.floor));
      }
    });
  } else {
    report.entries.push_back(skipped("grad_y f", "central differences of f along y", "no UpperValue"));
    report.entries.push_back(skipped("grad_x f", "central differences of f along x", "no UpperValue"));
  }

  // H d against differences of ∇_y g (2-norm of the difference, relative):
  // fd = (8 (∇g(y + h d) − ∇g(y − h d)) − (∇g(y + 2h d) − ∇g(y − 2h d))) / 12h
  run(report, entry("hvp", "central differences of grad_y g along y"), [&](DerivativeCheckEntry& e) {
    for (PetscInt k = 0; k < nd; ++k) {
      random_direction(dy, options.seed, stream(5, k, 0));
      problem.lower_hvp(x, y, full, dy, hv);
      BILEVEL_PETSC_CALL(VecSet(fd, 0.0));
      const PetscReal weights[4][2] = {{hy, 8}, {-hy, -8}, {2 * hy, -1}, {-2 * hy, 1}};
      for (const auto& [t, c] : weights) {
        problem.lower_grad_y(x, at_y(dy, t), full, gy);
        BILEVEL_PETSC_CALL(VecAXPY(fd, c / (12 * hy), gy));
      }
      const PetscReal nh = norm2(hv), nf = norm2(fd);
      BILEVEL_PETSC_CALL(VecAXPY(fd, -1.0, hv));
      record(e, k == 0, nh, nf, norm2(fd) / std::max({nh, nf, options.floor}));
    }
  });

  // symmetry of H: <u, H v> = <v, H u>
  run(report, entry("hvp sym", "<u, H v> against <v, H u>"), [&](DerivativeCheckEntry& e) {
    for (PetscInt k = 0; k < nd; ++k) {
      random_direction(dy, options.seed, stream(6, k, 0));
      random_direction(wy, options.seed, stream(6, k, 1));
      problem.lower_hvp(x, y, full, dy, hv);
      problem.lower_hvp(x, y, full, wy, fd);
      const PetscReal a = dot(wy, hv), b = dot(dy, fd);
      record(e, k == 0, a, b, relative(a, b, options.floor));
    }
  });

  // the one-pass multi-vector product against single products
  run(report, entry("hvp_multi", "single hvp products"), [&](DerivativeCheckEntry& e) {
    random_direction(dy, options.seed, stream(7, 0, 0));
    random_direction(wy, options.seed, stream(7, 0, 1));
    petsc::VecHandle o1 = petsc::duplicate(y), o2 = petsc::duplicate(y);
    const Vec in[2] = {dy, wy};
    const Vec out[2] = {o1, o2};
    problem.lower_hvp_multi(x, y, full, std::span<const Vec>(in, 2), std::span<const Vec>(out, 2));
    for (int q = 0; q < 2; ++q) {
      problem.lower_hvp(x, y, full, in[q], hv);
      const PetscReal nh = norm2(hv);
      BILEVEL_PETSC_CALL(VecAXPY(hv, -1.0, out[q]));
      record(e, q == 0, norm2(out[q]), nh, norm2(hv) / std::max(nh, options.floor));
    }
  });

  // <d, J w> against differences of <∇_y g, w> along x
  run(report, entry("jvp", "central differences of <grad_y g, w> along x"), [&](DerivativeCheckEntry& e) {
    for (PetscInt k = 0; k < nd; ++k) {
      random_direction(wy, options.seed, stream(8, k, 0));
      random_direction(dx, options.seed, stream(8, k, 1));
      problem.lower_jvp(x, y, full, wy, jw);
      const PetscReal an = dot(jw, dx);
      const PetscReal ref = central(
          [&](PetscReal t) {
            problem.lower_grad_y(at_x(dx, t), y, full, gy);
            return dot(gy, wy);
          },
          hx);
      record(e, k == 0, an, ref, relative(an, ref, options.floor));
    }
  });
  return report;
}

}  // namespace bilevel
