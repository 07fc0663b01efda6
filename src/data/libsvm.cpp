/// \file Parallel two-pass reader of LIBSVM/svmlight text files.
///
/// Plain text: each rank scans only its byte range of the file (split at line boundaries: a line belongs to
/// the rank whose range holds its first byte), counting rows and their nonzeros; the rows are then given to
/// ranks balanced by nonzeros, and each rank parses its rows from their first byte. No rank reads the whole
/// file. Compressed text (gzip, bzip2, xz): rank 0 decompresses the file (twice: counting, then sending
/// each rank its lines in chunks) and the ranks parse their own lines; no other rank opens it.
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

/// Pass 2 on a compressed file: rank 0 decompresses it and sends every other rank its lines (in chunks of
/// about kChunk bytes, an empty message closing); every rank parses its own. A failure on any rank still
/// lets the sending finish; `section` collects it. Collective.
ParsedRows scatter_stream(
    MPI_Comm comm, const std::string& path, const Plan& plan, int index_base, ParallelSection& section) {
  int size = 0, rank = 0;
  MPI_Comm_size(comm, &size);
  MPI_Comm_rank(comm, &rank);
  ParsedRows rows;
  plan.reserve(rank, rows);
  LineParser parse(path, plan.start_line[rank], index_base, rows);
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
  if (rank != 0) {
    std::string chunk;
    for (;;) {
      MPI_Status status;
      MPI_Probe(0, kTextTag, comm, &status);
      int n = 0;
      MPI_Get_count(&status, MPI_CHAR, &n);
      chunk.resize(static_cast<std::size_t>(n));
      MPI_Recv(chunk.data(), n, MPI_CHAR, 0, kTextTag, comm, MPI_STATUS_IGNORE);
      if (n == 0) break;
      std::string_view rest(chunk);
      while (!rest.empty()) {
        const std::size_t newline = rest.find('\n');
        parse_guarded(rest.substr(0, newline));
        rest.remove_prefix(newline == std::string_view::npos ? rest.size() : newline + 1);
      }
    }
  } else {
    std::vector<std::string> out(static_cast<std::size_t>(size));
    std::vector<char> closed(static_cast<std::size_t>(size), 0);
    auto flush = [&](int q, bool close) {
      if (q <= 0 || closed[q]) return;
      if (!out[q].empty() || close)
        MPI_Send(out[q].data(), static_cast<int>(out[q].size()), MPI_CHAR, q, kTextTag, comm);
      if (!out[q].empty() && close) MPI_Send(nullptr, 0, MPI_CHAR, q, kTextTag, comm);
      out[q].clear();
      closed[q] = close;
    };
    try {
      LineReader reader(InputStream::open(path));
      std::string line;
      std::int64_t g = -1;
      int last = -1, q = 0;
      while (reader.next(line)) {
        if (content_of(line).empty()) {
          if (last == 0) parse_guarded(line);
          if (last > 0) out[last] += line + '\n';
          continue;
        }
        if (++g < plan.first) continue;
        if (g >= plan.first + plan.selected) break;
        while (g - plan.first >= plan.row_ranges[q + 1]) ++q;
        if (q != last) flush(last, true);
        last = q;
        if (q == 0) {
          parse_guarded(line);
        } else {
          out[q] += line;
          out[q] += '\n';
          if (out[q].size() >= kChunk) flush(q, false);
        }
      }
    } catch (...) {
      ok = false;
      section.failed();
    }
    for (int q = 1; q < size; ++q) flush(q, true);
  }
  if (ok && parse.rows() < plan.count(rank)) section.failed(path + ": the file changed while being read");
  return rows;
}

void check_options(const std::string& path, const LibsvmReadOptions& options) {
  auto bad = [&](const std::string& what) { throw InputError("reading " + path + ": " + what); };
  if (options.n_features < 0) bad("n_features must be >= 0, got " + std::to_string(options.n_features));
  if (options.first_row < 0) bad("first_row must be >= 0, got " + std::to_string(options.first_row));
  if (options.index_base < -1 || options.index_base > 1)
    bad("index_base must be -1 (detect), 0 or 1, got " + std::to_string(options.index_base));
}

/// Pass 1 on every rank (plain: its byte range; compressed: rank 0 alone). Collective.
RowMarks scan(MPI_Comm comm, const std::string& path, bool* plain) {
  int size = 0, rank = 0;
  MPI_Comm_size(comm, &size);
  MPI_Comm_rank(comm, &rank);
  // Rank 0 looks at the file; the others follow its verdict (a shared file system is assumed).
  long long info[2] = {0, 0};  // plain?, size in bytes
  collective(comm, [&] {
    if (rank != 0) return;
    info[0] = compression_of(path) == FileCompression::None ? 1 : 0;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) throw InputError("cannot open " + path + ": " + std::strerror(errno));
    info[1] = static_cast<long long>(st.st_size);
  });
  MPI_Bcast(info, 2, MPI_LONG_LONG, 0, comm);
  *plain = info[0] != 0;
  RowMarks marks;
  collective(comm, [&] {
    if (*plain) {
      const std::int64_t bytes = info[1];
      marks = scan_range(path, bytes * rank / size, bytes * (rank + 1) / size);
    } else if (rank == 0) {
      marks = scan_stream(path);
    }
  });
  return marks;
}

}  // namespace

std::int64_t count_libsvm_rows(MPI_Comm comm, const std::string& path) {
  bool plain = false;
  const RowMarks marks = scan(comm, path, &plain);
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

  bool plain = false;
  Plan plan;
  {
    const RowMarks marks = scan(comm, path, &plain);  // pass 1
    plan = make_plan(comm, marks, path, options);
  }

  Dataset data;
  data.comm = comm;
  data.source = path;
  data.format = DataFormat::Sparse;
  data.n_rows = static_cast<PetscInt>(plan.selected);
  data.row_ranges = plan.row_ranges;
  data.row_begin = data.row_ranges[rank];
  data.row_end = data.row_ranges[rank + 1];

  // Pass 2: each rank parses its own rows.
  ParsedRows rows;
  if (plain) {
    collective(comm, [&] { rows = parse_range(path, plan, rank, options.index_base); });
  } else {
    ParallelSection section(comm);
    rows = scatter_stream(comm, path, plan, options.index_base, section);
    section.check();
  }

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
