// Replicated masters as real processes: a real etcd, three corokv-master
// processes, two corokv-node processes serving memory, and a workload in
// this process that finds the leader through etcd (cluster_options::
// master_url). Masters are killed (-9), stopped (SIGSTOP) and etcd itself is
// restarted while the workload runs; every put acknowledged must read back
// with its exact bytes, and no read may ever return wrong bytes.
//
// Hosts: every process here shares this host's loopback interface (the
// test says so in its output); see the README's limitations.

#include "../net/cluster_support.hpp"
#include "../support/process.hpp"
#include "etcd_process.hpp"

#include <corokv/cluster.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <fstream>
#include <optional>

using namespace cluster_support;
using corokv::test::etcd_process;
using corokv::test::process;
using corokv::test::scratch_dir;
using corokv::test::wait_for_json;

namespace {

constexpr int lease_ttl_s = 2;

struct ha_master {
  std::string name;
  std::unique_ptr<process> proc;
  std::uint16_t port = 0, admin_port = 0;
};

struct leader_info {
  std::int64_t term = 0;
  std::uint16_t port = 0;
};

// etcd, three masters and two serving nodes, all processes.
struct ha_cluster {
  etcd_process etcd;
  scratch_dir dir;
  std::vector<ha_master> masters;
  std::vector<std::unique_ptr<process>> nodes;
  io_thread client_io;

  ha_cluster() {
    MESSAGE("hosts: every process shares 127.0.0.1 (no network namespaces in this test)");
    for (int i = 0; i < 3; ++i) masters.push_back({"m" + std::to_string(i), nullptr, 0, 0});
    for (auto& m : masters) start_master(m);
    REQUIRE(wait_leader(0, 10s));
    for (int i = 0; i < 2; ++i) {
      const auto ready = dir / ("node" + std::to_string(i) + ".json");
      nodes.push_back(std::make_unique<process>(
          std::vector<std::string>{COROKV_NODE_EXE, "--master", url(), "--segment-mib", "32", "--no-shm",
                                   "--lease-ttl-ms", "4000", "--ready-file", ready.string()},
          dir / ("node" + std::to_string(i) + ".out")));
      wait_for_json(ready, 15s);
    }
  }

  std::string url() const { return "etcd://127.0.0.1:" + std::to_string(etcd.client_port()) + "/t"; }

  void start_master(ha_master& m) {
    const auto ready = dir / (m.name + ".json");
    std::filesystem::remove(ready);
    m.proc = std::make_unique<process>(
        std::vector<std::string>{COROKV_MASTER_EXE, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
                                 "--ready-file", ready.string(), "--etcd",
                                 "127.0.0.1:" + std::to_string(etcd.client_port()), "--cluster", "t", "--name", m.name,
                                 "--lease-ttl-s", std::to_string(lease_ttl_s), "--max-lease-ttl-ms", "8000",
                                 "--node-ttl-ms", "6000"},
        dir / (m.name + ".out"));
    const auto j = wait_for_json(ready);
    m.port = j.at("port").get<std::uint16_t>();
    m.admin_port = j.at("admin_port").get<std::uint16_t>();
  }

  // The leader key as etcd has it now.
  std::optional<leader_info> leader() {
    etcd::client c(client_io.io.get_executor(), {{etcd.endpoint()}, 500ms});
    auto f = asio::co_spawn(client_io.io, c.range("/corokv/t/leader"), asio::use_future);
    auto [ec, r] = f.get();
    if (ec || r.kvs.empty()) return std::nullopt;
    const auto colon = r.kvs[0].value.rfind(':');
    return leader_info{r.kvs[0].create_revision,
                       static_cast<std::uint16_t>(std::stoi(r.kvs[0].value.substr(colon + 1)))};
  }

  // Waits for a leader in a term above `after`, at most `limit`.
  std::optional<leader_info> wait_leader(std::int64_t after, std::chrono::milliseconds limit) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < until) {
      if (auto l = leader(); l && l->term > after) return l;
      std::this_thread::sleep_for(10ms);
    }
    return std::nullopt;
  }

  ha_master& master_at(std::uint16_t port) {
    for (auto& m : masters)
      if (m.port == port) return m;
    FAIL("no master on port " << port);
    return masters.front();
  }

  // Waits until the leader counts `n` followers in sync.
  bool wait_in_sync(long n, std::chrono::milliseconds limit = 15s) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < until) {
      if (auto l = leader()) {
        if (corokv::test::metric_of(master_at(l->port).admin_port, "corokv_master_followers_in_sync") >= n)
          return true;
      }
      std::this_thread::sleep_for(20ms);
    }
    return false;
  }

  // A store is built in place: it lives in a box on the heap.
  struct store_box {
    cluster_store kv;
    store_box(asio::any_io_executor ex, cluster_options o) : kv(make_cluster_store(ex, std::move(o))) {}
  };

  // A client of the cluster that contributes no memory and finds the leader through etcd.
  std::unique_ptr<store_box> client() {
    cluster_options o;
    o.master_url = url();
    o.master.request_timeout = 3s;
    o.transport.serve = false;
    o.transport.shared_memory = false;
    o.store.lease_ttl = 4s;
    return std::make_unique<store_box>(client_io.io.get_executor(), o);
  }
};

// Puts `d`; the keys acknowledged.
std::vector<std::size_t> put_acknowledged(cluster_store& kv, const dataset& d) {
  auto [ec, put] = wait(kv.batch_put(d.keys, d.value_buffers, asio::deferred));
  std::vector<std::size_t> ok;
  if (ec) return ok;
  for (std::size_t i = 0; i < put.size(); ++i)
    if (put[i] == errc::success) ok.push_back(i);
  return ok;
}

// A workload on its own thread: batches of puts, each followed by a read of
// an earlier batch. Counts what was acknowledged and any wrong byte read.
struct workload {
  cluster_store& kv;
  std::vector<std::unique_ptr<dataset>> batches;
  std::vector<std::vector<std::size_t>> acknowledged;
  std::atomic<bool> stop{false};
  std::atomic<std::size_t> corrupt{0}, read_ok{0}, read_failed{0}, put_ok{0}, put_failed{0};
  std::thread runner;

  explicit workload(cluster_store& store) : kv(store) {
    runner = std::thread([this] {
      for (std::size_t round = 0; !stop; ++round) {
        std::this_thread::sleep_for(5ms);
        auto d = std::make_unique<dataset>("w" + std::to_string(round) + "-", 16, 4096);
        auto ok = put_acknowledged(kv, *d);
        put_ok += ok.size();
        put_failed += d->keys.size() - ok.size();
        batches.push_back(std::move(d));
        acknowledged.push_back(std::move(ok));
        // No doctest assertion on this thread: outcomes are counted.
        const dataset& earlier = *batches[round * 7919 % batches.size()];
        std::vector<std::vector<char>> out(earlier.keys.size(), std::vector<char>(4096));
        std::vector<asio::mutable_buffer> buffers;
        for (auto& b : out) buffers.push_back(asio::buffer(b));
        auto [ec, got] = wait(kv.batch_get(earlier.keys, buffers, asio::deferred));
        if (ec) {
          read_failed += earlier.keys.size();
          continue;
        }
        for (std::size_t i = 0; i < got.size(); ++i) {
          if (got[i].status != errc::success)
            ++read_failed;
          else if (out[i] != earlier.values[i])
            ++corrupt;
          else
            ++read_ok;
        }
      }
    });
  }
  void finish() {
    stop = true;
    runner.join();
  }
};

// Every acknowledged key of the workload, read back through `kv`.
void check_acknowledged(cluster_store& kv, workload& w) {
  std::size_t checked = 0, missing = 0, wrong = 0;
  for (std::size_t b = 0; b < w.batches.size(); ++b) {
    std::vector<bool> intact;
    const auto status = read_back(kv, *w.batches[b], &intact);
    for (std::size_t i : w.acknowledged[b]) {
      ++checked;
      if (status[i] != errc::success)
        ++missing;
      else if (!intact[i])
        ++wrong;
    }
  }
  MESSAGE("acknowledged puts read back: " << checked << ", missing " << missing << ", wrong bytes " << wrong);
  CHECK(checked > 0);
  CHECK(missing == 0);
  CHECK(wrong == 0);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

TEST_CASE("ha: kill -9 the leader five times under load: a follower leads within two lease TTLs and nothing acknowledged is lost" *
          doctest::test_suite("etcd")) {
  ha_cluster c;
  auto box = c.client();
  cluster_store* kv = &box->kv;
  workload w(*kv);
  std::vector<double> windows;
  for (int kill = 0; kill < 5; ++kill) {
    INFO("kill " << kill);
    REQUIRE(c.wait_in_sync(2));
    auto old = c.leader();
    REQUIRE(old);
    // Leases taken before the kill are read while no master leads.
    dataset held("held" + std::to_string(kill) + "-", 8, 4096);
    put_all(*kv, held);
    auto [q_ec, leases] = wait(kv->batch_query(held.keys, asio::deferred));
    REQUIRE(!q_ec);

    ha_master& victim = c.master_at(old->port);
    const auto killed_at = std::chrono::steady_clock::now();
    victim.proc->kill_now();

    std::vector<std::vector<char>> out(held.keys.size(), std::vector<char>(4096));
    std::vector<asio::mutable_buffer> buffers;
    for (auto& b : out) buffers.push_back(asio::buffer(b));
    auto [g_ec, got] = wait(kv->batch_get(held.keys, leases, buffers, asio::deferred));
    REQUIRE(!g_ec);
    for (std::size_t i = 0; i < got.size(); ++i) {
      CHECK(got[i].status == errc::success);
      CHECK(out[i] == held.values[i]);
    }

    auto now = c.wait_leader(old->term, 10s);
    REQUIRE(now);
    const double window = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count();
    windows.push_back(window);
    CHECK(window <= 2.0 * lease_ttl_s);
    CHECK(now->port != old->port);

    c.start_master(victim);  // it comes back as a follower and catches up from a snapshot
    check_read_back(*kv, held);
    std::this_thread::sleep_for(300ms);  // the workload runs under the new leader too
  }
  w.finish();
  REQUIRE(c.wait_in_sync(2));
  check_acknowledged(*kv, w);
  CHECK(w.corrupt == 0);
  CHECK(w.put_ok > 0);
  CHECK(w.read_ok > 0);
  const double longest = *std::max_element(windows.begin(), windows.end());
  MESSAGE("windows without a leader (s): median " << median(windows) << ", longest " << longest
          << "; workload: " << w.put_ok.load() << " puts acknowledged, " << w.put_failed.load() << " failed, "
          << w.read_ok.load() << " reads, " << w.read_failed.load() << " failed, " << w.corrupt.load() << " wrong");
  if (const char* report = std::getenv("COROKV_HA_REPORT")) {
    std::ofstream out(report);
    out << nlohmann::json{{"lease_ttl_s", lease_ttl_s}, {"windows_s", windows}, {"median_s", median(windows)},
                          {"longest_s", longest}, {"puts_acknowledged", w.put_ok.load()},
                          {"puts_failed", w.put_failed.load()}, {"reads_ok", w.read_ok.load()},
                          {"reads_failed", w.read_failed.load()}, {"wrong_bytes", w.corrupt.load()}}
               .dump(2)
        << "\n";
  }
}

TEST_CASE("ha: a leader stopped past its lease is fenced: resumed, it answers nothing and clients ignore it" *
          doctest::test_suite("etcd")) {
  ha_cluster c;
  auto box = c.client();
  cluster_store* kv = &box->kv;
  REQUIRE(c.wait_in_sync(2));
  dataset before("before-", 16, 4096);
  put_all(*kv, before);
  auto old = c.leader();
  REQUIRE(old);
  ha_master& stopped = c.master_at(old->port);
  stopped.proc->signal(SIGSTOP);
  auto now = c.wait_leader(old->term, 10s);
  REQUIRE(now);
  dataset during("during-", 16, 4096);
  put_all(*kv, during);  // through the new leader
  stopped.proc->signal(SIGCONT);

  // The resumed master answers no request: its connection closes unanswered.
  asio::io_context io;
  tcp::socket s(io);
  s.connect({asio::ip::make_address("127.0.0.1"), stopped.port});
  std::vector<std::byte> frame;
  REQUIRE(net::append_frame(wire::message_type::exist, false, 1, wire::keys_request{{"before-0"}}, frame) ==
          errc::success);
  asio::write(s, asio::buffer(frame));
  std::array<std::byte, 64> reply{};
  boost::system::error_code ec;
  const std::size_t n = s.read_some(asio::buffer(reply), ec);
  CHECK(n == 0);
  CHECK((ec == asio::error::eof || ec == asio::error::connection_reset));
  const auto until = std::chrono::steady_clock::now() + 5s;
  while (corokv::test::metric_of(stopped.admin_port, "corokv_master_leader") != 0 &&
         std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(20ms);
  CHECK(corokv::test::metric_of(stopped.admin_port, "corokv_master_leader") == 0);
  CHECK(corokv::test::metric_of(stopped.admin_port, "corokv_master_step_downs_total") >= 1);

  // The client goes on with the new leader and reads everything.
  check_read_back(*kv, before);
  check_read_back(*kv, during);
  dataset after("after-", 16, 4096);
  put_all(*kv, after);
  check_read_back(*kv, after);
  CHECK(c.leader()->term == now->term);
}

TEST_CASE("ha: etcd restarted: the leader serves while its lease holds, steps down when it cannot renew, and a leader returns" *
          doctest::test_suite("etcd")) {
  ha_cluster c;
  auto box = c.client();
  cluster_store* kv = &box->kv;
  REQUIRE(c.wait_in_sync(2));
  dataset a("a-", 16, 4096);
  put_all(*kv, a);
  const auto old = c.leader();
  REQUIRE(old);
  ha_master& leader = c.master_at(old->port);

  c.etcd.stop();
  dataset b("b-", 16, 4096);
  put_all(*kv, b);  // at once: the lease still holds
  // It cannot renew: within the lease TTL it stops leading.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(lease_ttl_s + 2);
  while (corokv::test::metric_of(leader.admin_port, "corokv_master_leader") != 0 &&
         std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(20ms);
  CHECK(corokv::test::metric_of(leader.admin_port, "corokv_master_leader") == 0);
  auto [ec, put] = wait(kv->batch_put(std::vector<std::string>{"c-0"}, std::vector<asio::const_buffer>{asio::buffer(a.values[0])},
                                      asio::deferred));
  CHECK((ec || put[0] != errc::success));  // no master answers now

  c.etcd.start();
  REQUIRE(c.wait_leader(old->term, 20s));
  check_read_back(*kv, a);
  check_read_back(*kv, b);
}
