// Tests of the IDX (MNIST-format) reader on small files written here and on the Fashion-MNIST package.
#include <gtest/gtest.h>
#include <mpi.h>
#include <petscmat.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "bilevel/data/dataset.hpp"
#include "bilevel/data/idx.hpp"
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

constexpr int kImages = 7, kHeight = 3, kWidth = 4, kPixels = kHeight * kWidth;

std::string big_endian(std::uint32_t value) {
  return {static_cast<char>(value >> 24),
          static_cast<char>(value >> 16),
          static_cast<char>(value >> 8),
          static_cast<char>(value)};
}

/// Pixel j of image i: every fifth pixel is 0, the others spread over 1..255.
unsigned char pixel(int i, int j) {
  const int k = i * kPixels + j;
  return k % 5 == 0 ? 0 : static_cast<unsigned char>(k * 37 % 255 + 1);
}
PetscInt label_of(int i) {
  return (i * 3) % 4;
}

std::string image_file(int declared = kImages, int stored = kImages) {
  std::string bytes = big_endian(0x00000803) + big_endian(static_cast<std::uint32_t>(declared)) +
                      big_endian(kHeight) + big_endian(kWidth);
  for (int i = 0; i < stored; ++i)
    for (int j = 0; j < kPixels; ++j) bytes += static_cast<char>(pixel(i, j));
  return bytes;
}

std::string label_file(int n = kImages) {
  std::string bytes = big_endian(0x00000801) + big_endian(static_cast<std::uint32_t>(n));
  for (int i = 0; i < n; ++i) bytes += static_cast<char>(label_of(i));
  return bytes;
}

class IdxReaderTest : public ::testing::Test {
 protected:
  /// Checks every row this rank owns against images first + row, scaled.
  void expect_owned_images(const Dataset& data, double scale, int first = 0) const {
    ASSERT_EQ(data.labels.size(), static_cast<std::size_t>(data.local_rows()));
    for (PetscInt r = data.row_begin; r < data.row_end; ++r) {
      const int i = first + static_cast<int>(r);
      std::vector<double> expected(kPixels);
      for (int j = 0; j < kPixels; ++j) expected[j] = scale * pixel(i, j);
      EXPECT_EQ(owned_row(data, r), expected) << "image " << i;
      EXPECT_EQ(data.labels[static_cast<std::size_t>(r - data.row_begin)], label_of(i)) << "image " << i;
    }
  }

  MPI_Comm comm_ = PETSC_COMM_WORLD;
  ScratchDir dir_;
};

TEST_F(IdxReaderTest, ReadsPlainFilesIntoDenseScaledRows) {
  const std::string images = dir_.write("images-idx3-ubyte", image_file());
  const std::string labels = dir_.write("labels-idx1-ubyte", label_file());

  const Dataset data = read_idx(comm_, images, labels);

  EXPECT_EQ(data.n_rows, kImages);
  EXPECT_EQ(data.n_features, kPixels);
  EXPECT_EQ(data.format, DataFormat::Dense);
  EXPECT_EQ(data.n_classes, 4);
  EXPECT_EQ(data.class_values, (std::vector<double>{0, 1, 2, 3}));
  EXPECT_EQ(sum_over_ranks(data.local_rows()), kImages);
  PetscBool dense = PETSC_FALSE;
  ASSERT_EQ(PetscObjectTypeCompare(reinterpret_cast<PetscObject>(data.local.get()), MATSEQDENSE, &dense), 0);
  EXPECT_TRUE(dense);
  expect_owned_images(data, 1.0 / 255);
}

TEST_F(IdxReaderTest, ReadsGzipFilesIntoSparseRowsOfNonzeroPixels) {
  const std::string images = dir_.write("images-idx3-ubyte.gz", image_file(), Compression::Gzip);
  const std::string labels = dir_.write("labels-idx1-ubyte.gz", label_file(), Compression::Gzip);
  IdxReadOptions options;
  options.format = DataFormat::Sparse;
  options.scale = 1.0;

  const Dataset data = read_idx(comm_, images, labels, options);

  EXPECT_EQ(data.format, DataFormat::Sparse);
  long long nonzero_pixels = 0;
  for (int i = 0; i < kImages; ++i)
    for (int j = 0; j < kPixels; ++j) nonzero_pixels += pixel(i, j) != 0;
  EXPECT_EQ(sum_over_ranks(local_nonzeros(data)), nonzero_pixels);
  expect_owned_images(data, 1.0);
}

TEST_F(IdxReaderTest, ReadsTheImagesSelectedByFirstRowAndMaxRows) {
  const std::string images = dir_.write("images", image_file());
  const std::string labels = dir_.write("labels", label_file());
  IdxReadOptions options;
  options.first_row = 2;
  options.max_rows = 4;

  const Dataset data = read_idx(comm_, images, labels, options);

  EXPECT_EQ(data.n_rows, 4);
  EXPECT_EQ(sum_over_ranks(data.local_rows()), 4);
  expect_owned_images(data, 1.0 / 255, 2);
}

TEST_F(IdxReaderTest, ReadsOnlyTheHeadersAndItsOwnRecordsOfPlainFiles) {
  const std::string images = dir_.write("images", image_file());
  const std::string labels = dir_.write("labels", label_file());
  IdxReadOptions options;
  options.first_row = 1;  // images 1..6, split over the ranks

  const std::int64_t before = data_file_bytes_read();
  const Dataset data = read_idx(comm_, images, labels, options);
  const std::int64_t read = data_file_bytes_read() - before;

  // The headers (16 + 8 bytes) and this rank's records (kPixels bytes per image, 1 per label), nothing of
  // the records before or after its block: at 2 and 3 ranks, far less than the files.
  EXPECT_EQ(read, 16 + 8 + data.local_rows() * (kPixels + 1));
  EXPECT_EQ(sum_over_ranks(data.local_rows()), kImages - 1);
  expect_owned_images(data, 1.0 / 255, 1);
}

TEST_F(IdxReaderTest, ConvertsDenseImagesToTheSparseRowsReadDirectly) {
  const std::string images = dir_.write("images", image_file());
  const std::string labels = dir_.write("labels", label_file());
  IdxReadOptions sparse_options;
  sparse_options.format = DataFormat::Sparse;
  const Dataset sparse = read_idx(comm_, images, labels, sparse_options);
  Dataset converted = read_idx(comm_, images, labels);

  convert_format(converted, DataFormat::Sparse);

  EXPECT_EQ(local_nonzeros(converted), local_nonzeros(sparse));
  expect_owned_images(converted, 1.0 / 255);
}

TEST_F(IdxReaderTest, RejectsALabelFileGivenAsImages) {
  const std::string labels = dir_.write("labels", label_file());

  const std::string message = input_error_of([&] { read_idx(comm_, labels, labels); });

  EXPECT_TRUE(mentions(message, {labels + ": not an IDX image file (magic 0x00000801)"}));
}

TEST_F(IdxReaderTest, RejectsAnImageFileGivenAsLabels) {
  const std::string images = dir_.write("images", image_file());

  const std::string message = input_error_of([&] { read_idx(comm_, images, images); });

  EXPECT_TRUE(mentions(message, {images + ": not an IDX label file (magic 0x00000803)"}));
}

TEST_F(IdxReaderTest, RejectsDifferentImageAndLabelCounts) {
  const std::string images = dir_.write("images", image_file());
  const std::string labels = dir_.write("labels", label_file(kImages - 1));

  const std::string message = input_error_of([&] { read_idx(comm_, images, labels); });

  EXPECT_TRUE(mentions(message, {images + " has 7 images but " + labels + " has 6 labels"}));
}

TEST_F(IdxReaderTest, ReportsTheRecordWhereImagesAreTruncated) {
  std::string bytes = image_file(kImages, 5);
  bytes.resize(bytes.size() - kPixels / 2);  // image 4 is cut in the middle
  const std::string images = dir_.write("cut-images.gz", bytes, Compression::Gzip);
  const std::string labels = dir_.write("labels", label_file());

  const std::string message = input_error_of([&] { read_idx(comm_, images, labels); });

  EXPECT_TRUE(mentions(message, {images + ": truncated at record 4"}));
}

TEST_F(IdxReaderTest, ReportsTruncatedLabels) {
  std::string bytes = label_file();
  bytes.resize(bytes.size() - 2);
  const std::string images = dir_.write("images", image_file());
  const std::string labels = dir_.write("cut-labels", bytes);

  const std::string message = input_error_of([&] { read_idx(comm_, images, labels); });

  EXPECT_TRUE(mentions(message, {labels + ": truncated at record 5"}));
}

TEST_F(IdxReaderTest, ReadsTheFashionMnistTestSet) {
  const std::string images = fashion_mnist_dir() + "/t10k-images-idx3-ubyte.gz";
  const std::string labels = fashion_mnist_dir() + "/t10k-labels-idx1-ubyte.gz";
  if (!std::filesystem::exists(images) || !std::filesystem::exists(labels))
    GTEST_SKIP() << "Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)";

  const Dataset data = read_idx(comm_, images, labels);

  EXPECT_EQ(data.n_rows, 10000);
  EXPECT_EQ(data.n_features, 784);
  EXPECT_EQ(data.n_classes, 10);
  std::vector<long long> per_class(10, 0), total(10, 0);
  for (PetscInt c : data.labels) ++per_class[static_cast<std::size_t>(c)];
  MPI_Allreduce(per_class.data(), total.data(), 10, MPI_LONG_LONG, MPI_SUM, comm_);
  EXPECT_EQ(total, std::vector<long long>(10, 1000));
  PetscInt lda = 0;
  const PetscScalar* array = nullptr;
  ASSERT_EQ(MatDenseGetLDA(data.local, &lda), 0);
  ASSERT_EQ(MatDenseGetArrayRead(data.local, &array), 0);
  double lowest = 0, highest = 0;
  for (PetscInt j = 0; j < data.n_features; ++j)
    for (PetscInt i = 0; i < data.local_rows(); ++i) {
      lowest = std::min(lowest, array[i + j * lda]);
      highest = std::max(highest, array[i + j * lda]);
    }
  ASSERT_EQ(MatDenseRestoreArrayRead(data.local, &array), 0);
  EXPECT_EQ(lowest, 0.0);
  EXPECT_EQ(highest, 1.0);  // every block of about 3,000 images has a white pixel
}

}  // namespace
}  // namespace bilevel
