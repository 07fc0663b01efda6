#include "bilevel/core/app.hpp"

#include <petscsys.h>

#include <algorithm>
#include <cstdio>

#include "bilevel/petsc/error.hpp"

namespace bilevel {

int guarded_main(const char* program, const std::function<int()>& body) {
  int rank = 0;
  MPI_Comm_rank(PETSC_COMM_WORLD, &rank);
  try {
    return body();
  } catch (const bilevel::InputError& e) {
    if (rank == 0) std::fprintf(stderr, "%s: error: %s\n", program, e.what());
  } catch (const bilevel::CollectiveError& e) {
    if (rank == 0) std::fprintf(stderr, "%s: error: %s\n", program, e.what());
  } catch (const bilevel::petsc::Error& e) {
    if (rank == 0) std::fprintf(stderr, "%s: error: %s\n", program, e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: [rank %d] error: %s\n", program, rank, e.what());
    std::fflush(stderr);
    MPI_Abort(PETSC_COMM_WORLD, 1);
  }
  std::fflush(stderr);
  return 1;
}

void split_arguments(int argc, char** argv, const std::vector<std::string>& with_value,
                     const std::vector<std::string>& flags, std::vector<std::string>& long_args,
                     std::vector<std::string>& petsc_args) {
  auto is = [](const std::vector<std::string>& list, const std::string& name) {
    return std::find(list.begin(), list.end(), name) != list.end();
  };
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) == 0 && a.size() > 2) {
      const std::string name = a.substr(2, a.find('=') == std::string::npos ? std::string::npos : a.find('=') - 2);
      long_args.push_back(a);
      if (a.find('=') == std::string::npos && is(with_value, name) && i + 1 < argc) long_args.push_back(argv[++i]);
      (void)flags;
      continue;
    }
    petsc_args.push_back(a);
  }
}

}  // namespace bilevel
