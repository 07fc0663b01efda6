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

/// The message of the InputError that f throws (empty when it throws none).
template <typename F>
std::string input_error(F&& f) {
  try {
    f();
  } catch (const bilevel::InputError& e) {
    return e.what();
  }
  return "";
}

// Debian's PetscInt is 32-bit: a value beyond it is an error naming the range, never a wrapped number.
TEST(OptionsReader, IntegerOutsidePetscIntIsAnErrorNamingTheRange) {
  OptionGuard a("-bilevel_test_count", "3000000000"), b("-bilevel_test_neg", "-2147483649");
  bilevel::petsc::OptionsReader opts(PETSC_COMM_WORLD, "bilevel_test_");

  const std::string big = input_error([&] { opts.integer("count", 1, "an int", 0); });
  const std::string neg = input_error([&] { opts.integer("neg", 1, "an int"); });

  const std::string max = std::to_string(PETSC_MAX_INT), min = std::to_string(PETSC_MIN_INT);
  EXPECT_NE(big.find("-bilevel_test_count"), std::string::npos) << big;
  EXPECT_NE(big.find("[0, " + max + "]"), std::string::npos) << big;
  EXPECT_NE(neg.find("[" + min + ", " + max + "]"), std::string::npos) << neg;
}

TEST(OptionsReader, SixtyFourBitIntegersKeepValuesBeyondPetscIntAndRejectBeyondTheirOwnRange) {
  OptionGuard a("-bilevel_test_budget", "3000000000"), b("-bilevel_test_seed", "18446744073709551615"),
      c("-bilevel_test_over", "9223372036854775808"), d("-bilevel_test_useed", "-1"),
      e("-bilevel_test_wide", "18446744073709551616"), f("-bilevel_test_plus", "+12");
  bilevel::petsc::OptionsReader opts(PETSC_COMM_WORLD, "bilevel_test_");

  EXPECT_EQ(opts.integer64("budget", 1, "a budget", 0), 3000000000LL);
  EXPECT_EQ(opts.unsigned64("seed", 0, "a seed"), 18446744073709551615ULL);
  EXPECT_EQ(opts.integer64("plus", 0, "with a plus sign"), 12);
  EXPECT_NE(input_error([&] { opts.integer64("over", 1, "too big"); }).find("9223372036854775807]"),
            std::string::npos);
  EXPECT_NE(input_error([&] { opts.unsigned64("useed", 0, "negative"); }).find("-bilevel_test_useed"),
            std::string::npos);
  EXPECT_NE(input_error([&] { opts.unsigned64("wide", 0, "65 bits"); }).find("[0, 18446744073709551615]"),
            std::string::npos);
}

TEST(OptionsReader, IntegersRejectTextAndFractions) {
  OptionGuard a("-bilevel_test_a", "12abc"), b("-bilevel_test_b", "1e6"), c("-bilevel_test_c", "+-3");
  bilevel::petsc::OptionsReader opts(PETSC_COMM_WORLD, "bilevel_test_");

  for (const char* name : {"a", "b", "c"})
    EXPECT_NE(input_error([&] { opts.integer64(name, 0, "text"); }).find("expected an integer"),
              std::string::npos)
        << name;
}

TEST(OptionsReader, BooleansTakePetscSpellingsInAnyCase) {
  OptionGuard a("-bilevel_test_t1", "True"), b("-bilevel_test_t2", "YES"), c("-bilevel_test_t3", "on"),
      d("-bilevel_test_t4", "1"), e("-bilevel_test_f1", "FaLsE"), f("-bilevel_test_f2", "No"),
      g("-bilevel_test_f3", "OFF"), h("-bilevel_test_f4", "0"), i("-bilevel_test_bare", nullptr),
      j("-bilevel_test_bad", "maybe");
  bilevel::petsc::OptionsReader opts(PETSC_COMM_WORLD, "bilevel_test_");

  for (const char* name : {"t1", "t2", "t3", "t4", "bare"})
    EXPECT_TRUE(opts.boolean(name, false, "flag")) << name;
  for (const char* name : {"f1", "f2", "f3", "f4"}) EXPECT_FALSE(opts.boolean(name, true, "flag")) << name;
  EXPECT_NE(input_error([&] { opts.boolean("bad", false, "flag"); }).find("expected true or false"),
            std::string::npos);
}

// A boolean whose default is the caller's rule: absent or `auto` (any case) leaves it to the rule, a given or
// tuned value decides, anything else is an error listing auto; given() counts tuned values as given.
TEST(OptionsReader, BooleanOrAutoLeavesTheDefaultToTheCallersRuleUnlessAValueIsGiven) {
  OptionGuard a("-bilevel_test_auto", "AUTO"), b("-bilevel_test_off", "No"), c("-bilevel_test_bare", nullptr),
      d("-bilevel_test_bad", "maybe");
  bilevel::petsc::OptionsReader opts(PETSC_COMM_WORLD, "bilevel_test_");
  opts.set_defaults({{"tuned", "false"}});

  EXPECT_EQ(opts.boolean_or_auto("absent", "rule"), std::nullopt);
  EXPECT_EQ(opts.boolean_or_auto("auto", "rule"), std::nullopt);
  EXPECT_EQ(opts.boolean_or_auto("off", "rule"), std::optional<bool>(false));
  EXPECT_EQ(opts.boolean_or_auto("bare", "rule"), std::optional<bool>(true));
  EXPECT_EQ(opts.boolean_or_auto("tuned", "rule"), std::optional<bool>(false));
  const std::string bad = input_error([&] { opts.boolean_or_auto("bad", "rule"); });
  EXPECT_NE(bad.find("-bilevel_test_bad"), std::string::npos) << bad;
  EXPECT_NE(bad.find("expected auto, true or false"), std::string::npos) << bad;
  EXPECT_TRUE(opts.given("off"));
  EXPECT_TRUE(opts.given("tuned"));
  EXPECT_FALSE(opts.given("absent"));
}

// What bilevel-solve reports at the end of a run: the -bilevel_ options nothing read, with the closest
// name that something did read.
TEST(OptionsReader, UnreadOptionsAreListedWithTheClosestKnownName) {
  OptionGuard a("-bilevel_unusedtest_step", "0.5"), b("-bilevel_unusedtest_stpe", "0.1"),
      c("-bilevel_unusedtest_zzzzzzzz", "1");
  bilevel::petsc::OptionsReader opts(PETSC_COMM_WORLD, "bilevel_unusedtest_");

  EXPECT_DOUBLE_EQ(opts.real("step", 1.0, "read"), 0.5);
  const auto unused = bilevel::petsc::unused_options("bilevel_unusedtest_");

  EXPECT_EQ(unused, (std::vector<std::string>{"-bilevel_unusedtest_stpe", "-bilevel_unusedtest_zzzzzzzz"}));
  EXPECT_EQ(bilevel::petsc::closest_known_option("-bilevel_unusedtest_stpe"), "-bilevel_unusedtest_step");
  EXPECT_EQ(bilevel::petsc::closest_known_option("-bilevel_unusedtest_zzzzzzzz"), "");
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
