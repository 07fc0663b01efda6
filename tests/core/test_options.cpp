#include <gtest/gtest.h>

#include "bilevel/bilevel.hpp"

namespace {

struct OptionGuard {
  explicit OptionGuard(const char* key, const char* value) : key_(key) {
    PetscOptionsSetValue(nullptr, key, value);
  }
  ~OptionGuard() { PetscOptionsClearValue(nullptr, key_); }
  const char* key_;
};

TEST(OptionsReader, ReadsTypedValuesUnderThePrefix) {
  OptionGuard a("-bilevel_test_alpha", "0.25"), b("-bilevel_test_count", "7");
  bilevel::petsc::OptionsReader opts(PETSC_COMM_WORLD, "bilevel_test_");

  const double alpha = opts.real("alpha", 1.0, "a real");
  const PetscInt count = opts.integer("count", 3, "an int");
  const double missing = opts.real("missing", 2.5, "default");

  EXPECT_DOUBLE_EQ(alpha, 0.25);
  EXPECT_EQ(count, 7);
  EXPECT_DOUBLE_EQ(missing, 2.5);
}

TEST(OptionsReader, BadValueNamesTheOptionAndTheAllowedRange) {
  OptionGuard a("-bilevel_test_alpha", "-3");
  bilevel::petsc::OptionsReader opts(PETSC_COMM_WORLD, "bilevel_test_");

  try {
    opts.real("alpha", 1.0, "a real", 0.0);
    FAIL() << "no exception";
  } catch (const bilevel::InputError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("-bilevel_test_alpha"), std::string::npos) << m;
    EXPECT_NE(m.find(">= 0"), std::string::npos) << m;
  }
}

TEST(OptionsReader, ChoiceRejectsUnknownValuesListingTheChoices) {
  OptionGuard a("-bilevel_test_kind", "nosuch");
  bilevel::petsc::OptionsReader opts(PETSC_COMM_WORLD, "bilevel_test_");

  try {
    opts.choice("kind", "bfgs", {"bfgs", "sr1"}, "kind");
    FAIL() << "no exception";
  } catch (const bilevel::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("bfgs|sr1"), std::string::npos) << e.what();
  }
}

// Tuned defaults (core/tuned_settings.hpp) replace the code's defaults, the user's options
// replace both, a sub-reader takes the defaults under its prefix, and a bad tuned value is an InputError
// naming the option like a bad typed value.
TEST(OptionsReader, TunedDefaultsApplyUnlessTheUserGivesTheOption) {
  OptionGuard a("-bilevel_test_given", "5");
  bilevel::petsc::OptionsReader opts(PETSC_COMM_WORLD, "bilevel_test_");
  opts.set_defaults({{"given", "3"}, {"tuned", "0.5"}, {"flag", "true"}, {"sub_count", "9"}, {"bad", "x"}});

  EXPECT_EQ(opts.integer("given", 1, "user wins"), 5);
  EXPECT_DOUBLE_EQ(opts.real("tuned", 2.0, "tuned default"), 0.5);
  EXPECT_TRUE(opts.boolean("flag", false, "tuned flag"));
  EXPECT_DOUBLE_EQ(opts.real("untouched", 2.0, "code default"), 2.0);
  EXPECT_EQ(opts.sub("sub_").integer("count", 1, "through sub"), 9);
  EXPECT_EQ(opts.integer("sub_count", 1, "same key from the parent"), 9);
  try {
    opts.real("bad", 1.0, "a real");
    FAIL() << "no exception";
  } catch (const bilevel::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("-bilevel_test_bad"), std::string::npos) << e.what();
  }
}

TEST(AlgorithmRegistry, UnknownMethodListsTheRegisteredNames) {
  try {
    bilevel::algorithm_registry().create("nosuch");
    FAIL() << "no exception";
  } catch (const bilevel::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("aidcg"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("stocbio"), std::string::npos) << e.what();
  }
}

TEST(AlgorithmRegistry, DuplicateNameIsRejected) {
  bilevel::AlgorithmRegistry r;
  bilevel::register_builtin_algorithms(r);

  EXPECT_THROW(r.add("aidcg", "again", [] { return std::unique_ptr<bilevel::Algorithm>(); }), bilevel::Error);
}

}  // namespace
