// The error table (error.hpp), walked whole: every code's name, message,
// kind condition and Mooncake code; the conditions against the codes and
// against other categories; and a markdown errors table, checked against
// the table row by row.

#include <corokv/error.hpp>

#include <doctest/doctest.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

namespace {

using namespace corokv;

constexpr condition kinds[] = {condition::outcome, condition::argument, condition::connection, condition::internal};

std::string capitals(std::string_view name) {
  std::string s(name);
  for (char& c : s) c = static_cast<char>(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c);
  return s;
}

std::string mooncake_name(mooncake_code code) {
  for (const mooncake_entry& m : mooncake_table)
    if (m.code == code) return capitals(m.name);
  return {};
}

// The documented errors table: its header, its separator, and a row per
// code in the table's order.
const char* const table_header = "| code | Python `Status` | kind | message | Mooncake code |";

std::vector<std::string> expected_table() {
  std::vector<std::string> rows{table_header, "|---|---|---|---|---|"};
  for (const error_entry& e : error_table) {
    std::ostringstream row;
    row << "| `" << e.name << "` | `" << capitals(e.name) << "` | " << name_of(e.kind) << " | " << e.message << " | "
        << static_cast<int>(e.mooncake) << " `" << mooncake_name(e.mooncake) << "` |";
    rows.push_back(row.str());
  }
  return rows;
}

// Where the errors reference lives; COROKV_ERRORS_DOC names another file.
std::string errors_doc_path() {
  if (const char* given = std::getenv("COROKV_ERRORS_DOC"); given && *given) return given;
  return std::string(COROKV_SOURCE_DIR) + "/docs/reference/errors.md";
}

// The table in the file: from the header line to the first line that is
// not a table row.
std::vector<std::string> documented_table(std::istream& in) {
  std::vector<std::string> rows;
  std::string line;
  while (std::getline(in, line)) {
    if (rows.empty() && line != table_header) continue;
    if (!rows.empty() && (line.empty() || line.front() != '|')) break;
    rows.push_back(line);
  }
  return rows;
}

}  // namespace

TEST_CASE("error table: a code per position, each with its own name and message") {
  std::set<std::string_view> names, messages;
  for (std::size_t i = 0; i < error_table.size(); ++i) {
    const error_entry& e = error_table[i];
    CAPTURE(e.name);
    CHECK(static_cast<std::size_t>(e.code) == i);
    CHECK(find_error(static_cast<int>(i)) == &e);
    CHECK_FALSE(e.name.empty());
    CHECK_FALSE(e.message.empty());
    CHECK(make_error_code(e.code).message() == e.message);
    CHECK(names.insert(e.name).second);
    CHECK(messages.insert(e.message).second);
    CHECK_FALSE(mooncake_name(e.mooncake).empty());
    CHECK((e.mooncake == mooncake_code::ok) == (e.code == errc::success));
  }
  CHECK(error_table.back().code == last_errc);
  CHECK(find_error(-1) == nullptr);
  CHECK(find_error(static_cast<int>(error_table.size())) == nullptr);
  CHECK(std::error_code(static_cast<int>(error_table.size()), error_category()).message() == "unknown corokv error");
}

TEST_CASE("error table: every failure matches per_key and its own kind's condition only, in both error_code types") {
  for (const error_entry& e : error_table) {
    CAPTURE(e.name);
    const std::error_code ec = e.code;
    const error_code boost_ec = ec;  // the public API's type, as a handler receives it
    const std::error_code back = boost_ec;
    CHECK(back == ec);
    CHECK(boost_ec == e.code);
    if (e.code == errc::success) {
      CHECK_FALSE(ec);
      CHECK(ec != condition::per_key);
      for (condition k : kinds) CHECK(ec != k);
      continue;
    }
    CHECK(ec == condition::per_key);
    CHECK(boost_ec == condition::per_key);
    CHECK(is_per_key_outcome(ec));
    CHECK(as_per_key_status(ec) == e.code);
    for (condition k : kinds) {
      CAPTURE(name_of(k));
      CHECK((ec == k) == (k == e.kind));
      CHECK((boost_ec == k) == (k == e.kind));
    }
  }
  // Other categories' errors match no condition: they fail whole operations.
  for (const std::error_code other : {std::make_error_code(std::errc::not_enough_memory),
                                      std::make_error_code(std::errc::timed_out), std::error_code(1, std::system_category()),
                                      std::error_code(), std::error_code(999, error_category())}) {
    CAPTURE(other.message());
    CHECK(other != condition::per_key);
    for (condition k : kinds) CHECK(other != k);
  }
  CHECK(std::string(condition_category().name()) == "corokv.condition");
  CHECK(make_error_condition(condition::connection).message() == "the network or a peer failed");
}

TEST_CASE("error table: the documented errors table is the table (COROKV_ERRORS_DOC names the file)") {
  const std::string path = errors_doc_path();
  CAPTURE(path);
  std::ifstream in(path);
  REQUIRE(in);
  const std::vector<std::string> documented = documented_table(in), expected = expected_table();
  std::string want;
  for (const std::string& row : expected) want += row + "\n";
  INFO("expected, to paste under the errors heading:\n" << want);
  REQUIRE(documented.size() == expected.size());
  for (std::size_t i = 0; i < expected.size(); ++i) CHECK(documented[i] == expected[i]);
}
