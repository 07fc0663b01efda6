// bilevel-solve: one bilevel run. Long options (--problem, --method, data paths, outputs) belong to
// Boost.Program_options; every single-dash option (-bilevel_*, -ksp_*, -log_view, -help) goes to PETSc.
// With no flags it runs the main job: Fashion-MNIST data hyper-cleaning on the Debian package's files.
// At the end of a run, every -bilevel_ option that nothing read is reported (one warning line each).
// For tests only: the environment variable BILEVEL_DEBUG_FAIL_RANK=R (or "all") makes rank R (every rank)
// throw just before the solve, to test that an error on one rank ends the whole job (core/app.hpp).
#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>
#include <sstream>

#include "bilevel/bilevel.hpp"

namespace po = boost::program_options;

namespace {

const char* kHelp =
    "bilevel-solve: solve min_x f(x, y*(x)), y*(x) = argmin_y g(x, y), on MPI ranks.\n"
    "Long options below; PETSc options (-bilevel_*, -ksp_*, -log_view, ...) are listed by -help.\n"
    "Exit codes: 0 converged or budget reached; 1 bad input or error; 2 numerical failure (a DIVERGED_*\n"
    "reason, summary written); 3 stopped by SIGTERM/SIGINT/SIGUSR1/SIGUSR2 (CANCELLED_SIGNAL, checkpoint "
    "and\n"
    "summary written; continue with --restart).\n";

po::options_description long_options() {
  po::options_description d("bilevel-solve options");
  d.add_options()("help", "print this help and exit (use -help for every PETSc/-bilevel_ option)")(
      "version", "print the version and exit")(
      "problem",
      po::value<std::string>()->default_value("hyperclean"),
      "quadratic | logreg | softmax | hyperclean | finite_sum_quadratic | spectral_logsumexp | "
      "hyper_representation | multitask")(
      "method", po::value<std::string>(), "registered method (writes -bilevel_type); default aidcg")(
      "train", po::value<std::string>(), "training data: LIBSVM (.gz/.bz2/.xz) or IDX images file")(
      "validation", po::value<std::string>(), "validation data (upper level)")(
      "test", po::value<std::string>(), "test data (reported, never optimised)")(
      "dataset", po::value<std::string>(), "fashion-mnist: the Debian package's files")(
      "max-iter", po::value<std::string>(), "outer iterations (writes -bilevel_max_it)")(
      "seed", po::value<std::string>(), "random seed in [0, 2^64 - 1] (writes -bilevel_seed; default 0)")(
      "summary", po::value<std::string>(), "write the JSON summary to this file at the end")(
      "trace", po::value<std::string>(), "write a CSV row per outer iteration to this file")(
      "checkpoint", po::value<std::string>(), "write checkpoints to this file (writes -bilevel_checkpoint)")(
      "restart",
      po::value<std::string>(),
      "continue the run saved in this checkpoint (writes -bilevel_restart)")(
      "quiet", "no progress line per iteration");
  return d;
}

void set_option(const std::string& key, const std::string& value) {
  BILEVEL_PETSC_CALL(PetscOptionsSetValue(nullptr, key.c_str(), value.empty() ? nullptr : value.c_str()));
}

bool option_given(const char* key) {
  PetscBool set = PETSC_FALSE;
  BILEVEL_PETSC_CALL(PetscOptionsHasName(nullptr, nullptr, key, &set));
  return set;
}

}  // namespace

int main(int argc, char** argv) {
  bilevel::mark_run_start();  // -bilevel_max_time counts from here
  const po::options_description cli = long_options();
  std::vector<std::string> long_args, petsc_args;
  bilevel::split_arguments(argc,
                           argv,
                           {"problem",
                            "method",
                            "train",
                            "validation",
                            "test",
                            "dataset",
                            "max-iter",
                            "seed",
                            "summary",
                            "trace",
                            "checkpoint",
                            "restart"},
                           {"help", "version", "quiet"},
                           long_args,
                           petsc_args);
  po::variables_map vm;
  std::string parse_error;
  try {
    po::store(po::command_line_parser(long_args)
                  .options(cli)
                  .style(po::command_line_style::unix_style ^ po::command_line_style::allow_short)
                  .run(),
              vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    parse_error = e.what();
  }
  std::vector<char*> pargv{argv[0]};
  for (auto& a : petsc_args) pargv.push_back(a.data());
  pargv.push_back(nullptr);
  int pargc = static_cast<int>(pargv.size()) - 1;
  char** pargv_ptr = pargv.data();
  bilevel::petsc::Session session(&pargc, &pargv_ptr, kHelp);
  bilevel::install_stop_signal_handlers();  // after PETSc's, which they replace

  return bilevel::guarded_main("bilevel-solve", [&]() -> int {
    MPI_Comm comm = PETSC_COMM_WORLD;
    if (!parse_error.empty()) throw bilevel::InputError(parse_error + " (see bilevel-solve --help)");
    if (vm.count("help")) {
      std::ostringstream s;
      s << kHelp << cli;
      BILEVEL_PETSC_CALL(PetscPrintf(comm, "%s", s.str().c_str()));
      return 0;
    }
    if (vm.count("version")) {
      BILEVEL_PETSC_CALL(PetscPrintf(comm, "bilevel-solve %s\n", bilevel::version()));
      return 0;
    }
    // One place where the choice is made: the options database.
    if (vm.count("method")) set_option("-bilevel_type", vm["method"].as<std::string>());
    // Values go to the database as typed: the solver's readers check them (64-bit, never wrapped).
    if (vm.count("max-iter")) set_option("-bilevel_max_it", vm["max-iter"].as<std::string>());
    if (vm.count("seed")) set_option("-bilevel_seed", vm["seed"].as<std::string>());
    if (vm.count("checkpoint")) set_option("-bilevel_checkpoint", vm["checkpoint"].as<std::string>());
    if (vm.count("restart")) set_option("-bilevel_restart", vm["restart"].as<std::string>());
    if (!vm.count("quiet") && !option_given("-bilevel_monitor")) set_option("-bilevel_monitor", "");

    PetscBool help = PETSC_FALSE;
    BILEVEL_PETSC_CALL(PetscOptionsHasHelp(nullptr, &help));
    bilevel::ProblemInputs inputs;
    std::string problem_name = vm["problem"].as<std::string>();
    if (vm.count("train")) inputs.train = vm["train"].as<std::string>();
    if (vm.count("validation")) inputs.validation = vm["validation"].as<std::string>();
    if (vm.count("test")) inputs.test = vm["test"].as<std::string>();
    if (vm.count("dataset")) inputs.dataset = vm["dataset"].as<std::string>();
    if (help) {
      // -help: list every option of the solver, of the chosen method and of every problem, without loading
      // data (the solver's defaults are those it takes on the quadratic).
      std::ostringstream s;
      s << cli;
      BILEVEL_PETSC_CALL(PetscPrintf(comm, "%s%s\n", kHelp, s.str().c_str()));
      std::string names;
      for (const auto& n : bilevel::algorithm_registry().names()) names += " " + n;
      BILEVEL_PETSC_CALL(PetscPrintf(comm, "Registered methods:%s\n", names.c_str()));
      const std::vector<std::string> tuned_dirs = bilevel::tuned_settings_dirs();
      if (!tuned_dirs.empty()) {
        BILEVEL_PETSC_CALL(
            PetscPrintf(comm,
                        "Tuned settings (PROBLEM/METHOD.opts in %s; the user's options win):\n",
                        tuned_dirs.front().c_str()));
        for (const auto& [name, t] : bilevel::list_tuned_settings(comm))
          BILEVEL_PETSC_CALL(PetscPrintf(comm, "  %s:%s\n", name.c_str(), t.as_options().c_str()));
      }
      bilevel::read_data_problem_options(comm);
      auto problem = bilevel::make_problem(comm, "quadratic", inputs);
      bilevel::BilevelSolver solver(comm);
      solver.set_problem(problem);
      solver.set_from_options();
      return 0;
    }
    std::string summary_path = vm.count("summary") ? vm["summary"].as<std::string>() : "";
    std::string trace_path = vm.count("trace") ? vm["trace"].as<std::string>() : "";
    // Outputs and the checkpoint to continue from are checked before any data is read.
    bilevel::petsc::OptionsReader run_opts(comm, "bilevel_");
    const std::string checkpoint_path = run_opts.string("checkpoint", "", "checkpoint file");
    const std::string restart_path = run_opts.string("restart", "", "checkpoint to continue from");
    if (!summary_path.empty()) bilevel::check_output_path(comm, summary_path, "--summary");
    if (!checkpoint_path.empty()) bilevel::check_output_path(comm, checkpoint_path, "--checkpoint");
    if (!restart_path.empty()) (void)bilevel::read_checkpoint_facts(comm, restart_path);
    std::unique_ptr<bilevel::CsvTraceMonitor> trace;
    if (!trace_path.empty()) trace = std::make_unique<bilevel::CsvTraceMonitor>(comm, trace_path);

    // the problem's generators take the run's seed: -bilevel_seed, from --seed or the options
    inputs.seed = bilevel::petsc::OptionsReader(comm, "bilevel_").unsigned64("seed", 0, "random seed");
    auto problem = bilevel::make_problem(comm, problem_name, inputs);
    bilevel::BilevelSolver solver(comm);
    solver.set_problem(problem);
    if (trace) solver.add_monitor(std::move(trace));
    // a checkpoint of other data is refused at restart
    for (const auto& [role, path] : {std::pair{"train", inputs.train},
                                     std::pair{"validation", inputs.validation},
                                     std::pair{"test", inputs.test},
                                     std::pair{"dataset", inputs.dataset}})
      if (!path.empty())
        solver.add_checkpoint_fact("input " + std::string(role), bilevel::file_fingerprint(path));
    solver.set_from_options();
    bilevel::petsc::VecHandle x = problem->create_upper_vec(), y = problem->create_lower_vec();
    problem->initial_point(x, y);
    bilevel::debug_failure_point(comm);
    const bilevel::SolveReport report = solver.solve(x, y);
    const auto extras = report.reason > bilevel::ConvergedReason::Iterating
                            ? problem->summary_extras(x, y)
                            : std::vector<std::pair<std::string, PetscReal>>{};
    BILEVEL_PETSC_CALL(PetscPrintf(comm,
                                   "bilevel: %s after %lld iterations in %.2f s: upper objective %.6g",
                                   std::string(bilevel::to_string(report.reason)).c_str(),
                                   static_cast<long long>(report.outer_iterations),
                                   report.wall_time_s,
                                   report.upper_objective));
    if (report.test_accuracy)
      BILEVEL_PETSC_CALL(PetscPrintf(comm, ", test accuracy %.4f", *report.test_accuracy));
    for (const auto& [k, v] : extras) BILEVEL_PETSC_CALL(PetscPrintf(comm, ", %s %.4f", k.c_str(), v));
    BILEVEL_PETSC_CALL(PetscPrintf(comm, "\n"));
    if (!summary_path.empty())
      bilevel::write_file_atomically(comm, summary_path, bilevel::summary_json(report, extras));
    bilevel::report_unused_options("bilevel-solve", comm);
    if (report.reason == bilevel::ConvergedReason::CancelledSignal) {
      BILEVEL_PETSC_CALL(PetscPrintf(
          comm,
          "bilevel: stopped by %s after iteration %lld%s\n",
          bilevel::signal_name(report.stop_signal),
          static_cast<long long>(report.outer_iterations),
          checkpoint_path.empty() ? "" : (" (continue with --restart " + checkpoint_path + ")").c_str()));
      return 3;
    }
    return report.reason < bilevel::ConvergedReason::Iterating ? 2 : 0;
  });
}
