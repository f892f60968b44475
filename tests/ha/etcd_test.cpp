// corokv's etcd client. Three suites: "gateway" checks the request bodies
// and the parsers without any I/O, against answers captured from etcd 3.4's
// gateway; "client" runs the client against stand-in servers on 127.0.0.1
// (silent, garbled); "etcd" runs it against a real etcd process, and is
// skipped (see main.cpp) where there is no etcd.

#include "../support/etcd_process.hpp"
#include "../support/run.hpp"

#include <corokv/etcd/client.hpp>
#include <corokv/etcd/gateway.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/asio/write.hpp>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <vector>

bool etcd_available(std::string& executable) {
  executable = corokv::test::etcd_process::executable();
  return corokv::test::etcd_process::available();
}

namespace {

using namespace std::chrono_literals;
namespace asio = boost::asio;
namespace gw = corokv::etcd::gateway;
using corokv::errc;
using corokv::etcd::watch_event;
using corokv::etcd::watch_message;
using corokv::test::etcd_process;
using json = nlohmann::json;
using steady = std::chrono::steady_clock;

// ---------------------------------------------------------------- helpers

// Runs body(io) -> awaitable<void> on a fresh io_context, for at most
// `limit`; a body still running then fails the test instead of hanging it.
template <class Body>
void run(Body body, std::chrono::seconds limit = 30s) {
  asio::io_context io;
  // Rethrows what escaped the body.
  REQUIRE_MESSAGE(corokv::test::run_within(io, body(io), limit), "the test did not finish within its limit");
}

asio::awaitable<void> sleep_for(steady::duration d) {
  asio::steady_timer timer(co_await asio::this_coro::executor, d);
  co_await timer.async_wait(asio::use_awaitable);
}

// Polls `done` every 20 ms until it holds or `limit` passes; whether it held.
template <class Pred>
asio::awaitable<bool> eventually(Pred done, steady::duration limit) {
  const auto deadline = steady::now() + limit;
  while (!done()) {
    if (steady::now() >= deadline) co_return false;
    co_await sleep_for(20ms);
  }
  co_return true;
}

double seconds_since(steady::time_point t) { return std::chrono::duration<double>(steady::now() - t).count(); }

// The etcd the "etcd" tests share; each test uses keys of its own.
etcd_process& shared_etcd() {
  static etcd_process process;
  return process;
}

corokv::etcd::client_options options_for(const etcd_process& e, corokv::duration timeout = 1s) {
  return {{e.endpoint()}, timeout};
}

std::string unique_key(const std::string& name) {
  static int counter = 0;
  return "corokv-test/" + std::to_string(::getpid()) + "/" + name + "/" + std::to_string(++counter);
}

// A port on 127.0.0.1 that refuses connections while `holder` is open:
// bound, never listening.
std::uint16_t refusing_port(asio::ip::tcp::socket& holder) {
  holder.open(asio::ip::tcp::v4());
  holder.bind({asio::ip::make_address_v4("127.0.0.1"), 0});
  return holder.local_endpoint().port();
}

// A stand-in server: accepts one connection, reads one whole request (so
// that closing never resets what was sent), writes `answer` and closes.
asio::awaitable<void> serve_once(asio::ip::tcp::acceptor& acceptor, std::string answer) {
  auto socket = co_await acceptor.async_accept(asio::use_awaitable);
  std::string request;
  std::array<char, 4096> buf;
  std::size_t header_end = std::string::npos, length = 0;
  while (header_end == std::string::npos || request.size() < header_end + 4 + length) {
    const std::size_t n = co_await socket.async_read_some(asio::buffer(buf), asio::use_awaitable);
    request.append(buf.data(), n);
    if (header_end == std::string::npos && (header_end = request.find("\r\n\r\n")) != std::string::npos) {
      const auto at = request.find("Content-Length: ");
      if (at != std::string::npos && at < header_end) length = std::stoul(request.substr(at + 16));
    }
  }
  co_await asio::async_write(socket, asio::buffer(answer), asio::use_awaitable);
}

// `body` as an HTTP/1.1 chunked response, cut into chunks of `piece` bytes.
std::string chunked_response(std::string_view body, std::size_t piece, bool last_chunk) {
  std::string out = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (std::size_t i = 0; i < body.size(); i += piece) {
    const auto part = body.substr(i, piece);
    char size[32];
    std::snprintf(size, sizeof size, "%zx\r\n", part.size());
    out += size;
    out += part;
    out += "\r\n";
  }
  if (last_chunk) out += "0\r\n\r\n";
  return out;
}

// Answers captured from etcd 3.4.23's gateway (curl), cluster ids shortened.
constexpr std::string_view range_answer =
    R"({"header":{"cluster_id":"3249","member_id":"3319","revision":"2","raft_term":"2"},)"
    R"("kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}],"count":"1"})";
constexpr std::string_view empty_range_answer =
    R"({"header":{"cluster_id":"3249","member_id":"3319","revision":"1","raft_term":"2"}})";
constexpr std::string_view created_answer =
    R"({"header":{"cluster_id":"3249","member_id":"3319","revision":"3","raft_term":"2"},"succeeded":true,)"
    R"("responses":[{"response_put":{"header":{"revision":"3"}}}]})";
constexpr std::string_view not_created_answer =
    R"({"header":{"cluster_id":"3249","member_id":"3319","revision":"3","raft_term":"2"},)"
    R"("responses":[{"response_range":{"header":{"revision":"3"},"kvs":[{"key":"YQ==","create_revision":"3",)"
    R"("mod_revision":"3","version":"1","value":"MQ==","lease":"7587869462651712514"}],"count":"1"}}]})";
constexpr std::string_view deleted_answer =
    R"({"header":{"cluster_id":"3249","member_id":"3319","revision":"4","raft_term":"2"},"succeeded":true,)"
    R"("responses":[{"response_delete_range":{"header":{"revision":"4"},"deleted":"1"}}]})";
constexpr std::string_view not_deleted_answer =
    R"({"header":{"cluster_id":"3249","member_id":"3319","revision":"4","raft_term":"2"}})";
constexpr std::string_view grant_answer =
    R"({"header":{"cluster_id":"3249","member_id":"3319","revision":"2","raft_term":"2"},)"
    R"("ID":"2324035722572632584","TTL":"5"})";
constexpr std::string_view keep_alive_answer =
    R"({"result":{"header":{"cluster_id":"3249","member_id":"3319","revision":"2","raft_term":"2"},)"
    R"("ID":"2324035722572632587","TTL":"5"}})"
    "\n";
constexpr std::string_view keep_alive_gone_answer =
    R"({"result":{"header":{"cluster_id":"3249","member_id":"3319","revision":"2","raft_term":"2"},"ID":"1"}})"
    "\n";
constexpr std::string_view lease_not_found_answer =
    R"({"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5})";
constexpr std::string_view watch_created_line =
    R"({"result":{"header":{"cluster_id":"3249","member_id":"3319","revision":"5","raft_term":"2"},"created":true}})";
constexpr std::string_view watch_put_line =
    R"({"result":{"header":{"cluster_id":"3249","member_id":"3319","revision":"6","raft_term":"2"},)"
    R"("events":[{"kv":{"key":"dw==","create_revision":"6","mod_revision":"6","version":"1","value":"MQ=="}}]}})";
constexpr std::string_view watch_delete_line =
    R"({"result":{"header":{"cluster_id":"3249","member_id":"3319","revision":"7","raft_term":"2"},)"
    R"("events":[{"type":"DELETE","kv":{"key":"dw==","mod_revision":"7"}}]}})";
constexpr std::string_view watch_compacted_line =
    R"({"result":{"header":{"cluster_id":"3249","member_id":"3319","raft_term":"2"},"canceled":true,)"
    R"("compact_revision":"5"}})";

}  // namespace

// ================================================================ gateway

TEST_SUITE("gateway") {

TEST_CASE("gateway: base64 matches RFC 4648's vectors and round-trips every byte value") {
  const std::array<std::pair<std::string_view, std::string_view>, 7> vectors{{{"", ""},
                                                                               {"f", "Zg=="},
                                                                               {"fo", "Zm8="},
                                                                               {"foo", "Zm9v"},
                                                                               {"foob", "Zm9vYg=="},
                                                                               {"fooba", "Zm9vYmE="},
                                                                               {"foobar", "Zm9vYmFy"}}};
  for (const auto& [plain, encoded] : vectors) {
    CHECK(gw::base64_encode(plain) == encoded);
    CHECK(gw::base64_decode(encoded) == std::optional<std::string>(plain));
  }
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  CHECK(gw::base64_encode(std::string("\0\xff\xfe", 3)) == "AP/+");
  int mismatches = 0;
  for (std::size_t offset = 0; offset < 3; ++offset)
    for (std::size_t length = 0; offset + length <= all.size(); ++length) {
      const std::string bytes = all.substr(offset, length);
      if (gw::base64_decode(gw::base64_encode(bytes)) != std::optional<std::string>(bytes)) ++mismatches;
    }
  CHECK(mismatches == 0);
}

TEST_CASE("gateway: base64_decode refuses what the gateway never writes") {
  using namespace std::string_view_literals;
  for (std::string_view bad : {"Zg"sv, "Zg="sv, "Zm9"sv, "Z==="sv, "===="sv, "Zg==Zg=="sv, "Zm=v"sv, "Zm9v\n"sv, "Zm9v!A=="sv, "Zm-_"sv,
                               " Zm9v"sv, "Zm9v===="sv, "Zm\0v"sv}) {
    INFO("input: ", std::string(bad));
    CHECK_FALSE(gw::base64_decode(bad).has_value());
  }
}

TEST_CASE("gateway: prefix_range_end is the first key past the prefix") {
  CHECK(gw::prefix_range_end("a") == "b");
  CHECK(gw::prefix_range_end("a/") == "a0");
  CHECK(gw::prefix_range_end("a\xfe") == "a\xff");
  CHECK(gw::prefix_range_end("a\xff") == "b");
  CHECK(gw::prefix_range_end("a\xff\xff") == "b");
  CHECK(gw::prefix_range_end("\xff\xff") == std::string(1, '\0'));
  CHECK(gw::prefix_range_end("") == std::string(1, '\0'));
}

TEST_CASE("gateway: request bodies carry keys in base64 and int64 as strings") {
  const std::int64_t big = 7587869462651712514;  // a lease id: above 2^53, where doubles lose digits
  CHECK(json::parse(gw::range_request("foo")) == json{{"key", "Zm9v"}});
  CHECK(json::parse(gw::range_prefix_request("p/")) == json{{"key", "cC8="}, {"range_end", "cDA="}});
  CHECK(json::parse(gw::range_prefix_request("")) == json{{"key", "AA=="}, {"range_end", "AA=="}});
  CHECK(json::parse(gw::put_request("foo", "bar", big)) ==
        json{{"key", "Zm9v"}, {"value", "YmFy"}, {"lease", "7587869462651712514"}});

  const json create = json::parse(gw::create_if_absent_request("foo", "bar", big));
  REQUIRE(create["compare"].size() == 1);
  CHECK(create["compare"][0] ==
        json{{"target", "CREATE"}, {"result", "EQUAL"}, {"key", "Zm9v"}, {"create_revision", "0"}});
  REQUIRE(create["success"].size() == 1);
  CHECK(create["success"][0] ==
        json{{"request_put", {{"key", "Zm9v"}, {"value", "YmFy"}, {"lease", "7587869462651712514"}}}});
  REQUIRE(create["failure"].size() == 1);
  CHECK(create["failure"][0] == json{{"request_range", {{"key", "Zm9v"}}}});

  const json del = json::parse(gw::delete_if_created_at_request("foo", 42));
  CHECK(del["compare"][0] ==
        json{{"target", "CREATE"}, {"result", "EQUAL"}, {"key", "Zm9v"}, {"create_revision", "42"}});
  CHECK(del["success"][0] == json{{"request_delete_range", {{"key", "Zm9v"}}}});
  CHECK_FALSE(del.contains("failure"));

  CHECK(json::parse(gw::lease_grant_request(5)) == json{{"TTL", "5"}});
  CHECK(json::parse(gw::lease_keep_alive_request(big)) == json{{"ID", "7587869462651712514"}});
  CHECK(json::parse(gw::lease_revoke_request(big)) == json{{"ID", "7587869462651712514"}});
  CHECK(json::parse(gw::watch_create_request("w", 9)) ==
        json{{"create_request", {{"key", "dw=="}, {"start_revision", "9"}}}});
}

TEST_CASE("gateway: parsers read the gateway's own answers") {
  {
    auto [ec, r] = gw::parse_range(range_answer);
    CHECK(!ec);
    CHECK(r.revision == 2);
    REQUIRE(r.kvs.size() == 1);
    CHECK(r.kvs[0] == corokv::etcd::key_value{"foo", "bar", 2, 2, 1, 0});
  }
  {
    auto [ec, r] = gw::parse_range(empty_range_answer);
    CHECK(!ec);
    CHECK(r.revision == 1);
    CHECK(r.kvs.empty());
  }
  {
    auto [ec, c] = gw::parse_create_if_absent(created_answer);
    CHECK(!ec);
    CHECK(c.created);
    CHECK(c.revision == 3);
    CHECK_FALSE(c.existing.has_value());
  }
  {
    auto [ec, c] = gw::parse_create_if_absent(not_created_answer);
    CHECK(!ec);
    CHECK_FALSE(c.created);
    REQUIRE(c.existing.has_value());
    CHECK(*c.existing == corokv::etcd::key_value{"a", "1", 3, 3, 1, 7587869462651712514});
  }
  CHECK(gw::parse_delete_if_created_at(deleted_answer) == std::pair<std::error_code, bool>({}, true));
  CHECK(gw::parse_delete_if_created_at(not_deleted_answer) == std::pair<std::error_code, bool>({}, false));
  CHECK(gw::parse_put(empty_range_answer) == std::pair<std::error_code, std::int64_t>({}, 1));
  {
    auto [ec, g] = gw::parse_lease_grant(grant_answer);
    CHECK(!ec);
    CHECK(g.id == 2324035722572632584);
    CHECK(g.ttl == 5);
  }
  CHECK(gw::parse_lease_keep_alive(keep_alive_answer) == std::pair<std::error_code, std::int64_t>({}, 5));
  // A lease that is gone: no error from the gateway, just no TTL.
  CHECK(gw::parse_lease_keep_alive(keep_alive_gone_answer).first == errc::not_found);
  CHECK(!gw::parse_lease_revoke(empty_range_answer));
  {
    auto [ec, m] = gw::parse_watch_message(watch_created_line);
    CHECK(!ec);
    CHECK(m.created);
    CHECK_FALSE(m.canceled);
    CHECK(m.revision == 5);
    CHECK(m.events.empty());
  }
  {
    auto [ec, m] = gw::parse_watch_message(watch_put_line);
    CHECK(!ec);
    CHECK_FALSE(m.created);
    REQUIRE(m.events.size() == 1);
    CHECK(m.events[0].type == watch_event::put);
    CHECK(m.events[0].kv == corokv::etcd::key_value{"w", "1", 6, 6, 1, 0});
  }
  {
    auto [ec, m] = gw::parse_watch_message(watch_delete_line);
    CHECK(!ec);
    REQUIRE(m.events.size() == 1);
    CHECK(m.events[0].type == watch_event::del);
    CHECK(m.events[0].kv.key == "w");
    CHECK(m.events[0].kv.mod_revision == 7);
  }
  {
    auto [ec, m] = gw::parse_watch_message(watch_compacted_line);
    CHECK(!ec);
    CHECK(m.canceled);
    CHECK(m.compact_revision == 5);
    CHECK(m.revision == 0);
  }
}

TEST_CASE("gateway: int64 fields are read from strings or numbers, and nothing else") {
  auto revision = [](std::string_view value) {
    return gw::parse_range(R"({"header":{"revision":)" + std::string(value) + "}}");
  };
  CHECK(revision(R"("9223372036854775807")").second.revision == INT64_MAX);
  CHECK(revision("7").second.revision == 7);
  CHECK(revision(R"("-3")").second.revision == -3);
  for (std::string_view bad : {R"("12x")", R"("")", R"(" 1")", R"("+1")", R"("1.5")", "1.5", "true", "[]",
                               R"("9223372036854775808")", "18446744073709551615"}) {
    INFO("revision: ", std::string(bad));
    CHECK(revision(bad).first == errc::protocol_error);
  }
}

TEST_CASE("gateway: malformed input is protocol_error, never an exception") {
  const std::vector<std::string_view> garbage{
      "", " ", "{", "[]", "null", "42", R"("x")", "{}", "Not Found", R"({"header":5})",
      R"({"header":[]})", R"({"header":{"revision":"x"}})", R"({"error":"no code"})", "\xff\xfe"};
  for (std::string_view text : garbage) {
    INFO("input: ", std::string(text));
    CHECK_NOTHROW(CHECK(gw::parse_range(text).first == errc::protocol_error));
    CHECK_NOTHROW(CHECK(gw::parse_put(text).first == errc::protocol_error));
    CHECK_NOTHROW(CHECK(gw::parse_create_if_absent(text).first == errc::protocol_error));
    CHECK_NOTHROW(CHECK(gw::parse_delete_if_created_at(text).first == errc::protocol_error));
    CHECK_NOTHROW(CHECK(gw::parse_lease_grant(text).first == errc::protocol_error));
    CHECK_NOTHROW(CHECK(gw::parse_lease_keep_alive(text).first == errc::protocol_error));
    CHECK_NOTHROW(CHECK(gw::parse_lease_revoke(text) == errc::protocol_error));
    CHECK_NOTHROW(CHECK(gw::parse_watch_message(text).first == errc::protocol_error));
    CHECK_NOTHROW(CHECK(gw::parse_error(text) == errc::protocol_error));
  }
  // Well-formed JSON of the wrong shape for the call.
  for (std::string_view kvs : {R"({"header":{},"kvs":{}})", R"({"header":{},"kvs":[5]})",
                               R"({"header":{},"kvs":[{"key":"!!"}]})", R"({"header":{},"kvs":[{"key":5}]})",
                               R"({"header":{},"kvs":[{"key":"Zm9v","value":[]}]})",
                               R"({"header":{},"kvs":[{"key":"Zm9v","version":"one"}]})"}) {
    INFO("input: ", std::string(kvs));
    CHECK_NOTHROW(CHECK(gw::parse_range(kvs).first == errc::protocol_error));
  }
  CHECK(gw::parse_create_if_absent(R"({"header":{},"succeeded":"yes"})").first == errc::protocol_error);
  CHECK(gw::parse_delete_if_created_at(R"({"header":{},"succeeded":1})").first == errc::protocol_error);
  CHECK(gw::parse_create_if_absent(not_deleted_answer).first == errc::protocol_error);  // failed, no range
  CHECK(gw::parse_lease_grant(empty_range_answer).first == errc::protocol_error);        // no ID
  CHECK(gw::parse_lease_keep_alive(grant_answer).first == errc::protocol_error);         // no "result"
  CHECK(gw::parse_watch_message(R"({"result":{"header":{},"events":[{"type":"BOGUS","kv":{}}]}})").first ==
        errc::protocol_error);
  CHECK(gw::parse_watch_message(R"({"result":{"header":{},"events":[{"type":"PUT"}]}})").first ==
        errc::protocol_error);
  // Every truncation of a real answer (what a cut connection leaves).
  int accepted = 0;
  for (std::string_view answer : {range_answer, not_created_answer, grant_answer, watch_put_line})
    for (std::size_t n = 0; n < answer.size(); ++n) {
      const auto part = answer.substr(0, n);
      if (!gw::parse_range(part).first || !gw::parse_create_if_absent(part).first ||
          !gw::parse_lease_grant(part).first || !gw::parse_watch_message(part).first)
        ++accepted;
    }
  CHECK(accepted == 0);
}

TEST_CASE("gateway: error answers map to corokv's codes") {
  auto unary = [](int code) {
    return gw::parse_error(R"({"error":"e","message":"e","code":)" + std::to_string(code) + "}");
  };
  CHECK(gw::parse_error(lease_not_found_answer) == errc::not_found);
  CHECK(unary(14) == errc::rpc_failed);  // UNAVAILABLE: no leader; another member may serve
  CHECK(unary(2) == errc::rpc_failed);
  CHECK(unary(3) == errc::invalid_argument);
  CHECK(unary(11) == errc::invalid_argument);
  CHECK(unary(4) == errc::timeout);
  CHECK(unary(8) == errc::no_space);
  CHECK(unary(1) == errc::cancelled);
  // Each parser reports the error an answer carries rather than its shape.
  CHECK(gw::parse_lease_revoke(lease_not_found_answer) == errc::not_found);
  CHECK(gw::parse_put(lease_not_found_answer).first == errc::not_found);
  CHECK(gw::parse_create_if_absent(lease_not_found_answer).first == errc::not_found);
  CHECK(gw::parse_range(R"({"error":"etcdserver: no leader","code":14})").first == errc::rpc_failed);
  // In a stream, an error is a message of its own shape.
  const std::string stream_error =
      R"({"error":{"grpc_code":5,"http_code":404,"message":"lease not found","http_status":"Not Found"}})";
  CHECK(gw::parse_lease_keep_alive(stream_error + "\n").first == errc::not_found);
  CHECK(gw::parse_watch_message(stream_error).first == errc::not_found);
  CHECK(gw::parse_watch_message(R"({"error":{"message":"?"}})").first == errc::rpc_failed);
}

TEST_CASE("gateway: line_splitter finds the same messages whatever the chunk boundaries") {
  const std::string stream = std::string(watch_created_line) + "\n" + std::string(watch_put_line) + "\r\n\n  \n" +
                             std::string(watch_delete_line) + "\n";
  const std::vector<std::string> expected{std::string(watch_created_line), std::string(watch_put_line),
                                          std::string(watch_delete_line)};
  auto feed = [&](const std::vector<std::size_t>& cuts) {
    gw::line_splitter lines;
    std::vector<std::string> got;
    std::size_t from = 0;
    for (std::size_t cut : cuts) {
      if (!lines.append(std::string_view(stream).substr(from, cut - from))) return false;
      while (auto line = lines.next()) got.push_back(*line);
      from = cut;
    }
    return got == expected && lines.pending() == 0;
  };
  int failures = 0;
  for (std::size_t a = 0; a <= stream.size(); ++a)
    for (std::size_t b = a; b <= stream.size(); b += 7)
      if (!feed({a, b, stream.size()})) ++failures;
  CHECK(failures == 0);
  std::vector<std::size_t> bytewise;
  for (std::size_t i = 1; i <= stream.size(); ++i) bytewise.push_back(i);
  CHECK(feed(bytewise));

  // Each line is a message the parser reads.
  gw::line_splitter lines;
  REQUIRE(lines.append(stream));
  std::vector<watch_message> messages;
  while (auto line = lines.next()) {
    auto [ec, m] = gw::parse_watch_message(*line);
    CHECK(!ec);
    messages.push_back(m);
  }
  REQUIRE(messages.size() == 3);
  CHECK(messages[0].created);
  CHECK(messages[1].events.at(0).type == watch_event::put);
  CHECK(messages[2].events.at(0).type == watch_event::del);
}

TEST_CASE("gateway: line_splitter holds a partial line and bounds it") {
  gw::line_splitter lines(8);
  CHECK(lines.append("abc"));
  CHECK_FALSE(lines.next().has_value());
  CHECK(lines.pending() == 3);
  CHECK(lines.append("de\n12345678"));  // the unfinished line is 8 bytes: at the bound
  CHECK(lines.next() == std::optional<std::string>("abcde"));
  CHECK_FALSE(lines.next().has_value());
  CHECK_FALSE(lines.append("9"));  // 9 bytes without a newline
  gw::line_splitter big(8);
  CHECK_FALSE(big.append("123456789"));
}

}  // TEST_SUITE("gateway")

// ================================================================ client

TEST_SUITE("client") {

TEST_CASE("client: a call with no endpoints, or with an empty key, fails at once") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    corokv::etcd::client none(io.get_executor(), {});
    CHECK((co_await none.range("k")).first == errc::invalid_argument);
    CHECK(co_await none.watch("k", 0, [](const watch_message&) {}) == errc::invalid_argument);
    corokv::etcd::client c(io.get_executor(), {{{"127.0.0.1", 1}}});
    CHECK((co_await c.range("")).first == errc::invalid_key);
    CHECK((co_await c.put("", "v")).first == errc::invalid_key);
    CHECK((co_await c.delete_if_created_at("k", 0)).first == errc::invalid_argument);
    CHECK((co_await c.grant_lease(0s)).first == errc::invalid_argument);
  });
}

TEST_CASE("client: a server that never answers gives timeout within request_timeout") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    // Listening, never accepting: the kernel completes the handshake, and
    // the request then waits for an answer that does not come.
    asio::ip::tcp::acceptor silent(io, {asio::ip::make_address_v4("127.0.0.1"), 0});
    corokv::etcd::client c(io.get_executor(), {{{"127.0.0.1", silent.local_endpoint().port()}}, 300ms});
    auto t0 = steady::now();
    CHECK((co_await c.range("k")).first == errc::timeout);
    double elapsed = seconds_since(t0);
    CHECK(elapsed >= 0.29);
    CHECK(elapsed < 0.8);
    t0 = steady::now();
    CHECK(co_await c.watch("k", 0, [](const watch_message&) {}) == errc::timeout);
    elapsed = seconds_since(t0);
    CHECK(elapsed >= 0.29);
    CHECK(elapsed < 0.8);
  });
}

TEST_CASE("client: refused endpoints give rpc_failed, and the next endpoint is tried") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    asio::ip::tcp::socket hold_a(io), hold_b(io);
    const std::uint16_t a = refusing_port(hold_a), b = refusing_port(hold_b);
    asio::ip::tcp::acceptor silent(io, {asio::ip::make_address_v4("127.0.0.1"), 0});
    // Both refuse: rpc_failed, at once.
    corokv::etcd::client refused(io.get_executor(), {{{"127.0.0.1", a}, {"127.0.0.1", b}}, 2s});
    auto t0 = steady::now();
    CHECK((co_await refused.range("k")).first == errc::rpc_failed);
    CHECK(seconds_since(t0) < 0.5);
    // The first refuses, the second is reached (and times out: it is silent).
    corokv::etcd::client second(io.get_executor(),
                                {{{"127.0.0.1", a}, {"127.0.0.1", silent.local_endpoint().port()}}, 300ms});
    CHECK((co_await second.range("k")).first == errc::timeout);
  });
}

TEST_CASE("client: an answer that is not the gateway's is protocol_error") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    asio::ip::tcp::acceptor acceptor(io, {asio::ip::make_address_v4("127.0.0.1"), 0});
    auto serve = [&](std::string answer) { return serve_once(acceptor, std::move(answer)); };
    corokv::etcd::client c(io.get_executor(), {{{"127.0.0.1", acceptor.local_endpoint().port()}}, 2s});
    asio::co_spawn(io, serve("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nnope!"),
                   asio::detached);
    CHECK((co_await c.range("k")).first == errc::protocol_error);
    asio::co_spawn(io, serve("SSH-2.0-OpenSSH\r\n\r\n"), asio::detached);
    CHECK((co_await c.range("k")).first == errc::protocol_error);
    // A 404 without the gateway's error object (a wrong path, a proxy).
    asio::co_spawn(io, serve("HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\nConnection: close\r\n\r\nNot Found\n"),
                   asio::detached);
    CHECK((co_await c.range("k")).first == errc::protocol_error);
    // A 503 without one: the member cannot serve; rpc_failed.
    asio::co_spawn(io, serve("HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
                   asio::detached);
    CHECK((co_await c.range("k")).first == errc::rpc_failed);
  });
}

TEST_CASE("client: a watch reads messages cut anywhere by chunks, and how its stream ends decides its result") {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    asio::ip::tcp::acceptor acceptor(io, {asio::ip::make_address_v4("127.0.0.1"), 0});
    corokv::etcd::client c(io.get_executor(), {{{"127.0.0.1", acceptor.local_endpoint().port()}}, 2s});
    std::vector<watch_message> messages;
    auto collect = [&](const watch_message& m) { messages.push_back(m); };
    const std::string created = std::string(watch_created_line) + "\n";
    const std::string put = std::string(watch_put_line) + "\n";

    // etcd cancels the watch (compaction): every message delivered, then no error.
    asio::co_spawn(io, serve_once(acceptor, chunked_response(created + put + std::string(watch_compacted_line) + "\n", 7, false)),
                   asio::detached);
    CHECK(!co_await c.watch("w", 3, collect));
    REQUIRE(messages.size() == 3);
    CHECK(messages[0].created);
    REQUIRE(messages[1].events.size() == 1);
    CHECK(messages[1].events[0].kv.key == "w");
    CHECK(messages[2].canceled);
    CHECK(messages[2].compact_revision == 5);

    // The stream ends (last chunk, then the connection closes): rpc_failed.
    messages.clear();
    asio::co_spawn(io, serve_once(acceptor, chunked_response(created, 100, true)), asio::detached);
    CHECK(co_await c.watch("w", 0, collect) == errc::rpc_failed);
    CHECK(messages.size() == 1);

    // An error inside the stream, or as the answer: its code.
    messages.clear();
    asio::co_spawn(io,
                   serve_once(acceptor, chunked_response(R"({"error":{"grpc_code":11,"message":"future revision"}})"
                                                         "\n",
                                                         5, false)),
                   asio::detached);
    CHECK(co_await c.watch("w", 99, collect) == errc::invalid_argument);
    CHECK(messages.empty());
    const std::string bad_key = R"({"error":"illegal base64 data","message":"illegal base64 data","code":3})";
    asio::co_spawn(io,
                   serve_once(acceptor, "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                                        "Content-Length: " +
                                            std::to_string(bad_key.size()) + "\r\n\r\n" + bad_key),
                   asio::detached);
    CHECK(co_await c.watch("w", 0, collect) == errc::invalid_argument);
    // A message that is not JSON: protocol_error.
    asio::co_spawn(io, serve_once(acceptor, chunked_response(created + "{oops\n", 3, false)), asio::detached);
    CHECK(co_await c.watch("w", 0, collect) == errc::protocol_error);
  });
}

}  // TEST_SUITE("client")

// ================================================================ etcd

TEST_SUITE("etcd") {

TEST_CASE("etcd: range of a missing key is empty, with the store's revision") {
  etcd_process& etcd = shared_etcd();
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    corokv::etcd::client c(io.get_executor(), options_for(etcd));
    auto [ec, r] = co_await c.range(unique_key("missing"));
    CHECK(!ec);
    CHECK(r.kvs.empty());
    CHECK(r.revision >= 1);
  });
}

TEST_CASE("etcd: put then range returns the bytes, binary ones included, and a prefix stops at its end") {
  etcd_process& etcd = shared_etcd();
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    corokv::etcd::client c(io.get_executor(), options_for(etcd));
    const std::string key = unique_key("put") + std::string("\0\xff\x80", 3);
    std::string value;
    for (int i = 255; i >= 0; --i) value += static_cast<char>(i);
    auto [put_ec, revision] = co_await c.put(key, value);
    CHECK(!put_ec);
    CHECK(revision > 0);
    auto [ec, r] = co_await c.range(key);
    CHECK(!ec);
    REQUIRE(r.kvs.size() == 1);
    CHECK(r.kvs[0] == corokv::etcd::key_value{key, value, revision, revision, 1, 0});
    CHECK(r.revision >= revision);

    auto [put2_ec, revision2] = co_await c.put(key, "second");
    CHECK(!put2_ec);
    CHECK(revision2 > revision);
    auto [ec2, r2] = co_await c.range(key);
    REQUIRE(r2.kvs.size() == 1);
    CHECK(r2.kvs[0] == corokv::etcd::key_value{key, "second", revision, revision2, 2, 0});

    const std::string prefix = unique_key("prefix") + "/";
    const std::string past = prefix.substr(0, prefix.size() - 1) + "0";  // '/' + 1: the range's end, excluded
    for (const std::string& k : {prefix + "b", past, prefix + "a", prefix.substr(0, prefix.size() - 1)})
      CHECK(!(co_await c.put(k, "v")).first);
    auto [prefix_ec, listed] = co_await c.range_prefix(prefix);
    CHECK(!prefix_ec);
    REQUIRE(listed.kvs.size() == 2);
    CHECK(listed.kvs[0].key == prefix + "a");
    CHECK(listed.kvs[1].key == prefix + "b");
  });
}

TEST_CASE("etcd: create_if_absent creates once, and a loser sees the winner's value and create_revision") {
  etcd_process& etcd = shared_etcd();
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    corokv::etcd::client c(io.get_executor(), options_for(etcd));
    const std::string key = unique_key("create");
    auto [ec1, first] = co_await c.create_if_absent(key, "owner-1");
    CHECK(!ec1);
    CHECK(first.created);
    CHECK(first.revision > 0);
    CHECK_FALSE(first.existing.has_value());
    auto [ec2, second] = co_await c.create_if_absent(key, "owner-2");
    CHECK(!ec2);
    CHECK_FALSE(second.created);
    REQUIRE(second.existing.has_value());
    CHECK(second.existing->value == "owner-1");
    CHECK(second.existing->create_revision == first.revision);
    CHECK(second.revision >= first.revision);
    auto [ec3, r] = co_await c.range(key);
    REQUIRE(r.kvs.size() == 1);
    CHECK(r.kvs[0].value == "owner-1");

    // Racing callers, on concurrent calls (more than one connection): one wins.
    const std::string raced = unique_key("race");
    constexpr int callers = 6;
    std::vector<corokv::etcd::result<corokv::etcd::create_result>> results(callers);
    int finished = 0;
    for (int i = 0; i < callers; ++i)
      asio::co_spawn(
          io,
          [&, i]() -> asio::awaitable<void> {
            results[i] = co_await c.create_if_absent(raced, "caller-" + std::to_string(i));
            ++finished;
          },
          asio::detached);
    CHECK(co_await eventually([&] { return finished == callers; }, 5s));
    int winners = 0;
    std::string winner_value;
    for (const auto& [ec, res] : results) {
      CHECK(!ec);
      if (res.created) {
        ++winners;
        auto [rec, now] = co_await c.range(raced);
        REQUIRE(now.kvs.size() == 1);
        winner_value = now.kvs[0].value;
      }
    }
    CHECK(winners == 1);
    for (const auto& [ec, res] : results)
      if (!res.created) CHECK((res.existing && res.existing->value == winner_value));
  });
}

TEST_CASE("etcd: a key bound to a lease goes when the lease is revoked") {
  etcd_process& etcd = shared_etcd();
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    corokv::etcd::client c(io.get_executor(), options_for(etcd));
    const std::string key = unique_key("leased");
    auto [grant_ec, lease] = co_await c.grant_lease(30s);
    CHECK(!grant_ec);
    CHECK(lease.id != 0);
    CHECK(lease.ttl == 30);
    auto [create_ec, created] = co_await c.create_if_absent(key, "owner", lease.id);
    CHECK(!create_ec);
    CHECK(created.created);
    auto [ec, r] = co_await c.range(key);
    REQUIRE(r.kvs.size() == 1);
    CHECK(r.kvs[0].lease == lease.id);

    CHECK(!co_await c.revoke_lease(lease.id));
    auto [ec2, after] = co_await c.range(key);
    CHECK(!ec2);
    CHECK(after.kvs.empty());
    // The lease is gone for every call that names it.
    CHECK(co_await c.revoke_lease(lease.id) == errc::not_found);
    CHECK((co_await c.keep_alive_once(lease.id)).first == errc::not_found);
    CHECK((co_await c.put(key, "v", lease.id)).first == errc::not_found);
    CHECK((co_await c.create_if_absent(key, "v", lease.id)).first == errc::not_found);
    auto [ec3, still] = co_await c.range(key);
    CHECK(still.kvs.empty());
  });
}

TEST_CASE("etcd: keep_alive_once keeps a 2 s lease alive past 3 s") {
  etcd_process& etcd = shared_etcd();
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    corokv::etcd::client c(io.get_executor(), options_for(etcd));
    const std::string key = unique_key("kept");
    auto [grant_ec, lease] = co_await c.grant_lease(2s);
    REQUIRE(!grant_ec);
    REQUIRE(lease.ttl == 2);
    CHECK(!(co_await c.put(key, "alive", lease.id)).first);
    const auto t0 = steady::now();
    int renewals = 0;
    while (steady::now() - t0 < 3500ms) {
      auto [ec, ttl] = co_await c.keep_alive_once(lease.id);
      CHECK(!ec);
      CHECK(ttl == 2);
      ++renewals;
      co_await sleep_for(500ms);
    }
    CHECK(renewals >= 6);
    auto [ec, r] = co_await c.range(key);
    CHECK(!ec);
    CHECK(r.kvs.size() == 1);
    CHECK(!co_await c.revoke_lease(lease.id));
  });
}

TEST_CASE("etcd: a lease not kept alive expires, its key with it, within about its TTL plus 1 s") {
  etcd_process& etcd = shared_etcd();
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    corokv::etcd::client c(io.get_executor(), options_for(etcd));
    const std::string key = unique_key("expiring");
    const auto t0 = steady::now();
    auto [grant_ec, lease] = co_await c.grant_lease(2s);
    REQUIRE(!grant_ec);
    REQUIRE(lease.ttl == 2);
    CHECK(!(co_await c.put(key, "soon gone", lease.id)).first);
    // Halfway through its TTL the key is there: what removes it is the lease.
    co_await sleep_for(1s);
    auto [ec, r] = co_await c.range(key);
    CHECK(r.kvs.size() == 1);
    bool gone = false;
    const auto deadline = t0 + 3500ms;  // TTL 2 s + about 1 s, + the lessor's 0.5 s checking period
    while (!gone && steady::now() < deadline) {
      auto [rec, now] = co_await c.range(key);
      CHECK(!rec);
      gone = now.kvs.empty();
      if (!gone) co_await sleep_for(100ms);
    }
    const double elapsed = seconds_since(t0);
    MESSAGE("a 2 s lease expired after ", elapsed, " s");
    CHECK(gone);
    CHECK(elapsed >= 1.9);
    CHECK((co_await c.keep_alive_once(lease.id)).first == errc::not_found);
  });
}

TEST_CASE("etcd: delete_if_created_at deletes only the incarnation it names") {
  etcd_process& etcd = shared_etcd();
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    corokv::etcd::client c(io.get_executor(), options_for(etcd));
    const std::string key = unique_key("incarnation");
    auto [ec1, first] = co_await c.put(key, "one");
    REQUIRE(!ec1);
    auto [ec2, deleted] = co_await c.delete_if_created_at(key, first + 1000);
    CHECK(!ec2);
    CHECK_FALSE(deleted);
    CHECK((co_await c.range(key)).second.kvs.size() == 1);
    auto [ec3, deleted_first] = co_await c.delete_if_created_at(key, first);
    CHECK(!ec3);
    CHECK(deleted_first);
    CHECK((co_await c.range(key)).second.kvs.empty());

    // A new incarnation: the old owner's revision no longer deletes it.
    auto [ec4, second] = co_await c.put(key, "two");
    REQUIRE(!ec4);
    CHECK(second > first);
    auto [ec5, stale] = co_await c.delete_if_created_at(key, first);
    CHECK(!ec5);
    CHECK_FALSE(stale);
    CHECK((co_await c.range(key)).second.kvs.size() == 1);
    auto [ec6, current] = co_await c.delete_if_created_at(key, second);
    CHECK(!ec6);
    CHECK(current);
    auto [ec7, absent] = co_await c.delete_if_created_at(key, second);
    CHECK(!ec7);
    CHECK_FALSE(absent);
  });
}

TEST_CASE("etcd: a watch sees history then live changes in order, and cancel_watches ends it") {
  etcd_process& etcd = shared_etcd();
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    corokv::etcd::client c(io.get_executor(), options_for(etcd));
    const std::string key = unique_key("watched");
    const std::string other = key + "-other";  // a longer key: not watched
    auto [ec1, r1] = co_await c.put(key, "v1");
    REQUIRE(!ec1);
    auto [ec2, deleted] = co_await c.delete_if_created_at(key, r1);
    REQUIRE(deleted);

    std::vector<watch_message> messages;
    std::optional<std::error_code> ended;
    asio::co_spawn(io, c.watch(key, r1, [&](const watch_message& m) { messages.push_back(m); }),
                   [&](std::exception_ptr, std::error_code ec) { ended = ec; });
    auto events = [&] {
      std::vector<watch_event> all;
      for (const auto& m : messages) all.insert(all.end(), m.events.begin(), m.events.end());
      return all;
    };
    // History from r1: the put and the delete.
    CHECK(co_await eventually([&] { return events().size() >= 2; }, 5s));
    REQUIRE_FALSE(messages.empty());
    CHECK(messages.front().created);
    CHECK(messages.front().events.empty());
    // Live: a put of another key is not seen, a put of this one is.
    CHECK(!(co_await c.put(other, "x")).first);
    auto [ec3, r3] = co_await c.put(key, "v3");
    CHECK(!ec3);
    CHECK(co_await eventually([&] { return events().size() >= 3; }, 5s));
    const auto seen = events();
    REQUIRE(seen.size() == 3);
    CHECK(seen[0].type == watch_event::put);
    CHECK(seen[0].kv == corokv::etcd::key_value{key, "v1", r1, r1, 1, 0});
    CHECK(seen[1].type == watch_event::del);
    CHECK(seen[1].kv.key == key);
    CHECK(seen[1].kv.mod_revision == r1 + 1);
    CHECK(seen[2].type == watch_event::put);
    CHECK(seen[2].kv.value == "v3");
    CHECK(seen[2].kv.mod_revision == r3);
    CHECK_FALSE(ended.has_value());

    c.cancel_watches();
    CHECK(co_await eventually([&] { return ended.has_value(); }, 2s));
    CHECK(ended == std::optional<std::error_code>(errc::cancelled));
    // The client still serves calls, and a new watch starts afresh.
    CHECK(!(co_await c.range(key)).first);
  });
}

TEST_CASE("etcd: destroying the client ends its running watches with cancelled") {
  etcd_process& etcd = shared_etcd();
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto c = std::make_unique<corokv::etcd::client>(io.get_executor(), options_for(etcd));
    std::array<std::optional<std::error_code>, 2> ended;
    int created = 0;
    for (std::size_t i = 0; i < ended.size(); ++i)
      asio::co_spawn(io, c->watch(unique_key("orphan"), 0, [&](const watch_message& m) { created += m.created; }),
                     [&ended, i](std::exception_ptr, std::error_code ec) { ended[i] = ec; });
    CHECK(co_await eventually([&] { return created == 2; }, 3s));
    c.reset();
    CHECK(co_await eventually([&] { return ended[0] && ended[1]; }, 2s));
    CHECK(ended[0] == std::optional<std::error_code>(errc::cancelled));
    CHECK(ended[1] == std::optional<std::error_code>(errc::cancelled));
  });
}

TEST_CASE("etcd: an unreachable endpoint is skipped for a live one, by calls and by watches") {
  etcd_process& etcd = shared_etcd();
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    asio::ip::tcp::socket hold(io);
    const std::uint16_t dead = refusing_port(hold);
    corokv::etcd::client c(io.get_executor(), {{{"127.0.0.1", dead}, etcd.endpoint()}, 1s});
    const std::string key = unique_key("failover");
    auto [ec, revision] = co_await c.put(key, "v");
    CHECK(!ec);
    auto [rec, r] = co_await c.range(key);
    CHECK(!rec);
    CHECK(r.kvs.size() == 1);
    bool created = false;
    std::optional<std::error_code> ended;
    asio::co_spawn(io, c.watch(key, 0, [&](const watch_message& m) { created = created || m.created; }),
                   [&](std::exception_ptr, std::error_code e) { ended = e; });
    CHECK(co_await eventually([&] { return created; }, 3s));
    c.cancel_watches();
    CHECK(co_await eventually([&] { return ended.has_value(); }, 2s));
    CHECK(ended == std::optional<std::error_code>(errc::cancelled));
  });
}

TEST_CASE("etcd: a stopped etcd fails calls within request_timeout, and a restarted one serves them again") {
  etcd_process etcd;  // its own: it is stopped and restarted
  run(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        corokv::etcd::client c(io.get_executor(), options_for(etcd, 1s));
        const std::string key = unique_key("restart");
        CHECK(!(co_await c.put(key, "durable")).first);

        etcd.stop();
        auto t0 = steady::now();
        auto [range_ec, nothing] = co_await c.range(key);
        CHECK((range_ec == errc::rpc_failed || range_ec == errc::timeout));
        CHECK(seconds_since(t0) < 1.25);
        t0 = steady::now();
        auto [grant_ec, lease] = co_await c.grant_lease(5s);
        CHECK((grant_ec == errc::rpc_failed || grant_ec == errc::timeout));
        CHECK(seconds_since(t0) < 1.25);

        etcd.start();
        auto [ec, r] = co_await c.range(key);
        CHECK(!ec);
        REQUIRE(r.kvs.size() == 1);
        CHECK(r.kvs[0].value == "durable");

        // A restart between two calls: the kept connection is dead, and the
        // next call must notice that before using it, not fail.
        etcd.stop();
        etcd.start();
        auto [ec2, r2] = co_await c.range(key);
        CHECK(!ec2);
        CHECK(r2.kvs.size() == 1);
      },
      90s);
}

}  // TEST_SUITE("etcd")
