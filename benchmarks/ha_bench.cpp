// The price of high availability: metadata throughput of a leading master
// with one synchronous follower against a lone master, in one run, over TCP
// on 127.0.0.1.
//
// This process holds both masters (each on its own thread, as
// corokv-master runs), the follower (a follower_link applying the leader's
// journal to its copy, on a third thread) and the client (remote_metadata
// endpoints on the main thread). The modes run in interleaved rounds
// (bench_support.hpp) and each round gives its own ratio:
//   put     put_start + put_end + remove of 1024 keys: every call is a
//           mutation, so every reply waits for the follower's ack
//   query   batch_query of 1024 keys: grants leases, not replicated
//
//   ha_bench [--seconds S] [--json PATH]

#include <corokv/meta/replica_state.hpp>
#include <corokv/net/follower_link.hpp>
#include <corokv/net/master_server.hpp>
#include <corokv/net/remote_metadata.hpp>
#include <corokv/net/replication_hub.hpp>

#include "bench_support.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <string>
#include <thread>
#include <vector>

using namespace corokv;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

constexpr std::size_t batch = 1024;

// An io_context on a thread of its own.
struct io_thread {
  asio::io_context io{1};
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
  std::thread runner{[this] { io.run(); }};
  ~io_thread() {
    work.reset();
    io.stop();
    runner.join();
  }
};

// A master on its own thread; replicated (a hub as its role, term 1) or lone.
struct master {
  io_thread thread;
  std::shared_ptr<meta::service> service = std::make_shared<meta::service>();
  std::shared_ptr<net::replication_hub> hub;
  net::master_server server{thread.io.get_executor(), service, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)};

  explicit master(bool replicated) {
    if (replicated) {
      hub = std::make_shared<net::replication_hub>(thread.io.get_executor(), service);
      hub->set_term(1);
      service->set_journal(hub.get());
      server.set_role(hub.get());
    }
    asio::post(thread.io, [this] { server.start(); });
  }
  ~master() {
    std::promise<void> done;
    asio::post(thread.io, [&] {
      if (hub) hub->stop();
      server.stop();
      done.set_value();
    });
    done.get_future().wait();
  }
};

struct keys_of {
  std::vector<std::string> keys;
  explicit keys_of(const std::string& prefix) {
    for (std::size_t i = 0; i < batch; ++i) keys.push_back(fmt::format("{}/prompt-{}/block-{}", prefix, i / 16, i % 16));
  }
};

// One put cycle: reserve, commit and remove every key (memory stays bounded).
asio::awaitable<void> put_cycle(net::remote_metadata& m, const keys_of& k) {
  std::vector<std::uint64_t> sizes(batch, 4096);
  std::vector<put_start_result> started(batch);
  auto e = co_await m.put_start(k.keys, sizes, put_options{1}, 0, started);
  if (e) throw std::runtime_error("put_start: " + e.message());
  std::vector<version_t> versions(batch);
  for (std::size_t i = 0; i < batch; ++i) {
    if (!started[i].ok()) throw std::runtime_error("put_start of a key failed");
    versions[i] = started[i].version;
  }
  std::vector<errc> out(batch);
  if (auto e2 = co_await m.put_end(k.keys, versions, out)) throw std::runtime_error("put_end: " + e2.message());
  if (auto e3 = co_await m.remove(k.keys, out)) throw std::runtime_error("remove: " + e3.message());
}

asio::awaitable<void> query_once(net::remote_metadata& m, const keys_of& k) {
  std::vector<query_result> out(batch);
  if (auto e = co_await m.query(k.keys, std::chrono::seconds(5), out)) throw std::runtime_error("query: " + e.message());
}

}  // namespace

int main(int argc, char** argv) {
  bench::arguments args("ha_bench", {{"--seconds", "S"}, {"--json", "PATH"}});
  if (!args.parse(argc, argv)) return 2;
  const double seconds = args.number("--seconds", 2);
  const std::string json_path = args.text("--json", "");

  master lone(false), leader(true);
  io_thread follower_thread;
  meta::replica_state copy;
  net::follower_link link(follower_thread.io.get_executor());
  auto followed = asio::co_spawn(follower_thread.io,
                                 link.follow(leader.server.local_endpoint(), "bench-follower", copy, 1,
                                             std::chrono::seconds(2)),
                                 asio::use_future);

  asio::io_context io{1};
  auto endpoint = [&](master& m) {
    net::remote_metadata_options o;
    o.port = m.server.local_endpoint().port();
    return net::remote_metadata(io.get_executor(), o);
  };
  net::remote_metadata to_lone = endpoint(lone), to_leader = endpoint(leader);
  nlohmann::json results;
  auto run = [&]() -> asio::awaitable<void> {
    // Both nodes mount a segment; the follower must be in sync first.
    for (auto* m : {&to_lone, &to_leader}) {
      co_await m->register_node(1);
      // Named, not a temporary inside the co_await: GCC 12 destroys such a temporary twice.
      segment_endpoints nowhere;
      auto [e, id] = co_await m->mount(1, 256u << 20, nowhere, 0);
      if (e) throw std::runtime_error("mount: " + e.message());
    }
    for (int i = 0; i < 500 && leader.hub->stats().in_sync == 0; ++i) {
      asio::steady_timer t(io, std::chrono::milliseconds(10));
      co_await t.async_wait(asio::use_awaitable);
    }
    if (leader.hub->stats().in_sync == 0) throw std::runtime_error("the follower never caught up");

    const keys_of put_keys("put"), query_keys("query");
    for (auto* m : {&to_lone, &to_leader}) {  // the queried keys exist on both
      std::vector<std::uint64_t> sizes(batch, 4096);
      std::vector<put_start_result> started(batch);
      co_await m->put_start(query_keys.keys, sizes, put_options{1}, 0, started);
      std::vector<version_t> versions(batch);
      for (std::size_t i = 0; i < batch; ++i) versions[i] = started[i].version;
      std::vector<errc> out(batch);
      co_await m->put_end(query_keys.keys, versions, out);
    }

    fmt::print("== metadata over TCP, {}-key batches: lone master vs leader with one synchronous follower\n", batch);
    fmt::print("{:>6} {:>14} {:>14} {:>10} {:>14}\n", "cycle", "lone keys/s", "HA keys/s", "HA/lone", "p10-p90");
    for (const char* kind : {"put", "query"}) {
      const bool put = std::string(kind) == "put";
      auto step = [&](std::size_t mode, std::uint64_t) -> asio::awaitable<void> {
        net::remote_metadata& m = mode == 0 ? to_lone : to_leader;
        if (put)
          co_await put_cycle(m, put_keys);
        else
          co_await query_once(m, query_keys);
      };
      auto us = co_await bench::interleaved(seconds, 2, 4, step);
      // Keys per second from µs per batch; the ratio of the HA mode to the lone one.
      const bench::versus v = bench::compare(us[1], us[0]);
      const double keys = put ? 3.0 * batch : 1.0 * batch;  // three calls of 1024 keys per put cycle
      const double lone_rate = keys / (v.limit_median_us * 1e-6), ha_rate = keys / (v.median_us * 1e-6);
      fmt::print("{:>6} {:>14.0f} {:>14.0f} {:>9.1f}% {:>6.1f}-{:.1f}%\n", kind, lone_rate, ha_rate, 100 * v.ratio,
                 100 * v.ratio_p10, 100 * v.ratio_p90);
      results.push_back({{"cycle", kind},
                         {"keys_per_cycle", keys},
                         {"lone_keys_per_s", lone_rate},
                         {"ha_keys_per_s", ha_rate},
                         {"ha_over_lone", v.ratio},
                         {"ratio_p10", v.ratio_p10},
                         {"ratio_p90", v.ratio_p90},
                         {"rounds", v.rounds}});
    }
    const auto st = leader.hub->stats();
    fmt::print("follower: {} records applied, lag {} records, {} replies waited, {} cut off\n",
               link.stats().applied, st.max_lag, st.waits, st.followers_cut_off);
    if (st.followers_cut_off != 0) throw std::runtime_error("the follower was cut off: the ratio is not HA's");
  };
  std::exception_ptr failure;
  asio::co_spawn(io, run(), [&](std::exception_ptr e) {
    failure = e;
    io.stop();  // the endpoints' timers would keep it running
  });
  io.run();
  if (failure) {
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& e) {
      fmt::print(stderr, "ha_bench: {}\n", e.what());
      return 1;
    }
  }
  asio::post(follower_thread.io, [&] { link.stop(); });
  followed.wait();
  bench::write_json(json_path, "ha_bench", seconds, results);
  return 0;
}
