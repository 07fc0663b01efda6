#include <gtest/gtest.h>

#include <stdexcept>

#include "bilevel/bilevel.hpp"

namespace {

/// The quadratic problem whose HVP throws after a number of calls: the exception must cross KSP.
class ThrowingProblem : public bilevel::QuadraticProblem {
 public:
  using QuadraticProblem::QuadraticProblem;
  int calls = 0;

 protected:
  void lower_hvp_impl(Vec x, Vec y, const bilevel::Batch& b, Vec w, Vec out) override {
    if (++calls == 3) throw std::domain_error("hvp exploded");
    QuadraticProblem::lower_hvp_impl(x, y, b, w, out);
  }
};

TEST(Callback, ExceptionInsideKrylovCallbackReachesCallerAsTheOriginalType) {
  bilevel::QuadraticOptions o;
  o.dim_lower = 40;
  o.dim_upper = 3;
  ThrowingProblem p(PETSC_COMM_WORLD, o);
  bilevel::petsc::VecHandle x = p.create_upper_vec(), y = p.create_lower_vec(), b = p.create_lower_vec(),
                            v = p.create_lower_vec();
  p.initial_point(x, y);
  VecSet(b, 1.0);
  VecSet(v, 0.0);
  bilevel::CgLinearSolver cg(p, y, 20, 1e-12);

  EXPECT_THROW(cg.solve(x, y, bilevel::Batch::all(), b, v), std::domain_error);
  EXPECT_EQ(p.calls, 3);
}

TEST(PetscError, FailingCallBecomesExceptionWithFileAndLine) {
  bilevel::petsc::MatHandle m;
  MatCreate(PETSC_COMM_WORLD, m.out());
  PetscPushErrorHandler(PetscReturnErrorHandler, nullptr);
  try {
    BILEVEL_PETSC_CALL(MatSetType(m, "nosuchtype"));
    FAIL() << "no exception";
  } catch (const bilevel::petsc::Error& e) {
    EXPECT_NE(std::string(e.what()).find("test_callback.cpp:"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("nosuchtype"), std::string::npos) << e.what();
    EXPECT_NE(e.code(), 0);
  }
  PetscPopErrorHandler();
}

}  // namespace
