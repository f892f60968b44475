// rdma_bench: RDMA batch_get with query results, in one process: a master,
// a node owning a segment and a reader, every byte carried by the RDMA lane
// (lanes restricted to "rdma"), into a buffer registered once with
// register_buffer. Prints MiB/s per shape and writes JSON; the limit it is
// compared with is perftest's ib_read_bw on the same device, measured in
// the same run by benchmarks/rdma_vm.sh (inside the Soft-RoCE VM).
//
//   rdma_bench [--seconds S] [--device NAME] [--json PATH] [--shapes 64x65536,16x1048576]

#include <corokv/net/master_server.hpp>
#include <corokv/rdma.hpp>

#include "bench_support.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <fmt/format.h>

#include <cstring>
#include <string>
#include <vector>

namespace asio = boost::asio;
using namespace corokv;

namespace {

struct shape {
  std::size_t keys = 0;
  std::size_t value_size = 0;
};

struct settings {
  double seconds = 2;
  std::string device;
  std::string json_path;
  std::vector<shape> shapes{{64, 64 << 10}, {16, 1 << 20}};
};

rdma_cluster_options rdma_node_options(std::uint16_t master_port, const settings& s) {
  rdma_cluster_options o;
  o.master.port = master_port;
  o.transport.shared_memory = false;
  o.transport.lanes = {"rdma"};
  o.rdma.device = s.device;
  o.rdma.required = true;
  return o;
}

asio::awaitable<nlohmann::json> measure(rdma_cluster_store& reader, const shape& sh, double seconds) {
  const std::string prefix = fmt::format("bench-{}x{}-", sh.keys, sh.value_size);
  std::vector<std::string> keys;
  std::vector<std::vector<char>> values(sh.keys, std::vector<char>(sh.value_size));
  std::vector<asio::const_buffer> sources;
  for (std::size_t i = 0; i < sh.keys; ++i) {
    keys.push_back(prefix + std::to_string(i));
    for (std::size_t b = 0; b < sh.value_size; ++b) values[i][b] = static_cast<char>(b * 7 + i);
    sources.push_back(asio::buffer(values[i]));
  }
  auto put = co_await reader.batch_put(keys, sources, asio::use_awaitable);
  for (errc e : put)
    if (e != errc::success) throw std::runtime_error("rdma_bench: put failed: " + make_error_code(e).message());

  std::vector<char> region(sh.keys * sh.value_size);
  if (auto ec = reader.register_buffer(asio::buffer(region)))
    throw std::runtime_error("rdma_bench: register_buffer: " + ec.message());
  std::vector<asio::mutable_buffer> destinations;
  for (std::size_t i = 0; i < sh.keys; ++i)
    destinations.push_back(asio::buffer(region.data() + i * sh.value_size, sh.value_size));
  const auto query = co_await reader.batch_query(keys, asio::use_awaitable);

  std::uint64_t failures = 0;
  auto [batches, elapsed] = co_await bench::timed(seconds, [&](std::uint64_t) -> asio::awaitable<void> {
    auto results = co_await reader.batch_get(keys, query, destinations, asio::use_awaitable);
    for (const auto& r : results) failures += !r.ok();
  });
  bool intact = failures == 0;
  for (std::size_t i = 0; i < sh.keys && intact; ++i)
    intact = std::memcmp(region.data() + i * sh.value_size, values[i].data(), sh.value_size) == 0;
  (void)reader.unregister_buffer(asio::buffer(region));
  if (!intact) throw std::runtime_error("rdma_bench: a read failed or returned wrong bytes");

  const double bytes = static_cast<double>(batches) * static_cast<double>(sh.keys * sh.value_size);
  const double mib_s = bytes / elapsed / (1 << 20);
  fmt::print("rdma batch_get {:>3} x {:>7} B   {:>9.1f} MiB/s   {:>8.0f} us/batch   ({} batches)\n", sh.keys,
             sh.value_size, mib_s, elapsed * 1e6 / static_cast<double>(batches), batches);
  co_return nlohmann::json{{"keys", sh.keys},
                           {"value_size", sh.value_size},
                           {"batches", batches},
                           {"seconds", elapsed},
                           {"mib_per_s", mib_s},
                           {"metadata_round_trips_per_batch", 0}};
}

}  // namespace

int main(int argc, char** argv) {
  settings s;
  bench::arguments args("rdma_bench", {{"--seconds", "S"}, {"--device", "NAME"}, {"--json", "PATH"}, {"--shapes", "KxB,..."}});
  if (!args.parse(argc, argv)) return 2;
  s.seconds = args.number("--seconds", s.seconds);
  s.device = args.text("--device", s.device);
  s.json_path = args.text("--json", s.json_path);
  if (args.has("--shapes")) {
    const std::string value = args.text("--shapes", "");
    s.shapes.clear();
    for (std::size_t at = 0; at < value.size();) {
      const std::size_t comma = std::min(value.find(',', at), value.size());
      const std::string one = value.substr(at, comma - at);
      const std::size_t x = one.find('x');
      s.shapes.push_back({std::stoull(one.substr(0, x)), std::stoull(one.substr(x + 1))});
      at = comma + 1;
    }
  }
  try {
    asio::io_context io(1);
    auto service = std::make_shared<meta::service>();
    net::master_server master(io.get_executor(), service, {asio::ip::make_address("127.0.0.1"), 0});
    master.start();
    auto owner = make_rdma_cluster_store(io.get_executor(), rdma_node_options(master.local_endpoint().port(), s));
    auto reader = make_rdma_cluster_store(io.get_executor(), rdma_node_options(master.local_endpoint().port(), s));
    fmt::print("rdma_bench: device {}, GID {}\n", reader.transport().lane<rdma_lane>().device_name(),
               reader.transport().lane<rdma_lane>().gid());
    nlohmann::json results = nlohmann::json::array();
    std::exception_ptr failure;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          std::uint64_t total = 0;
          for (const shape& sh : s.shapes) total += sh.keys * sh.value_size;
          co_await owner.add_segment(total + (16 << 20), asio::use_awaitable);
          for (const shape& sh : s.shapes) results.push_back(co_await measure(reader, sh, s.seconds));
        },
        [&](std::exception_ptr e) {
          failure = e;
          master.stop();
          io.stop();
        });
    io.run();
    if (failure) std::rethrow_exception(failure);
    if (!s.json_path.empty()) bench::write_json(s.json_path, "rdma_bench", s.seconds, results);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rdma_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
