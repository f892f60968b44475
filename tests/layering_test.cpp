// The headers' layers, checked: a header includes only headers of its own
// folder or of a lower layer, so no include runs back up a layer; and its
// namespace follows its folder.
//
//   0  error.hpp                errc and its category
//   1  types.hpp                vocabulary
//   2  detail/                  generic helpers
//   3  meta/                    the sans-I/O metadata service
//   4  memory/ wire/ disk/      memory primitives; the binary protocol; disk
//                               files and the O_DIRECT plan
//   5  client/                  the store's parts: options, cache, counters,
//                               plans, the metadata endpoint contract
//   6  net/                     Asio over TCP
//      etcd/                    an etcd v3 client (HTTP/JSON gateway);
//                               includes only error.hpp, types.hpp, detail/
//   7  transport/               lanes and the router
//      ha/                      replicated masters: election over etcd,
//                               promotion, finding the leader
//   8  store.hpp                basic_store
//   9  embedded.hpp node.hpp    the two stores
//  10  cluster.hpp              node_store<> under its older names
//  11  corokv.hpp               the umbrella; rdma.hpp and disk_tier.hpp, the
//                               opt-in RDMA lane and disk tier

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

// The layer of a header, by its path under include/corokv/; -1 if unknown.
int layer_of(const std::string& path) {
  static const std::map<std::string, int> folders{{"detail", 2}, {"meta", 3}, {"memory", 4},   {"wire", 4}, {"disk", 4},
                                                  {"client", 5}, {"net", 6},  {"io", 6},   {"etcd", 6}, {"ha", 7},
                                                  {"transport", 7}};
  static const std::map<std::string, int> files{{"error.hpp", 0},    {"types.hpp", 1},   {"store.hpp", 8},
                                                {"embedded.hpp", 9}, {"node.hpp", 9}, {"cluster.hpp", 10}, {"disk_tier.hpp", 11}, {"corokv.hpp", 11},
                                                {"rdma.hpp", 11}};
  const auto slash = path.find('/');
  if (slash == std::string::npos) {
    auto it = files.find(path);
    return it == files.end() ? -1 : it->second;
  }
  auto it = folders.find(path.substr(0, slash));
  return it == folders.end() ? -1 : it->second;
}

std::string folder_of(const std::string& path) {
  const auto slash = path.find('/');
  return slash == std::string::npos ? std::string() : path.substr(0, slash);
}

// Folders kept narrower than their layer: outside themselves they may
// include only up to this layer. etcd/ stays independent of the store.
int ceiling_of(const std::string& folder, int own) {
  return folder == "etcd" ? 2 : own - 1;
}

// A block that only declares classes of a folder the header could include
// (a forward declaration instead of the include) may name that folder's
// namespace: `namespace corokv::net {` then `class data_server;` lines.
bool forward_declares_lower_layer(const std::string& self, const std::string& name,
                                  const std::vector<std::string>& lines, std::size_t opening_line) {
  const std::string theirs = name.substr(std::string("corokv::").size());
  const int their_layer = layer_of(theirs.substr(0, theirs.find(':')) + "/x.hpp");
  if (their_layer < 0 || their_layer > ceiling_of(folder_of(self), layer_of(self))) return false;
  for (std::size_t i = opening_line; i < lines.size(); ++i) {
    const std::string& l = lines[i];
    if (l.rfind("}", 0) == 0) return i > opening_line;
    const bool declaration = (l.rfind("class ", 0) == 0 || l.rfind("struct ", 0) == 0) && l.back() == ';';
    if (!declaration && l.rfind("//", 0) != 0) return false;
  }
  return false;
}

}  // namespace

TEST_CASE("layering: every header has a layer, and no include runs back up a layer") {
  const fs::path root = fs::path(COROKV_SOURCE_DIR) / "include" / "corokv";
  REQUIRE(fs::is_directory(root));
  std::vector<std::string> problems;
  std::size_t headers = 0, includes = 0;
  for (const auto& file : fs::recursive_directory_iterator(root)) {
    if (file.path().extension() != ".hpp") continue;
    ++headers;
    const std::string self = fs::relative(file.path(), root).generic_string();
    const int own = layer_of(self);
    if (own < 0) {
      problems.push_back(self + " is in no layer");
      continue;
    }
    std::ifstream in(file.path());
    const std::string prefix = "#include <corokv/";
    for (std::string line; std::getline(in, line);) {
      if (line.rfind(prefix, 0) != 0) continue;
      ++includes;
      const std::string target = line.substr(prefix.size(), line.find('>') - prefix.size());
      const int theirs = layer_of(target);
      const bool same_folder = !folder_of(self).empty() && folder_of(self) == folder_of(target);
      if (theirs < 0 || (!same_folder && theirs > ceiling_of(folder_of(self), own)))
        problems.push_back(self + " (layer " + std::to_string(own) + ") includes " + target + " (layer " +
                           std::to_string(theirs) + ")");
    }
  }
  CHECK(headers > 40);
  CHECK(includes > 100);
  for (const auto& p : problems) FAIL_CHECK(p);
  CHECK(problems.empty());
}

// A header's namespace names its folder: include/corokv/transport/ declares
// in corokv::transport (or a namespace nested in it, such as
// corokv::transport::detail), detail/ in corokv::detail, and the top-level
// headers in corokv. The public names programs call (corokv::memcpy_lane,
// corokv::store_options...) are using-declarations in the top-level headers.
// No alias of another library's namespace (such as asio = boost::asio)
// stands at namespace scope, where it would become a name of corokv.
TEST_CASE("layering: namespaces follow folders, and no alias of another library's namespace is declared at namespace scope") {
  const fs::path root = fs::path(COROKV_SOURCE_DIR) / "include" / "corokv";
  REQUIRE(fs::is_directory(root));
  std::vector<std::string> problems;
  std::size_t openings = 0;
  for (const auto& file : fs::recursive_directory_iterator(root)) {
    if (file.path().extension() != ".hpp") continue;
    const std::string self = fs::relative(file.path(), root).generic_string();
    const std::string folder = folder_of(self);
    const std::string expected = folder.empty() ? "corokv" : "corokv::" + folder;
    std::ifstream in(file.path());
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    for (std::size_t line_number = 1; line_number <= lines.size(); ++line_number) {
      const std::string& line = lines[line_number - 1];
      // Namespace scope is unindented here; a function-local alias is indented.
      if (line.rfind("namespace ", 0) != 0) continue;
      const std::string rest = line.substr(10);
      const auto name_end = rest.find_first_of(" {=");
      const std::string name = rest.substr(0, name_end);
      const std::string where = self + ":" + std::to_string(line_number);
      if (rest.find('=') != std::string::npos && rest.find('=') < rest.find('{')) {
        // An alias of one of corokv's own namespaces (ranks = transport::ranks)
        // re-exports it; one of another library's would make that library a
        // name of corokv.
        const std::string target = rest.substr(rest.find('=') + 1);
        if (target.find("boost::") != std::string::npos || target.find("std::") != std::string::npos)
          problems.push_back(where + " declares the namespace alias " + name + " of another library at namespace scope");
        continue;
      }
      if (name != "corokv" && name.rfind("corokv::", 0) != 0) continue;  // nested (detail) or another library's
      ++openings;
      const bool follows = name == expected || name.rfind(expected + "::", 0) == 0;
      const bool top_level_detail = folder.empty() && name == "corokv::detail";
      if (!follows && !top_level_detail && !forward_declares_lower_layer(self, name, lines, line_number))
        problems.push_back(where + " opens " + name + ", not " + expected);
    }
  }
  CHECK(openings > 80);
  for (const auto& p : problems) FAIL_CHECK(p);
  CHECK(problems.empty());
}

// ctest runs each discovered test case by name and splits names at ';' (its
// list separator), so a name holding one runs nothing and fails.
TEST_CASE("test names: no test case's name holds a semicolon, which ctest would split") {
  const fs::path root = fs::path(COROKV_SOURCE_DIR) / "tests";
  REQUIRE(fs::is_directory(root));
  std::vector<std::string> problems;
  std::size_t cases = 0;
  const std::string opening = "TEST_CASE(\"";
  for (const auto& file : fs::recursive_directory_iterator(root)) {
    if (file.path().extension() != ".cpp") continue;
    std::ifstream in(file.path());
    for (std::string line; std::getline(in, line);) {
      const auto start = line.find(opening);
      if (start == std::string::npos) continue;
      ++cases;
      const auto name_start = start + opening.size();
      const std::string name = line.substr(name_start, line.find('"', name_start) - name_start);
      if (name.find(';') != std::string::npos) problems.push_back(file.path().filename().string() + ": " + name);
    }
  }
  CHECK(cases > 200);
  for (const auto& p : problems) FAIL_CHECK(p);
  CHECK(problems.empty());
}
