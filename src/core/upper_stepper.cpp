#include "bilevel/core/upper_stepper.hpp"

#include <algorithm>
#include <cmath>

#include "bilevel/core/checkpoint.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/logging.hpp"
#include "bilevel/petsc/vec_access.hpp"

namespace bilevel {

void UpperStepperOptions::validate() const {
  if (!(step > 0)) throw InputError("option -bilevel_upper_step must be > 0");
  if (!(decay == -1 || (decay >= 0 && decay <= 1)))
    throw InputError("option -bilevel_upper_decay must be -1 (auto) or in [0, 1], not " +
                     std::to_string(decay));
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
  options_.decay = opts.real("decay",
                             options_.decay,
                             "step_k = step/(k+1)^decay (-1: 1/2 when the run draws minibatches, else 0)",
                             -1.0,
                             1.0);
  options_.momentum = opts.real("momentum", options_.momentum, "momentum / Adam beta1", 0.0, 1.0);
  options_.beta2 = opts.real("beta2", options_.beta2, "Adam beta2", 0.0, 1.0);
  options_.epsilon = opts.real("epsilon", options_.epsilon, "Adam epsilon", 0.0);
  options_.lower_bound = opts.real("lb", options_.lower_bound, "lower bound of every entry of x");
  options_.upper_bound = opts.real("ub", options_.upper_bound, "upper bound of every entry of x");
  options_.validate();
}

void UpperStepper::setup(Vec x, bool minibatches) {
  options_.validate();
  decay_ = options_.decay >= 0 ? options_.decay : (minibatches ? 0.5 : 0.0);
  m_.reset();
  s_.reset();
  BILEVEL_PETSC_CALL(VecDuplicate(x, m_.out()));
  BILEVEL_PETSC_CALL(VecDuplicate(x, s_.out()));
  BILEVEL_PETSC_CALL(VecZeroEntries(m_));
  BILEVEL_PETSC_CALL(VecZeroEntries(s_));
  k_ = 0;
}

void UpperStepper::declare_state(StateRegistry& state) {
  BILEVEL_ASSERT(m_);
  state.add("upper.m", m_.get());
  state.add("upper.s", s_.get());
  state.add("upper.steps", k_);
}

PetscReal UpperStepper::current_step() const {
  return options_.step / std::pow(static_cast<PetscReal>(k_ + 1), decay_);
}

void UpperStepper::step(Vec x, Vec direction) {
  petsc::ScopedEvent ev(petsc::events().outer_step);
  BILEVEL_ASSERT(m_);
  const PetscReal lr = current_step();  // the decision: the same on every rank
  ++k_;
  // Each rank updates the entries of x it owns.
  petsc::WriteView xs(x), ms(m_), ss(s_);
  petsc::ReadView ds(direction);
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
        ms[i] = b1 * ms[i] + d;  // heavy ball: m <- beta m + d, x <- x - lr m
        delta = lr * ms[i];
        break;
      case UpperStepperType::Adam:
        ms[i] = b1 * ms[i] + (1 - b1) * d;  // Adam (Kingma & Ba 2015, Alg. 1)
        ss[i] = b2 * ss[i] + (1 - b2) * d * d;
        delta = lr * (ms[i] / c1) / (std::sqrt(ss[i] / c2) + options_.epsilon);
        break;
    }
    xs[i] = std::clamp(xs[i] - delta, options_.lower_bound, options_.upper_bound);
  }
}

void UpperStepper::project(Vec x) const {
  petsc::WriteView xs(x);
  for (PetscInt i = 0; i < xs.size(); ++i)
    xs[i] = std::clamp(xs[i], options_.lower_bound, options_.upper_bound);
}

}  // namespace bilevel
