#pragma once
/// \file Random directions for zeroth-order estimates of Jacobian products.
///
/// A zeroth-order method sees a map φ: R^dx → R only through directional differences, c_j ≈ u_jᵀ ∇φ, and
/// estimates ∇φ by h = (1/Q) Σ_j c_j u_j. That is unbiased when E[u uᵀ] = I. The directions here keep
/// E[u uᵀ] = I on a support S ⊆ {0..dx−1} (d = |S|; 0 off S):
///   gaussian    u_j ~ N(0, I_S), i.i.d. (Sow, Ji & Liang, NeurIPS 2022, Alg. 1);
///   orthogonal  Gaussian ones, orthonormalised in blocks of min(Q, d) consecutive directions and scaled to
///               norm √d;
///   coordinate  u_j = √d e_i, with i drawn from S without replacement in blocks of min(Q, d).
/// The last two have a smaller variance, and when Q is a multiple of d, (1/Q) Σ_j u_j u_jᵀ = I_S exactly.
/// Entry i of u_j at outer iteration k is a pure function of (seed, k, j, i), so every rank and every
/// rank count draws the same directions.
#include <petscvec.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace bilevel {

enum class DirectionType { Gaussian, Orthogonal, Coordinate };
const char* to_string(DirectionType type);
/// The type that to_string names `name`; nullopt for any other string. Not collective.
std::optional<DirectionType> direction_type_from_string(std::string_view name);
/// Every type's name, for -help and option validation. Not collective.
std::vector<std::string> direction_type_names();

/// Q directions per outer iteration, drawn by draw() and used in three ways: formed as vectors (form()),
/// projected on a vector (project()), and combined into an estimate (combine()). Coordinate directions
/// need no vectors for the last two.
class Directions {
 public:
  /// Q = q directions in R^dim of the given type; with `restricted`, draw() restricts them to the entries it
  /// is given. Not collective.
  void setup(DirectionType type, PetscInt q, PetscInt dim, bool restricted, std::uint64_t seed);
  /// Chooses the directions of outer iteration k. The support is all of x, or, when restricted, the
  /// distinct entries of `rows` (global indices in any order, repeats allowed: e.g. the minibatches'
  /// samples). Coordinate type: draws the coordinates. Not collective.
  void draw(PetscInt k, std::span<const PetscInt> rows);
  /// u_j into u[j], j = 0..Q−1: Vecs of dim entries on any communicator. Collective on theirs.
  void form(std::span<const Vec> u);
  /// c_j = u_jᵀ w. Gaussian and orthogonal: one VecMDot on the formed u (collective). Coordinate: c_j =
  /// √d w_{i_j} on the rank that owns entry i_j and 0 on the others, which is all combine() reads (u is
  /// not used; not collective).
  void project(Vec w, std::span<const Vec> u, std::span<PetscReal> c) const;
  /// h += s Σ_j c_j u_j. Gaussian and orthogonal: one VecMAXPY on the formed u (not collective).
  /// Coordinate: h_{i_j} += s √d c_j on the rank that owns i_j (u not used).
  void combine(std::span<const PetscReal> c, PetscReal s, std::span<const Vec> u, Vec h);

  DirectionType type() const { return type_; }
  PetscInt size() const { return q_; }
  bool restricted() const { return restricted_; }
  /// The support of the last draw (sorted global indices) when restricted; empty otherwise.
  std::span<const PetscInt> support() const { return support_; }
  /// d = |S| of the last draw.
  PetscInt support_size() const { return restricted_ ? static_cast<PetscInt>(support_.size()) : dim_; }
  /// The coordinates i_1..i_Q of the last draw (coordinate type; global indices, the same on every rank).
  std::span<const PetscInt> coordinates() const { return coords_; }

 private:
  DirectionType type_ = DirectionType::Gaussian;
  PetscInt q_ = 0, dim_ = 0, k_ = 0;
  bool restricted_ = false;
  std::uint64_t seed_ = 0;
  std::vector<PetscInt> support_, pool_, perm_, coords_;
  std::vector<PetscReal> block_;    // the d × Q block of restricted Gaussian or orthogonal directions
  std::vector<PetscScalar> alpha_;  // s c_j of combine()
};

}  // namespace bilevel
