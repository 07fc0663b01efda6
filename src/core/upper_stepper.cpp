#include "bilevel/core/upper_stepper.hpp"

#include <petsctime.h>

#include <algorithm>
#include <cmath>

#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/logging.hpp"
#include "bilevel/petsc/vec_access.hpp"

namespace bilevel {

void UpperStepperOptions::validate() const {
  if (!(step > 0)) throw InputError("option -bilevel_upper_step must be > 0");
  if (!(lower_bound < upper_bound))
    throw InputError("options -bilevel_upper_lb and -bilevel_upper_ub must satisfy lb < ub");
}

UpperStepper::UpperStepper(const ProblemHints& hints) {
  options_.type = hints.upper_stepper;
  options_.step = hints.upper_step;
  if (hints.x_lower_bound) options_.lower_bound = *hints.x_lower_bound;
  if (hints.x_upper_bound) options_.upper_bound = *hints.x_upper_bound;
}

void UpperStepper::set_from_options(petsc::OptionsReader& opts) {
  const std::string type = opts.choice(
      "type", std::string(to_string(options_.type)), {"sgd", "momentum", "adam"}, "upper-level stepper");
  from_string(type, &options_.type);  // choice() accepted only these names
  options_.step = opts.real("step", options_.step, "upper-level step size", 0.0);
  options_.decay = opts.real("decay", options_.decay, "step_k = step/(k+1)^decay", 0.0, 1.0);
  options_.momentum = opts.real("momentum", options_.momentum, "momentum / Adam beta1", 0.0, 1.0);
  options_.beta2 = opts.real("beta2", options_.beta2, "Adam beta2", 0.0, 1.0);
  options_.epsilon = opts.real("epsilon", options_.epsilon, "Adam epsilon", 0.0);
  options_.lower_bound = opts.real("lb", options_.lower_bound, "lower bound of every entry of x");
  options_.upper_bound = opts.real("ub", options_.upper_bound, "upper bound of every entry of x");
  options_.validate();
}

void UpperStepper::setup(Vec x) {
  options_.validate();
  BILEVEL_PETSC_CALL(VecScatterCreateToZero(x, to_zero_.out(), x_seq_.out()));
  BILEVEL_PETSC_CALL(VecDuplicate(x_seq_, d_seq_.out()));
  PetscInt n = 0;
  BILEVEL_PETSC_CALL(VecGetSize(x_seq_, &n));  // N on rank 0, 0 elsewhere
  m_.assign(static_cast<std::size_t>(n), 0.0);
  s_.assign(static_cast<std::size_t>(n), 0.0);
  k_ = 0;
}

PetscReal UpperStepper::current_step() const {
  return options_.step / std::pow(static_cast<PetscReal>(k_ + 1), options_.decay);
}

void UpperStepper::step(Vec x, Vec direction) {
  petsc::ScopedEvent ev(petsc::events().outer_step);
  BILEVEL_ASSERT(to_zero_);
  PetscLogDouble t0 = 0, t1 = 0;
  (void)PetscTime(&t0);
  BILEVEL_PETSC_CALL(VecScatterBegin(to_zero_, x, x_seq_, INSERT_VALUES, SCATTER_FORWARD));
  BILEVEL_PETSC_CALL(VecScatterEnd(to_zero_, x, x_seq_, INSERT_VALUES, SCATTER_FORWARD));
  BILEVEL_PETSC_CALL(VecScatterBegin(to_zero_, direction, d_seq_, INSERT_VALUES, SCATTER_FORWARD));
  BILEVEL_PETSC_CALL(VecScatterEnd(to_zero_, direction, d_seq_, INSERT_VALUES, SCATTER_FORWARD));
  (void)PetscTime(&t1);
  comm_seconds_ += t1 - t0;
  const PetscReal lr = current_step();
  ++k_;
  {
    // The coordinator (rank 0 holds all N entries, other ranks none) applies the update rule.
    petsc::WriteView xs(x_seq_);
    petsc::ReadView ds(d_seq_);
    const PetscReal b1 = options_.momentum, b2 = options_.beta2;
    const PetscReal c1 = 1 - std::pow(b1, static_cast<PetscReal>(k_));
    const PetscReal c2 = 1 - std::pow(b2, static_cast<PetscReal>(k_));
    for (PetscInt i = 0; i < xs.size(); ++i) {
      const PetscReal d = ds[i];
      PetscReal delta = 0;
      switch (options_.type) {
        case UpperStepperType::Sgd:
          delta = lr * d;  // x <- x - lr d
          break;
        case UpperStepperType::Momentum:
          m_[i] = b1 * m_[i] + d;  // heavy ball: m <- beta m + d, x <- x - lr m
          delta = lr * m_[i];
          break;
        case UpperStepperType::Adam:
          m_[i] = b1 * m_[i] + (1 - b1) * d;  // Adam (Kingma & Ba 2015, Alg. 1)
          s_[i] = b2 * s_[i] + (1 - b2) * d * d;
          delta = lr * (m_[i] / c1) / (std::sqrt(s_[i] / c2) + options_.epsilon);
          break;
      }
      xs[i] = std::clamp(xs[i] - delta, options_.lower_bound, options_.upper_bound);
    }
  }
  (void)PetscTime(&t0);
  BILEVEL_PETSC_CALL(VecScatterBegin(to_zero_, x_seq_, x, INSERT_VALUES, SCATTER_REVERSE));
  BILEVEL_PETSC_CALL(VecScatterEnd(to_zero_, x_seq_, x, INSERT_VALUES, SCATTER_REVERSE));
  (void)PetscTime(&t1);
  comm_seconds_ += t1 - t0;
}

void UpperStepper::project(Vec x) const {
  petsc::WriteView xs(x);
  for (PetscInt i = 0; i < xs.size(); ++i)
    xs[i] = std::clamp(xs[i], options_.lower_bound, options_.upper_bound);
}

}  // namespace bilevel
