#include "bilevel/petsc/collective.hpp"

#include <petscsys.h>

#include <vector>

#include "bilevel/petsc/error.hpp"

namespace bilevel {

void ParallelSection::failed() {
  try {
    throw;
  } catch (const InputError& e) {
    failed(e.what(), true);
  } catch (const std::exception& e) {
    failed(e.what(), false);
  } catch (...) {
    failed("unknown exception", false);
  }
}

void ParallelSection::failed(const std::string& message, bool input_error) {
  if (failed_) return;  // keep the first message of this rank
  failed_ = true;
  input_error_ = input_error;
  message_ = message;
}

void ParallelSection::check() {
  int rank = 0, size = 1;
  MPI_Comm_rank(comm_, &rank);
  MPI_Comm_size(comm_, &size);
  // Lowest failing rank: every rank contributes its rank if failed, else size.
  int mine = failed_ ? rank : size, first = size;
  MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm_);
  if (first == size) return;
  int info[2] = {static_cast<int>(message_.size()), input_error_ ? 1 : 0};
  MPI_Bcast(info, 2, MPI_INT, first, comm_);
  std::string message(static_cast<std::size_t>(info[0]), '\0');
  if (rank == first) message = message_;
  MPI_Bcast(message.data(), info[0], MPI_CHAR, first, comm_);
  failed_ = false;
  if (info[1]) throw InputError(message);
  throw CollectiveError(message);
}

}  // namespace bilevel
