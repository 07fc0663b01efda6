// bilevel-convert: LIBSVM (plain, .gz, .bz2, .xz) or IDX image files -> a PETSc binary data set (OUTPUT:
// the matrix as MatView writes it, then the labels as VecView writes them; OUTPUT.meta: feature count,
// index base, label set), in one streaming pass with memory bounded by --block-rows rows. One process;
// every problem of bilevel-solve reads OUTPUT with MPI-IO, each rank its own rows (docs/data.md).
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include "bilevel/data/petsc_binary.hpp"
#include "bilevel/petsc/error.hpp"

namespace {

const char* kHelp =
    "bilevel-convert: convert a LIBSVM or IDX data file to a PETSc binary data set.\n"
    "usage: bilevel-convert [options] INPUT OUTPUT\n"
    "  INPUT   LIBSVM text (plain, gzip, bzip2 or xz, by content) or an IDX image file (its labels beside "
    "it:\n"
    "          the name with images-idx3 -> labels-idx1, or --labels)\n"
    "  OUTPUT  PETSc binary file (matrix, then labels); OUTPUT.meta is written beside it\n"
    "options:\n"
    "  --index-base auto|0|1   LIBSVM feature indices: auto (0-based if any index 0 appears, else 1-based)\n"
    "  --labels FILE           IDX label file\n"
    "  --scale S               IDX pixel scale (default 1/255)\n"
    "  --block-rows N          rows held in memory at a time (default 4096)\n"
    "  -h, --help, -help       print this help and exit\n"
    "Exit codes: 0 done; 1 bad input or error (one line on stderr).\n";

[[noreturn]] void bad(const std::string& message) {
  throw bilevel::InputError(message);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    bilevel::ConvertOptions options;
    std::vector<std::string> files;
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) bad("option " + arg + " needs a value");
        return argv[++i];
      };
      if (arg == "-h" || arg == "--help" || arg == "-help") {
        std::fputs(kHelp, stdout);
        return 0;
      } else if (arg == "--index-base") {
        const std::string v = value();
        if (v == "auto")
          options.index_base = -1;
        else if (v == "0" || v == "1")
          options.index_base = v[0] - '0';
        else
          bad("bad value '" + v + "' for --index-base: expected auto, 0 or 1");
      } else if (arg == "--labels") {
        options.idx_labels = value();
      } else if (arg == "--scale") {
        const std::string v = value();
        char* end = nullptr;
        options.scale = std::strtod(v.c_str(), &end);
        if (v.empty() || *end != '\0' || !(options.scale > 0) || options.scale > 1e300)
          bad("bad value '" + v + "' for --scale: expected a positive number");
      } else if (arg == "--block-rows") {
        const std::string v = value();
        char* end = nullptr;
        const long long n = std::strtoll(v.c_str(), &end, 10);
        if (v.empty() || *end != '\0' || n < 1 || n > 100000000)
          bad("bad value '" + v + "' for --block-rows: expected an integer in [1, 100000000]");
        options.block_rows = static_cast<std::size_t>(n);
      } else if (!arg.empty() && arg[0] == '-' && arg != "-") {
        bad("unknown option '" + arg + "' (see bilevel-convert --help)");
      } else {
        files.push_back(arg);
      }
    }
    if (files.size() != 2) bad("expected INPUT and OUTPUT files (see bilevel-convert --help)");
    const bilevel::BinaryMeta meta = bilevel::convert_to_petsc_binary(files[0], files[1], options);
    std::printf("%s: %lld rows x %lld features, %lld nonzeros, %s, index base %d, %zu labels\n",
                files[1].c_str(),
                static_cast<long long>(meta.rows),
                static_cast<long long>(meta.features),
                static_cast<long long>(meta.nonzeros),
                meta.origin.c_str(),
                meta.index_base,
                meta.labels.size());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bilevel-convert: error: %s\n", e.what());
    return 1;
  }
}
