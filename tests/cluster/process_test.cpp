// A cluster of real processes on 127.0.0.1: corokv-master and corokv-node
// executables, each on free ports, driven and killed by these tests.
// Every wait has a deadline; a test never hangs on a process.

#include <corokv/net/data_client.hpp>
#include <corokv/net/remote_metadata.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/asio/write.hpp>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "../support/process.hpp"

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace corokv;
using namespace std::chrono_literals;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using json = nlohmann::json;
using corokv::test::process;
using corokv::test::scratch_dir;
using corokv::test::wait_for_json;

namespace {

std::string message(errc e) { return make_error_code(e).message(); }

struct master_proc {
  std::unique_ptr<process> proc;
  std::uint16_t port = 0, admin_port = 0;
  master_proc(const scratch_dir& dir, std::vector<std::string> extra = {}, std::uint16_t fixed_port = 0) {
    const auto ready = dir / ("master-ready-" + std::to_string(fixed_port) + ".json");
    std::filesystem::remove(ready);
    std::vector<std::string> args{COROKV_MASTER_EXE, "--listen", "127.0.0.1:" + std::to_string(fixed_port),
                                  "--admin", "127.0.0.1:0", "--ready-file", ready.string()};
    args.insert(args.end(), extra.begin(), extra.end());
    proc = std::make_unique<process>(args, dir / "master.out");
    const json j = wait_for_json(ready);
    port = j.at("port").get<std::uint16_t>();
    admin_port = j.at("admin_port").get<std::uint16_t>();
  }
  std::string master_flag() const { return "127.0.0.1:" + std::to_string(port); }

  // GET on the admin port; the body, or empty if unreachable.
  std::string admin_get(const std::string& target) const { return corokv::test::http_get(admin_port, target); }

  // The value of one metric on /metrics, or -1.
  long metric(const std::string& name) const { return corokv::test::metric_of(admin_port, name); }
};

// A serving node with a segment.
struct serving_node {
  std::unique_ptr<process> proc;
  std::uint16_t data_port = 0;
  serving_node(const scratch_dir& dir, const master_proc& m, const std::string& name, std::vector<std::string> extra = {}) {
    const auto ready = dir / (name + "-ready.json");
    std::vector<std::string> args{COROKV_NODE_EXE, "--master", m.master_flag(), "--ready-file", ready.string()};
    args.insert(args.end(), extra.begin(), extra.end());
    proc = std::make_unique<process>(args, dir / (name + ".out"));
    data_port = wait_for_json(ready).at("data_port").get<std::uint16_t>();
  }
};

// Runs a node workload to completion and returns its JSON report.
json run_workload(const scratch_dir& dir, const master_proc& m, const std::string& name, std::vector<std::string> args,
                  int* exit_status = nullptr) {
  std::vector<std::string> all{COROKV_NODE_EXE, "--master", m.master_flag(), "--segment-mib", "0"};
  all.insert(all.end(), args.begin(), args.end());
  process p(all, dir / (name + ".out"));
  const int status = p.wait_exit(30s);
  if (exit_status) *exit_status = status;
  REQUIRE_MESSAGE(status >= 0, name << " did not finish");
  const std::string out = p.output();
  auto j = json::parse(out, nullptr, false);
  REQUIRE_MESSAGE(!j.is_discarded(), name << " printed no report: " << out);
  return j;
}

std::size_t errors_of(const json& report, errc e) {
  return report.at("errors").value(message(e), std::size_t{0});
}

// Rounds of per_round 64 KiB values under prefixes r0-, r1-, ...: after
// each round from the second (the first is below a quarter of the node's
// 2 MiB), waits until the node has demoted everything put so far.
void put_in_rounds_demoting(const scratch_dir& dir, const master_proc& master, int rounds, int per_round) {
  for (int round = 0; round < rounds; ++round) {
    const std::string prefix = "r" + std::to_string(round) + "-";
    const json put = run_workload(dir, master, "put-" + prefix,
                                  {"--no-shm", "--workload", "put", "--prefix", prefix, "--keys",
                                   std::to_string(per_round), "--value-size", "65536"});
    INFO("round ", round, ": ", put.dump());
    REQUIRE(put.at("ok") == per_round);
    if (round == 0) continue;
    long demoted = 0;
    for (int i = 0; i < 200 && demoted < per_round * (round + 1); ++i) {
      std::this_thread::sleep_for(50ms);
      demoted = master.metric("corokv_master_demoted_total");
    }
    REQUIRE(demoted >= per_round * (round + 1));
  }
}

// Reads back every round that put_in_rounds_demoting wrote, from another
// node: how many keys came back exact, absent (not_found) or corrupt.
struct read_back {
  std::size_t ok = 0, absent = 0, corrupt = 0;
};
read_back read_rounds(const scratch_dir& dir, const master_proc& master, const std::string& name, int rounds,
                      int per_round) {
  read_back r;
  for (int round = 0; round < rounds; ++round) {
    const std::string prefix = "r" + std::to_string(round) + "-";
    const json get = run_workload(dir, master, name + prefix,
                                  {"--no-shm", "--workload", "get", "--prefix", prefix, "--keys",
                                   std::to_string(per_round), "--value-size", "65536"});
    r.ok += get.at("ok").get<std::size_t>();
    r.absent += errors_of(get, errc::not_found);
    r.corrupt += get.at("corrupt").get<std::size_t>();
  }
  return r;
}

}  // namespace

TEST_CASE("processes: one node writes, another reads, over TCP") {
  scratch_dir dir;
  master_proc master(dir);
  serving_node a(dir, master, "a", {"--segment-mib", "16", "--no-shm"});
  const json put = run_workload(dir, master, "put", {"--no-shm", "--workload", "put", "--keys", "64", "--value-size", "65536"});
  CHECK(put.at("ok") == 64);
  CHECK(put.at("bytes_by_path").at("tcp") == 64 * 65536);
  const json get = run_workload(dir, master, "get", {"--no-shm", "--workload", "get", "--keys", "64", "--value-size", "65536"});
  CHECK(get.at("ok") == 64);
  CHECK(get.at("corrupt") == 0);
  CHECK(get.at("bytes_by_path").at("tcp") == 64 * 65536);
  CHECK(get.at("bytes_by_path").at("shared_memory") == 0);
  // The node's metrics name the lane that carried each byte.
  CHECK(get.at("lanes").at("tcp").at("bytes_read") == 64 * 65536);
  CHECK(get.at("lanes").at("tcp").at("failures") == 0);
  CHECK(get.at("lanes").at("memcpy").at("bytes_read") == 0);
  CHECK(put.at("lanes").at("tcp").at("bytes_written") == 64 * 65536);
}

TEST_CASE("processes: a same-host reader maps the writer's segment and reads without a socket") {
  scratch_dir dir;
  master_proc master(dir);
  serving_node a(dir, master, "a", {"--segment-mib", "16"});
  const json put = run_workload(dir, master, "put", {"--workload", "put", "--keys", "32", "--value-size", "65536"});
  CHECK(put.at("ok") == 32);
  CHECK(put.at("bytes_by_path").at("shared_memory") == 32 * 65536);
  const json get = run_workload(dir, master, "get", {"--workload", "get", "--keys", "32", "--value-size", "65536"});
  CHECK(get.at("ok") == 32);
  CHECK(get.at("corrupt") == 0);
  CHECK(get.at("bytes_by_path").at("shared_memory") == 32 * 65536);
  CHECK(get.at("bytes_by_path").at("tcp") == 0);
  CHECK(get.at("lanes").at("memcpy").at("bytes_read") == 32 * 65536);
  CHECK(get.at("lanes").at("tcp").at("batches") == 0);
}

TEST_CASE("processes: after a master restart nodes remount and go on: nothing stale is returned") {
  scratch_dir dir;
  // Leases of at most three seconds: a remounted segment is held that long.
  const std::vector<std::string> short_leases{"--max-lease-ttl-ms", "3000"};
  auto master = std::make_unique<master_proc>(dir, short_leases);
  const std::uint16_t port = master->port;
  serving_node a(dir, *master, "a", {"--segment-mib", "8", "--no-shm", "--lease-ttl-ms", "1000"});
  auto workload = [&](const std::string& name, const std::string& kind, const std::string& prefix) {
    return run_workload(dir, *master, name,
                        {"--no-shm", "--lease-ttl-ms", "1000", "--workload", kind, "--prefix", prefix, "--keys", "16",
                         "--value-size", "8192"});
  };
  REQUIRE(workload("put-before", "put", "before-").at("ok") == 16);

  master->proc->signal(SIGTERM);
  CHECK(master->proc->wait_exit(5s) == 0);
  master = std::make_unique<master_proc>(dir, short_leases, port);
  // Node a reconnects and remounts its segment under the same id.
  long segments = -1;
  for (int i = 0; i < 300 && segments != 1; ++i) {
    segments = master->metric("corokv_master_segments");
    if (segments != 1) std::this_thread::sleep_for(20ms);
  }
  REQUIRE(segments == 1);

  const json stale = workload("get-before", "get", "before-");
  CHECK(stale.at("ok") == 0);
  CHECK(errors_of(stale, errc::not_found) == 16);
  // While a lease of the old master may live, its memory takes no new object.
  REQUIRE(master->metric("corokv_master_segments_held") == 1);
  CHECK(errors_of(workload("put-held", "put", "held-"), errc::replicas_unavailable) == 16);
  long held = 1;
  for (int i = 0; i < 400 && held != 0; ++i) {
    held = master->metric("corokv_master_segments_held");
    if (held != 0) std::this_thread::sleep_for(20ms);
  }
  REQUIRE(held == 0);
  CHECK(workload("put-after", "put", "after-").at("ok") == 16);
  const json read = workload("get-after", "get", "after-");
  CHECK(read.at("ok") == 16);
  CHECK(read.at("corrupt") == 0);
}

TEST_CASE("processes: a node killed with SIGKILL: its objects are gone within node_ttl, readers get per-key errors") {
  scratch_dir dir;
  master_proc master(dir, {"--node-ttl-ms", "1000", "--maintenance-ms", "50"});
  serving_node a(dir, master, "a", {"--segment-mib", "8"});
  const json put = run_workload(dir, master, "put", {"--workload", "put", "--keys", "16", "--value-size", "8192"});
  REQUIRE(put.at("ok") == 16);

  a.proc->signal(SIGKILL);
  CHECK(a.proc->wait_exit(5s) == 128 + SIGKILL);
  // At once: the metadata may still list the objects, but their bytes are
  // unreachable; each key fails cleanly, nothing hangs, nothing is corrupt.
  const auto started = std::chrono::steady_clock::now();
  const json early = run_workload(dir, master, "get-early", {"--workload", "get", "--keys", "16", "--value-size", "8192"});
  CHECK(std::chrono::steady_clock::now() - started < 20s);
  CHECK(early.at("ok") == 0);
  CHECK(early.at("corrupt") == 0);
  CHECK(errors_of(early, errc::transfer_failed) + errors_of(early, errc::replicas_unavailable) +
            errors_of(early, errc::segment_not_found) + errors_of(early, errc::not_found) ==
        16);
  // After node_ttl the master has declared it dead and dropped its objects.
  std::this_thread::sleep_for(1500ms);
  const json late = run_workload(dir, master, "get-late", {"--workload", "get", "--keys", "16", "--value-size", "8192"});
  CHECK(errors_of(late, errc::not_found) == 16);
  CHECK(master.metric("corokv_master_segments") == 0);
  CHECK(master.metric("corokv_master_dead_nodes_total") == 1);
}

TEST_CASE("processes: a writer killed mid-put leaves nothing visible: the put timeout reclaims its space") {
  scratch_dir dir;
  // A node lives long; the pending put times out after five seconds: long
  // enough for the two workloads below to run before it, even sanitised on
  // a loaded machine (one second was not: CI saw the put succeed).
  master_proc master(dir, {"--node-ttl-ms", "60000", "--put-timeout-ms", "5000", "--maintenance-ms", "50"});
  serving_node a(dir, master, "a", {"--segment-mib", "1", "--no-shm"});

  // The writer: this test binary in child mode. It reserves the whole
  // segment for "partial", writes half of the value, says so and waits.
  process writer({"/proc/self/exe", "--corokv-child=stalled-writer", "127.0.0.1", std::to_string(master.port),
                  "partial", std::to_string(1 << 20)},
                 dir / "writer.out");
  std::string said;
  for (int i = 0; i < 500 && said.find("reserved") == std::string::npos; ++i) {
    said = writer.output();
    std::this_thread::sleep_for(10ms);
  }
  REQUIRE(said.find("reserved") != std::string::npos);
  writer.signal(SIGKILL);
  writer.wait_exit(5s);

  const json hidden = run_workload(dir, master, "exist-partial",
                                   {"--no-shm", "--workload", "exist", "--prefix", "partial", "--keys", "1"});
  CHECK(errors_of(hidden, errc::not_found) == 1);
  // The reservation still holds the segment: a put of the same size finds no room.
  const json full = run_workload(dir, master, "put-full",
                                 {"--no-shm", "--workload", "put", "--prefix", "big-", "--keys", "1", "--value-size",
                                  std::to_string(1 << 20)});
  INFO("put-full: ", full.dump());
  CHECK(errors_of(full, errc::no_space) == 1);

  long expired = 0;
  for (int i = 0; i < 200 && expired == 0; ++i) {
    std::this_thread::sleep_for(50ms);
    expired = master.metric("corokv_master_expired_puts_total");
  }
  REQUIRE(expired == 1);
  const json reclaimed = run_workload(dir, master, "put-after-timeout",
                                      {"--no-shm", "--workload", "put", "--prefix", "big-", "--keys", "1",
                                       "--value-size", std::to_string(1 << 20)});
  CHECK(reclaimed.at("ok") == 1);
  const json still_hidden = run_workload(dir, master, "exist-partial-late",
                                         {"--no-shm", "--workload", "exist", "--prefix", "partial", "--keys", "1"});
  CHECK(errors_of(still_hidden, errc::not_found) == 1);
  CHECK(master.metric("corokv_master_expired_puts_total") == 1);
}

// The disk tier's process tests: they need a corokv-node built with the
// disk tier (io_uring on); without it they are skipped and counted as such
// (tests/cluster/main.cpp).
TEST_SUITE("disk_tier") {

TEST_CASE("processes: a node's disk tier keeps what its memory cannot: demoted, read by another node from disk") {
  scratch_dir dir;
  // Demotion from a quarter of memory up; the node passes every 100 ms.
  master_proc master(dir, {"--demote-watermark-pct", "25", "--maintenance-ms", "50"});
  serving_node a(dir, master, "a",
                 {"--segment-mib", "2", "--no-shm", "--disk-dir", dir.path.string(), "--disk-mib", "16"});
  // Eight rounds of 512 KiB into 2 MiB of memory, each waiting until the
  // node has copied what is in memory to disk.
  constexpr int rounds = 8, per_round = 8;
  put_in_rounds_demoting(dir, master, rounds, per_round);
  CHECK(master.metric("corokv_master_evicted_total") == 0);  // nothing dropped
  const long disk_only = master.metric("corokv_master_disk_only_objects");
  CHECK(disk_only >= (rounds - 4) * per_round);  // memory holds four rounds at most
  // Another node reads every key over TCP: the disk-only ones from node a's
  // disk, through its data server.
  const read_back r = read_rounds(dir, master, "get-", rounds, per_round);
  CHECK(r.ok == rounds * per_round);
  CHECK(r.corrupt == 0);
  CHECK(a.proc->errors().find("O_DIRECT") != std::string::npos);
}

TEST_CASE("processes: a node with a disk tier killed with SIGKILL and restarted: its disk copies come back exact") {
  scratch_dir dir;
  // The master declares a silent node dead after three seconds (nodes
  // heartbeat every second); the restarted node waits for that to mount its
  // file under the same segment id.
  master_proc master(dir, {"--demote-watermark-pct", "25", "--maintenance-ms", "50", "--node-ttl-ms", "3000"});
  const auto disk_dir = dir / "disk";
  std::filesystem::create_directories(disk_dir);
  const std::vector<std::string> node_flags{"--segment-mib", "2",          "--no-shm", "--disk-dir",
                                            disk_dir.string(), "--disk-mib", "16"};
  auto a = std::make_unique<serving_node>(dir, master, "a", node_flags);
  constexpr int rounds = 6, per_round = 8;
  put_in_rounds_demoting(dir, master, rounds, per_round);
  const long copies = master.metric("corokv_master_demoted_total");
  std::this_thread::sleep_for(300ms);  // a pass or two more: the index has every copy
  a->proc->signal(SIGKILL);
  CHECK(a->proc->wait_exit(5s) == 128 + SIGKILL);

  a = std::make_unique<serving_node>(dir, master, "a-again", node_flags);
  const std::string log = a->proc->errors();
  CHECK(log.find(std::to_string(copies) + " copies found, 0 corrupt, " + std::to_string(copies) + " taken back") !=
        std::string::npos);
  // Every key: back with its exact bytes (it had a disk copy) or cleanly
  // absent (it lived in memory only). Nothing wrong is read.
  const read_back r = read_rounds(dir, master, "get-again-", rounds, per_round);
  CHECK(r.ok == static_cast<std::size_t>(copies));
  CHECK(r.ok + r.absent == rounds * per_round);
  CHECK(r.corrupt == 0);
  CHECK(master.metric("corokv_master_disk_only_objects") == copies);
}

TEST_CASE("processes: a node with a disk tier stopped until the master declares it dead, then resumed: its disk copies come back while it runs") {
  scratch_dir dir;
  master_proc master(dir, {"--demote-watermark-pct", "25", "--maintenance-ms", "50", "--node-ttl-ms", "3000"});
  serving_node a(dir, master, "a",
                 {"--segment-mib", "2", "--no-shm", "--disk-dir", dir.path.string(), "--disk-mib", "16"});
  constexpr int rounds = 6, per_round = 8;
  put_in_rounds_demoting(dir, master, rounds, per_round);
  std::this_thread::sleep_for(300ms);  // a pass or two more: the index has every copy
  const long copies = master.metric("corokv_master_demoted_total");
  // Stopped (as if cut off) longer than node_ttl: declared dead, its
  // segments dropped, every object it held gone from the master.
  a.proc->signal(SIGSTOP);
  long dead = 0;
  for (int i = 0; i < 300 && dead == 0; ++i) {
    std::this_thread::sleep_for(50ms);
    dead = master.metric("corokv_master_dead_nodes_total");
  }
  REQUIRE(dead == 1);
  CHECK(master.metric("corokv_master_disk_only_objects") == 0);
  CHECK(master.metric("corokv_master_disks_away") == 1);
  // Resumed: its connection registers it again and mounts its memory and
  // disk again; the tier's next pass offers the disk's copies.
  a.proc->signal(SIGCONT);
  long away = 1;
  for (int i = 0; i < 300 && away != 0; ++i) {
    std::this_thread::sleep_for(50ms);
    away = master.metric("corokv_master_disks_away");
  }
  REQUIRE(away == 0);
  CHECK(master.metric("corokv_master_disk_only_objects") == copies);
  const read_back r = read_rounds(dir, master, "get-back-", rounds, per_round);
  CHECK(r.ok == static_cast<std::size_t>(copies));  // every disk copy, exact
  CHECK(r.ok + r.absent == rounds * per_round);      // the memory-only ones cleanly gone
  CHECK(r.corrupt == 0);
}

}  // TEST_SUITE("disk_tier")

TEST_CASE("processes: malformed and truncated frames close that connection: master and data server go on") {
  scratch_dir dir;
  master_proc master(dir);
  serving_node a(dir, master, "a", {"--segment-mib", "8", "--no-shm"});
  asio::io_context io;
  auto attack = [&](std::uint16_t port, const std::string& bytes) {
    tcp::socket s(io);
    s.connect({asio::ip::make_address("127.0.0.1"), port});
    asio::write(s, asio::buffer(bytes));
    if (bytes.size() < wire::header_size) s.shutdown(tcp::socket::shutdown_send);  // truncated: the peer goes away
    std::array<char, 16> buf{};
    boost::system::error_code ec;
    s.read_some(asio::buffer(buf), ec);
    return ec == asio::error::eof || ec == asio::error::connection_reset;
  };
  const std::string garbage(64, '\x7f');
  const std::string truncated("CK\x01", 3);
  CHECK(attack(master.port, garbage));
  CHECK(attack(master.port, truncated));
  CHECK(attack(a.data_port, garbage));
  CHECK(attack(a.data_port, truncated));
  CHECK(master.metric("corokv_master_protocol_errors_total") == 1);  // the truncated one is a hang-up, not an error

  const json put = run_workload(dir, master, "put", {"--no-shm", "--workload", "put", "--keys", "8", "--value-size", "4096"});
  CHECK(put.at("ok") == 8);
  const json get = run_workload(dir, master, "get", {"--no-shm", "--workload", "get", "--keys", "8", "--value-size", "4096"});
  CHECK(get.at("ok") == 8);
  CHECK(get.at("corrupt") == 0);
  CHECK(a.proc->running());
}

// Issue 22: a storm of calls, a third of them cancelled within a few
// milliseconds, from clients (children of this binary: cancel_storm.cpp)
// whose reads also name keys of a node that died without leaving: its
// segment is still listed, its data port refuses. Each client has a segment
// of its own; a live node serves the rest over TCP. Every call must
// complete, with its results or as cancelled; no client may crash.
// COROKV_CANCEL_STORM_SECONDS sets how long they storm: 10 s in the suite,
// 60 s for the long run (see CONTRIBUTING.md, "How the tests are organised").
TEST_CASE("processes: a cancellation storm with a dead peer: every call completes, with its results or cancelled") {
  const char* seconds_env = std::getenv("COROKV_CANCEL_STORM_SECONDS");
  const int seconds = seconds_env ? std::max(1, std::atoi(seconds_env)) : 10;
  scratch_dir dir;
  master_proc master(dir, {"--node-ttl-ms", "3600000"});  // the dead node stays listed throughout
  std::uint16_t dead_port = 0;
  {
    serving_node dead(dir, master, "dead", {"--segment-mib", "16", "--no-shm"});
    dead_port = dead.data_port;
    const json held = run_workload(dir, master, "held",
                                   {"--no-shm", "--workload", "put", "--prefix", "held-", "--keys", "64",
                                    "--value-size", "16384"});
    REQUIRE(held.at("ok") == 64);
    dead.proc->signal(SIGKILL);
    REQUIRE(dead.proc->wait_exit(5s) == 128 + SIGKILL);
  }
  asio::io_context io;
  tcp::socket probe(io);
  boost::system::error_code refused;
  probe.connect({asio::ip::make_address("127.0.0.1"), dead_port}, refused);
  CHECK(refused == asio::error::connection_refused);
  serving_node live(dir, master, "live", {"--segment-mib", "32", "--no-shm"});
  CHECK(master.metric("corokv_master_segments") == 2);  // the dead node's segment is still listed

  // Two clients at once: one with a single I/O thread (as Python's
  // ClusterStore), one with two; rounds of 200 calls each.
  auto client = [&](const std::string& name, int threads) {
    return std::make_unique<process>(
        std::vector<std::string>{"/proc/self/exe", "--corokv-child=cancel-storm", "127.0.0.1",
                                 std::to_string(master.port), std::to_string(seconds), std::to_string(threads), "200",
                                 name + "-", "held-", "64"},
        dir / ("storm-" + name + ".out"));
  };
  auto one = client("one", 1);
  auto two = client("two", 2);
  for (auto* c : {one.get(), two.get()}) {
    const int status = c->wait_exit(std::chrono::seconds(seconds + 120));
    INFO("report: ", c->output(), "\nstderr: ", c->errors().substr(0, 4000));
    CHECK(status == 0);  // not a signal (SIGSEGV: 139), not a sanitizer's report
    const json report = json::parse(c->output(), nullptr, false);
    REQUIRE(!report.is_discarded());
    MESSAGE(report.dump());
    CHECK(report.at("rounds").get<long>() > 0);
    CHECK(report.at("calls") == report.at("completed"));
    CHECK(report.at("call_errors").empty());  // no call ended with anything but its results or cancelled
    CHECK(report.at("corrupt") == 0);
    CHECK(report.at("dead_keys_read") == 0);
    CHECK(report.at("cancel_requests").get<long>() > 0);
    CHECK(report.at("cancelled").get<long>() > 0);
    for (const char* op : {"put", "get_into", "get_owned", "remove", "exist_prefix"})
      CHECK_MESSAGE(report.at("by_operation").value(op, 0) > 0, op);
  }
  CHECK(live.proc->running());
  CHECK(master.proc->running());
}

// ------------------------------------------------------------ child modes
// The stalled writer: registers, reserves `size` bytes for `key`, writes
// the first half of the value into its replica, reports and waits to be
// killed. Returns the exit status.
int stalled_writer_main(const std::string& host, std::uint16_t port, const std::string& key, std::uint64_t size) {
  asio::io_context io;
  net::remote_metadata_options o;
  o.host = host;
  o.port = port;
  net::remote_metadata metadata(io.get_executor(), o);
  auto fut = asio::co_spawn(
      io,
      [&]() -> asio::awaitable<int> {
        const node_id node = 0x5747;
        if (co_await metadata.register_node(node)) co_return 2;
        const std::vector<std::string> keys{key};
        const std::vector<std::uint64_t> sizes{size};
        std::vector<put_start_result> started(1);
        if (co_await metadata.put_start(keys, sizes, put_options{}, node, started) || !started[0].ok()) co_return 3;
        auto [segments_ec, segments] = co_await metadata.list_segments();
        if (segments_ec || segments.empty()) co_return 4;
        const replica_descriptor r = started[0].replicas[0];
        std::uint16_t data_port = 0;
        for (auto& d : segments)
          if (d.id == r.segment) data_port = d.endpoints.tcp_port;
        std::vector<char> half(size / 2, 'p');
        std::vector<memory::write_request> writes{{{r.segment, r.node, r.offset, half.size()}, asio::buffer(half)}};
        std::vector<errc> status(1);
        net::data_client client;
        const net::data_peer peer{asio::ip::make_address("127.0.0.1"), data_port};
        co_await client.write(peer, writes, status);
        if (status[0] != errc::success) co_return 5;
        std::printf("reserved\n");
        std::fflush(stdout);
        co_return 0;
      },
      asio::use_future);
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (fut.wait_for(0s) != std::future_status::ready && std::chrono::steady_clock::now() < until)
    io.run_one_for(50ms);
  if (fut.wait_for(0s) != std::future_status::ready) return 6;
  const int rc = fut.get();
  if (rc != 0) return rc;
  for (;;) ::pause();  // until killed
}

TEST_CASE("processes: SIGINT in the middle of a workload cancels it and ends the node cleanly") {
  scratch_dir dir;
  master_proc master(dir);
  serving_node a(dir, master, "a", {"--segment-mib", "8", "--no-shm"});
  // Far more batches than can finish before the signal: each one in flight
  // when it comes is cancelled, and the store is destroyed only after.
  process reader({COROKV_NODE_EXE, "--master", master.master_flag(), "--segment-mib", "0", "--no-shm", "--workload",
                  "get", "--keys", "50000000", "--value-size", "4096", "--ready-file", (dir / "reader.json").string()},
                 dir / "reader.out");
  // Its signal handler is installed before it writes the ready file (a
  // sanitised node under load takes more than a second to get there).
  wait_for_json(dir / "reader.json", 30s);
  std::this_thread::sleep_for(500ms);
  REQUIRE(reader.running());
  reader.signal(SIGINT);
  CHECK(reader.wait_exit(10s) == 130);
  std::ifstream err(dir / "reader.out.err");
  std::stringstream said;
  said << err.rdbuf();
  CHECK(said.str().find("interrupted") != std::string::npos);
  // The serving node is unaffected: a SIGTERM ends it with success.
  a.proc->signal(SIGTERM);
  CHECK(a.proc->wait_exit(10s) == 0);
}
