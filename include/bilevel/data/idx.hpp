#pragma once
/// \file Parallel reader of IDX files (MNIST / Fashion-MNIST; gzip or plain).
#include <string>

#include "bilevel/data/dataset.hpp"

namespace bilevel {

struct IdxReadOptions {
  PetscInt first_row = 0;    ///< first image to read
  PetscInt max_rows = -1;    ///< at most this many (-1: all remaining)
  double scale = 1.0 / 255;  ///< pixel scaling (to [0, 1])
  DataFormat format = DataFormat::Dense;
};

/// Reads an IDX3 image file (magic 0x00000803, unsigned bytes) and its IDX1 label file (0x00000801) into a
/// row-sharded Dataset with one row per image (pixels flattened). Each rank streams the file and keeps only
/// its own rows. Wrong magic, truncated data, or label/image count mismatch is an InputError naming the
/// file (and the record). Collective on comm.
Dataset read_idx(MPI_Comm comm,
                 const std::string& images,
                 const std::string& labels,
                 const IdxReadOptions& options = {});

/// The Debian package dataset-fashion-mnist's folder (/usr/share/datasets/fashion-mnist).
std::string fashion_mnist_dir();

}  // namespace bilevel
