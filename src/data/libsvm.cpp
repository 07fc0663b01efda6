/// \file Parallel reader of LIBSVM/svmlight text files.
///
/// Plain text: each rank scans only its byte range of the file (split at line boundaries: a line belongs to
/// the rank whose range holds its first byte), counting rows and their nonzeros; the rows are then given to
/// ranks balanced by nonzeros, and each rank parses its rows from their first byte. No rank reads the whole
/// file. Compressed text (gzip, bzip2, xz): rank 0 decompresses the file once, sending contiguous blocks of
/// lines to the ranks as it goes, every rank parses what it receives, and one exchange then balances the
/// rows by nonzeros; no other rank opens the file.
#include "bilevel/data/libsvm.hpp"

#include <fcntl.h>
#include <mpi.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "bilevel/data/stream.hpp"
#include "bilevel/petsc/collective.hpp"
#include "bilevel/petsc/error.hpp"
#include "libsvm_parse.hpp"
#include "local_csr.hpp"
#include "read_count.hpp"

namespace bilevel {
namespace {

using libsvm::content_of;
using libsvm::LineError;
using libsvm::ParsedRows;

constexpr std::size_t kChunk = std::size_t{1} << 20;  // bytes read (or sent) at a time
constexpr int kTextTag = 7131;                        // chunks of lines from rank 0
constexpr std::int64_t kNone = std::numeric_limits<std::int64_t>::max();

/// Lines of a plain file read with pread from byte `begin` on, each with the offset of its first byte.
/// With align, the partial line at `begin` is skipped (begin must then be the byte before the rank's range).
/// Not collective.
class RangeLines {
 public:
  RangeLines(const std::string& path, std::int64_t begin, bool align) : path_(path), base_(begin) {
    do {
      fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    } while (fd_ < 0 && errno == EINTR);
    if (fd_ < 0) throw InputError("cannot open " + path + ": " + std::strerror(errno));
    if (align) {
      std::string_view skipped;
      std::int64_t offset = 0;
      next(skipped, offset);
    }
  }
  RangeLines(const RangeLines&) = delete;
  RangeLines& operator=(const RangeLines&) = delete;
  ~RangeLines() { ::close(fd_); }

  /// The next line (without '\n' or a trailing '\r'), valid until the next call; false at the end.
  bool next(std::string_view& line, std::int64_t& offset) {
    for (;;) {
      const char* begin = buf_.data() + pos_;
      const std::size_t available = buf_.size() - pos_;
      const auto* newline = static_cast<const char*>(std::memchr(begin, '\n', available));
      if (newline != nullptr || (eof_ && available > 0)) {
        std::size_t length = newline != nullptr ? static_cast<std::size_t>(newline - begin) : available;
        offset = base_ + static_cast<std::int64_t>(pos_);
        pos_ += newline != nullptr ? length + 1 : length;
        if (length > 0 && begin[length - 1] == '\r') --length;
        line = std::string_view(begin, length);
        return true;
      }
      if (eof_) return false;
      buf_.erase(0, pos_);
      base_ += static_cast<std::int64_t>(pos_);
      pos_ = 0;
      const std::size_t kept = buf_.size();
      buf_.resize(kept + kChunk);
      std::size_t got = 0;
      while (got < kChunk) {
        const ssize_t n = ::pread(fd_,
                                  buf_.data() + kept + got,
                                  kChunk - got,
                                  static_cast<off_t>(base_ + static_cast<std::int64_t>(kept + got)));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw InputError("cannot read " + path_ + ": " + std::strerror(errno));
        if (n == 0) break;
        got += static_cast<std::size_t>(n);
      }
      buf_.resize(kept + got);
      detail::add_data_file_bytes_read(static_cast<std::int64_t>(got));
      eof_ = got == 0;
    }
  }

 private:
  std::string path_;
  int fd_ = -1;
  std::string buf_;
  std::size_t pos_ = 0;
  std::int64_t base_ = 0;  // file offset of buf_[0]
  bool eof_ = false;
};

/// Pass 1 on one rank: where its data rows start (byte offset, line number counted from its first line)
/// and their weights (nonzeros + 1).
struct RowMarks {
  std::vector<std::int64_t> offset, line, weight;
  std::int64_t lines = 0;  ///< lines seen (data or not)

  void add(std::string_view line_text, std::int64_t at) {
    ++lines;
    const std::string_view text = content_of(line_text);
    if (text.empty()) return;
    offset.push_back(at);
    line.push_back(lines);
    weight.push_back(libsvm::count_pairs(text) + 1);
  }
};

/// Pass 1 over this rank's byte range [begin, end) of a plain file. Not collective.
RowMarks scan_range(const std::string& path, std::int64_t begin, std::int64_t end) {
  RowMarks marks;
  if (begin >= end) return marks;
  RangeLines lines(path, begin > 0 ? begin - 1 : 0, begin > 0);
  std::string_view line;
  std::int64_t offset = 0;
  while (lines.next(line, offset) && offset < end) marks.add(line, offset);
  return marks;
}

/// Pass 1 over a whole (compressed) stream. Not collective.
RowMarks scan_stream(const std::string& path) {
  RowMarks marks;
  LineReader reader(InputStream::open(path));
  std::string line;
  while (reader.next(line)) marks.add(line, 0);
  return marks;
}

/// Who parses what: rows of the selection balanced by weight; rank q's rows begin at byte start_offset[q]
/// (plain files) on line start_line[q].
struct Plan {
  std::int64_t selected = 0, first = 0;
  std::vector<PetscInt> row_ranges;
  std::vector<std::int64_t> start_offset, start_line;
  std::vector<std::int64_t> nonzeros;  ///< per rank, from pass 1: the exact size of its arrays
  PetscInt count(int q) const { return row_ranges[q + 1] - row_ranges[q]; }
  /// Reserves rank q's arrays at their final size, so that parsing never reallocates (copies) them.
  void reserve(int q, ParsedRows& rows) const {
    rows.labels.reserve(static_cast<std::size_t>(count(q)));
    rows.csr.row_ptr.reserve(static_cast<std::size_t>(count(q)) + 1);
    rows.csr.cols.reserve(static_cast<std::size_t>(nonzeros[q]));
    rows.csr.vals.reserve(static_cast<std::size_t>(nonzeros[q]));
  }
};

/// Combines the ranks' marks (in rank order, which is file order) into a Plan. Collective.
Plan make_plan(MPI_Comm comm,
               const RowMarks& marks,
               const std::string& path,
               const LibsvmReadOptions& options) {
  int size = 0, rank = 0;
  MPI_Comm_size(comm, &size);
  MPI_Comm_rank(comm, &rank);
  auto exscan = [&](std::int64_t local) {
    std::int64_t before = 0;
    MPI_Exscan(&local, &before, 1, MPI_INT64_T, MPI_SUM, comm);
    return rank == 0 ? std::int64_t{0} : before;
  };
  const auto local_rows = static_cast<std::int64_t>(marks.weight.size());
  const std::int64_t rows_before = exscan(local_rows), lines_before = exscan(marks.lines);
  std::int64_t file_rows = 0;
  MPI_Allreduce(&local_rows, &file_rows, 1, MPI_INT64_T, MPI_SUM, comm);
  if (file_rows == 0) throw InputError(path + ": no data rows");
  if (options.first_row >= file_rows)
    throw InputError(path + ": no data rows after skipping " + std::to_string(options.first_row) +
                     " (the file has " + std::to_string(file_rows) + ")");
  const std::int64_t available = file_rows - options.first_row;
  Plan plan;
  plan.first = options.first_row;
  plan.selected = options.max_rows < 0 ? available : std::min<std::int64_t>(options.max_rows, available);
  if (plan.selected == 0) throw InputError(path + ": no data rows selected (max_rows = 0)");
  if (plan.selected >= PETSC_MAX_INT) throw InputError(path + ": too many rows for 32-bit PETSc indices");

  auto selected = [&](std::int64_t k) {
    const std::int64_t g = rows_before + k;
    return g >= plan.first && g < plan.first + plan.selected;
  };
  std::int64_t local_weight = 0, total = 0;
  for (std::int64_t k = 0; k < local_rows; ++k)
    if (selected(k)) local_weight += marks.weight[k];
  std::int64_t before = exscan(local_weight);
  MPI_Allreduce(&local_weight, &total, 1, MPI_INT64_T, MPI_SUM, comm);

  std::vector<std::int64_t> counts(size, 0);
  plan.nonzeros.assign(size, 0);
  plan.start_offset.assign(size, kNone);
  plan.start_line.assign(size, kNone);
  for (std::int64_t k = 0; k < local_rows; ++k) {
    if (!selected(k)) continue;
    const int q = weighted_owner(before, marks.weight[k], total, size);
    before += marks.weight[k];
    ++counts[q];
    plan.nonzeros[q] += marks.weight[k] - 1;
    plan.start_offset[q] = std::min(plan.start_offset[q], marks.offset[k]);
    plan.start_line[q] = std::min(plan.start_line[q], lines_before + marks.line[k]);
  }
  MPI_Allreduce(MPI_IN_PLACE, counts.data(), size, MPI_INT64_T, MPI_SUM, comm);
  MPI_Allreduce(MPI_IN_PLACE, plan.nonzeros.data(), size, MPI_INT64_T, MPI_SUM, comm);
  MPI_Allreduce(MPI_IN_PLACE, plan.start_offset.data(), size, MPI_INT64_T, MPI_MIN, comm);
  MPI_Allreduce(MPI_IN_PLACE, plan.start_line.data(), size, MPI_INT64_T, MPI_MIN, comm);
  for (int q = 0; q < size; ++q)
    if (plan.nonzeros[q] >= PETSC_MAX_INT)
      throw InputError(path + ": more than 2^31 nonzeros on one rank; run on more ranks");
  plan.row_ranges.assign(static_cast<std::size_t>(size) + 1, 0);
  for (int q = 0; q < size; ++q)
    plan.row_ranges[q + 1] = plan.row_ranges[q] + static_cast<PetscInt>(counts[q]);
  return plan;
}

/// Parses data lines into `rows`, numbering lines from `line_number` (the number of the first line given).
class LineParser {
 public:
  LineParser(const std::string& path, std::int64_t line_number, int index_base, ParsedRows& rows)
      : path_(path), line_(line_number - 1), base_(index_base), rows_(rows) {}

  /// The next line given is line `number` of the file. Not collective.
  void next_line_is(std::int64_t number) { line_ = number - 1; }
  /// Parses one line (skipped if it has no data). Not collective.
  void operator()(std::string_view line) {
    ++line_;
    const std::string_view text = content_of(line);
    if (text.empty()) return;
    try {
      libsvm::parse_line(text, base_, rows_);
    } catch (const LineError& e) {
      throw InputError(path_ + ":" + std::to_string(line_) + ": " + e.what);
    }
    if (rows_.csr.cols.size() >= static_cast<std::size_t>(PETSC_MAX_INT))
      throw InputError(path_ + ": more than 2^31 nonzeros on one rank; run on more ranks");
  }
  std::int64_t rows() const { return static_cast<std::int64_t>(rows_.labels.size()); }

 private:
  const std::string& path_;
  std::int64_t line_;
  int base_;
  ParsedRows& rows_;
};

/// Pass 2 on a plain file: this rank parses its rows from their first byte on. Not collective.
ParsedRows parse_range(const std::string& path, const Plan& plan, int rank, int index_base) {
  ParsedRows rows;
  const PetscInt count = plan.count(rank);
  if (count == 0) return rows;
  plan.reserve(rank, rows);
  LineParser parse(path, plan.start_line[rank], index_base, rows);
  RangeLines lines(path, plan.start_offset[rank], false);
  std::string_view line;
  std::int64_t offset = 0;
  while (parse.rows() < count && lines.next(line, offset)) parse(line);
  if (parse.rows() < count) throw InputError(path + ": the file changed while being read");
  return rows;
}

/// Rows of a compressed file read in one pass: rank 0 decompresses it once and sends the selected data
/// rows to the ranks in contiguous blocks (in chunks of about kChunk bytes, each led by the number of its
/// first line; an empty message closes), moving on to the next rank when the share of the compressed file
/// read so far passes that rank's share (an estimate; `balance` makes it exact). Every rank parses what it
/// receives. Rank 0 holds at most one chunk of text. A failure on any rank still lets the sending finish;
/// `section` collects it. Returns this rank's rows, in file order; `file_rows` (rank 0) the data rows seen.
/// Collective.
ParsedRows stream_rows(MPI_Comm comm,
                       const std::string& path,
                       const LibsvmReadOptions& options,
                       std::int64_t file_size,
                       std::int64_t& file_rows,
                       ParallelSection& section) {
  int size = 0, rank = 0;
  MPI_Comm_size(comm, &size);
  MPI_Comm_rank(comm, &rank);
  ParsedRows rows;
  LineParser parse(path, 1, options.index_base, rows);
  bool ok = true;
  auto parse_guarded = [&](std::string_view line) {
    if (!ok) return;
    try {
      parse(line);
    } catch (...) {
      ok = false;
      section.failed();
    }
  };
  file_rows = 0;
  if (rank != 0) {
    std::string chunk;
    for (;;) {
      MPI_Status status;
      MPI_Probe(0, kTextTag, comm, &status);
      int n = 0;
      MPI_Get_count(&status, MPI_CHAR, &n);
      chunk.resize(static_cast<std::size_t>(n));
      MPI_Recv(chunk.data(), n, MPI_CHAR, 0, kTextTag, comm, MPI_STATUS_IGNORE);
      if (n < static_cast<int>(sizeof(std::int64_t))) break;
      std::int64_t first_line = 0;
      std::memcpy(&first_line, chunk.data(), sizeof first_line);
      parse.next_line_is(first_line);
      std::string_view rest = std::string_view(chunk).substr(sizeof first_line);
      while (!rest.empty()) {
        const std::size_t newline = rest.find('\n');
        parse_guarded(rest.substr(0, newline));
        rest.remove_prefix(newline == std::string_view::npos ? rest.size() : newline + 1);
      }
    }
    return rows;
  }
  std::string out;  // the chunk being filled for rank `to` (> 0)
  int to = 0;
  auto flush = [&] {
    if (to > 0 && !out.empty())
      MPI_Send(out.data(), static_cast<int>(out.size()), MPI_CHAR, to, kTextTag, comm);
    out.clear();
  };
  try {
    std::unique_ptr<InputStream> stream = InputStream::open(path);
    const InputStream& progress = *stream;
    LineReader reader(std::move(stream));
    std::string line;
    std::int64_t number = 0;
    const std::int64_t last = options.max_rows < 0 ? kNone : options.first_row + options.max_rows;
    while (reader.next(line)) {
      ++number;
      if (content_of(line).empty()) {  // kept in a chunk being filled, so that line numbers stay right
        if (to > 0 && !out.empty()) out.append(line).push_back('\n');
        continue;
      }
      const std::int64_t g = file_rows++;
      if (g < options.first_row) continue;
      if (g >= last) break;
      const std::int64_t read = std::max<std::int64_t>(progress.file_bytes_read(), 0);
      const int q = std::max(to,
                             static_cast<int>(std::min<std::int64_t>(
                                 size - 1, read * size / std::max<std::int64_t>(file_size, 1))));
      if (q != to) {
        flush();
        to = q;
      }
      if (to == 0) {
        parse.next_line_is(number);
        parse_guarded(line);
        continue;
      }
      if (out.empty()) out.append(reinterpret_cast<const char*>(&number), sizeof number);
      out.append(line).push_back('\n');
      if (out.size() >= kChunk) flush();
    }
  } catch (...) {
    ok = false;
    section.failed();
  }
  flush();
  for (int r = 1; r < size; ++r) MPI_Send(nullptr, 0, MPI_CHAR, r, kTextTag, comm);
  return rows;
}

/// Moves rows between ranks once so that they are balanced by weight (nonzeros + 1, weighted_owner) in
/// file order: the rows of each rank are contiguous in the file and owners never decrease along the rows,
/// so each rank sends one contiguous run to each destination and receives its rows in source rank order,
/// which is file order. Returns the row ranges. Collective.
std::vector<PetscInt> balance(MPI_Comm comm, const std::string& path, ParsedRows& rows) {
  int size = 0, rank = 0;
  MPI_Comm_size(comm, &size);
  MPI_Comm_rank(comm, &rank);
  const auto m = static_cast<std::int64_t>(rows.labels.size());
  std::vector<PetscInt> lengths(static_cast<std::size_t>(m));
  std::int64_t weight = 0, before = 0, total = 0;
  for (std::int64_t i = 0; i < m; ++i) {
    lengths[i] = rows.csr.row_ptr[i + 1] - rows.csr.row_ptr[i];
    weight += lengths[i] + 1;
  }
  MPI_Exscan(&weight, &before, 1, MPI_INT64_T, MPI_SUM, comm);
  if (rank == 0) before = 0;
  MPI_Allreduce(&weight, &total, 1, MPI_INT64_T, MPI_SUM, comm);
  std::vector<std::int64_t> send(2 * static_cast<std::size_t>(size), 0), recv(send.size(), 0);
  for (std::int64_t i = 0; i < m; ++i) {
    const int q = weighted_owner(before, lengths[i] + 1, total, size);
    before += lengths[i] + 1;
    send[2 * q] += 1;
    send[2 * q + 1] += lengths[i];
  }
  MPI_Alltoall(send.data(), 2, MPI_INT64_T, recv.data(), 2, MPI_INT64_T, comm);
  std::int64_t mine[2] = {0, 0};
  for (int q = 0; q < size; ++q) {
    mine[0] += recv[2 * q];
    mine[1] += recv[2 * q + 1];
  }
  std::vector<std::int64_t> counts(static_cast<std::size_t>(size));
  MPI_Allgather(&mine[0], 1, MPI_INT64_T, counts.data(), 1, MPI_INT64_T, comm);
  std::vector<PetscInt> ranges(static_cast<std::size_t>(size) + 1, 0);
  for (int q = 0; q < size; ++q) ranges[q + 1] = ranges[q] + static_cast<PetscInt>(counts[q]);
  int moves = send[2 * rank] != m || mine[0] != m ? 1 : 0, any = 0;
  MPI_Allreduce(&moves, &any, 1, MPI_INT, MPI_MAX, comm);
  if (!any) return ranges;
  int big = mine[1] >= PETSC_MAX_INT ? 1 : 0;
  MPI_Allreduce(MPI_IN_PLACE, &big, 1, MPI_INT, MPI_MAX, comm);
  if (big) throw InputError(path + ": more than 2^31 nonzeros on one rank; run on more ranks");

  // Four exchanges (row lengths, labels, columns, values) from and into contiguous runs.
  auto exchange = [&](const void* from, void* into, MPI_Datatype type, int which) {
    std::vector<int> sc(static_cast<std::size_t>(size)), sd(sc.size()), rc(sc.size()), rd(sc.size());
    for (int q = 0, s = 0, r = 0; q < size; ++q) {
      sc[q] = static_cast<int>(send[2 * q + which]);
      rc[q] = static_cast<int>(recv[2 * q + which]);
      sd[q] = s;
      rd[q] = r;
      s += sc[q];
      r += rc[q];
    }
    MPI_Alltoallv(from, sc.data(), sd.data(), type, into, rc.data(), rd.data(), type, comm);
  };
  ParsedRows out;
  out.max_index = rows.max_index;  // agreed over the ranks by the caller
  out.saw_index_zero = rows.saw_index_zero;
  std::vector<PetscInt> new_lengths(static_cast<std::size_t>(mine[0]));
  out.labels.resize(static_cast<std::size_t>(mine[0]));
  exchange(lengths.data(), new_lengths.data(), MPIU_INT, 0);
  exchange(rows.labels.data(), out.labels.data(), MPI_DOUBLE, 0);
  out.csr.cols.resize(static_cast<std::size_t>(mine[1]));
  exchange(rows.csr.cols.data(), out.csr.cols.data(), MPIU_INT, 1);
  rows.csr.cols = std::vector<PetscInt>();
  out.csr.vals.resize(static_cast<std::size_t>(mine[1]));
  exchange(rows.csr.vals.data(), out.csr.vals.data(), MPIU_SCALAR, 1);
  out.csr.row_ptr.resize(static_cast<std::size_t>(mine[0]) + 1);
  out.csr.row_ptr[0] = 0;
  for (std::size_t i = 0; i < new_lengths.size(); ++i)
    out.csr.row_ptr[i + 1] = out.csr.row_ptr[i] + new_lengths[i];
  rows = std::move(out);
  return ranges;
}

void check_options(const std::string& path, const LibsvmReadOptions& options) {
  auto bad = [&](const std::string& what) { throw InputError("reading " + path + ": " + what); };
  if (options.n_features < 0) bad("n_features must be >= 0, got " + std::to_string(options.n_features));
  if (options.first_row < 0) bad("first_row must be >= 0, got " + std::to_string(options.first_row));
  if (options.index_base < -1 || options.index_base > 1)
    bad("index_base must be -1 (detect), 0 or 1, got " + std::to_string(options.index_base));
}

/// Whether the file is plain text and its size in bytes, as rank 0 sees it (a shared file system is
/// assumed). Collective.
struct FileInfo {
  bool plain = true;
  std::int64_t bytes = 0;
};
FileInfo file_info(MPI_Comm comm, const std::string& path) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  long long info[2] = {0, 0};  // plain?, size in bytes
  collective(comm, [&] {
    if (rank != 0) return;
    info[0] = compression_of(path) == FileCompression::None ? 1 : 0;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) throw InputError("cannot open " + path + ": " + std::strerror(errno));
    info[1] = static_cast<long long>(st.st_size);
  });
  MPI_Bcast(info, 2, MPI_LONG_LONG, 0, comm);
  return {info[0] != 0, static_cast<std::int64_t>(info[1])};
}

/// Pass 1 on every rank (plain: its byte range; compressed: rank 0 alone, for counting only). Collective.
RowMarks scan(MPI_Comm comm, const std::string& path, const FileInfo& info) {
  int size = 0, rank = 0;
  MPI_Comm_size(comm, &size);
  MPI_Comm_rank(comm, &rank);
  RowMarks marks;
  collective(comm, [&] {
    if (info.plain)
      marks = scan_range(path, info.bytes * rank / size, info.bytes * (rank + 1) / size);
    else if (rank == 0)
      marks = scan_stream(path);
  });
  return marks;
}

/// A compressed file in one pass (stream_rows), the selection checked like make_plan, the rows balanced.
/// Returns the row ranges. Collective.
std::vector<PetscInt> read_stream(MPI_Comm comm,
                                  const std::string& path,
                                  const LibsvmReadOptions& options,
                                  const FileInfo& info,
                                  ParsedRows& rows) {
  std::int64_t file_rows = 0;
  {
    ParallelSection section(comm);
    rows = stream_rows(comm, path, options, info.bytes, file_rows, section);
    section.check();
  }
  MPI_Bcast(&file_rows, 1, MPI_INT64_T, 0, comm);
  if (file_rows == 0) throw InputError(path + ": no data rows");
  if (options.first_row >= file_rows)
    throw InputError(path + ": no data rows after skipping " + std::to_string(options.first_row) +
                     " (the file has " + std::to_string(file_rows) + ")");
  const auto local = static_cast<std::int64_t>(rows.labels.size());
  std::int64_t selected = 0;
  MPI_Allreduce(&local, &selected, 1, MPI_INT64_T, MPI_SUM, comm);
  if (selected == 0) throw InputError(path + ": no data rows selected (max_rows = 0)");
  if (selected >= PETSC_MAX_INT) throw InputError(path + ": too many rows for 32-bit PETSc indices");
  return balance(comm, path, rows);
}

}  // namespace

std::int64_t count_libsvm_rows(MPI_Comm comm, const std::string& path) {
  const RowMarks marks = scan(comm, path, file_info(comm, path));
  const auto local = static_cast<std::int64_t>(marks.weight.size());
  std::int64_t total = 0;
  MPI_Allreduce(&local, &total, 1, MPI_INT64_T, MPI_SUM, comm);
  return total;
}

Dataset read_libsvm(MPI_Comm comm, const std::string& path, const LibsvmReadOptions& options) {
  check_options(path, options);
  int size = 0, rank = 0;
  MPI_Comm_size(comm, &size);
  MPI_Comm_rank(comm, &rank);

  // Plain: pass 1 (each rank its byte range), the plan, pass 2 (each rank its rows). Compressed: one pass.
  const FileInfo info = file_info(comm, path);
  ParsedRows rows;
  Dataset data;
  if (info.plain) {
    Plan plan;
    {
      const RowMarks marks = scan(comm, path, info);
      plan = make_plan(comm, marks, path, options);
    }
    data.row_ranges = plan.row_ranges;
    collective(comm, [&] { rows = parse_range(path, plan, rank, options.index_base); });
  } else {
    data.row_ranges = read_stream(comm, path, options, info, rows);
  }
  data.comm = comm;
  data.source = path;
  data.format = DataFormat::Sparse;
  data.n_rows = data.row_ranges[size];
  data.row_begin = data.row_ranges[rank];
  data.row_end = data.row_ranges[rank + 1];

  // Index base and width, agreed over all ranks.
  int saw_zero = rows.saw_index_zero ? 1 : 0, any_zero = 0;
  MPI_Allreduce(&saw_zero, &any_zero, 1, MPI_INT, MPI_LOR, comm);
  PetscInt max_index = -1;
  MPI_Allreduce(&rows.max_index, &max_index, 1, MPIU_INT, MPI_MAX, comm);
  const int base = options.index_base >= 0 ? options.index_base : (any_zero ? 0 : 1);
  data.index_base = base;
  data.index_zero_seen = any_zero != 0;
  const PetscInt found = max_index < 0 ? 0 : max_index + 1 - base;
  if (options.n_features > 0 && found > options.n_features)
    throw InputError(path + " has " + std::to_string(found) + " features, more than the " +
                     std::to_string(options.n_features) + " requested");
  data.n_features = options.n_features > 0 ? options.n_features : found;

  libsvm::assign_labels(data, rows.labels);
  collective(comm, [&] {
    if (base != 0)
      for (PetscInt& col : rows.csr.cols) col -= base;
    data.local = LocalCsr::adopt(std::move(rows.csr), data.n_features);
  });
  return data;
}

}  // namespace bilevel
