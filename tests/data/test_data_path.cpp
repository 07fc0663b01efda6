// Tests of the parallel data path: PETSc binary conversion round trips, byte-range reading of plain text,
// rows balanced by nonzeros, the index-base rule across files, label maps and the validation split.
#include <gtest/gtest.h>
#include <mpi.h>
#include <petscmat.h>
#include <petscviewer.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "../../src/problems/data_files.hpp"
#include "bilevel/data/dataset.hpp"
#include "bilevel/data/libsvm.hpp"
#include "bilevel/data/petsc_binary.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/handle.hpp"
#include "bilevel/problems/logreg.hpp"
#include "bilevel/problems/softmax.hpp"
#include "data/data_files.hpp"

namespace bilevel {
namespace {

using data_test::Compression;
using data_test::input_error_of;
using data_test::mentions;
using data_test::owned_row;
using data_test::ScratchDir;
using data_test::sum_over_ranks;

/// A generated LIBSVM file: rows of very different lengths (1 to 40 entries), labels 0..4, comments,
/// blank lines and CRLF endings mixed in; `base` is the index of feature 0.
struct Generated {
  std::string text;
  std::vector<std::vector<double>> rows;
  std::vector<double> labels;
  PetscInt features = 50;
};

Generated generate(int n_rows, int base, unsigned seed) {
  Generated g;
  std::mt19937 rng(seed);
  g.text = "# generated\n";
  for (int i = 0; i < n_rows; ++i) {
    std::vector<double> row(static_cast<std::size_t>(g.features), 0.0);
    const int label = static_cast<int>(rng() % 5);
    std::string line = std::to_string(label);
    const int count = i % 7 == 0 ? 40 : 1 + static_cast<int>(rng() % 4);
    std::vector<int> cols;
    for (int k = 0; k < count; ++k) cols.push_back(static_cast<int>(rng() % g.features));
    std::sort(cols.begin(), cols.end());
    cols.erase(std::unique(cols.begin(), cols.end()), cols.end());
    if (i == 1) cols.insert(cols.begin(), 0);  // feature 0 appears
    cols.erase(std::unique(cols.begin(), cols.end()), cols.end());
    for (int c : cols) {
      const double v = 0.25 * (1 + static_cast<int>(rng() % 8));
      row[static_cast<std::size_t>(c)] = v;
      line += " " + std::to_string(c + base) + ":" + std::to_string(v);
    }
    g.text += line + (i % 5 == 0 ? "\r\n" : "\n");
    if (i % 9 == 0) g.text += "\n# a comment line\n";
    g.rows.push_back(row);
    g.labels.push_back(label);
  }
  // The last feature appears once, so the width is known.
  g.text += "4 " + std::to_string(g.features - 1 + base) + ":1\n";
  std::vector<double> last(static_cast<std::size_t>(g.features), 0.0);
  last.back() = 1;
  g.rows.push_back(last);
  g.labels.push_back(4);
  return g;
}

class DataPathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MPI_Comm_size(comm_, &size_);
    MPI_Comm_rank(comm_, &rank_);
  }
  /// Every owned row and label equals the generator's (rows [first, ...) of it).
  void expect_rows(const Dataset& data, const Generated& g, std::size_t first = 0) const {
    ASSERT_EQ(data.n_features, g.features);
    for (PetscInt r = data.row_begin; r < data.row_end; ++r) {
      EXPECT_EQ(owned_row(data, r), g.rows[first + static_cast<std::size_t>(r)]) << "row " << r;
      const PetscInt cls = data.labels[static_cast<std::size_t>(r - data.row_begin)];
      EXPECT_EQ(data.class_values[static_cast<std::size_t>(cls)],
                g.labels[first + static_cast<std::size_t>(r)]);
    }
    EXPECT_EQ(sum_over_ranks(data.local_rows()), data.n_rows);
  }
  /// The rows are split by weight (nonzeros + 1) as weighted_owner says.
  void expect_balanced(const Dataset& data, const Generated& g, std::size_t first = 0) const {
    std::int64_t total = 0, before = 0;
    for (std::size_t i = first; i < first + static_cast<std::size_t>(data.n_rows); ++i)
      total += 1 + std::count_if(g.rows[i].begin(), g.rows[i].end(), [](double v) { return v != 0; });
    std::vector<PetscInt> ranges(static_cast<std::size_t>(size_) + 1, 0);
    for (std::size_t i = first; i < first + static_cast<std::size_t>(data.n_rows); ++i) {
      const std::int64_t w =
          1 + std::count_if(g.rows[i].begin(), g.rows[i].end(), [](double v) { return v != 0; });
      ++ranges[static_cast<std::size_t>(weighted_owner(before, w, total, size_)) + 1];
      before += w;
    }
    for (int q = 0; q < size_; ++q) ranges[q + 1] += ranges[q];
    EXPECT_EQ(data.row_ranges, ranges);
  }
  MPI_Comm comm_ = PETSC_COMM_WORLD;
  int size_ = 1, rank_ = 0;
  ScratchDir dir_;
};

TEST_F(DataPathTest, ByteRangeReadingGivesTheGeneratedMatrixBalancedByNonzeros) {
  const Generated g = generate(60, 1, 7);
  const std::string path = dir_.write("gen.libsvm", g.text);
  const Dataset data = read_libsvm(comm_, path);
  EXPECT_EQ(data.n_rows, 61);
  EXPECT_EQ(data.index_base, 1);  // written 1-based: no index 0 in the file
  expect_rows(data, g);
  expect_balanced(data, g);
}

TEST_F(DataPathTest, CompressedTextIsReadLikePlainText) {
  const Generated g = generate(45, 0, 11);
  for (Compression c : {Compression::None, Compression::Gzip, Compression::Bzip2, Compression::Xz}) {
    const std::string path = dir_.write(std::string("gen.libsvm") + data_test::suffix(c), g.text, c);
    const Dataset data = read_libsvm(comm_, path);
    EXPECT_EQ(data.index_base, 0) << path;
    expect_rows(data, g);
    expect_balanced(data, g);
  }
}

TEST_F(DataPathTest, ASelectionOfRowsIsBalancedAndExact) {
  const Generated g = generate(50, 0, 3);
  const std::string plain = dir_.write("sel.libsvm", g.text);
  const std::string xz = dir_.write("sel.libsvm.xz", g.text, Compression::Xz);
  for (const std::string& path : {plain, xz}) {
    LibsvmReadOptions o;
    o.first_row = 7;
    o.max_rows = 30;
    o.n_features = g.features;
    const Dataset data = read_libsvm(comm_, path, o);
    EXPECT_EQ(data.n_rows, 30);
    expect_rows(data, g, 7);
    expect_balanced(data, g, 7);
  }
  EXPECT_EQ(count_libsvm_rows(comm_, plain), 51);
  EXPECT_EQ(count_libsvm_rows(comm_, xz), 51);
}

TEST(WeightedOwner, GivesEachRankItsShareOfTheWeight) {
  // ten rows of weight 2 over three ranks: midpoints 1, 3, ..., 19 of 20
  std::vector<int> owners;
  for (int i = 0; i < 10; ++i) owners.push_back(weighted_owner(2 * i, 2, 20, 3));
  EXPECT_EQ(owners, (std::vector<int>{0, 0, 0, 1, 1, 1, 1, 2, 2, 2}));
  // one heavy row first: it fills rank 0 alone
  EXPECT_EQ(weighted_owner(0, 90, 100, 2), 0);
  EXPECT_EQ(weighted_owner(90, 5, 100, 2), 1);
  EXPECT_EQ(weighted_owner(0, 0, 0, 4), 0);
}

TEST_F(DataPathTest, ConversionRoundTripKeepsMatrixLabelsAndMetadata) {
  const Generated g = generate(40, 1, 5);
  for (Compression c : {Compression::None, Compression::Gzip, Compression::Bzip2, Compression::Xz}) {
    const std::string text = dir_.write(std::string("rt.libsvm") + data_test::suffix(c), g.text, c);
    const std::string bin = dir_.path() + "/rt" + std::to_string(static_cast<int>(c)) + ".petsc";
    std::string error;
    if (rank_ == 0) {
      ConvertOptions o;
      o.block_rows = 3;  // several blocks
      error = input_error_of([&] {
        const BinaryMeta meta = convert_to_petsc_binary(text, bin, o);
        EXPECT_EQ(meta.rows, 41);
        EXPECT_EQ(meta.features, g.features);
        EXPECT_EQ(meta.index_base, 1);
        EXPECT_EQ(meta.labels, (std::vector<double>{0, 1, 2, 3, 4}));
      });
    }
    MPI_Barrier(comm_);
    if (rank_ == 0) EXPECT_EQ(error, "no exception");
    EXPECT_TRUE(is_petsc_binary(bin));
    const BinaryMeta meta = read_binary_meta(bin);
    EXPECT_EQ(meta.nonzeros, [&] {
      long long nz = 0;
      for (const auto& row : g.rows)
        nz += std::count_if(row.begin(), row.end(), [](double v) { return v != 0; });
      return nz;
    }());
    const Dataset data = read_petsc_binary(comm_, bin);
    EXPECT_EQ(data.index_base, 1);
    EXPECT_EQ(data.n_classes, 5);
    expect_rows(data, g);
    expect_balanced(data, g);
  }
}

TEST_F(DataPathTest, TheBinaryFileIsWhatMatLoadAndVecLoadRead) {
  const Generated g = generate(30, 0, 9);
  const Dataset text = read_libsvm(comm_, dir_.write("ml.libsvm", g.text));
  const std::string bin = dir_.path() + "/ml.petsc";
  write_petsc_binary(text, bin);
  petsc::ViewerHandle viewer;
  BILEVEL_PETSC_CALL(PetscViewerBinaryOpen(comm_, bin.c_str(), FILE_MODE_READ, viewer.out()));
  petsc::MatHandle a;
  BILEVEL_PETSC_CALL(MatCreate(comm_, a.out()));
  BILEVEL_PETSC_CALL(MatSetType(a, MATAIJ));
  BILEVEL_PETSC_CALL(MatLoad(a, viewer));
  petsc::VecHandle labels;
  BILEVEL_PETSC_CALL(VecCreate(comm_, labels.out()));
  BILEVEL_PETSC_CALL(VecLoad(labels, viewer));
  PetscInt m = 0, n = 0;
  BILEVEL_PETSC_CALL(MatGetSize(a, &m, &n));
  EXPECT_EQ(m, 31);
  EXPECT_EQ(n, g.features);
  PetscInt lo = 0, hi = 0;
  BILEVEL_PETSC_CALL(MatGetOwnershipRange(a, &lo, &hi));
  const PetscScalar* lv = nullptr;
  BILEVEL_PETSC_CALL(VecGetArrayRead(labels, &lv));
  for (PetscInt r = lo; r < hi; ++r) {
    PetscInt nc = 0;
    const PetscInt* cols = nullptr;
    const PetscScalar* vals = nullptr;
    BILEVEL_PETSC_CALL(MatGetRow(a, r, &nc, &cols, &vals));
    std::vector<double> row(static_cast<std::size_t>(n), 0.0);
    for (PetscInt k = 0; k < nc; ++k) row[static_cast<std::size_t>(cols[k])] = vals[k];
    BILEVEL_PETSC_CALL(MatRestoreRow(a, r, &nc, &cols, &vals));
    EXPECT_EQ(row, g.rows[static_cast<std::size_t>(r)]);
    EXPECT_EQ(lv[r - lo], g.labels[static_cast<std::size_t>(r)]);
  }
  BILEVEL_PETSC_CALL(VecRestoreArrayRead(labels, &lv));
  // and our reader reads it back the same
  expect_rows(read_petsc_binary(comm_, bin), g);
}

TEST_F(DataPathTest, OneIndexBaseForAllFilesOfAProblem) {
  // The training file has a single index 0; validation and test have none: all three are 0-based.
  const std::string train = dir_.write("tr.libsvm", "+1 0:1 2:2\n-1 1:3\n");
  const std::string val = dir_.write("va.libsvm", "+1 1:5\n-1 2:6\n+1 3:7\n");
  Dataset tr = read_libsvm(comm_, train), va = read_libsvm(comm_, val);
  EXPECT_EQ(tr.index_base, 0);
  EXPECT_EQ(va.index_base, 1);
  unify_index_base({&tr, &va}, -1);
  EXPECT_EQ(va.index_base, 0);
  EXPECT_EQ(va.n_features, 4);
  const std::vector<std::vector<double>> expected = {{0, 5, 0, 0}, {0, 0, 6, 0}, {0, 0, 0, 7}};
  for (PetscInt r = va.row_begin; r < va.row_end; ++r) EXPECT_EQ(owned_row(va, r), expected[r]);
  // Forced 1-based: index 0 is an error naming the file and line.
  LibsvmReadOptions one;
  one.index_base = 1;
  EXPECT_TRUE(mentions(input_error_of([&] { read_libsvm(comm_, train, one); }), {train + ":1", "index"}));
  // A converted file re-based on request, and mixed with text files by the same rule.
  const std::string bin = dir_.path() + "/va.petsc";
  if (rank_ == 0) convert_to_petsc_binary(val, bin);
  MPI_Barrier(comm_);
  Dataset tr2 = read_libsvm(comm_, train), vb = read_petsc_binary(comm_, bin);
  EXPECT_EQ(vb.index_base, 1);
  unify_index_base({&tr2, &vb}, -1);
  EXPECT_EQ(vb.n_features, 4);
  for (PetscInt r = vb.row_begin; r < vb.row_end; ++r) EXPECT_EQ(owned_row(vb, r), expected[r]);
  BinaryReadOptions zero;
  zero.index_base = 0;
  const Dataset vz = read_petsc_binary(comm_, bin, zero);
  for (PetscInt r = vz.row_begin; r < vz.row_end; ++r) EXPECT_EQ(owned_row(vz, r), expected[r]);
}

/// An IDX image file of n images of h x w bytes (value i+1 at pixel i % (h w)) and its label file.
std::string idx_images(int n, int h, int w) {
  std::string out;
  auto word = [&](unsigned v) {
    for (int s = 24; s >= 0; s -= 8) out += static_cast<char>((v >> s) & 0xff);
  };
  word(0x00000803);
  word(static_cast<unsigned>(n));
  word(static_cast<unsigned>(h));
  word(static_cast<unsigned>(w));
  for (int i = 0; i < n; ++i)
    for (int p = 0; p < h * w; ++p) out += static_cast<char>(p == i % (h * w) ? i + 1 : 0);
  return out;
}
std::string idx_labels(int n) {
  std::string out = {0, 0, 8, 1, 0, 0, 0, static_cast<char>(n)};
  for (int i = 0; i < n; ++i) out += static_cast<char>(i % 3);
  return out;
}

TEST_F(DataPathTest, IdxFilesOfDifferentImageSizesAreAnErrorNamingBoth) {
  const std::string a = dir_.write("a-images-idx3-ubyte", idx_images(4, 2, 2));
  dir_.write("a-labels-idx1-ubyte", idx_labels(4));
  const std::string b = dir_.write("b-images-idx3-ubyte", idx_images(4, 3, 2));
  dir_.write("b-labels-idx1-ubyte", idx_labels(4));
  Dataset da = detail::read_rows(comm_, a, 0, -1, DataFormat::Dense);
  Dataset db = detail::read_rows(comm_, b, 0, -1, DataFormat::Dense);
  EXPECT_TRUE(mentions(input_error_of([&] { detail::settle_files({&da, &db}, -1); }), {a, b, "image size"}));
  // Converted IDX files keep their width and are read like the originals.
  const std::string bin = dir_.path() + "/a.petsc";
  if (rank_ == 0) convert_to_petsc_binary(a, bin);
  MPI_Barrier(comm_);
  const Dataset dc = detail::read_rows(comm_, bin, 0, -1, DataFormat::Dense);
  EXPECT_TRUE(dc.fixed_width);
  EXPECT_EQ(dc.format, DataFormat::Dense);
  EXPECT_EQ(dc.n_features, 4);
  EXPECT_EQ(dc.n_rows, 4);
  for (PetscInt r = dc.row_begin; r < dc.row_end; ++r) {
    std::vector<double> expected(4, 0.0);
    expected[static_cast<std::size_t>(r % 4)] = (r + 1) / 255.0;
    const std::vector<double> got = owned_row(dc, r);
    for (std::size_t j = 0; j < 4; ++j) EXPECT_NEAR(got[j], expected[j], 1e-15);
    EXPECT_EQ(dc.labels[static_cast<std::size_t>(r - dc.row_begin)], r % 3);
  }
}

TEST(LabelMap, ParsesListsAndRanges) {
  const std::string opt = "-bilevel_logreg_positive_classes";
  EXPECT_EQ(detail::parse_class_list("10-19", opt).size(), 10u);
  EXPECT_EQ(detail::parse_class_list("1,3,5", opt), (std::vector<double>{1, 3, 5}));
  EXPECT_EQ(detail::parse_class_list("7,0-2,-1", opt), (std::vector<double>{-1, 0, 1, 2, 7}));
  for (const char* bad : {"", "a", "1,,2", "5-3", "1-", "1.5", "3-x"})
    EXPECT_TRUE(
        mentions(input_error_of([&] { detail::parse_class_list(bad, opt); }), {opt, "10-19", "1,3,5"}))
        << bad;
}

TEST_F(DataPathTest, TheLabelMapMakesMultiClassFilesBinary) {
  const Generated g = generate(20, 1, 2);
  Dataset data = read_libsvm(comm_, dir_.write("lm.libsvm", g.text));
  detail::binarize_labels(data, detail::parse_class_list("1,3", "-x"));
  EXPECT_EQ(data.n_classes, 2);
  EXPECT_EQ(data.class_values, (std::vector<double>{-1, 1}));
  for (PetscInt r = data.row_begin; r < data.row_end; ++r) {
    const double label = g.labels[static_cast<std::size_t>(r)];
    EXPECT_EQ(data.labels[static_cast<std::size_t>(r - data.row_begin)], label == 1 || label == 3 ? 1 : 0);
  }
}

TEST_F(DataPathTest, WithoutAValidationFileTheLastNValTrainingRowsValidate) {
  const Generated g = generate(30, 1, 4);
  const std::string train = dir_.write("split.libsvm", g.text);
  PetscOptionsSetValue(nullptr, "-bilevel_logreg_n_val", "6");
  PetscOptionsSetValue(nullptr, "-bilevel_logreg_positive_classes", "0-1");
  auto logreg = LogregProblem::from_files(comm_, train, "", "", LogregOptions::from_options(comm_));
  EXPECT_EQ(logreg->dataset_sizes().lower, 25);
  EXPECT_EQ(logreg->dataset_sizes().upper, 6);
  PetscOptionsClearValue(nullptr, "-bilevel_logreg_n_val");
  PetscOptionsClearValue(nullptr, "-bilevel_logreg_positive_classes");
  PetscOptionsSetValue(nullptr, "-bilevel_softmax_n_val", "5");
  auto softmax = SoftmaxProblem::from_files(comm_, train, "", "", SoftmaxOptions::from_options(comm_));
  EXPECT_EQ(softmax->dataset_sizes().lower, 26);
  EXPECT_EQ(softmax->dataset_sizes().upper, 5);
  PetscOptionsClearValue(nullptr, "-bilevel_softmax_n_val");
  PetscOptionsSetValue(nullptr, "-bilevel_softmax_n_val", "31");
  EXPECT_TRUE(mentions(input_error_of([&] {
                         SoftmaxProblem::from_files(
                             comm_, train, "", "", SoftmaxOptions::from_options(comm_));
                       }),
                       {train, "-bilevel_softmax_n_val"}));
  PetscOptionsClearValue(nullptr, "-bilevel_softmax_n_val");
}

}  // namespace
}  // namespace bilevel
