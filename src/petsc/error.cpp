#include "bilevel/petsc/error.hpp"

#include <cstring>
#include <string>

namespace bilevel {
namespace {

std::string petsc_message(PetscErrorCode code, const char* call, const char* file, int line) {
  const char* text = nullptr;
  char* specific = nullptr;
  (void)PetscErrorMessage(code, &text, &specific);
  const char* base = std::strrchr(file, '/');
  std::string where = base ? base + 1 : file;
  std::string detail = specific && *specific ? std::string(specific) : std::string(text ? text : "unknown");
  while (!detail.empty() && (detail.back() == '\n' || detail.back() == ' ')) detail.pop_back();
  return where + ":" + std::to_string(line) + ": " + call + " failed with PETSc error " +
         std::to_string(code) + " (" + detail + ")";
}

}  // namespace

petsc::Error::Error(PetscErrorCode code, const char* call, const char* file, int line)
    : ::bilevel::Error(petsc_message(code, call, file, line)), code_(code) {}

void throw_located(const char* file, int line, const std::string& message) {
  const char* base = std::strrchr(file, '/');
  throw Error(std::string(base ? base + 1 : file) + ":" + std::to_string(line) + ": " + message);
}

}  // namespace bilevel
