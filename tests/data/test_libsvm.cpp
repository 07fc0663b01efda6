// Tests of the compressed input streams, the line reader, the LIBSVM reader and the Dataset helpers.
#include <gtest/gtest.h>
#include <mpi.h>
#include <petscmat.h>

#include <filesystem>
#include <string>
#include <vector>

#include "bilevel/data/dataset.hpp"
#include "bilevel/data/libsvm.hpp"
#include "bilevel/data/stream.hpp"
#include "bilevel/petsc/error.hpp"
#include "data/data_files.hpp"

namespace bilevel {
namespace {

using data_test::Compression;
using data_test::input_error_of;
using data_test::local_nonzeros;
using data_test::mentions;
using data_test::owned_row;
using data_test::ScratchDir;
using data_test::sum_over_ranks;

// Five data rows, four features, 1-based, with a comment, a blank line, a trailing comment and a qid.
const std::string kSmall =
    "# five rows\n"
    "+1 1:0.5 3:-2\n"
    "-1 2:1.5\n"
    "\n"
    "+1 1:1 2:2 3:3 # trailing comment\n"
    "-1 4:4e-1\n"
    "-1 qid:3 1:-1\n";
const std::vector<std::vector<double>> kSmallRows = {
    {0.5, 0, -2, 0}, {0, 1.5, 0, 0}, {1, 2, 3, 0}, {0, 0, 0, 0.4}, {-1, 0, 0, 0}};
const std::vector<PetscInt> kSmallClasses = {1, 0, 1, 0, 0};
constexpr long long kSmallNonzeros = 8;

/// Checks every row this rank owns against rows[first + i] and classes[first + i].
void expect_owned_rows(const Dataset& data,
                       const std::vector<std::vector<double>>& rows,
                       const std::vector<PetscInt>& classes,
                       std::size_t first = 0) {
  ASSERT_EQ(data.labels.size(), static_cast<std::size_t>(data.local_rows()));
  for (PetscInt r = data.row_begin; r < data.row_end; ++r) {
    EXPECT_EQ(owned_row(data, r), rows[first + static_cast<std::size_t>(r)]) << "row " << r;
    EXPECT_EQ(data.labels[static_cast<std::size_t>(r - data.row_begin)],
              classes[first + static_cast<std::size_t>(r)])
        << "row " << r;
  }
}

class LibsvmReaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }

  MPI_Comm comm_ = PETSC_COMM_WORLD;
  int rank_ = 0, size_ = 1;
  ScratchDir dir_;
};

TEST_F(LibsvmReaderTest, ReadsPlainFileIntoRowBlocksOnEveryRank) {
  const std::string path = dir_.write("small.libsvm", kSmall);

  const Dataset data = read_libsvm(comm_, path);

  EXPECT_EQ(data.source, path);
  EXPECT_EQ(data.n_rows, 5);
  EXPECT_EQ(data.n_features, 4);
  EXPECT_EQ(data.format, DataFormat::Sparse);
  EXPECT_EQ(data.n_classes, 2);
  EXPECT_EQ(data.class_values, (std::vector<double>{-1, 1}));
  EXPECT_EQ(sum_over_ranks(data.local_rows()), 5);
  EXPECT_EQ(sum_over_ranks(local_nonzeros(data)), kSmallNonzeros);
  PetscInt m = 0, n = 0;
  ASSERT_EQ(MatGetSize(data.local, &m, &n), 0);
  EXPECT_EQ(m, data.local_rows());
  EXPECT_EQ(n, 4);
  expect_owned_rows(data, kSmallRows, kSmallClasses);
}

TEST_F(LibsvmReaderTest, ReadsGzipBzip2AndXzFilesLikeThePlainFile) {
  for (Compression c : {Compression::Gzip, Compression::Bzip2, Compression::Xz}) {
    SCOPED_TRACE(data_test::suffix(c));
    const std::string path = dir_.write(std::string("small.libsvm") + data_test::suffix(c), kSmall, c);

    const Dataset data = read_libsvm(comm_, path);

    EXPECT_EQ(data.n_rows, 5);
    EXPECT_EQ(data.n_features, 4);
    EXPECT_EQ(sum_over_ranks(local_nonzeros(data)), kSmallNonzeros);
    expect_owned_rows(data, kSmallRows, kSmallClasses);
  }
}

TEST_F(LibsvmReaderTest, DecompressesOnceOnRankZeroAndBalancesRowsLikeThePlainFile) {
  // 40 rows of 1 to 9 nonzeros in 11 columns, with comments and blank lines between them.
  std::string text = "# header\n";
  std::vector<std::vector<double>> rows;
  std::vector<PetscInt> classes;
  for (int i = 0; i < 40; ++i) {
    const int n = 1 + (i * 7) % 9;
    std::vector<double> row(11, 0.0);  // columns 0..10
    text += i % 3 ? "+1" : "-1";
    for (int j = 0; j < n; ++j) {
      const int col = (i + j) % 12 < j ? j : j + (i % 3);
      row[static_cast<std::size_t>(col)] = i + 0.5 * j + 1;
    }
    for (int col = 0; col < 11; ++col)
      if (row[static_cast<std::size_t>(col)] != 0)
        text += " " + std::to_string(col + 1) + ":" + std::to_string(row[static_cast<std::size_t>(col)]);
    text += i % 5 == 4 ? "\n\n# comment\n" : "\n";
    rows.push_back(row);
    classes.push_back(i % 3 ? 1 : 0);
  }
  const std::string plain = dir_.write("rows.libsvm", text);
  const Dataset expected = read_libsvm(comm_, plain);
  for (Compression c : {Compression::Gzip, Compression::Bzip2, Compression::Xz}) {
    SCOPED_TRACE(data_test::suffix(c));
    const std::string path = dir_.write(std::string("rows.libsvm") + data_test::suffix(c), text, c);

    const std::int64_t passes = decompression_passes();
    const Dataset data = read_libsvm(comm_, path);
    const std::int64_t made = decompression_passes() - passes;

    // One decompression, on rank 0 alone; the rows balanced by nonzeros exactly as for the plain file.
    EXPECT_EQ(made, rank_ == 0 ? 1 : 0);
    EXPECT_EQ(data.row_ranges, expected.row_ranges);
    EXPECT_EQ(data.n_features, 11);
    EXPECT_EQ(local_nonzeros(data), local_nonzeros(expected));
    expect_owned_rows(data, rows, classes);
  }
}

TEST_F(LibsvmReaderTest, DetectsCompressionFromContentNotFromTheFileName) {
  const std::string path = dir_.write("looks_plain.txt", kSmall, Compression::Xz);

  const Dataset data = read_libsvm(comm_, path);

  EXPECT_EQ(data.n_rows, 5);
  expect_owned_rows(data, kSmallRows, kSmallClasses);
}

TEST_F(LibsvmReaderTest, TreatsIndexZeroSeenByAnyRankAsZeroBased) {
  // Only the last row has index 0, so at several ranks only the last rank sees it.
  const std::string path = dir_.write("zero_based.libsvm", "1 1:1\n1 2:2\n-1 3:3\n-1 1:4\n1 0:5 3:6\n");

  const Dataset data = read_libsvm(comm_, path);

  EXPECT_EQ(data.n_features, 4);
  const std::vector<std::vector<double>> rows = {
      {0, 1, 0, 0}, {0, 0, 2, 0}, {0, 0, 0, 3}, {0, 4, 0, 0}, {5, 0, 0, 6}};
  expect_owned_rows(data, rows, {1, 1, 0, 0, 1});
}

TEST_F(LibsvmReaderTest, UsesAForcedIndexBaseAsGiven) {
  const std::string path = dir_.write("forced.libsvm", kSmall);
  LibsvmReadOptions options;
  options.index_base = 0;

  const Dataset data = read_libsvm(comm_, path, options);

  EXPECT_EQ(data.n_features, 5);
  if (data.row_begin == 0 && data.local_rows() > 0) {
    EXPECT_EQ(owned_row(data, 0), (std::vector<double>{0, 0.5, 0, -2, 0}));
  }
}

TEST_F(LibsvmReaderTest, RejectsIndexZeroWhenOneBasedIsForced) {
  const std::string path = dir_.write("zero_in_one_based.libsvm", "1 1:1\n-1 0:2\n");
  LibsvmReadOptions options;
  options.index_base = 1;

  const std::string message = input_error_of([&] { read_libsvm(comm_, path, options); });

  EXPECT_TRUE(mentions(message, {path + ":2: bad feature index '0'"}));
}

TEST_F(LibsvmReaderTest, MapsZeroOneLabelsToClassesZeroAndOne) {
  const std::string path = dir_.write("zero_one.libsvm", "0 1:1\n1 1:2\n1 1:3\n0 1:4\n");

  const Dataset data = read_libsvm(comm_, path);

  EXPECT_EQ(data.n_classes, 2);
  EXPECT_EQ(data.class_values, (std::vector<double>{0, 1}));
  expect_owned_rows(data, {{1}, {2}, {3}, {4}}, {0, 1, 1, 0});
}

TEST_F(LibsvmReaderTest, MapsMultiClassLabelsToClassesInSortedOrder) {
  const std::string path = dir_.write("multi.libsvm", "3 1:1\n-2 1:2\n7.5 1:3\n3 1:4\n10 1:5\n");

  const Dataset data = read_libsvm(comm_, path);

  EXPECT_EQ(data.n_classes, 4);
  EXPECT_EQ(data.class_values, (std::vector<double>{-2, 3, 7.5, 10}));
  expect_owned_rows(data, {{1}, {2}, {3}, {4}, {5}}, {1, 0, 2, 1, 3});
}

TEST_F(LibsvmReaderTest, KeepsTwoClassesWhenABinaryFileHasOnlyPositiveRows) {
  const std::string path = dir_.write("positive.libsvm", "+1 1:1\n+1 1:2\n1 1:3\n");

  const Dataset data = read_libsvm(comm_, path);

  EXPECT_EQ(data.n_classes, 2);
  EXPECT_EQ(data.class_values, (std::vector<double>{-1, 1}));
  expect_owned_rows(data, {{1}, {2}, {3}}, {1, 1, 1});
}

TEST_F(LibsvmReaderTest, SplitsEqualRowsEvenlyOverRanks) {
  std::string text;
  std::vector<std::vector<double>> rows;
  for (int i = 0; i < 10; ++i) {
    text += (i % 2 ? "+1 " : "-1 ") + std::to_string(i % 3 + 1) + ":" + std::to_string(i + 1) + "\n";
    std::vector<double> row(3, 0.0);
    row[static_cast<std::size_t>(i % 3)] = i + 1;
    rows.push_back(row);
  }
  const std::string path = dir_.write("ten.libsvm", text);

  const Dataset data = read_libsvm(comm_, path);

  ASSERT_EQ(data.row_ranges.size(), static_cast<std::size_t>(size_) + 1);
  // Equal rows (one nonzero each): the nonzero balance splits them by count, the weight midpoints
  // deciding where the remainder goes (10 over 3: 3, 4, 3).
  std::vector<PetscInt> expected(static_cast<std::size_t>(size_) + 1, 0);
  for (int i = 0; i < 10; ++i) ++expected[static_cast<std::size_t>(weighted_owner(2 * i, 2, 20, size_)) + 1];
  for (int r = 0; r < size_; ++r) expected[r + 1] += expected[r];
  EXPECT_EQ(data.row_ranges, expected);
  EXPECT_EQ(data.row_begin, data.row_ranges[rank_]);
  EXPECT_EQ(data.row_end, data.row_ranges[rank_ + 1]);
  EXPECT_LE(data.local_rows(), 10 / size_ + 1);
  EXPECT_GE(data.local_rows(), 10 / size_);
  EXPECT_EQ(sum_over_ranks(data.local_rows()), 10);
  expect_owned_rows(data, rows, {0, 1, 0, 1, 0, 1, 0, 1, 0, 1});
}

TEST(BlockBegin, GivesTheRemainderToTheFirstRanks) {
  EXPECT_EQ(block_begin(10, 3, 0), 0);
  EXPECT_EQ(block_begin(10, 3, 1), 4);
  EXPECT_EQ(block_begin(10, 3, 2), 7);
  EXPECT_EQ(block_begin(10, 3, 3), 10);
  EXPECT_EQ(block_begin(2, 3, 2), 2);
  EXPECT_EQ(block_begin(2, 3, 3), 2);
}

TEST_F(LibsvmReaderTest, ReadsOnlyTheRowsSelectedByFirstRowAndMaxRows) {
  const std::string path = dir_.write("selected.libsvm", kSmall);
  LibsvmReadOptions options;
  options.first_row = 1;
  options.max_rows = 3;

  const Dataset data = read_libsvm(comm_, path, options);

  EXPECT_EQ(data.n_rows, 3);
  EXPECT_EQ(data.n_features, 4);
  EXPECT_EQ(sum_over_ranks(data.local_rows()), 3);
  expect_owned_rows(data, kSmallRows, kSmallClasses, 1);
}

TEST_F(LibsvmReaderTest, StopsAtTheEndOfTheFileWhenMaxRowsIsLarger) {
  const std::string path = dir_.write("tail.libsvm", kSmall);
  LibsvmReadOptions options;
  options.first_row = 3;
  options.max_rows = 100;

  const Dataset data = read_libsvm(comm_, path, options);

  EXPECT_EQ(data.n_rows, 2);
  EXPECT_EQ(data.n_features, 4);
  expect_owned_rows(data, kSmallRows, kSmallClasses, 3);
}

TEST_F(LibsvmReaderTest, IgnoresMalformedRowsOutsideTheSelectedRange) {
  const std::string path = dir_.write("bad_tail.libsvm", "1 1:1\n-1 2:2\n1 1:oops\n");
  LibsvmReadOptions options;
  options.max_rows = 2;

  const Dataset data = read_libsvm(comm_, path, options);

  EXPECT_EQ(data.n_rows, 2);
}

TEST_F(LibsvmReaderTest, PadsSparseAndDenseBlocksToTheTrainingDataWidth) {
  const std::string path = dir_.write("narrow.libsvm", kSmall);
  std::vector<std::vector<double>> wide = kSmallRows;
  for (auto& row : wide) row.resize(7, 0.0);

  for (DataFormat format : {DataFormat::Sparse, DataFormat::Dense}) {
    Dataset data = read_libsvm(comm_, path);
    convert_format(data, format);

    reconcile_features(data, 7);

    EXPECT_EQ(data.n_features, 7);
    EXPECT_EQ(data.format, format);
    PetscInt m = 0, n = 0;
    ASSERT_EQ(MatGetSize(data.local, &m, &n), 0);
    EXPECT_EQ(n, 7);
    expect_owned_rows(data, wide, kSmallClasses);
  }
}

TEST_F(LibsvmReaderTest, RejectsMoreFeaturesThanTheTrainingData) {
  const std::string path = dir_.write("wide.libsvm", kSmall);
  Dataset data = read_libsvm(comm_, path);

  const std::string message = input_error_of([&] { reconcile_features(data, 3); });

  EXPECT_TRUE(mentions(message, {path + " has 4 features, more than the training data's 3"}));
}

TEST_F(LibsvmReaderTest, ConvertsBetweenSparseAndDenseWithoutChangingRows) {
  const std::string path = dir_.write("convert.libsvm", kSmall);
  Dataset data = read_libsvm(comm_, path);

  convert_format(data, DataFormat::Dense);

  PetscBool dense = PETSC_FALSE;
  ASSERT_EQ(PetscObjectTypeCompare(reinterpret_cast<PetscObject>(data.local.get()), MATSEQDENSE, &dense), 0);
  EXPECT_TRUE(dense);
  EXPECT_EQ(data.format, DataFormat::Dense);
  expect_owned_rows(data, kSmallRows, kSmallClasses);

  convert_format(data, DataFormat::Sparse);

  PetscBool aij = PETSC_FALSE;
  ASSERT_EQ(PetscObjectTypeCompare(reinterpret_cast<PetscObject>(data.local.get()), MATSEQAIJ, &aij), 0);
  EXPECT_TRUE(aij);
  EXPECT_EQ(sum_over_ranks(local_nonzeros(data)), kSmallNonzeros);
  expect_owned_rows(data, kSmallRows, kSmallClasses);
}

// Malformed files: every rank throws the same one-line InputError naming the file and the line.

TEST_F(LibsvmReaderTest, ReportsFileAndLineForAFeatureWithoutValue) {
  const std::string path = dir_.write("no_value.libsvm", "# header\n1 1:1\n-1 1:0.5 2:\n1 3:1\n");

  const std::string message = input_error_of([&] { read_libsvm(comm_, path); });

  EXPECT_TRUE(mentions(message, {path + ":3: feature 2 has no value"}));
}

TEST_F(LibsvmReaderTest, ReportsFileAndLineForANegativeFeatureIndex) {
  const std::string path = dir_.write("bad_index.libsvm", "1 1:1\n-1 2:1\n-1 -3:1\n1 3:1\n");

  const std::string message = input_error_of([&] { read_libsvm(comm_, path); });

  EXPECT_TRUE(mentions(message, {path + ":3: bad feature index '-3'"}));
}

TEST_F(LibsvmReaderTest, ReportsFileAndLineForANonIntegerFeatureIndex) {
  const std::string path = dir_.write("float_index.libsvm", "1 1:1\n-1 2.5:1\n");

  const std::string message = input_error_of([&] { read_libsvm(comm_, path); });

  EXPECT_TRUE(mentions(message, {path + ":2: bad feature index '2.5'"}));
}

TEST_F(LibsvmReaderTest, ReportsFileAndLineForNonNumericValue) {
  const std::string path = dir_.write("non_numeric.libsvm", "1 1:1\n\n-1 1:abc\n1 2:1\n");

  const std::string message = input_error_of([&] { read_libsvm(comm_, path); });

  EXPECT_TRUE(mentions(message, {path + ":3: non-numeric value 'abc'"}));
}

TEST_F(LibsvmReaderTest, ReportsFileAndLineForNonNumericLabel) {
  const std::string path = dir_.write("bad_label.libsvm", "1 1:1\nyes 1:1\n");

  const std::string message = input_error_of([&] { read_libsvm(comm_, path); });

  EXPECT_TRUE(mentions(message, {path + ":2: non-numeric label 'yes'"}));
}

TEST_F(LibsvmReaderTest, ReportsFileAndLineForNonFiniteValue) {
  const std::string path = dir_.write("nan.libsvm", "1 1:1\n-1 1:nan\n");

  const std::string message = input_error_of([&] { read_libsvm(comm_, path); });

  EXPECT_TRUE(mentions(message, {path + ":2: non-finite value 'nan'"}));
}

TEST_F(LibsvmReaderTest, ReportsFileAndLineForIndicesThatDoNotIncrease) {
  const std::string path = dir_.write("unsorted.libsvm", "1 1:1\n-1 3:1 2:1\n");

  const std::string message = input_error_of([&] { read_libsvm(comm_, path); });

  EXPECT_TRUE(mentions(message, {path + ":2: feature indices not increasing (2 after 3)"}));
}

TEST_F(LibsvmReaderTest, ReportsFileAndLineForATokenWithoutColon) {
  const std::string path = dir_.write("no_colon.libsvm", "1 1:1\n-1 4\n");

  const std::string message = input_error_of([&] { read_libsvm(comm_, path); });

  EXPECT_TRUE(mentions(message, {path + ":2: expected INDEX:VALUE, got '4'"}));
}

TEST_F(LibsvmReaderTest, ThrowsTheLastRanksErrorOnEveryRank) {
  // The malformed row is the last one, which only the last rank parses.
  std::string text;
  for (int i = 0; i < 9; ++i) text += "1 1:" + std::to_string(i) + "\n";
  text += "-1 1:2 1:3\n";
  const std::string path = dir_.write("last_bad.libsvm", text);

  const std::string message = input_error_of([&] { read_libsvm(comm_, path); });

  EXPECT_TRUE(mentions(message, {path + ":10: feature indices not increasing"}));
}

TEST_F(LibsvmReaderTest, ReportsAnEmptyFile) {
  const std::string path = dir_.write("empty.libsvm", "");

  const std::string message = input_error_of([&] { read_libsvm(comm_, path); });

  EXPECT_TRUE(mentions(message, {path + ": no data rows"}));
}

TEST_F(LibsvmReaderTest, ReportsAFileOfCommentsAndBlankLinesAsEmpty) {
  const std::string path = dir_.write("comments.libsvm.gz", "# nothing\n\n   \n# here\n", Compression::Gzip);

  const std::string message = input_error_of([&] { read_libsvm(comm_, path); });

  EXPECT_TRUE(mentions(message, {path + ": no data rows"}));
}

TEST_F(LibsvmReaderTest, ReportsAMissingFile) {
  const std::string path = dir_.path() + "/missing.libsvm";

  const std::string message = input_error_of([&] { read_libsvm(comm_, path); });

  EXPECT_TRUE(mentions(message, {"cannot open " + path + ": No such file or directory"}));
}

TEST_F(LibsvmReaderTest, ReportsAFolderGivenAsFile) {
  const std::string message = input_error_of([&] { read_libsvm(comm_, dir_.path()); });

  EXPECT_TRUE(mentions(message, {"cannot open " + dir_.path() + ": Is a directory"}));
}

TEST_F(LibsvmReaderTest, ReportsMoreFeaturesThanRequested) {
  const std::string path = dir_.write("requested.libsvm", kSmall);
  LibsvmReadOptions options;
  options.n_features = 2;

  const std::string message = input_error_of([&] { read_libsvm(comm_, path, options); });

  EXPECT_TRUE(mentions(message, {path + " has 4 features, more than the 2 requested"}));
}

TEST_F(LibsvmReaderTest, PadsToTheRequestedNumberOfFeatures) {
  const std::string path = dir_.write("padded.libsvm", kSmall);
  LibsvmReadOptions options;
  options.n_features = 6;

  const Dataset data = read_libsvm(comm_, path, options);

  EXPECT_EQ(data.n_features, 6);
  std::vector<std::vector<double>> wide = kSmallRows;
  for (auto& row : wide) row.resize(6, 0.0);
  expect_owned_rows(data, wide, kSmallClasses);
}

TEST_F(LibsvmReaderTest, ReportsASelectionPastTheEndOfTheFile) {
  const std::string path = dir_.write("short.libsvm", kSmall);
  LibsvmReadOptions options;
  options.first_row = 5;

  const std::string message = input_error_of([&] { read_libsvm(comm_, path, options); });

  EXPECT_TRUE(mentions(message, {path + ": no data rows after skipping 5 (the file has 5)"}));
}

TEST_F(LibsvmReaderTest, ReportsATruncatedCompressedFile) {
  for (Compression c : {Compression::Gzip, Compression::Bzip2, Compression::Xz}) {
    SCOPED_TRACE(data_test::suffix(c));
    std::string text;
    for (int i = 0; i < 2000; ++i) text += "1 1:" + std::to_string(i) + " 7:0.25\n";
    const std::string whole = data_test::compress(text, c);
    const std::string path =
        dir_.write(std::string("cut.libsvm") + data_test::suffix(c), whole.substr(0, whole.size() / 2));

    const std::string message = input_error_of([&] { read_libsvm(comm_, path); });

    const char* name = c == Compression::Gzip ? "gzip" : c == Compression::Bzip2 ? "bzip2" : "xz";
    EXPECT_TRUE(mentions(message, {path + ": corrupt " + name + " stream"}));
  }
}

// Input streams and the line reader on their own (rank-local).

std::string read_all(const std::string& path) {
  auto in = InputStream::open(path);
  std::string out;
  std::vector<char> buffer(1000);
  for (std::size_t got; (got = in->read(buffer.data(), buffer.size())) > 0;) out.append(buffer.data(), got);
  return out;
}

TEST_F(LibsvmReaderTest, StreamsConcatenatedGzipMembersAndBzip2AndXzStreams) {
  const std::string first(50000, 'a'), second = "second part\n";
  for (Compression c : {Compression::Gzip, Compression::Bzip2, Compression::Xz}) {
    SCOPED_TRACE(data_test::suffix(c));
    const std::string path = dir_.write(std::string("two") + data_test::suffix(c),
                                        data_test::compress(first, c) + data_test::compress(second, c));

    EXPECT_EQ(read_all(path), first + second);
  }
}

TEST_F(LibsvmReaderTest, ReadsLinesAcrossBufferBoundariesWithCrLfAndNoFinalNewline) {
  std::string text;
  const int n = 200000;  // about 2.5 MB: several refills of the line buffer
  for (int i = 0; i < n; ++i) text += "line " + std::to_string(i) + (i % 7 == 0 ? "\r\n" : "\n");
  text += "last";
  const std::string path = dir_.write("lines.txt.gz", text, Compression::Gzip);

  LineReader reader(InputStream::open(path));
  std::string line;
  int count = 0;
  bool ok = true;
  while (reader.next(line)) {
    const std::string expected = count < n ? "line " + std::to_string(count) : "last";
    if (line != expected) {
      ok = false;
      ADD_FAILURE() << "line " << count << " is '" << line << "', expected '" << expected << "'";
      break;
    }
    ++count;
  }

  EXPECT_TRUE(ok);
  EXPECT_EQ(count, n + 1);
}

// The real ijcnn1 training split (../shared/data), when present.

TEST_F(LibsvmReaderTest, ReadsTheIjcnn1TrainingSplit) {
  const std::string path = std::string(BILEVEL_SHARED_DATA) + "/ijcnn1.trn.bz2";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " is absent: the real-data check is skipped";

  const Dataset data = read_libsvm(comm_, path);

  EXPECT_EQ(data.n_rows, 49990);
  EXPECT_EQ(data.n_features, 22);
  EXPECT_EQ(sum_over_ranks(local_nonzeros(data)), 649870);
  EXPECT_EQ(data.class_values, (std::vector<double>{-1, 1}));
  long long positives = 0;
  for (PetscInt c : data.labels) positives += c == 1;
  EXPECT_EQ(sum_over_ranks(positives), 4853);
}

}  // namespace
}  // namespace bilevel
