#include "bilevel/core/checkpoint.hpp"

#include <fcntl.h>
#include <petscviewer.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "bilevel/core/batch_sampler.hpp"
#include "bilevel/petsc/collective.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/handle.hpp"
#include "bilevel/petsc/vec_access.hpp"

namespace bilevel {
namespace {

constexpr char kMagic[9] = "BLVCKPT1";
constexpr std::size_t kTrailer = 24;  // length, hash, magic

std::uint64_t fnv1a(const std::string& text) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : text) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

std::uint64_t mix(std::uint64_t z) {  // SplitMix64 finaliser
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

std::string hex(PetscReal v) {
  char b[64];
  std::snprintf(b, sizeof b, "%a", static_cast<double>(v));
  return b;
}

PetscReal parse_real(const std::string& s) {
  return std::strtod(s.c_str(), nullptr);
}

const char* kind_name(StateRegistry::Entry::Kind k) {
  using K = StateRegistry::Entry::Kind;
  switch (k) {
    case K::Vector:
      return "vec";
    case K::Int64:
      return "int64";
    case K::Int:
      return "int";
    case K::Real:
      return "real";
    case K::Bool:
      return "bool";
    case K::Reals:
      return "reals";
    case K::Ints:
      return "ints";
    case K::Sampler:
      return "sampler";
    case K::Basis:
      return "basis";
    case K::Text:
      return "text";
  }
  return "?";
}

/// Escapes backslashes, newlines and spaces so that a fact's name is one field and its value stays on one
/// line.
std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else if (c == ' ')
      out += "\\s";
    else
      out += c;
  }
  return out;
}
std::string unescape(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      out += s[i + 1] == 'n' ? '\n' : s[i + 1] == 's' ? ' ' : s[i + 1];
      ++i;
    } else {
      out += s[i];
    }
  }
  return out;
}

/// One parsed metadata record: "<kind> <name> <value...>".
struct Record {
  std::string kind, value;
};

struct Metadata {
  CheckpointFacts facts;
  std::map<std::string, Record> records;
  std::vector<std::string> vec_order;
};

Metadata parse_metadata(const std::string& path, const std::string& text) {
  Metadata m;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    const auto a = line.find(' ');
    const auto b = a == std::string::npos ? std::string::npos : line.find(' ', a + 1);
    if (b == std::string::npos)
      throw InputError("checkpoint " + path + " is corrupted (bad metadata record)");
    const std::string kind = line.substr(0, a), name = unescape(line.substr(a + 1, b - a - 1)),
                      value = line.substr(b + 1);
    if (kind == "fact") {
      m.facts[name] = unescape(value);
    } else {
      m.records[name] = Record{kind, value};
      if (kind == "vec" || kind == "basis") m.vec_order.push_back(name);
    }
  }
  return m;
}

/// Rank 0 reads the metadata block at the end of `path` and checks the trailer; every rank gets the text.
/// Collective.
std::string read_metadata_text(MPI_Comm comm, const std::string& path) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  std::string text, error;
  if (rank == 0) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      error = "cannot read checkpoint " + path + " (" + std::strerror(errno) + ")";
    } else {
      in.seekg(0, std::ios::end);
      const auto size = static_cast<std::int64_t>(in.tellg());
      char trailer[kTrailer];
      if (size < static_cast<std::int64_t>(kTrailer)) {
        error = "checkpoint " + path + " is truncated (" + std::to_string(size) + " bytes)";
      } else {
        in.seekg(size - static_cast<std::int64_t>(kTrailer));
        in.read(trailer, kTrailer);
        std::uint64_t length = 0, hash = 0;
        std::memcpy(&length, trailer, 8);
        std::memcpy(&hash, trailer + 8, 8);
        if (std::memcmp(trailer + 16, kMagic, 8) != 0 ||
            length > static_cast<std::uint64_t>(size) - kTrailer) {
          error = "checkpoint " + path + " is truncated or not a bilevel checkpoint (no end marker)";
        } else {
          text.resize(length);
          in.seekg(size - static_cast<std::int64_t>(kTrailer) - static_cast<std::int64_t>(length));
          in.read(text.data(), static_cast<std::streamsize>(length));
          if (!in || fnv1a(text) != hash)
            error = "checkpoint " + path + " is corrupted (metadata checksum differs)";
        }
      }
    }
  }
  ParallelSection section(comm);
  if (!error.empty()) section.failed(error);
  section.check();
  long long n = static_cast<long long>(text.size());
  MPI_Bcast(&n, 1, MPI_LONG_LONG, 0, comm);
  text.resize(static_cast<std::size_t>(n));
  MPI_Bcast(text.data(), static_cast<int>(n), MPI_CHAR, 0, comm);
  return text;
}

template <typename T>
std::string join(const std::vector<T>& v, bool real) {
  std::string s = std::to_string(v.size());
  for (const T& x : v)
    s += " " + (real ? hex(static_cast<PetscReal>(x)) : std::to_string(static_cast<long long>(x)));
  return s;
}

}  // namespace

void StateRegistry::add_entry(Entry::Kind kind, const std::string& name, void* ref) {
  for (const Entry& e : entries_)
    if (e.name == name) throw Error("StateRegistry: '" + name + "' registered twice");
  if (name.empty() || name.find(' ') != std::string::npos || name.find('\n') != std::string::npos)
    throw Error("StateRegistry: bad entry name '" + name + "'");
  entries_.push_back(Entry{kind, name, ref});
}
void StateRegistry::add(const std::string& name, Vec v) {
  add_entry(Entry::Kind::Vector, name, v);
}
void StateRegistry::add(const std::string& name, std::int64_t& v) {
  add_entry(Entry::Kind::Int64, name, &v);
}
void StateRegistry::add(const std::string& name, int& v) {
  add_entry(Entry::Kind::Int, name, &v);
}
void StateRegistry::add(const std::string& name, PetscReal& v) {
  add_entry(Entry::Kind::Real, name, &v);
}
void StateRegistry::add(const std::string& name, bool& v) {
  add_entry(Entry::Kind::Bool, name, &v);
}
void StateRegistry::add(const std::string& name, std::vector<PetscReal>& v) {
  add_entry(Entry::Kind::Reals, name, &v);
}
void StateRegistry::add(const std::string& name, std::vector<PetscInt>& v) {
  add_entry(Entry::Kind::Ints, name, &v);
}
void StateRegistry::add(const std::string& name, BatchSampler& s) {
  add_entry(Entry::Kind::Sampler, name, &s);
}
void StateRegistry::add(const std::string& prefix, StepSamplers& s) {
  add(prefix + "sampler_lower", s.lower);
  add(prefix + "sampler_hessian", s.hessian);
  add(prefix + "sampler_jacobian", s.jacobian);
  add(prefix + "sampler_upper", s.upper);
}
void StateRegistry::add(const std::string& name, BV basis) {
  add_entry(Entry::Kind::Basis, name, basis);
}
void StateRegistry::add_text(const std::string& name,
                             std::function<std::string()> save,
                             std::function<void(const std::string&)> load) {
  texts_.push_back(TextHooks{std::move(save), std::move(load)});
  add_entry(Entry::Kind::Text, name, &texts_.back());
}

std::uint64_t distribution_free_checksum(Vec v) {
  PetscInt lo = 0, hi = 0;
  BILEVEL_PETSC_CALL(VecGetOwnershipRange(v, &lo, &hi));
  std::uint64_t local = 0;
  {
    petsc::ReadView r(v);
    for (PetscInt i = lo; i < hi; ++i) {
      std::uint64_t bits = 0;
      const double x = static_cast<double>(r[i - lo]);
      std::memcpy(&bits, &x, sizeof bits);
      local += mix(mix(static_cast<std::uint64_t>(i) + 0x9e3779b97f4a7c15ull) ^ bits);  // sum mod 2⁶⁴
    }
  }
  std::uint64_t global = 0;
  BILEVEL_PETSC_CALL(MPI_Allreduce(
      &local, &global, 1, MPI_UINT64_T, MPI_SUM, PetscObjectComm(reinterpret_cast<PetscObject>(v))));
  return global;
}

CheckpointWriteStats write_checkpoint(MPI_Comm comm,
                                      const std::string& path,
                                      const StateRegistry& state,
                                      const CheckpointFacts& facts,
                                      const std::string& option) {
  using K = StateRegistry::Entry::Kind;
  CheckpointWriteStats stats;
  const double t0 = MPI_Wtime();
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  const std::string tmp = path + ".tmp";
  // Is the folder writable? Checked by rank 0 before PETSc opens the file (whose error would be long).
  {
    int ok = 1;
    if (rank == 0) {
      std::ofstream probe(tmp, std::ios::binary | std::ios::trunc);
      ok = probe.good() ? 1 : 0;
    }
    MPI_Bcast(&ok, 1, MPI_INT, 0, comm);
    if (!ok) throw InputError("cannot write checkpoint " + path + " (option " + option + ")");
  }
  std::ostringstream meta;
  for (const auto& [k, v] : facts) meta << "fact " << escape(k) << " " << escape(v) << "\n";
  {
    petsc::ViewerHandle viewer;
    BILEVEL_PETSC_CALL(PetscViewerCreate(comm, viewer.out()));
    BILEVEL_PETSC_CALL(PetscViewerSetType(viewer, PETSCVIEWERBINARY));
    BILEVEL_PETSC_CALL(PetscViewerBinarySkipInfo(viewer));
    BILEVEL_PETSC_CALL(PetscViewerBinarySetUseMPIIO(viewer, PETSC_TRUE));
    BILEVEL_PETSC_CALL(PetscViewerFileSetMode(viewer, FILE_MODE_WRITE));
    BILEVEL_PETSC_CALL(PetscViewerFileSetName(viewer, tmp.c_str()));
    for (const auto& e : state.entries()) {
      meta << kind_name(e.kind) << " " << e.name << " ";
      switch (e.kind) {
        case K::Vector: {
          Vec v = static_cast<Vec>(e.ref);
          PetscInt n = 0;
          BILEVEL_PETSC_CALL(VecGetSize(v, &n));
          BILEVEL_PETSC_CALL(VecView(v, viewer));
          meta << n << " " << distribution_free_checksum(v);
          stats.bytes += static_cast<std::int64_t>(n) * static_cast<std::int64_t>(sizeof(PetscScalar));
          break;
        }
        case K::Int64:
          meta << *static_cast<std::int64_t*>(e.ref);
          break;
        case K::Int:
          meta << *static_cast<int*>(e.ref);
          break;
        case K::Real:
          meta << hex(*static_cast<PetscReal*>(e.ref));
          break;
        case K::Bool:
          meta << (*static_cast<bool*>(e.ref) ? 1 : 0);
          break;
        case K::Reals:
          meta << join(*static_cast<std::vector<PetscReal>*>(e.ref), true);
          break;
        case K::Ints:
          meta << join(*static_cast<std::vector<PetscInt>*>(e.ref), false);
          break;
        case K::Sampler:
          meta << static_cast<BatchSampler*>(e.ref)->draws();
          break;
        case K::Basis: {
          BV bv = static_cast<BV>(e.ref);
          PetscInt n = 0, local = 0, columns = 0;
          BILEVEL_PETSC_CALL(BVGetSizes(bv, &local, &n, &columns));
          meta << columns << " " << n;
          for (PetscInt j = 0; j < columns; ++j) {
            Vec c = nullptr;
            BILEVEL_PETSC_CALL(BVGetColumn(bv, j, &c));
            BILEVEL_PETSC_CALL(VecView(c, viewer));
            meta << " " << distribution_free_checksum(c);
            BILEVEL_PETSC_CALL(BVRestoreColumn(bv, j, &c));
          }
          stats.bytes +=
              static_cast<std::int64_t>(n) * columns * static_cast<std::int64_t>(sizeof(PetscScalar));
          break;
        }
        case K::Text:
          meta << escape(static_cast<StateRegistry::TextHooks*>(e.ref)->save());
          break;
      }
      meta << "\n";
    }
  }
  // Rank 0 appends the metadata and the trailer, flushes the file to disk and renames it over the old one.
  int ok = 1;
  std::string why;
  if (rank == 0) {
    const std::string text = meta.str();
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::app);
      const std::uint64_t length = text.size(), hash = fnv1a(text);
      out.write(text.data(), static_cast<std::streamsize>(text.size()));
      out.write(reinterpret_cast<const char*>(&length), 8);
      out.write(reinterpret_cast<const char*>(&hash), 8);
      out.write(kMagic, 8);
      out.close();
      ok = out.fail() ? 0 : 1;
    }
    if (ok) {
      const int fd = ::open(tmp.c_str(), O_RDONLY);
      if (fd >= 0) {
        (void)::fsync(fd);
        stats.bytes = static_cast<std::int64_t>(::lseek(fd, 0, SEEK_END));
        ::close(fd);
      }
      ok = std::rename(tmp.c_str(), path.c_str()) == 0 ? 1 : 0;
    }
    if (!ok) {
      why = std::strerror(errno);
      std::remove(tmp.c_str());
    }
  }
  MPI_Bcast(&ok, 1, MPI_INT, 0, comm);
  if (!ok) throw InputError("cannot write checkpoint " + path + " (option " + option + ")");
  long long bytes = stats.bytes;
  MPI_Bcast(&bytes, 1, MPI_LONG_LONG, 0, comm);
  stats.bytes = bytes;
  stats.seconds = MPI_Wtime() - t0;
  return stats;
}

CheckpointFacts read_checkpoint_facts(MPI_Comm comm, const std::string& path) {
  return parse_metadata(path, read_metadata_text(comm, path)).facts;
}

void read_checkpoint(MPI_Comm comm, const std::string& path, const StateRegistry& state) {
  using K = StateRegistry::Entry::Kind;
  const Metadata m = parse_metadata(path, read_metadata_text(comm, path));
  // Every entry must be there with its kind; the Vecs in the file's order must be the registry's.
  std::vector<std::string> vecs;
  for (const auto& e : state.entries()) {
    const auto it = m.records.find(e.name);
    if (it == m.records.end() || it->second.kind != kind_name(e.kind))
      throw InputError("checkpoint " + path + " has no " + kind_name(e.kind) + " '" + e.name +
                       "' (written by another method or version?)");
    if (e.kind == K::Vector || e.kind == K::Basis) vecs.push_back(e.name);
  }
  if (vecs != m.vec_order)
    throw InputError("checkpoint " + path +
                     " holds other vectors than this run needs (written by another method?)");
  petsc::ViewerHandle viewer;
  BILEVEL_PETSC_CALL(PetscViewerCreate(comm, viewer.out()));
  BILEVEL_PETSC_CALL(PetscViewerSetType(viewer, PETSCVIEWERBINARY));
  BILEVEL_PETSC_CALL(PetscViewerBinarySkipInfo(viewer));
  BILEVEL_PETSC_CALL(PetscViewerBinarySetUseMPIIO(viewer, PETSC_TRUE));
  BILEVEL_PETSC_CALL(PetscViewerFileSetMode(viewer, FILE_MODE_READ));
  BILEVEL_PETSC_CALL(PetscViewerFileSetName(viewer, path.c_str()));
  for (const auto& e : state.entries()) {
    std::istringstream value(m.records.at(e.name).value);
    switch (e.kind) {
      case K::Vector: {
        Vec v = static_cast<Vec>(e.ref);
        long long n = 0;
        std::uint64_t sum = 0;
        value >> n >> sum;
        PetscInt size = 0;
        BILEVEL_PETSC_CALL(VecGetSize(v, &size));
        if (n != size)
          throw InputError("checkpoint " + path + ": vector '" + e.name + "' has " + std::to_string(n) +
                           " entries, this run's has " + std::to_string(size) +
                           " (another problem or data?)");
        try {
          BILEVEL_PETSC_CALL(VecLoad(v, viewer));
        } catch (const petsc::Error&) {
          throw InputError("checkpoint " + path + " is truncated or corrupted (vector '" + e.name + "')");
        }
        if (distribution_free_checksum(v) != sum)
          throw InputError("checkpoint " + path + " is corrupted (checksum of vector '" + e.name +
                           "' differs)");
        break;
      }
      case K::Int64:
        value >> *static_cast<std::int64_t*>(e.ref);
        break;
      case K::Int: {
        value >> *static_cast<int*>(e.ref);
        break;
      }
      case K::Real: {
        std::string s;
        value >> s;
        *static_cast<PetscReal*>(e.ref) = parse_real(s);
        break;
      }
      case K::Bool: {
        int b = 0;
        value >> b;
        *static_cast<bool*>(e.ref) = b != 0;
        break;
      }
      case K::Reals: {
        std::size_t n = 0;
        value >> n;
        auto& out = *static_cast<std::vector<PetscReal>*>(e.ref);
        out.resize(n);
        for (auto& x : out) {
          std::string s;
          value >> s;
          x = parse_real(s);
        }
        break;
      }
      case K::Ints: {
        std::size_t n = 0;
        value >> n;
        auto& out = *static_cast<std::vector<PetscInt>*>(e.ref);
        out.resize(n);
        for (auto& x : out) {
          long long v = 0;
          value >> v;
          x = static_cast<PetscInt>(v);
        }
        break;
      }
      case K::Sampler: {
        std::uint64_t draws = 0;
        value >> draws;
        static_cast<BatchSampler*>(e.ref)->set_draws(draws);
        break;
      }
      case K::Basis: {
        BV bv = static_cast<BV>(e.ref);
        PetscInt n = 0, local = 0, columns = 0;
        BILEVEL_PETSC_CALL(BVGetSizes(bv, &local, &n, &columns));
        long long file_columns = 0, file_n = 0;
        value >> file_columns >> file_n;
        if (file_columns != columns || file_n != n)
          throw InputError("checkpoint " + path + ": basis '" + e.name + "' is " + std::to_string(file_n) +
                           " x " + std::to_string(file_columns) + ", this run's is " + std::to_string(n) +
                           " x " + std::to_string(columns) + " (other options or data?)");
        for (PetscInt j = 0; j < columns; ++j) {
          std::uint64_t sum = 0;
          value >> sum;
          Vec c = nullptr;
          BILEVEL_PETSC_CALL(BVGetColumn(bv, j, &c));
          bool ok = true;
          try {
            BILEVEL_PETSC_CALL(VecLoad(c, viewer));
          } catch (const petsc::Error&) {
            ok = false;
          }
          const bool same = ok && distribution_free_checksum(c) == sum;
          BILEVEL_PETSC_CALL(BVRestoreColumn(bv, j, &c));
          if (!same)
            throw InputError("checkpoint " + path + " is truncated or corrupted (basis '" + e.name + "')");
        }
        break;
      }
      case K::Text: {
        std::string rest;
        std::getline(value, rest);
        if (!rest.empty() && rest.front() == ' ') rest.erase(0, 1);
        static_cast<StateRegistry::TextHooks*>(e.ref)->load(unescape(rest));
        break;
      }
    }
    if (value.fail()) throw InputError("checkpoint " + path + " is corrupted (record '" + e.name + "')");
  }
}

std::string file_fingerprint(const std::string& path) {
  const std::string name =
      path.substr(path.find_last_of('/') == std::string::npos ? 0 : path.find_last_of('/') + 1);
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return name + " (not found)";
  return name + ", " + std::to_string(static_cast<long long>(in.tellg())) + " bytes";
}

}  // namespace bilevel
