// Writes the fuzzers' seed corpus: one file per sample message (type byte +
// payload, data bytes included) and one per frame header.
//   make_corpus <dir>   creates <dir>/header, <dir>/request, <dir>/response
#include "../support/wire_samples.hpp"

#include <filesystem>
#include <fstream>
#include <string>

namespace {

void write(const std::filesystem::path& file, const std::vector<std::byte>& bytes) {
  std::ofstream(file, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                              static_cast<std::streamsize>(bytes.size()));
}

template <class Pairs>
void write_messages(const std::filesystem::path& dir, const Pairs& pairs) {
  std::filesystem::create_directories(dir);
  int n = 0;
  for (auto& [type, message] : pairs) {
    std::vector<std::byte> bytes{static_cast<std::byte>(static_cast<std::uint8_t>(type) - 1)};
    std::visit([&](auto& m) { return corokv::wire::encode(m, bytes); }, message);
    const auto data = corokv::wire::samples::trailing_for(message);
    bytes.insert(bytes.end(), data.begin(), data.end());
    write(dir / ("seed-" + std::to_string(n++)), bytes);
  }
}

}  // namespace

int main(int argc, char** argv) {
  using namespace corokv::wire;
  if (argc != 2) return 2;
  const std::filesystem::path root = argv[1];
  write_messages(root / "request", samples::requests());
  write_messages(root / "response", samples::responses());
  std::filesystem::create_directories(root / "header");
  int n = 0;
  for (auto& [type, message] : samples::requests()) {
    const auto h = encode_header({type, n % 2 == 1, static_cast<std::uint64_t>(n), 1234});
    write(root / "header" / ("seed-" + std::to_string(n++)), std::vector<std::byte>(h.begin(), h.end()));
  }
  return 0;
}
