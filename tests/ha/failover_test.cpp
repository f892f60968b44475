// Replicated masters as real processes: a real etcd, three corokv-master
// processes, two corokv-node processes serving memory, and a workload in
// this process that finds the leader through etcd (cluster_options::
// master_url). Masters are killed (-9), stopped (SIGSTOP) and etcd itself is
// restarted while the workload runs; every put acknowledged must read back
// with its exact bytes, and no read may ever return wrong bytes.
//
// Hosts: each master and node runs on a host of its own, a network
// namespace linked to this one by a veth pair and a bridge (test_hosts.hpp);
// where namespaces cannot be made, all share 127.0.0.1, and the test says so.

#include "../support/cluster.hpp"
#include "../support/process.hpp"
#include "../support/etcd_process.hpp"
#include "../support/test_hosts.hpp"

#include <corokv/cluster.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <set>

using namespace cluster_support;
using corokv::test::etcd_process;
using corokv::test::process;
using corokv::test::scratch_dir;
using corokv::test::test_hosts;
using corokv::test::wait_for_json;

namespace {

constexpr int lease_ttl_s = 2;

struct ha_master {
  std::string name;
  std::size_t host = 0;
  std::unique_ptr<process> proc;
  std::string address;  // the metadata port's HOST:PORT, as the leader key holds it
  std::string admin_host;
  std::uint16_t port = 0, admin_port = 0;
  int lives = 0;  // processes started: each writes its own log
  long metric(const std::string& sample) const { return corokv::test::metric_of(admin_host, admin_port, sample); }
  // What the current process logged (its role changes).
  std::string log() const { return proc ? proc->errors() : std::string(); }
};

struct leader_info {
  std::int64_t term = 0;
  std::string address;
};

// etcd, three masters and two serving nodes, all processes.
struct ha_cluster_options {
  int segment_mib = 32;         // each node's memory
  int max_lease_ttl_ms = 8000;  // also how long a new leader holds all memory it took over
};

struct ha_cluster {
  ha_cluster_options options;
  std::unique_ptr<test_hosts> hosts = test_hosts::make(5);  // 3 masters, 2 nodes
  etcd_process etcd{std::chrono::seconds(20), hosts ? hosts->bridge_address() : std::string()};
  scratch_dir dir;
  std::vector<ha_master> masters;
  std::vector<std::unique_ptr<process>> nodes;
  io_thread client_io;

  explicit ha_cluster(ha_cluster_options o = {}) : options(o) {
    if (hosts)
      MESSAGE("hosts: masters and nodes on network namespaces " << host_address(0) << " to " << host_address(4)
                                                                << "; etcd and this test in the test's own namespace, " << etcd_host());
    else
      MESSAGE("hosts: network namespaces cannot be made here (not root, or no iproute2): every process shares "
              "127.0.0.1");
    for (std::size_t i = 0; i < 3; ++i) {
      masters.emplace_back();
      masters.back().name = "m" + std::to_string(i);
      masters.back().host = i;
    }
    for (auto& m : masters) start_master(m);
    REQUIRE(wait_leader(0, 10s));
    for (std::size_t i = 0; i < 2; ++i) {
      const auto ready = dir / ("node" + std::to_string(i) + ".json");
      const std::string here = host_address(3 + i);
      nodes.push_back(std::make_unique<process>(
          on_host(3 + i, {COROKV_NODE_EXE, "--master", url(etcd_host()), "--segment-mib", std::to_string(options.segment_mib), "--no-shm",
                          "--data-listen", here + ":0", "--advertise", here, "--lease-ttl-ms", "4000",
                          "--ready-file", ready.string()}),
          dir / ("node" + std::to_string(i) + ".out")));
      wait_for_json(ready, 15s);
    }
  }

  std::string etcd_host() const { return hosts ? hosts->bridge_address() : "127.0.0.1"; }
  std::string host_address(std::size_t i) const { return hosts ? hosts->address(i) : "127.0.0.1"; }
  std::vector<std::string> on_host(std::size_t i, std::vector<std::string> args) const {
    return hosts ? hosts->on_host(i, std::move(args)) : args;
  }
  // This process's way in (etcd on loopback); processes on hosts use etcd_host().
  std::string url(const std::string& host = "127.0.0.1") const {
    return "etcd://" + host + ":" + std::to_string(etcd.client_port()) + "/t";
  }

  void start_master(ha_master& m) {
    launch_master(m);
    await_master(m);
  }

  // Starts the master's process without waiting for it (await_master does).
  void launch_master(ha_master& m) {
    const auto ready = dir / (m.name + ".json");
    std::filesystem::remove(ready);
    const std::string here = host_address(m.host);
    m.proc = std::make_unique<process>(
        on_host(m.host, {COROKV_MASTER_EXE, "--listen", here + ":0", "--admin", here + ":0", "--ready-file",
                         ready.string(), "--etcd", etcd_host() + ":" + std::to_string(etcd.client_port()),
                         "--cluster", "t", "--name", m.name, "--lease-ttl-s", std::to_string(lease_ttl_s),
                         "--max-lease-ttl-ms", std::to_string(options.max_lease_ttl_ms), "--node-ttl-ms", "6000",
                         // A follower is cut off after this long without acknowledging: far
                         // beyond what a loaded CI machine takes, so that none is here.
                         "--ack-timeout-ms", "5000"}),
        dir / (m.name + "-" + std::to_string(++m.lives) + ".out"));
  }

  void await_master(ha_master& m) {
    const std::string here = host_address(m.host);
    const auto j = wait_for_json(dir / (m.name + ".json"));
    m.port = j.at("port").get<std::uint16_t>();
    m.admin_port = j.at("admin_port").get<std::uint16_t>();
    m.admin_host = here;
    m.address = here + ":" + std::to_string(m.port);
  }

  // The leader key as etcd has it now.
  std::optional<leader_info> leader() {
    etcd::client c(client_io.io.get_executor(), {{etcd.endpoint()}, 500ms});
    auto f = asio::co_spawn(client_io.io, c.range("/corokv/t/leader"), asio::use_future);
    auto [ec, r] = f.get();
    if (ec || r.kvs.empty()) return std::nullopt;
    return leader_info{r.kvs[0].create_revision, r.kvs[0].value};
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

  ha_master& master_at(const std::string& address) {
    for (auto& m : masters)
      if (m.address == address) return m;
    FAIL("no master at " << address);
    return masters.front();
  }

  // Waits until the leader counts `n` followers in sync.
  bool wait_in_sync(long n, std::chrono::milliseconds limit = 15s) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < until) {
      if (auto l = leader()) {
        if (master_at(l->address).metric("corokv_master_followers_in_sync") >= n) return true;
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

    ha_master& victim = c.master_at(old->address);
    // A follower cut off would make the leader acknowledge alone
    // (docs/guide/high-availability.md, "How it works").
    CHECK(victim.metric("corokv_master_followers_cut_off_total") == 0);
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
    CHECK(now->address != old->address);

    c.start_master(victim);  // it comes back as a follower and catches up from a snapshot
    check_read_back(*kv, held);
    std::this_thread::sleep_for(300ms);  // the workload runs under the new leader too
  }
  // A follower killed and restarted catches up from a snapshot.
  auto leader = c.leader();
  REQUIRE(leader);
  ha_master* follower = nullptr;
  for (auto& m : c.masters)
    if (m.address != leader->address) follower = &m;
  REQUIRE(follower);
  follower->proc->kill_now();
  c.start_master(*follower);
  REQUIRE(c.wait_in_sync(2));
  CHECK(follower->metric("corokv_master_snapshots_loaded_total") == 1);
  CHECK(follower->metric("corokv_master_leader") == 0);
  CHECK(c.leader()->term == leader->term);  // a follower's death changes no leader
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
  ha_master& stopped = c.master_at(old->address);
  stopped.proc->signal(SIGSTOP);
  auto now = c.wait_leader(old->term, 10s);
  REQUIRE(now);
  dataset during("during-", 16, 4096);
  put_all(*kv, during);  // through the new leader
  stopped.proc->signal(SIGCONT);

  // The resumed master answers no request: its connection closes unanswered.
  asio::io_context io;
  tcp::socket s(io);
  s.connect({asio::ip::make_address(stopped.admin_host), stopped.port});
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
  while (stopped.metric("corokv_master_leader") != 0 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(20ms);
  CHECK(stopped.metric("corokv_master_leader") == 0);
  CHECK(stopped.metric("corokv_master_step_downs_total") >= 1);

  // The client goes on with the new leader and reads everything.
  check_read_back(*kv, before);
  check_read_back(*kv, during);
  dataset after("after-", 16, 4096);
  put_all(*kv, after);
  check_read_back(*kv, after);
  CHECK(c.leader()->term == now->term);
}

TEST_CASE("ha: etcd restarted: the leader serves while its lease holds, steps down when it cannot renew, and a leader returns, clients back off meanwhile" *
          doctest::test_suite("etcd")) {
  ha_cluster c;
  auto box = c.client();
  cluster_store* kv = &box->kv;
  REQUIRE(c.wait_in_sync(2));
  dataset a("a-", 16, 4096);
  put_all(*kv, a);
  const auto old = c.leader();
  REQUIRE(old);
  ha_master& leader = c.master_at(old->address);

  const auto before = kv->metadata().stats();
  const auto etcd_stopped = std::chrono::steady_clock::now();
  c.etcd.stop();
  dataset b("b-", 16, 4096);
  put_all(*kv, b);  // at once: the lease still holds
  // It cannot renew: within the lease TTL it stops leading.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(lease_ttl_s + 2);
  while (leader.metric("corokv_master_leader") != 0 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(20ms);
  CHECK(leader.metric("corokv_master_leader") == 0);
  auto [ec, put] = wait(kv->batch_put(std::vector<std::string>{"c-0"}, std::vector<asio::const_buffer>{asio::buffer(a.values[0])},
                                      asio::deferred));
  CHECK((ec || put[0] != errc::success));  // no master answers now
  std::this_thread::sleep_for(2s);           // etcd stays down a while longer

  c.etcd.start();
  REQUIRE(c.wait_leader(old->term, 20s));
  check_read_back(*kv, a);
  check_read_back(*kv, b);
  // From etcd's death until a leader served again, the client's connection
  // to the masters was retried with a growing wait: it never cycled faster
  // than its backoff allows (the issue saw ~600 connects a second).
  const auto after = kv->metadata().stats();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - etcd_stopped).count();
  const auto connects = after.connects - before.connects;
  MESSAGE("etcd down and a leader back over " << seconds << " s: the client connected " << connects
                                              << " times, waited " << after.backoffs - before.backoffs
                                              << " times before retrying ("
                                              << std::chrono::duration<double>(after.backoff_total - before.backoff_total).count()
                                              << " s in all), " << after.disconnects - before.disconnects
                                              << " connections lost");
  CHECK(after.backoffs > before.backoffs);
  CHECK(static_cast<double>(connects) <= 5 + 5 * seconds);
  // The deposed leader could not reach etcd either: it counted the
  // failures and waited between its attempts.
  CHECK(leader.metric("corokv_master_etcd_errors_total") > 0);
  CHECK(leader.metric("corokv_master_retry_backoffs_total") > 0);
}

// The leader A killed; as soon as B leads, A restarted (empty until B's
// snapshot reaches it) and, `delay` later, B killed too. Whoever leads next
// must hold everything acknowledged: the third master has it all, A may have
// nothing. One cluster runs the sequence at every delay in turn, the
// acknowledged keys accumulating.
TEST_CASE("ha: the leader killed, restarted at once, and the new leader killed 0 to 100 ms later: nothing acknowledged is lost" *
          doctest::test_suite("etcd")) {
  ha_cluster c;
  auto box = c.client();
  cluster_store* kv = &box->kv;
  std::vector<std::unique_ptr<dataset>> written;
  for (int delay_ms : {0, 10, 25, 50, 100}) {
    INFO("delay between B leading and its kill: " << delay_ms << " ms");
    for (int part = 0; part < 8; ++part) {  // 4,000 puts in batches of 500
      written.push_back(std::make_unique<dataset>("d" + std::to_string(delay_ms) + "-" + std::to_string(part) + "-",
                                                  500, 1024));
      put_all(*kv, *written.back());
    }
    REQUIRE(c.wait_in_sync(2));
    const auto first = c.leader();
    REQUIRE(first);
    ha_master& a = c.master_at(first->address);
    a.proc->kill_now();
    const auto second = c.wait_leader(first->term, 10s);
    REQUIRE(second);
    ha_master& b = c.master_at(second->address);
    c.launch_master(a);
    if (delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    b.proc->kill_now();
    c.await_master(a);
    const auto third = c.wait_leader(second->term, 15s);
    REQUIRE(third);
    ha_master& winner = c.master_at(third->address);
    MESSAGE("delay " << delay_ms << " ms: " << winner.name << " leads in term " << third->term << " and took over "
                     << winner.metric("corokv_master_promoted_objects") << " objects");
    std::size_t acknowledged = 0;
    for (auto& d : written) {
      check_read_back(*kv, *d);
      acknowledged += d->keys.size();
    }
    CHECK(winner.metric("corokv_master_promoted_objects") >= static_cast<long>(acknowledged));
    c.start_master(b);  // three masters again for the next round
  }
}

// ------------------------------------------------------------ kills at random

namespace {

// The bytes a key's value holds: derived from the key, so a read checks
// them without remembering them.
std::vector<char> value_of(const std::string& key, std::size_t size) {
  std::vector<char> v(size);
  std::uint64_t h = std::hash<std::string>{}(key) | 1;
  for (auto& b : v) {
    h ^= h << 13;
    h ^= h >> 7;
    h ^= h << 17;
    b = static_cast<char>(h);
  }
  return v;
}

// A writer on its own thread: puts of fresh keys, removes of keys it put,
// reads of keys it put; every outcome recorded. No doctest assertion on
// this thread: the test checks the record.
struct recorded_writer {
  cluster_store& kv;
  std::mt19937_64 rng;
  std::map<std::string, std::size_t> live;  // put acknowledged, not removed: its size
  std::set<std::string> removed;            // remove acknowledged
  std::map<std::string, std::size_t> unknown;  // a put or remove that failed: either outcome is right
  std::atomic<bool> stop{false};
  std::atomic<std::size_t> puts_acknowledged{0}, puts_failed{0}, removes_acknowledged{0}, removes_failed{0},
      reads_ok{0}, reads_failed{0}, wrong{0}, lost{0};
  std::thread runner;

  recorded_writer(cluster_store& store, std::uint64_t seed) : kv(store), rng(seed) {
    runner = std::thread([this] { run(); });
  }
  void finish() {
    stop = true;
    runner.join();
  }

  void run() {
    for (std::size_t round = 0; !stop; ++round) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5 + rng() % 10));
      put_round(round);
      if (live.size() > 600 || round % 3 == 0) remove_some(live.size() > 600 ? 16 : 4);
      read_some(8);
    }
  }

  void put_round(std::size_t round) {
    std::vector<std::string> keys;
    std::vector<std::vector<char>> values;
    std::vector<asio::const_buffer> buffers;
    for (std::size_t i = 0; i < 8; ++i) {
      keys.push_back("r" + std::to_string(round) + "-" + std::to_string(i));
      values.push_back(value_of(keys.back(), 128 + rng() % 897));
    }
    for (auto& v : values) buffers.push_back(asio::buffer(v));
    auto [ec, put] = wait(kv.batch_put(keys, buffers, asio::deferred));
    for (std::size_t i = 0; i < keys.size(); ++i) {
      if (!ec && put[i] == errc::success) {
        live[keys[i]] = values[i].size();
        ++puts_acknowledged;
      } else {
        unknown[keys[i]] = values[i].size();
        ++puts_failed;
      }
    }
  }

  std::vector<std::string> pick_live(std::size_t n) {
    std::vector<std::string> out;
    if (live.empty()) return out;
    for (std::size_t i = 0; i < n; ++i) {
      auto it = live.begin();
      std::advance(it, static_cast<std::ptrdiff_t>(rng() % live.size()));
      if (std::find(out.begin(), out.end(), it->first) == out.end()) out.push_back(it->first);
    }
    return out;
  }

  void remove_some(std::size_t n) {
    const auto keys = pick_live(n);
    if (keys.empty()) return;
    auto [ec, status] = wait(kv.batch_remove(keys, asio::deferred));
    for (std::size_t i = 0; i < keys.size(); ++i) {
      const std::size_t size = live[keys[i]];
      live.erase(keys[i]);
      if (!ec && status[i] == errc::success) {
        removed.insert(keys[i]);
        ++removes_acknowledged;
      } else {
        if (!ec && status[i] == errc::not_found) ++lost;  // an acknowledged put the master does not know
        unknown[keys[i]] = size;
        ++removes_failed;
      }
    }
  }

  void read_some(std::size_t n) {
    const auto keys = pick_live(n);
    if (keys.empty()) return;
    std::vector<std::vector<char>> out;
    std::vector<asio::mutable_buffer> buffers;
    for (auto& k : keys) out.emplace_back(live[k]);
    for (auto& b : out) buffers.push_back(asio::buffer(b));
    auto [ec, got] = wait(kv.batch_get(keys, buffers, asio::deferred));
    if (ec) {
      reads_failed += keys.size();
      return;
    }
    for (std::size_t i = 0; i < keys.size(); ++i) {
      if (got[i].status == errc::success) {
        ++reads_ok;
        if (out[i] != value_of(keys[i], out[i].size())) ++wrong;
      } else if (got[i].status == errc::not_found) {
        ++lost;
      } else {
        ++reads_failed;
      }
    }
  }
};

std::chrono::seconds chaos_length() {
  const char* env = std::getenv("COROKV_HA_CHAOS_SECONDS");
  return std::chrono::seconds(env && *env ? std::max(1, std::atoi(env)) : 15);
}

}  // namespace

// Masters killed (-9) and restarted at random while a writer puts, removes
// and reads, never more than one master down at a time, where a master is
// down from its kill until, restarted, it holds a whole copy again: a
// restarted master is empty until then. Whatever was acknowledged must read
// back with its bytes, and nothing removed may come back. 15 s in the suite;
// COROKV_HA_CHAOS_SECONDS sets the length, COROKV_HA_CHAOS_SEED the schedule.
TEST_CASE("ha: masters killed and restarted at random under a writer: nothing acknowledged is lost, nothing removed comes back" *
          doctest::test_suite("etcd")) {
  const char* seed_env = std::getenv("COROKV_HA_CHAOS_SEED");
  const std::uint64_t seed = seed_env && *seed_env ? std::strtoull(seed_env, nullptr, 10) : std::random_device{}();
  const auto length = chaos_length();
  MESSAGE("chaos for " << length.count() << " s, seed " << seed << " (COROKV_HA_CHAOS_SEED to replay)");
  std::mt19937_64 rng(seed);
  auto between = [&](int lo_ms, int hi_ms) {
    return std::chrono::milliseconds(lo_ms + static_cast<int>(rng() % static_cast<std::uint64_t>(hi_ms - lo_ms + 1)));
  };
  // Each takeover holds all memory, removed objects' included, for
  // max_lease_ttl; with takeovers every few seconds little is ever freed, so
  // the nodes get room for the whole run's writes (no eviction may blur
  // what the elections lose) and the hold is the client's lease.
  ha_cluster c({.segment_mib = 256, .max_lease_ttl_ms = 4000});
  auto box = c.client();
  cluster_store* kv = &box->kv;
  REQUIRE(c.wait_in_sync(2));
  recorded_writer writer(*kv, seed + 1);

  std::size_t kills = 0, leader_kills = 0;
  long evicted = 0, dead_nodes = 0;
  // Counters of whoever leads now (each leader counts from its takeover).
  auto sample_leader = [&] {
    if (auto l = c.leader()) {
      for (auto& m : c.masters)
        if (m.address == l->address && m.proc && m.proc->running()) {
          evicted = std::max(evicted, m.metric("corokv_master_evicted_total"));
          dead_nodes = std::max(dead_nodes, m.metric("corokv_master_dead_nodes_total"));
        }
    }
  };
  // Back to three masters holding a copy: the one down is restarted if it
  // is not yet, and waited for until it holds a whole copy (or leads).
  auto bring_back = [&](ha_master& m, time_point restart_at) {
    std::this_thread::sleep_until(restart_at);
    c.start_master(m);
    const auto until = clock_type::now() + 30s;
    while (m.metric("corokv_master_copy_whole") != 1 && clock_type::now() < until) std::this_thread::sleep_for(10ms);
    CHECK_MESSAGE(m.metric("corokv_master_copy_whole") == 1, m.name << " never caught up; its log:\n" << m.log());
  };
  const auto end = clock_type::now() + length;
  while (clock_type::now() < end) {
    std::this_thread::sleep_for(between(0, 1500));
    sample_leader();
    ha_master* victim = nullptr;
    const auto leader = c.leader();
    if (leader && rng() % 2 == 0) {
      victim = &c.master_at(leader->address);
      ++leader_kills;
    } else {
      victim = &c.masters[rng() % c.masters.size()];
      if (leader && victim->address == leader->address) ++leader_kills;
    }
    victim->proc->kill_now();
    ++kills;
    bring_back(*victim, clock_type::now() + between(0, 2500));
  }
  sample_leader();
  writer.finish();
  REQUIRE(c.wait_leader(0, 15s));
  REQUIRE(c.wait_in_sync(2));

  // Every key read back: acknowledged ones with their bytes, removed ones
  // gone, the others either way but never with wrong bytes.
  std::size_t missing = 0, came_back = 0, wrong = 0, unknown_found = 0;
  auto read_all = [&](const std::vector<std::pair<std::string, std::size_t>>& keys, auto on_result) {
    for (std::size_t at = 0; at < keys.size(); at += 256) {
      const std::size_t n = std::min<std::size_t>(256, keys.size() - at);
      std::vector<std::string> names;
      std::vector<std::vector<char>> out;
      std::vector<asio::mutable_buffer> buffers;
      for (std::size_t i = at; i < at + n; ++i) {
        names.push_back(keys[i].first);
        out.emplace_back(std::max<std::size_t>(keys[i].second, 1));
      }
      for (auto& b : out) buffers.push_back(asio::buffer(b));
      auto [ec, got] = wait(kv->batch_get(names, buffers, asio::deferred));
      REQUIRE(!ec);
      for (std::size_t i = 0; i < n; ++i) {
        const bool intact = got[i].status == errc::success && out[i] == value_of(names[i], out[i].size());
        on_result(got[i].status, intact);
      }
    }
  };
  read_all({writer.live.begin(), writer.live.end()}, [&](errc status, bool intact) {
    if (status != errc::success) ++missing;
    else if (!intact) ++wrong;
  });
  std::vector<std::pair<std::string, std::size_t>> removed;
  for (auto& k : writer.removed) removed.emplace_back(k, 4096);
  read_all(removed, [&](errc status, bool) {
    if (status != errc::not_found) ++came_back;
  });
  read_all({writer.unknown.begin(), writer.unknown.end()}, [&](errc status, bool intact) {
    if (status == errc::success) {
      ++unknown_found;
      if (!intact) ++wrong;
    }
  });
  MESSAGE(kills << " kills (" << leader_kills << " of the leader); " << writer.puts_acknowledged.load()
                << " puts acknowledged, " << writer.puts_failed.load() << " failed; "
                << writer.removes_acknowledged.load() << " removes acknowledged, " << writer.removes_failed.load()
                << " failed; " << writer.reads_ok.load() << " reads, " << writer.reads_failed.load()
                << " failed. Read back: " << writer.live.size() << " live keys (" << missing << " missing), "
                << writer.removed.size() << " removed (" << came_back << " back), " << writer.unknown.size()
                << " unknown (" << unknown_found << " there); wrong bytes " << wrong << " + " << writer.wrong.load()
                << " while running; acknowledged keys not found while running " << writer.lost.load());
  CHECK(kills >= 3);
  CHECK(writer.puts_acknowledged > 0);
  CHECK(writer.removes_acknowledged > 0);
  CHECK(missing == 0);
  CHECK(came_back == 0);
  CHECK(wrong == 0);
  CHECK(writer.wrong == 0);
  CHECK(writer.lost == 0);
  // Nothing was evicted or declared dead: a key gone for those reasons
  // would not be the elections' doing.
  CHECK(evicted == 0);
  CHECK(dead_nodes == 0);
}

// ------------------------------------------------------------ without I/O

#include <corokv/ha/leadership.hpp>

TEST_CASE("leadership: a leader answers only while its lease, counted from the request, outlasts the margin" *
          doctest::test_suite("logic")) {
  using corokv::ha::leadership;
  using corokv::ha::master_state;
  leadership l(500ms);
  const time_point t0 = clock_type::now();
  CHECK_FALSE(l.may_answer(t0));  // a candidate
  l.lease_renewed(t0, 2s);
  l.won(7);
  CHECK(l.state() == master_state::leader);
  CHECK(l.term() == 7);
  CHECK(l.may_answer(t0 + 1400ms));
  CHECK_FALSE(l.may_answer(t0 + 1500ms));  // 500 ms before etcd could let the lease lapse
  CHECK(l.must_step_down(t0 + 1500ms));
  l.lease_renewed(t0 + 600ms, 2s);  // a renewal sent later extends it
  CHECK(l.may_answer(t0 + 2000ms));
  l.lease_renewed(t0 + 100ms, 2s);  // a late answer to an older renewal does not shorten it
  CHECK(l.lease_valid_until() == t0 + 2600ms);
  l.newer_term(9);  // another master leads in a newer term
  CHECK(l.state() == master_state::candidate);
  CHECK_FALSE(l.may_answer(t0 + 1000ms));
  CHECK(l.step_downs() == 1);
  l.newer_term(3);  // an older term changes nothing
  CHECK(l.term() == 9);
  l.follows(11, "10.0.0.2:7400");
  CHECK(l.leader_address() == "10.0.0.2:7400");
  l.won(12);
  l.lease_lost();
  CHECK(l.state() == master_state::candidate);
  CHECK(l.step_downs() == 2);
  CHECK(l.terms_led() == 2);
}

TEST_CASE("etcd URLs: clients' etcd://HOST:PORT,HOST:PORT/NAME and masters' endpoint lists" *
          doctest::test_suite("logic")) {
  using namespace corokv::ha;
  auto u = parse_cluster_url("etcd://10.0.0.5:2379,etcd-b:2380/prod-1");
  REQUIRE(u);
  REQUIRE(u->endpoints.size() == 2);
  CHECK(u->endpoints[0].host == "10.0.0.5");
  CHECK(u->endpoints[1].port == 2380);
  CHECK(u->cluster == "prod-1");
  CHECK(u->leader_key() == "/corokv/prod-1/leader");
  CHECK(parse_etcd_endpoints("http://127.0.0.1:2379,[::1]:2379"));
  CHECK(parse_etcd_endpoints("http://127.0.0.1:2379,[::1]:2379")->at(1).host == "::1");
  for (const char* bad : {"etcd://10.0.0.5:2379", "etcd://10.0.0.5/x", "etcd://h:0/x", "etcd://h:70000/x",
                          "etcd://h:1/", "etcd://h:1/a/b", "http://h:1/x", "etcd://:1/x", "etcd://h:1x/x"})
    CHECK_MESSAGE(!parse_cluster_url(bad), bad);
  CHECK_FALSE(parse_etcd_endpoints(""));
  CHECK_FALSE(parse_etcd_endpoints("h:1,"));
}
