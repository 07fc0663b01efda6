// UpperStepper against steps computed by hand: SGD, heavy-ball momentum, Adam, the box, the step decay, and
// its options. x has 5 entries spread over the ranks; entry i starts at 0.5 + i and its directions are
// those of entry 0 times c_i = i + 1 (Adam's step does not depend on that scale, up to epsilon).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "bilevel/bilevel.hpp"
#include "problems/synthetic.hpp"

namespace {

using bilevel::UpperStepperType;

constexpr PetscInt kN = 5;

class UpperStepperTest : public ::testing::Test {
 protected:
  void SetUp() override {
    VecCreateMPI(PETSC_COMM_WORLD, PETSC_DECIDE, kN, x_.out());
    VecDuplicate(x_, d_.out());
    testdata::fill(x_, [](PetscInt i) { return 0.5 + i; });
  }
  /// A stepper of the given type and step, from the hints a problem would give.
  bilevel::UpperStepper stepper(UpperStepperType type, PetscReal step) {
    bilevel::ProblemHints h;
    h.upper_stepper = type;
    h.upper_step = step;
    bilevel::UpperStepper s(h);
    return s;
  }
  /// One step with the direction d_i = (i + 1) base.
  void step(bilevel::UpperStepper& s, PetscReal base) {
    testdata::fill(d_, [base](PetscInt i) { return (i + 1) * base; });
    s.step(x_, d_);
  }
  /// x_i minus its start.
  std::vector<double> moved() const {
    std::vector<double> x = testdata::gather(x_);
    for (PetscInt i = 0; i < kN; ++i) x[static_cast<std::size_t>(i)] -= 0.5 + i;
    return x;
  }

  bilevel::petsc::VecHandle x_, d_;
};

TEST_F(UpperStepperTest, SgdStepsAlongMinusTheDirection) {
  auto s = stepper(UpperStepperType::Sgd, 0.1);
  s.setup(x_);

  step(s, 2.0);
  step(s, -1.0);

  // x − 0.1·2c + 0.1·c = x − 0.1 c
  const auto m = moved();
  for (PetscInt i = 0; i < kN; ++i) EXPECT_NEAR(m[static_cast<std::size_t>(i)], -0.1 * (i + 1), 1e-15) << i;
  EXPECT_EQ(s.steps_taken(), 2);
}

TEST_F(UpperStepperTest, MomentumAccumulatesTheDirections) {
  auto s = stepper(UpperStepperType::Momentum, 0.1);
  s.options().momentum = 0.9;
  s.setup(x_);

  step(s, 2.0);   // m = 2c, x −= 0.2c
  step(s, -1.0);  // m = 0.9·2c − c = 0.8c, x −= 0.08c

  const auto m = moved();
  for (PetscInt i = 0; i < kN; ++i) EXPECT_NEAR(m[static_cast<std::size_t>(i)], -0.28 * (i + 1), 1e-14) << i;
}

// Adam (Kingma & Ba 2015, Alg. 1) with lr 0.1, β1 0.9, β2 0.999, ε 1e-8 and directions 2, −1, 0.5:
//   step 1: m̂ = 2, ŝ = 4: x −= 0.1·2/(2 + ε) = 0.0999999995
//   step 2: m = 0.08, s = 0.004996, m̂ = 0.08/0.19, ŝ = 0.004996/0.001999: x −= 0.0266337033
//   step 3: x −= 0.0340429146, in all x₀ − 0.1606766179
TEST_F(UpperStepperTest, AdamMatchesStepsComputedByHand) {
  auto s = stepper(UpperStepperType::Adam, 0.1);
  s.setup(x_);

  step(s, 2.0);
  const auto first = moved();
  step(s, -1.0);
  const auto second = moved();
  step(s, 0.5);
  const auto third = moved();

  for (PetscInt i = 0; i < kN; ++i) {
    const auto k = static_cast<std::size_t>(i);
    EXPECT_NEAR(first[k], -0.0999999995, 1e-9) << i;
    EXPECT_NEAR(second[k], -0.12663370329756846, 1e-9) << i;
    EXPECT_NEAR(third[k], -0.16067661786105736, 1e-9) << i;
  }
}

TEST_F(UpperStepperTest, StepsAndTheStartAreProjectedOntoTheBox) {
  auto s = stepper(UpperStepperType::Sgd, 10.0);
  s.options().lower_bound = 0.2;
  s.options().upper_bound = 2.4;
  testdata::fill(x_, [](PetscInt i) { return i % 2 ? 9.0 : -9.0; });

  s.project(x_);
  const auto projected = testdata::gather(x_);
  s.setup(x_);
  testdata::fill(d_, [](PetscInt i) { return i % 2 ? 1.0 : -1.0; });  // towards the other bound
  s.step(x_, d_);
  const auto stepped = testdata::gather(x_);

  for (PetscInt i = 0; i < kN; ++i) {
    const auto k = static_cast<std::size_t>(i);
    EXPECT_EQ(projected[k], i % 2 ? 2.4 : 0.2) << i;
    EXPECT_EQ(stepped[k], i % 2 ? 0.2 : 2.4) << i;
  }
}

TEST_F(UpperStepperTest, DecayShrinksTheStepAsOneOverAPowerOfTheStepCount) {
  auto s = stepper(UpperStepperType::Sgd, 0.1);
  s.options().decay = 0.5;
  s.setup(x_);

  for (int k = 0; k < 3; ++k) step(s, 1.0);  // steps 0.1/1, 0.1/√2, 0.1/√3

  const auto m = moved();
  for (PetscInt i = 0; i < kN; ++i)
    EXPECT_NEAR(m[static_cast<std::size_t>(i)],
                -0.1 * (1 + 1 / std::sqrt(2.0) + 1 / std::sqrt(3.0)) * (i + 1),
                1e-14);
  EXPECT_NEAR(s.current_step(), 0.05, 1e-15);  // before the 4th step: 0.1/√4
}

// Decay auto (-1, the default) is 1/2 when the run draws minibatches (stochastic hypergradients) and 0
// otherwise; a given decay wins in both cases; a method's own schedule replaces only the auto value; a
// decay outside {-1} ∪ [0, 1] is an input error.
TEST_F(UpperStepperTest, AutoDecayIsOneHalfOnMinibatchesZeroOnFullBatchesAndAGivenDecayWins) {
  auto s = stepper(UpperStepperType::Sgd, 0.1);
  ASSERT_EQ(s.options().decay, -1);
  s.setup(x_, true);
  EXPECT_EQ(s.decay(), 0.5);
  for (int k = 0; k < 3; ++k) step(s, 1.0);
  EXPECT_NEAR(s.current_step(), 0.05, 1e-15);  // 0.1/√4
  s.setup(x_, false);
  EXPECT_EQ(s.decay(), 0.0);
  step(s, 1.0);
  EXPECT_EQ(s.current_step(), 0.1);
  s.setup(x_, true);
  s.replace_default_decay(0.0);
  EXPECT_EQ(s.decay(), 0.0);

  s.options().decay = 0.25;
  s.setup(x_, true);
  EXPECT_EQ(s.decay(), 0.25);
  s.replace_default_decay(0.0);  // the user's value wins over a method's schedule
  EXPECT_EQ(s.decay(), 0.25);
  s.setup(x_, false);
  EXPECT_EQ(s.decay(), 0.25);

  s.options().decay = -0.5;
  EXPECT_THROW(s.setup(x_, true), bilevel::InputError);
}

TEST_F(UpperStepperTest, OptionsOverrideTheHintsAndBadValuesAreInputErrors) {
  bilevel::ProblemHints h;
  h.upper_stepper = UpperStepperType::Adam;
  h.upper_step = 0.3;
  h.x_lower_bound = -1.0;
  bilevel::UpperStepper s(h);
  PetscOptionsSetValue(nullptr, "-bilevel_uptest_type", "momentum");
  PetscOptionsSetValue(nullptr, "-bilevel_uptest_ub", "4");
  bilevel::petsc::OptionsReader opts(PETSC_COMM_WORLD, "bilevel_uptest_");

  s.set_from_options(opts);
  PetscOptionsSetValue(nullptr, "-bilevel_uptest_type", "nesterov");
  bilevel::petsc::OptionsReader bad(PETSC_COMM_WORLD, "bilevel_uptest_");
  EXPECT_THROW(s.set_from_options(bad), bilevel::InputError);
  PetscOptionsClearValue(nullptr, "-bilevel_uptest_type");
  PetscOptionsClearValue(nullptr, "-bilevel_uptest_ub");

  EXPECT_EQ(s.options().type, UpperStepperType::Momentum);
  EXPECT_EQ(s.options().step, 0.3);
  EXPECT_EQ(s.options().lower_bound, -1.0);
  EXPECT_EQ(s.options().upper_bound, 4.0);
}

TEST(UpperStepperType, NamesRoundTrip) {
  for (const UpperStepperType t :
       {UpperStepperType::Sgd, UpperStepperType::Momentum, UpperStepperType::Adam}) {
    UpperStepperType back = UpperStepperType::Sgd;
    ASSERT_TRUE(bilevel::from_string(bilevel::to_string(t), &back));
    EXPECT_EQ(back, t);
  }
  UpperStepperType unchanged = UpperStepperType::Adam;
  EXPECT_FALSE(bilevel::from_string("nesterov", &unchanged));
  EXPECT_EQ(unchanged, UpperStepperType::Adam);
}

}  // namespace
