// bilevel-bench: benchmark suites (hvp, methods). Work in progress: see docs/performance.md.
#include <cstdio>

#include "bilevel/bilevel.hpp"

int main(int argc, char** argv) {
  bilevel::petsc::Session session(&argc, &argv, nullptr);
  return bilevel::guarded_main("bilevel-bench", []() -> int {
    throw bilevel::InputError("usage: bilevel-bench hvp|methods [options]");
  });
}
