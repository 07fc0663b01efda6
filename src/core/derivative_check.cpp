#include "bilevel/core/derivative_check.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <functional>
#include <set>

#include "bilevel/core/batch_sampler.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/handle.hpp"
#include "bilevel/petsc/options.hpp"
#include "bilevel/petsc/vec_access.hpp"

namespace bilevel {

std::string_view to_string(DerivativeCheckPoint point) {
  switch (point) {
    case DerivativeCheckPoint::Random:
      return "random";
    case DerivativeCheckPoint::Current:
      return "current";
  }
  return "unknown";
}

bool from_string(std::string_view name, DerivativeCheckPoint* point) {
  for (const DerivativeCheckPoint p : {DerivativeCheckPoint::Random, DerivativeCheckPoint::Current})
    if (name == to_string(p)) {
      *point = p;
      return true;
    }
  return false;
}

DerivativeCheckOptions DerivativeCheckOptions::from_options(MPI_Comm comm) {
  petsc::OptionsReader reader(comm, petsc::prefixed("bilevel_test_derivatives_"), "Derivative checker");
  DerivativeCheckOptions o;
  o.seed = reader.unsigned64("seed", o.seed, "seed of the random point and directions");
  o.directions = reader.integer("directions", o.directions, "random directions per oracle", 1);
  from_string(reader.choice("point",
                            std::string(to_string(o.point)),
                            {"random", "current"},
                            "where to compare: a seeded random point near the start, or the start itself"),
              &o.point);  // choice() accepted only these names
  o.spread = reader.real(
      "spread", o.spread, "random point: start + spread * max(1, RMS of the start) * N(0, 1) per entry", 0.0);
  o.step = reader.real("step", o.step, "relative finite-difference step", 0.0);
  o.tolerance = reader.real("tolerance", o.tolerance, "largest relative error that passes", 0.0);
  return o;
}

bool DerivativeReport::passed(PetscReal tol) const {
  return std::all_of(entries.begin(), entries.end(), [tol](const DerivativeCheckEntry& e) {
    return e.skipped || e.vacuous || e.relative_error <= tol;
  });
}

PetscReal DerivativeReport::max_error() const {
  PetscReal m = 0;
  for (const auto& e : entries)
    if (!e.skipped && !e.vacuous) m = std::max(m, e.relative_error);
  return m;
}

std::vector<std::string> DerivativeReport::flagged_oracles(PetscReal tol) const {
  // Failed comparisons, and the oracles that a passed comparison of two oracles cleared.
  std::vector<const DerivativeCheckEntry*> failed;
  std::set<std::string> cleared;
  for (const auto& e : entries) {
    if (e.skipped || e.vacuous) continue;
    if (e.relative_error > tol)
      failed.push_back(&e);
    else if (e.uses.size() >= 2)
      cleared.insert(e.uses.begin(), e.uses.end());
  }
  // Candidates (in the entries' order), and per failed comparison the bit set of its candidates; a failed
  // comparison whose oracles were all cleared (inconsistent) names its checked oracle.
  std::vector<std::string> candidates, named;
  std::vector<unsigned> needs;
  auto index_of = [&](const std::string& o) {
    const auto it = std::find(candidates.begin(), candidates.end(), o);
    if (it != candidates.end()) return static_cast<unsigned>(it - candidates.begin());
    candidates.push_back(o);
    return static_cast<unsigned>(candidates.size() - 1);
  };
  for (const DerivativeCheckEntry* e : failed) {
    unsigned bits = 0;
    for (const auto& o : e->uses)
      if (!cleared.count(o)) bits |= 1u << index_of(o);
    if (bits)
      needs.push_back(bits);
    else if (std::find(named.begin(), named.end(), e->uses.front()) == named.end())
      named.push_back(e->uses.front());
  }
  // The smallest hitting sets of the failed comparisons, fewest values ("f", "g") first; their union.
  auto is_value = [](const std::string& o) { return o == "f" || o == "g"; };
  unsigned best_mask = 0;
  int best_size = 1 << 20, best_values = 1 << 20;
  for (unsigned mask = 0; mask < (1u << candidates.size()); ++mask) {
    if (!std::all_of(needs.begin(), needs.end(), [mask](unsigned b) { return (b & mask) != 0; })) continue;
    const int size = std::popcount(mask);
    int values = 0;
    for (std::size_t i = 0; i < candidates.size(); ++i)
      if ((mask >> i) & 1u && is_value(candidates[i])) ++values;
    if (size < best_size || (size == best_size && values < best_values)) {
      best_mask = mask;
      best_size = size;
      best_values = values;
    } else if (size == best_size && values == best_values) {
      best_mask |= mask;
    }
  }
  std::vector<std::string> out;
  for (std::size_t i = 0; i < candidates.size(); ++i)
    if ((best_mask >> i) & 1u) out.push_back(candidates[i]);
  for (const auto& o : named)
    if (std::find(out.begin(), out.end(), o) == out.end()) out.push_back(o);
  return out;
}

const DerivativeCheckEntry* DerivativeReport::find(const std::string& oracle) const {
  for (const auto& e : entries)
    if (e.oracle == oracle) return &e;
  return nullptr;
}

void DerivativeReport::print(MPI_Comm comm) const {
  BILEVEL_PETSC_CALL(
      PetscPrintf(comm,
                  "Derivative check at the %s point: central differences, step %g, %" PetscInt_FMT
                  " direction(s), tolerance %g\n",
                  std::string(to_string(point)).c_str(),
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
    if (e.vacuous) {
      BILEVEL_PETSC_CALL(PetscPrintf(
          comm, "  %-10s %-44s both zero: nothing compared\n", e.oracle.c_str(), e.reference.c_str()));
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
  std::string wrong;
  for (const auto& o : flagged_oracles()) wrong += (wrong.empty() ? "" : ", ") + o;
  BILEVEL_PETSC_CALL(PetscPrintf(comm,
                                 "Derivative check %s (largest relative error %.2e)%s%s\n",
                                 passed() ? "passed" : "FAILED",
                                 static_cast<double>(max_error()),
                                 wrong.empty() ? "" : ": the oracles that explain it: ",
                                 wrong.c_str()));
}

namespace {

constexpr std::uint64_t kDirectionStream = 0x64636865636b0000ull;  // "dcheck"

/// v_i = standard normal number i of `stream` (i the global index), so v does not depend on the rank count.
/// Collective.
void fill_normal(Vec v, std::uint64_t seed, std::uint64_t stream) {
  PetscInt lo = 0, hi = 0;
  BILEVEL_PETSC_CALL(VecGetOwnershipRange(v, &lo, &hi));
  petsc::WriteView w(v);
  for (PetscInt i = lo; i < hi; ++i) w[i - lo] = counter_normal(seed, stream, static_cast<std::uint64_t>(i));
}

/// Fills v with independent standard normals indexed by global entry, then scales it to RMS 1 (2-norm
/// sqrt(N)), so that a step h moves each entry by about h whatever the dimension. Collective.
void random_direction(Vec v, std::uint64_t seed, std::uint64_t stream) {
  PetscInt n = 0;
  BILEVEL_PETSC_CALL(VecGetSize(v, &n));
  fill_normal(v, seed, stream);
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

/// out = v + spread · max(1, RMS(v)) · z with z standard normals of `stream`. Collective.
void perturb(Vec v, Vec out, PetscReal spread, std::uint64_t seed, std::uint64_t stream) {
  fill_normal(out, seed, stream);
  BILEVEL_PETSC_CALL(VecAYPX(out, spread * std::max<PetscReal>(1, rms(v)), v));
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

DerivativeCheckEntry entry(const std::string& oracle,
                           const std::string& reference,
                           std::vector<std::string> uses) {
  DerivativeCheckEntry e;
  e.oracle = oracle;
  e.reference = reference;
  e.uses = std::move(uses);
  return e;
}

/// Runs `check` on `e` and appends it; NotImplemented makes it a skipped entry. Collective.
void run(DerivativeReport& report,
         DerivativeCheckEntry e,
         const std::function<void(DerivativeCheckEntry&)>& check) {
  try {
    check(e);
  } catch (const NotImplemented& error) {
    e.skipped = true;
    e.note = error.what();
  }
  report.entries.push_back(e);
}

/// Appends `e` as skipped because the problem lacks `why`.
void skip(DerivativeReport& report, DerivativeCheckEntry e, const std::string& why) {
  e.skipped = true;
  e.note = why;
  report.entries.push_back(e);
}

/// Keeps the worst error over the directions, and the values of the first direction (so the report does
/// not depend on which direction's rounding happens to be worst). A direction whose two sides are both
/// below the floor compares nothing; the entry is vacuous when every direction was.
void record(DerivativeCheckEntry& e,
            bool first,
            PetscReal analytic,
            PetscReal reference,
            PetscReal error,
            PetscReal floor) {
  const bool nothing = std::max(std::abs(analytic), std::abs(reference)) <= floor;
  e.vacuous = (first || e.vacuous) && nothing;
  if (!nothing) e.relative_error = std::max(e.relative_error, error);
  if (first) {
    e.analytic = analytic;
    e.reference_value = reference;
  }
}

}  // namespace

DerivativeReport check_derivatives(BilevelProblem& problem,
                                   Vec x_given,
                                   Vec y_given,
                                   const DerivativeCheckOptions& options) {
  DerivativeReport report;
  report.tolerance = options.tolerance;
  report.step = options.step;
  report.directions = options.directions;
  report.point = options.point;
  const Capability caps = problem.capabilities();
  const Batch full = Batch::all();
  auto stream = [](std::uint64_t check, PetscInt k, std::uint64_t which) {
    return kDirectionStream + (check << 12) + (static_cast<std::uint64_t>(k) << 2) + which;
  };

  // The point (x, y): the given one, or a random one near it with x in the problem's box.
  petsc::VecHandle x = petsc::duplicate(x_given), y = petsc::duplicate(y_given);
  if (options.point == DerivativeCheckPoint::Random) {
    perturb(x_given, x, options.spread, options.seed, stream(0, 0, 0));
    perturb(y_given, y, options.spread, options.seed, stream(0, 0, 1));
    const ProblemHints hints = problem.hints();
    if (hints.x_lower_bound || hints.x_upper_bound) {
      const PetscReal lb = hints.x_lower_bound.value_or(PETSC_NINFINITY);
      const PetscReal ub = hints.x_upper_bound.value_or(PETSC_INFINITY);
      petsc::WriteView xs(x);
      for (PetscInt i = 0; i < xs.size(); ++i) xs[i] = std::clamp<PetscReal>(xs[i], lb, ub);
    }
  } else {
    BILEVEL_PETSC_CALL(VecCopy(x_given, x));
    BILEVEL_PETSC_CALL(VecCopy(y_given, y));
  }
  const PetscReal hy = options.step * std::max<PetscReal>(1, rms(y));
  const PetscReal hx = options.step * std::max<PetscReal>(1, rms(x));
  const PetscReal floor = options.floor;

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
  const PetscInt nd = options.directions;

  // <gradient, d> against central differences of the value along d
  auto gradient_check = [&](std::uint64_t id,
                            Vec grad,
                            Vec d,
                            const std::function<PetscReal(PetscReal)>& value,
                            PetscReal h,
                            DerivativeCheckEntry& e) {
    for (PetscInt k = 0; k < nd; ++k) {
      random_direction(d, options.seed, stream(id, k, 0));
      const PetscReal ref = central(value, h);
      const PetscReal an = dot(grad, d);
      record(e, k == 0, an, ref, relative(an, ref, floor), floor);
    }
  };

  // ∇_y g and ∇_x g against values of g
  DerivativeCheckEntry gyg = entry("grad_y g", "central differences of g along y", {"grad_y g", "g"});
  if (has(caps, Capability::LowerValue)) {
    run(report, gyg, [&](DerivativeCheckEntry& e) {
      problem.lower_grad_y(x, y, full, gy);
      gradient_check(
          1, gy, dy, [&](PetscReal t) { return problem.lower_value(x, at_y(dy, t), full); }, hy, e);
    });
  } else {
    skip(report, gyg, "no LowerValue");
  }
  DerivativeCheckEntry gxg = entry("grad_x g", "central differences of g along x", {"grad_x g", "g"});
  if (has(caps, Capability::LowerValue) && has(caps, Capability::LowerGradX)) {
    run(report, gxg, [&](DerivativeCheckEntry& e) {
      problem.lower_grad_x(x, y, full, gx);
      gradient_check(
          2, gx, dx, [&](PetscReal t) { return problem.lower_value(at_x(dx, t), y, full); }, hx, e);
    });
  } else {
    skip(report, gxg, "no LowerGradX or LowerValue");
  }

  // ∇_y f and ∇_x f against values of f
  DerivativeCheckEntry gyf = entry("grad_y f", "central differences of f along y", {"grad_y f", "f"});
  DerivativeCheckEntry gxf = entry("grad_x f", "central differences of f along x", {"grad_x f", "f"});
  if (has(caps, Capability::UpperValue)) {
    petsc::VecHandle fy = petsc::duplicate(y), fx = petsc::duplicate(x);
    problem.upper_grad(x, y, full, fx, fy);
    run(report, gyf, [&](DerivativeCheckEntry& e) {
      gradient_check(
          3, fy, dy, [&](PetscReal t) { return problem.upper_value(x, at_y(dy, t), full); }, hy, e);
    });
    run(report, gxf, [&](DerivativeCheckEntry& e) {
      gradient_check(
          4, fx, dx, [&](PetscReal t) { return problem.upper_value(at_x(dx, t), y, full); }, hx, e);
    });
  } else {
    skip(report, gyf, "no UpperValue");
    skip(report, gxf, "no UpperValue");
  }

  // H d against differences of ∇_y g (2-norm of the difference, relative):
  // fd = (8 (∇g(y + h d) − ∇g(y − h d)) − (∇g(y + 2h d) − ∇g(y − 2h d))) / 12h
  run(report,
      entry("hvp", "central differences of grad_y g along y", {"hvp", "grad_y g"}),
      [&](DerivativeCheckEntry& e) {
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
          record(e, k == 0, nh, nf, norm2(fd) / std::max({nh, nf, floor}), floor);
        }
      });

  // symmetry of H: <u, H v> = <v, H u> (a property of one oracle: it clears nothing when it holds)
  run(report, entry("hvp sym", "<u, H v> against <v, H u>", {"hvp"}), [&](DerivativeCheckEntry& e) {
    for (PetscInt k = 0; k < nd; ++k) {
      random_direction(dy, options.seed, stream(6, k, 0));
      random_direction(wy, options.seed, stream(6, k, 1));
      problem.lower_hvp(x, y, full, dy, hv);
      problem.lower_hvp(x, y, full, wy, fd);
      const PetscReal a = dot(wy, hv), b = dot(dy, fd);
      record(e, k == 0, a, b, relative(a, b, floor), floor);
    }
  });

  // the one-pass multi-vector product against single products
  run(report, entry("hvp_multi", "single hvp products", {"hvp_multi", "hvp"}), [&](DerivativeCheckEntry& e) {
    random_direction(dy, options.seed, stream(7, 0, 0));
    random_direction(wy, options.seed, stream(7, 0, 1));
    petsc::VecHandle o1 = petsc::duplicate(y), o2 = petsc::duplicate(y);
    const Vec in[2] = {dy, wy};
    const Vec out[2] = {o1, o2};
    problem.lower_hvp_multi(x, y, full, std::span<const Vec>(in, 2), std::span<const Vec>(out, 2));
    for (int q = 0; q < 2; ++q) {
      problem.lower_hvp(x, y, full, in[q], hv);
      const PetscReal nh = norm2(hv), no = norm2(out[q]);
      BILEVEL_PETSC_CALL(VecAXPY(hv, -1.0, out[q]));
      record(e, q == 0, no, nh, norm2(hv) / std::max({nh, no, floor}), floor);
    }
  });

  // <d, J w> against differences of <∇_y g, w> along x
  run(report,
      entry("jvp", "central differences of <grad_y g, w> along x", {"jvp", "grad_y g"}),
      [&](DerivativeCheckEntry& e) {
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
          record(e, k == 0, an, ref, relative(an, ref, floor), floor);
        }
      });
  return report;
}

}  // namespace bilevel
