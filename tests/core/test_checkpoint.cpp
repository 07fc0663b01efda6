// Checkpoint files: what is written is read back bit for bit, at any rank count; damaged files are one-line
// errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "bilevel/bilevel.hpp"
#include "bilevel/core/checkpoint.hpp"

namespace {
namespace fs = std::filesystem;

/// A file name in a fresh folder made by rank 0, the same on every rank; the folder goes at the end.
class TempPath {
 public:
  explicit TempPath(MPI_Comm comm) : comm_(comm) {
    int rank = 0;
    MPI_Comm_rank(comm, &rank);
    char dir[4096] = {0};
    if (rank == 0) {
      std::snprintf(dir, sizeof dir, "%s", (fs::temp_directory_path() / "bilevel-ckpt-XXXXXX").c_str());
      if (!mkdtemp(dir)) dir[0] = '\0';
    }
    MPI_Bcast(dir, sizeof dir, MPI_CHAR, 0, comm);
    dir_ = dir;
  }
  ~TempPath() {
    MPI_Barrier(comm_);
    int rank = 0;
    MPI_Comm_rank(comm_, &rank);
    if (rank == 0) fs::remove_all(dir_);
  }
  std::string file(const std::string& name) const { return dir_ + "/" + name; }

 private:
  MPI_Comm comm_;
  std::string dir_;
};

bilevel::petsc::VecHandle ramp(MPI_Comm comm, PetscInt n, PetscReal scale) {
  bilevel::petsc::VecHandle v;
  VecCreateMPI(comm, PETSC_DECIDE, n, v.out());
  PetscInt lo = 0, hi = 0;
  VecGetOwnershipRange(v, &lo, &hi);
  for (PetscInt i = lo; i < hi; ++i) VecSetValue(v, i, scale * std::sin(1.0 + i) / 3.0, INSERT_VALUES);
  VecAssemblyBegin(v);
  VecAssemblyEnd(v);
  return v;
}

/// The state of a small object: two Vecs, scalars, arrays and a sampler.
struct Thing {
  bilevel::petsc::VecHandle a, b;
  std::int64_t k = 0;
  int small = 0;
  PetscReal r = 0;
  bool flag = false;
  std::vector<PetscReal> reals;
  std::vector<PetscInt> ints;
  bilevel::BatchSampler sampler{7, 1};
  Thing(MPI_Comm comm, PetscReal scale) : a(ramp(comm, 37, scale)), b(ramp(comm, 5, -scale)) {}
  bilevel::StateRegistry registry() {
    bilevel::StateRegistry s;
    s.add("thing.a", a);
    s.add("thing.b", b);
    s.add("thing.k", k);
    s.add("thing.small", small);
    s.add("thing.r", r);
    s.add("thing.flag", flag);
    s.add("thing.reals", reals);
    s.add("thing.ints", ints);
    s.add("thing.sampler", sampler);
    return s;
  }
};

bool same_bits(Vec u, Vec v) {
  PetscBool eq = PETSC_FALSE;
  VecEqual(u, v, &eq);
  return eq == PETSC_TRUE;
}

TEST(Checkpoint, WhatIsWrittenIsReadBackBitForBit) {
  TempPath tmp(PETSC_COMM_WORLD);
  Thing out(PETSC_COMM_WORLD, 1.0);
  out.k = 5000000000LL;
  out.small = -3;
  out.r = 1.0 / 3.0;
  out.flag = true;
  out.reals = {0.1, -2.5e-300, 1e300};
  out.ints = {4, 8, 15};
  for (int i = 0; i < 3; ++i) out.sampler.next(100, 10);
  const auto stats = bilevel::write_checkpoint(PETSC_COMM_WORLD,
                                               tmp.file("c.ckpt"),
                                               out.registry(),
                                               {{"problem", "quadratic"}, {"note", "two\nlines"}});
  EXPECT_GT(stats.bytes, 42 * 8);

  Thing in(PETSC_COMM_WORLD, 0.0);
  bilevel::read_checkpoint(PETSC_COMM_WORLD, tmp.file("c.ckpt"), in.registry());
  EXPECT_TRUE(same_bits(in.a, out.a));
  EXPECT_TRUE(same_bits(in.b, out.b));
  EXPECT_EQ(in.k, 5000000000LL);
  EXPECT_EQ(in.small, -3);
  EXPECT_EQ(in.r, 1.0 / 3.0);
  EXPECT_TRUE(in.flag);
  EXPECT_EQ(in.reals, out.reals);
  EXPECT_EQ(in.ints, out.ints);
  EXPECT_EQ(in.sampler.draws(), 3u);
  const auto facts = bilevel::read_checkpoint_facts(PETSC_COMM_WORLD, tmp.file("c.ckpt"));
  EXPECT_EQ(facts.at("problem"), "quadratic");
  EXPECT_EQ(facts.at("note"), "two\nlines");
}

// Written by all ranks, read by each rank alone (another rank count): the Vecs are the same.
TEST(Checkpoint, AFileWrittenAtOneRankCountLoadsAtAnother) {
  TempPath tmp(PETSC_COMM_WORLD);
  Thing out(PETSC_COMM_WORLD, 2.0);
  bilevel::write_checkpoint(PETSC_COMM_WORLD, tmp.file("c.ckpt"), out.registry(), {});
  Thing in(PETSC_COMM_SELF, 0.0), reference(PETSC_COMM_SELF, 2.0);
  bilevel::read_checkpoint(PETSC_COMM_SELF, tmp.file("c.ckpt"), in.registry());
  EXPECT_TRUE(same_bits(in.a, reference.a));
  EXPECT_EQ(bilevel::distribution_free_checksum(out.a), bilevel::distribution_free_checksum(reference.a));
  MPI_Barrier(PETSC_COMM_WORLD);
}

TEST(Checkpoint, ANewCheckpointReplacesTheOldOneOnlyWhenComplete) {
  TempPath tmp(PETSC_COMM_WORLD);
  Thing first(PETSC_COMM_WORLD, 1.0), second(PETSC_COMM_WORLD, 3.0);
  bilevel::write_checkpoint(PETSC_COMM_WORLD, tmp.file("c.ckpt"), first.registry(), {});
  bilevel::write_checkpoint(PETSC_COMM_WORLD, tmp.file("c.ckpt"), second.registry(), {});
  EXPECT_FALSE(fs::exists(tmp.file("c.ckpt.tmp")));
  Thing in(PETSC_COMM_WORLD, 0.0);
  bilevel::read_checkpoint(PETSC_COMM_WORLD, tmp.file("c.ckpt"), in.registry());
  EXPECT_TRUE(same_bits(in.a, second.a));
}

/// Runs read_checkpoint and returns the InputError's message ("" if none was thrown).
std::string read_error(const std::string& path, Thing& into) {
  try {
    bilevel::read_checkpoint(PETSC_COMM_WORLD, path, into.registry());
  } catch (const bilevel::InputError& e) {
    return e.what();
  }
  return "";
}

/// Rank 0 rewrites `path` with `edit` applied to its bytes. Collective.
template <typename Edit>
void damage(const std::string& path, Edit edit) {
  int rank = 0;
  MPI_Comm_rank(PETSC_COMM_WORLD, &rank);
  if (rank == 0) {
    std::ifstream in(path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    in.close();
    edit(bytes);
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  }
  MPI_Barrier(PETSC_COMM_WORLD);
}

TEST(Checkpoint, TruncatedCorruptedOrMissingFilesAreOneLineErrorsNamingTheFile) {
  TempPath tmp(PETSC_COMM_WORLD);
  Thing out(PETSC_COMM_WORLD, 1.0), in(PETSC_COMM_WORLD, 0.0);
  const std::string path = tmp.file("c.ckpt");
  bilevel::write_checkpoint(PETSC_COMM_WORLD, path, out.registry(), {});
  const auto size = [&] {
    long long n = 0;
    int rank = 0;
    MPI_Comm_rank(PETSC_COMM_WORLD, &rank);
    if (rank == 0) n = static_cast<long long>(fs::file_size(path));
    MPI_Bcast(&n, 1, MPI_LONG_LONG, 0, PETSC_COMM_WORLD);
    return n;
  }();

  EXPECT_NE(read_error(tmp.file("missing.ckpt"), in).find("missing.ckpt"), std::string::npos);
  damage(path, [](std::string& b) { b[40] = static_cast<char>(b[40] ^ 0x10); });  // inside vector a's data
  std::string m = read_error(path, in);
  EXPECT_NE(m.find("corrupted"), std::string::npos) << m;
  bilevel::write_checkpoint(PETSC_COMM_WORLD, path, out.registry(), {});
  damage(path, [&](std::string& b) { b[static_cast<std::size_t>(size) - 30] ^= 1; });  // inside the metadata
  m = read_error(path, in);
  EXPECT_NE(m.find("corrupted"), std::string::npos) << m;
  bilevel::write_checkpoint(PETSC_COMM_WORLD, path, out.registry(), {});
  damage(path, [](std::string& b) { b.resize(100); });
  m = read_error(path, in);
  EXPECT_NE(m.find("truncated"), std::string::npos) << m;
  EXPECT_NE(m.find(path), std::string::npos) << m;
  EXPECT_EQ(m.find('\n'), std::string::npos) << m;
}

TEST(Checkpoint, ARegistryWithAnEntryTheFileLacksIsRefusedNamingIt) {
  TempPath tmp(PETSC_COMM_WORLD);
  Thing out(PETSC_COMM_WORLD, 1.0), in(PETSC_COMM_WORLD, 0.0);
  bilevel::StateRegistry fewer;
  fewer.add("thing.a", out.a);
  bilevel::write_checkpoint(PETSC_COMM_WORLD, tmp.file("c.ckpt"), fewer, {});
  const std::string m = read_error(tmp.file("c.ckpt"), in);
  EXPECT_NE(m.find("thing.b"), std::string::npos) << m;
}

TEST(Checkpoint, AnUnwritablePathIsAnInputErrorNamingTheOption) {
  Thing out(PETSC_COMM_WORLD, 1.0);
  try {
    bilevel::write_checkpoint(PETSC_COMM_WORLD, "/nonexistent/dir/c.ckpt", out.registry(), {});
    FAIL() << "no exception";
  } catch (const bilevel::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("--checkpoint"), std::string::npos) << e.what();
  }
}

}  // namespace
