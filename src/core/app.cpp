#include "bilevel/core/app.hpp"

#include <petscsys.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/options.hpp"
#include "bilevel/petsc/session.hpp"

namespace bilevel {

namespace {

/// Joins the agreement of guarded_main's rule on `agree` (see app.hpp): true when every rank of the
/// communicator joined within kErrorAgreementSeconds. Called by the ranks that caught an exception.
bool every_rank_failed(MPI_Comm agree) {
  MPI_Request request = MPI_REQUEST_NULL;
  if (MPI_Ibarrier(agree, &request) != MPI_SUCCESS) return false;
  const auto start = std::chrono::steady_clock::now();
  int done = 0;
  while (!done) {
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (done) break;
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() >
        kErrorAgreementSeconds)
      return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

}  // namespace

int guarded_main(const char* program, const std::function<int()>& body) {
  int rank = 0;
  MPI_Comm_rank(PETSC_COMM_WORLD, &rank);
  MPI_Comm agree = MPI_COMM_NULL;  // the agreement's own communicator: it matches no collective of body
  MPI_Comm_dup(PETSC_COMM_WORLD, &agree);
  std::string message;
  try {
    if (const auto& startup = petsc::Session::startup_error()) throw InputError(*startup);
    const int code = body();
    MPI_Comm_free(&agree);
    return code;
  } catch (const std::exception& e) {
    message = e.what();
  } catch (...) {
    message = "unknown exception";
  }
  if (every_rank_failed(agree)) {
    if (rank == 0) std::fprintf(stderr, "%s: error: %s\n", program, message.c_str());
    std::fflush(stderr);
    MPI_Comm_free(&agree);
    return 1;
  }
  std::fprintf(stderr, "%s: [rank %d] error: %s\n", program, rank, message.c_str());
  std::fflush(stderr);
  MPI_Abort(PETSC_COMM_WORLD, 1);
  return 1;
}

void debug_failure_point(MPI_Comm comm) {
  const char* which = std::getenv("BILEVEL_DEBUG_FAIL_RANK");
  if (!which || !*which) return;
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  // the failure of the report that motivated the rule: PETSc running out of memory on one rank
  const std::string planted = "failure planted by BILEVEL_DEBUG_FAIL_RANK=" + std::string(which);
  if (std::string_view(which) == "all" || std::to_string(rank) == which)
    throw petsc::Error(PETSC_ERR_MEM, planted.c_str(), __FILE__, __LINE__);
}

int report_unused_options(const char* program, MPI_Comm comm, std::string_view prefix) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  const std::vector<std::string> unused = petsc::unused_options(prefix);
  if (rank != 0) return static_cast<int>(unused.size());
  for (const std::string& name : unused) {
    const std::string close = petsc::closest_known_option(name);
    const std::string hint = close.empty() ? "" : "; did you mean " + close + "?";
    std::fprintf(stderr, "%s: warning: option %s was not used%s\n", program, name.c_str(), hint.c_str());
  }
  std::fflush(stderr);
  return static_cast<int>(unused.size());
}

void split_arguments(int argc,
                     char** argv,
                     const std::vector<std::string>& with_value,
                     const std::vector<std::string>& flags,
                     std::vector<std::string>& long_args,
                     std::vector<std::string>& petsc_args) {
  auto is = [](const std::vector<std::string>& list, const std::string& name) {
    return std::find(list.begin(), list.end(), name) != list.end();
  };
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) == 0 && a.size() > 2) {
      const std::string name =
          a.substr(2, a.find('=') == std::string::npos ? std::string::npos : a.find('=') - 2);
      long_args.push_back(a);
      if (a.find('=') == std::string::npos && is(with_value, name) && i + 1 < argc)
        long_args.push_back(argv[++i]);
      (void)flags;
      continue;
    }
    petsc_args.push_back(a);
  }
}

}  // namespace bilevel
