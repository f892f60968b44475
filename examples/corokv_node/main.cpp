// corokv-node: one node of a corokv cluster. It joins a master, contributes
// a segment of its memory (served to the other nodes over TCP, through
// shared memory on the same host and, built with corokv::rdma, by RDMA where
// both ends have a device), and either serves until SIGINT/SIGTERM or runs
// a workload and exits. Built with corokv::uring it may keep a disk tier:
// a file of --disk-gib GiB (or --disk-mib MiB) in --disk-dir, to which the
// master's oldest objects on this node are demoted instead of dropped.
//
//   corokv-node --master HOST:PORT|etcd://HOST:PORT/NAME [--segment-mib N] [--data-listen HOST:PORT]
//               [--advertise HOST] [--no-shm] [--ready-file PATH]
//               [--lanes memcpy,rdma,disk,tcp] [--rdma-device NAME]
//               [--disk-dir DIR (--disk-gib N | --disk-mib N)] [--no-direct]
//               [--workload serve|put|get|exist] [--keys N] [--value-size B]
//               [--prefix P] [--batch N] [--replicas R] [--lease-ttl-ms N] [--require-all]
//
// Values are a pattern derived from each key, so a reader verifies every
// byte without knowing the writer. A workload prints one JSON line:
//   {"workload":"get","keys":64,"ok":64,"errors":{},"corrupt":0,...}
// and exits 0 unless a batch failed as a whole or a byte was wrong (1), or
// --require-all was given and a key did not succeed (3). SIGINT or SIGTERM
// during a workload cancels it (130); a serving node exits 0.

#include <corokv/node.hpp>
#if COROKV_HAS_RDMA
#include <corokv/rdma.hpp>
#endif
#if COROKV_HAS_URING
#include <corokv/disk_tier.hpp>
#endif

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <map>
#include <string>
#include <vector>

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using namespace corokv;

namespace {

struct settings {
  std::string master_host = "127.0.0.1";
  std::uint16_t master_port = 7400;
  std::string master_url;  // etcd://...: replicated masters
  std::uint64_t segment_mib = 64;
  std::string data_listen = "127.0.0.1:0";
  std::string advertise = "127.0.0.1";
  bool shared_memory = true;
  std::string ready_file;
  std::string workload = "serve";
  std::size_t keys = 64;
  std::size_t value_size = 64 << 10;
  std::string prefix = "key-";
  std::size_t batch = 64;
  std::size_t replicas = 1;
  std::uint64_t lease_ttl_ms = 5000;  // at most the master's --max-lease-ttl-ms
  bool require_all = false;
  std::vector<std::string> lanes;  // empty: all
  std::string rdma_device;         // empty: the first with an active port, if any
  std::string disk_dir;            // empty: no disk tier
  std::uint64_t disk_mib = 0;
  bool direct = true;
};

[[noreturn]] void usage(const std::string& why) {
  fmt::print(stderr, "corokv-node: {}\n", why);
  fmt::print(stderr,
             "usage: corokv-node --master HOST:PORT [--segment-mib N] [--data-listen HOST:PORT]\n"
             "                   [--advertise HOST] [--no-shm] [--ready-file PATH]\n"
             "                   [--lanes memcpy,rdma,disk,tcp] [--rdma-device NAME]\n"
             "                   [--disk-dir DIR (--disk-gib N | --disk-mib N)] [--no-direct]\n"
             "                   [--workload serve|put|get|exist] [--keys N] [--value-size B]\n"
             "                   [--prefix P] [--batch N] [--replicas R] [--lease-ttl-ms N] [--require-all]\n");
  std::exit(2);
}

std::pair<std::string, std::uint16_t> split_host_port(const std::string& text) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos) usage("expected HOST:PORT, got '" + text + "'");
  try {
    const int port = std::stoi(text.substr(colon + 1));
    if (port < 0 || port > 65535) throw std::out_of_range("port");
    return {text.substr(0, colon), static_cast<std::uint16_t>(port)};
  } catch (const std::exception&) {
    usage("not a port: '" + text.substr(colon + 1) + "'");
  }
}

std::uint64_t number(const std::string& name, const std::string& value) {
  try {
    std::size_t used = 0;
    const auto n = std::stoull(value, &used);
    if (used != value.size()) throw std::invalid_argument(value);
    return n;
  } catch (const std::exception&) {
    usage(name + " must be a number");
  }
}

settings parse(int argc, char** argv) {
  settings s;
  bool have_master = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--no-shm") {
      s.shared_memory = false;
      continue;
    }
    if (arg == "--require-all") {
      s.require_all = true;
      continue;
    }
    if (arg == "--no-direct") {
      s.direct = false;
      continue;
    }
    if (i + 1 >= argc) usage("missing value for " + arg);
    const std::string value = argv[++i];
    if (arg == "--master") {
      if (value.rfind("etcd://", 0) == 0) {
        if (!corokv::ha::parse_cluster_url(value)) usage("--master: expected etcd://HOST:PORT[,HOST:PORT...]/NAME");
        s.master_url = value;
      } else {
        std::tie(s.master_host, s.master_port) = split_host_port(value);
      }
      have_master = true;
    } else if (arg == "--segment-mib") s.segment_mib = number(arg, value);
    else if (arg == "--data-listen") s.data_listen = value;
    else if (arg == "--advertise") s.advertise = value;
    else if (arg == "--ready-file") s.ready_file = value;
    else if (arg == "--workload") s.workload = value;
    else if (arg == "--keys") s.keys = number(arg, value);
    else if (arg == "--value-size") s.value_size = number(arg, value);
    else if (arg == "--prefix") s.prefix = value;
    else if (arg == "--batch") s.batch = number(arg, value);
    else if (arg == "--replicas") s.replicas = number(arg, value);
    else if (arg == "--lease-ttl-ms") s.lease_ttl_ms = number(arg, value);
    else if (arg == "--lanes") {
      for (std::size_t at = 0; at <= value.size();) {
        const std::size_t comma = std::min(value.find(',', at), value.size());
        if (comma > at) s.lanes.push_back(value.substr(at, comma - at));
        at = comma + 1;
      }
    } else if (arg == "--rdma-device") {
#if COROKV_HAS_RDMA
      s.rdma_device = value;
#else
      usage("--rdma-device: this corokv-node was built without RDMA (COROKV_ENABLE_RDMA)");
#endif
    }
    else if (arg == "--disk-dir") s.disk_dir = value;
    else if (arg == "--disk-gib") s.disk_mib = number(arg, value) << 10;
    else if (arg == "--disk-mib") s.disk_mib = number(arg, value);
    else usage("unknown flag " + arg);
  }
  if (!have_master) usage("--master is required");
  if (s.disk_dir.empty() != (s.disk_mib == 0)) usage("--disk-dir and --disk-gib (or --disk-mib) go together");
#if !COROKV_HAS_URING
  if (!s.disk_dir.empty()) usage("--disk-dir: this corokv-node was built without io_uring (COROKV_ENABLE_URING)");
#endif
  if (!s.disk_dir.empty() && s.segment_mib == 0) usage("--disk-dir: a disk tier holds copies of this node's memory");
  if (s.workload != "serve" && s.workload != "put" && s.workload != "get" && s.workload != "exist")
    usage("unknown workload " + s.workload);
  if (s.batch == 0 || s.value_size == 0) usage("--batch and --value-size must be positive");
  return s;
}

// The value stored under `key`: bytes derived from the key alone.
void fill_value(std::string_view key, std::span<char> out) {
  std::uint64_t h = 1469598103934665603ull;
  for (char c : key) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  for (std::size_t b = 0; b < out.size(); ++b) out[b] = static_cast<char>((h >> ((b % 8) * 8)) + b * 131);
}

// The lanes beyond memcpy and TCP: those this build has (RDMA with
// corokv::rdma, a disk with corokv::uring), each made from its options.
template <class... Lanes>
struct lane_list {
  using store = node_store<Lanes...>;
  template <class... More>
  lane_list<Lanes..., More...> operator+(lane_list<More...>) const { return {}; }
};
template <class Lane>
auto lane_options(const settings& s);
#if COROKV_HAS_RDMA
using rdma_lanes = lane_list<rdma_lane>;
template <>
auto lane_options<rdma_lane>(const settings& s) {
  rdma_lane_options o;
  o.device = s.rdma_device;
  o.required = !s.rdma_device.empty();
  return o;
}
#else
using rdma_lanes = lane_list<>;
#endif
#if COROKV_HAS_URING
using disk_lanes = lane_list<disk_lane>;
template <>
auto lane_options<disk_lane>(const settings&) {
  return disk_lane_options{};
}
#else
using disk_lanes = lane_list<>;
#endif
using node_lanes = decltype(rdma_lanes{} + disk_lanes{});
using store_type = node_lanes::store;

template <class... Lanes>
node_store<Lanes...> make_store(lane_list<Lanes...>, asio::any_io_executor ex, const node_options& o, const settings& s) {
  return make_node_store<Lanes...>(std::move(ex), o, lane_options<Lanes>(s)...);
}

struct tally {
  std::size_t ok = 0;
  std::size_t corrupt = 0;
  std::map<std::string, std::size_t> errors;
  std::string failure;  // a whole batch failed
  void count(errc e) {
    if (e == errc::success)
      ++ok;
    else
      ++errors[std::string(make_error_code(e).message())];
  }
};

asio::awaitable<tally> run_workload(store_type& kv, const settings& s) {
  tally t;
  std::vector<std::string> keys;
  std::vector<std::vector<char>> values;
  for (std::size_t base = 0; base < s.keys; base += s.batch) {
    const std::size_t n = std::min(s.batch, s.keys - base);
    keys.clear();
    values.assign(n, std::vector<char>(s.value_size));
    for (std::size_t i = 0; i < n; ++i) keys.push_back(s.prefix + std::to_string(base + i));
    if (s.workload == "put") {
      std::vector<asio::const_buffer> buffers;
      for (std::size_t i = 0; i < n; ++i) {
        fill_value(keys[i], values[i]);
        buffers.push_back(asio::buffer(values[i]));
      }
      put_options opts;
      opts.replicas = s.replicas;
      auto [ec, results] = co_await kv.batch_put(keys, buffers, opts, asio::as_tuple(asio::use_awaitable));
      if (ec) {
        t.failure = ec.message();
        co_return t;
      }
      for (errc e : results) t.count(e);
    } else if (s.workload == "get") {
      std::vector<asio::mutable_buffer> buffers;
      for (auto& v : values) buffers.push_back(asio::buffer(v));
      auto [ec, results] = co_await kv.batch_get(keys, buffers, asio::as_tuple(asio::use_awaitable));
      if (ec) {
        t.failure = ec.message();
        co_return t;
      }
      std::vector<char> expected(s.value_size);
      for (std::size_t i = 0; i < n; ++i) {
        t.count(results[i].status);
        if (!results[i].ok()) continue;
        fill_value(keys[i], expected);
        if (results[i].size != s.value_size || values[i] != expected) {
          --t.ok;
          ++t.corrupt;
        }
      }
    } else {
      auto [ec, results] = co_await kv.batch_exist(keys, asio::as_tuple(asio::use_awaitable));
      if (ec) {
        t.failure = ec.message();
        co_return t;
      }
      for (errc e : results) t.count(e);
    }
  }
  co_return t;
}

}  // namespace

int main(int argc, char** argv) {
  const settings s = parse(argc, argv);
  asio::io_context io(1);
  node_options options;
  options.master.host = s.master_host;
  options.master.port = s.master_port;
  options.master_url = s.master_url;
  const auto [listen_host, listen_port] = split_host_port(s.data_listen);
  boost::system::error_code address_ec;
  const auto listen_address = asio::ip::make_address(listen_host, address_ec);
  if (address_ec) usage("not an IP address: " + listen_host);
  options.transport.data_listen = tcp::endpoint(listen_address, listen_port);
  options.transport.advertise_host = s.advertise;
  options.transport.shared_memory = s.shared_memory;
  options.transport.serve = s.segment_mib > 0;
  options.store.lease_ttl = std::chrono::milliseconds(s.lease_ttl_ms);
  options.transport.lanes = s.lanes;

  const std::string master_name =
      s.master_url.empty() ? fmt::format("{}:{}", s.master_host, s.master_port) : s.master_url;
  int exit_code = 0;
  // A signal during a workload cancels it, and the store is destroyed only
  // after the workload has finished, cancelled or not. These outlive the
  // store: its last handlers may still run after it is gone.
  asio::cancellation_signal cancel_workload;
  bool workload_running = true, serving = false, interrupted = false;
  asio::cancellation_signal stop_tier;
  bool tier_running = false;
  try {
    auto kv = make_store(node_lanes{}, io.get_executor(), options, s);
#if COROKV_HAS_URING
    // Destroyed before the store, once its demotion loop has ended.
    std::unique_ptr<disk_tier<store_type>> tier;
#endif
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          segment_id segment = 0;
          if (s.segment_mib > 0) {
            auto [ec, id] = co_await kv.add_segment(s.segment_mib << 20, asio::as_tuple(asio::use_awaitable));
            if (ec) {
              fmt::print(stderr, "corokv-node: add_segment failed: {}\n", ec.message());
              exit_code = 1;
              co_return;
            }
            segment = id;
          }
          segment_id disk_segment = 0;
          bool disk_direct = false;  // O_DIRECT on the tier's file (else buffered, the log line says why)
#if COROKV_HAS_URING
          if (!s.disk_dir.empty()) {
            disk_tier_options d;
            d.path = std::filesystem::path(s.disk_dir) / "corokv.tier";
            d.size = s.disk_mib << 20;
            d.direct = s.direct;
            auto [ec, opened] = co_await disk_tier<store_type>::open(kv, d);
            if (ec) {
              fmt::print(stderr, "corokv-node: disk tier {}: {}\n", d.path.string(), ec.message());
              exit_code = 1;
              co_return;
            }
            tier = std::move(opened);
            disk_segment = tier->segment();
            disk_direct = tier->file().direct();
            const disk_tier_stats found = tier->stats();
            fmt::print(stderr,
                       "corokv-node: disk tier {} ({} MiB) as segment {:x}, {}; from its index: {} copies found, "
                       "{} corrupt, {} taken back{}\n",
                       d.path.string(), s.disk_mib, disk_segment,
                       tier->file().direct() ? std::string("O_DIRECT")
                                             : "buffered: " + tier->file().buffered_reason(),
                       found.found, found.corrupt, found.adopted, found.index_torn ? " (its last record was torn)" : "");
            tier_running = true;
            asio::co_spawn(io, tier->run(std::chrono::milliseconds(100)),
                           asio::bind_cancellation_slot(stop_tier.slot(), [&](std::exception_ptr) { tier_running = false; }));
          }
#endif
          const auto data_port = kv.transport().lane<tcp_lane>().data_endpoint().port();
          if (s.segment_mib > 0)
            fmt::print(stderr, "corokv-node: node {:x} joined {} with segment {:x} ({} MiB), data port {}\n",
                       kv.node(), master_name, segment, s.segment_mib, data_port);
          else
            fmt::print(stderr, "corokv-node: node {:x}, a client of {} contributing no memory\n", kv.node(),
                       master_name);
          if (!s.ready_file.empty()) {
            const std::string tmp = s.ready_file + ".tmp";
            std::ofstream(tmp) << nlohmann::json{{"node", kv.node()},
                                                 {"segment", segment},
                                                 {"disk_segment", disk_segment},
                                                 {"disk_direct", disk_direct},
                                                 {"data_port", data_port}}
                                      .dump()
                               << "\n";
            std::rename(tmp.c_str(), s.ready_file.c_str());
          }
          if (s.workload == "serve") {
            serving = true;  // until a signal
            co_return;
          }

          const auto started = std::chrono::steady_clock::now();
          const tally t = co_await run_workload(kv, s);
          const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
          nlohmann::json report{{"workload", s.workload}, {"keys", s.keys},   {"ok", t.ok},
                                {"errors", t.errors},     {"corrupt", t.corrupt}, {"seconds", seconds}};
          // Which lane carried each byte: the store's counters per lane, and
          // the memcpy lane's split between this process and mapped peers.
          const nlohmann::json counters = kv.counters_json();
          const auto local = kv.transport().lane<memcpy_lane>().stats();
          auto moved = [&](const char* lane) -> std::uint64_t {
            if (!counters.at("lanes").contains(lane)) return 0;
            const auto& c = counters.at("lanes").at(lane);
            return c.at("bytes_read").get<std::uint64_t>() + c.at("bytes_written").get<std::uint64_t>();
          };
          report["lanes"] = counters.at("lanes");
          report["bytes_by_path"] = {{"in_process", local.bytes_this_process},
                                     {"shared_memory", local.bytes_same_host},
                                     {"rdma", moved("rdma")},
                                     {"tcp", moved("tcp")}};
#if COROKV_HAS_RDMA
          const auto& rdma = kv.transport().lane<rdma_lane>();
          const rdma_lane_stats r = rdma.stats();
          report["rdma"] = {{"device", rdma.available() ? rdma.device_name() : rdma.unavailable_reason()},
                            {"connections", r.connections},
                            {"work_requests", r.work_requests},
                            {"chains", r.chains},
                            {"ad_hoc_registrations", r.ad_hoc_registrations},
                            {"queue_pair_errors", r.queue_pair_errors},
                            {"device_events", r.device_events}};
#endif
          if (!t.failure.empty()) report["failure"] = t.failure;
          fmt::print("{}\n", report.dump());
          std::fflush(stdout);
          if (!t.failure.empty() || t.corrupt > 0)
            exit_code = 1;
          else if (s.require_all && t.ok != s.keys)
            exit_code = 3;
        },
        asio::bind_cancellation_slot(cancel_workload.slot(), [&](std::exception_ptr e) {
          workload_running = false;
          if (interrupted) {
            fmt::print(stderr, "corokv-node: interrupted\n");
            exit_code = 130;
          } else if (e) {
            try {
              std::rethrow_exception(e);
            } catch (const std::exception& ex) {
              fmt::print(stderr, "corokv-node: {}\n", ex.what());
            }
            exit_code = 1;
          }
          if (!serving || interrupted) io.stop();
        }));

    asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](boost::system::error_code ec, int) {
      if (ec) return;
      if (!workload_running) {
        io.stop();  // serving: nothing is in flight
        return;
      }
      interrupted = true;
      cancel_workload.emit(asio::cancellation_type::terminal);
    });
    io.run();
    // Leave the cluster cleanly: the store's destructor queues the node's
    // unregister; give the connection a moment to deliver it.
    io.restart();
    signals.cancel();
    // The demotion loop ends before the tier and the store go.
    if (tier_running) {
      stop_tier.emit(asio::cancellation_type::terminal);
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      while (tier_running && std::chrono::steady_clock::now() < deadline) io.run_one_for(std::chrono::milliseconds(50));
      io.restart();
      if (tier_running) {  // never free what a demotion pass still uses
        fmt::print(stderr, "corokv-node: the disk tier's demotion pass did not end; exiting at once\n");
        std::_Exit(1);
      }
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "corokv-node: {}\n", e.what());
    return 1;
  }
  io.run_for(std::chrono::milliseconds(200));
  return exit_code;
}
