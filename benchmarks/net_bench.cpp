// corokv across processes on 127.0.0.1, against the limits measured in the
// same run and against Redis.
//
// Processes: this one is the client (a cluster_store on a one-thread
// io_context). It forks a metadata master, a node that owns the segment and
// serves it (TCP data server, memfd shareable with this host), and a raw
// socket server; and it starts Debian's redis-server. Everything listens on
// 127.0.0.1 on free ports and ends with this process.
//
// Sections:
//   query     remote batch_query of 1024-key batches, 1 and 4 in flight: keys/s
//   tcp       batch_get over TCP, with query results (0 metadata round trips)
//             and query+get, against a raw socket moving as many bytes per
//             batch (one request, one contiguous reply) into the same
//             destination
//   shm       batch_get through the mapped memfd against memcpy of the same
//             bytes from the same mapping into the same destination
//   two-step  latency of batch_get with query results against batch_query
//             followed by batch_get (and the metadata cache), 64 x 4 KiB
//             and 64 x 64 KiB, over TCP and over shared memory, the modes
//             interleaved round by round
//   redis     MGET and MSET+DEL through hiredis against corokv's batch_get
//             and batch_put+batch_remove over TCP, the same keys and values
//
//   net_bench [--seconds S] [--json PATH] [--sections query,tcp,shm,two-step,redis]

#include <corokv/cluster.hpp>
#include <corokv/net/master_server.hpp>
#include <corokv/memory/peer_mapping.hpp>

#include "bench_support.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/use_future.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#if COROKV_BENCH_HAVE_HIREDIS
#include <hiredis/hiredis.h>
#endif

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace asio = boost::asio;
using namespace corokv;
using bench::bench_clock;
using bench::timed;

namespace {

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error(what); }

// ------------------------------------------------------------ processes

// A child process, stopped (SIGTERM, then SIGKILL) when this is destroyed.
class child {
 public:
  child() = default;
  explicit child(pid_t pid) : pid_(pid) {}
  child(child&& o) noexcept : pid_(std::exchange(o.pid_, -1)) {}
  child& operator=(child&& o) noexcept {
    stop();
    pid_ = std::exchange(o.pid_, -1);
    return *this;
  }
  ~child() { stop(); }

  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    for (int i = 0; i < 200; ++i) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
};

void announce(int fd, std::uint16_t port) {
  if (::write(fd, &port, sizeof port) != sizeof port) std::_Exit(3);
  ::close(fd);
}

// Forks `body(ready_fd)`; the child writes its port to ready_fd once it
// serves, and dies with this process.
template <class Body>
child fork_server(const char* name, Body body, std::uint16_t& port) {
  int fds[2];
  if (::pipe(fds) != 0) fail("pipe");
  const pid_t pid = ::fork();
  if (pid < 0) fail("fork");
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::close(fds[0]);
    int rc = 1;
    try {
      rc = body(fds[1]);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "net_bench %s: %s\n", name, e.what());
    }
    std::_Exit(rc);
  }
  child c(pid);
  ::close(fds[1]);
  pollfd p{fds[0], POLLIN, 0};
  const bool ready = ::poll(&p, 1, 15000) == 1 && ::read(fds[0], &port, sizeof port) == sizeof port;
  ::close(fds[0]);
  if (!ready) fail(fmt::format("the {} did not start", name));
  return c;
}

int run_master(int ready_fd) {
  asio::io_context io(1);
  net::master_server master(io.get_executor(), std::make_shared<meta::service>(),
                            {asio::ip::address_v4::loopback(), 0});
  master.start();
  announce(ready_fd, master.local_endpoint().port());
  asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&](boost::system::error_code, int) {
    master.stop();
    io.stop();
  });
  io.run();
  return 0;
}

// The node that owns the data: a cluster store with one populated, shareable
// segment, its data server on 127.0.0.1.
int run_node(int ready_fd, std::uint16_t master_port, std::uint64_t segment_bytes) {
  asio::io_context io(1);
  cluster_options options;
  options.master.port = master_port;
  auto kv = make_cluster_store(io.get_executor(), options);
  int rc = 0;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto [ec, id] = co_await kv.add_segment(segment_bytes, asio::as_tuple(asio::deferred));
        if (ec) {
          std::fprintf(stderr, "net_bench node: add_segment: %s\n", ec.message().c_str());
          rc = 1;
          io.stop();
          co_return;
        }
        announce(ready_fd, kv.transport().lane<tcp_lane>().data_endpoint().port());
      },
      asio::detached);
  asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&](boost::system::error_code, int) { io.stop(); });
  io.run();
  return rc;
}

// ------------------------------------------------------------ raw sockets
// The limit for TCP: blocking send and recv on a plain loopback connection,
// one contiguous block per request, no framing beyond a 16-byte request.

struct raw_request {
  std::uint64_t bytes;
  std::uint32_t window;  // which of the server's blocks to send from, or receive into
  std::uint32_t write;   // 0: server sends `bytes`; 1: server receives them and acks
};

bool send_all(int fd, const void* data, std::size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n) {
    const ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL);
    if (k <= 0) return false;
    p += k;
    n -= static_cast<std::size_t>(k);
  }
  return true;
}

bool recv_all(int fd, void* data, std::size_t n) {
  char* p = static_cast<char*>(data);
  while (n) {
    const ssize_t k = ::recv(fd, p, n, 0);
    if (k <= 0) return false;
    p += k;
    n -= static_cast<std::size_t>(k);
  }
  return true;
}

int listen_loopback(std::uint16_t& port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 4) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    fail("cannot listen on 127.0.0.1");
  port = ntohs(a.sin_port);
  return fd;
}

int run_raw_server(int ready_fd, std::size_t block_bytes, std::size_t windows) {
  std::uint16_t port = 0;
  const int listener = listen_loopback(port);
  std::vector<char> blocks(block_bytes * windows, 'r');  // touched: no page faults while measured
  announce(ready_fd, port);
  for (;;) {
    const int c = ::accept(listener, nullptr, nullptr);
    if (c < 0) continue;
    const int one = 1;
    ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    raw_request r{};
    while (recv_all(c, &r, sizeof r) && r.bytes <= block_bytes && r.window < windows) {
      char* block = blocks.data() + r.window * block_bytes;
      const char ack = 'k';
      if (!(r.write ? recv_all(c, block, r.bytes) && send_all(c, &ack, 1) : send_all(c, block, r.bytes))) break;
    }
    ::close(c);
  }
}

class raw_client {
 public:
  explicit raw_client(std::uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    const int one = 1;
    if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) fail("cannot reach the raw server");
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  raw_client(const raw_client&) = delete;
  ~raw_client() { ::close(fd_); }

  void read(std::uint32_t window, std::span<char> into) {
    const raw_request r{into.size(), window, 0};
    if (!send_all(fd_, &r, sizeof r) || !recv_all(fd_, into.data(), into.size())) fail("raw read failed");
  }
  void write(std::uint32_t window, std::span<const char> from) {
    const raw_request r{from.size(), window, 1};
    char ack = 0;
    if (!send_all(fd_, &r, sizeof r) || !send_all(fd_, from.data(), from.size()) || !recv_all(fd_, &ack, 1))
      fail("raw write failed");
  }

 private:
  int fd_ = -1;
};

// ------------------------------------------------------------ redis

#if COROKV_BENCH_HAVE_HIREDIS
struct redis_reply_deleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using redis_reply = std::unique_ptr<redisReply, redis_reply_deleter>;

class redis_peer {
 public:
  // Starts redis-server on a free port with persistence off, and connects.
  // nullopt (and why, in `why`) if it cannot be started.
  static std::optional<redis_peer> start(const std::filesystem::path& dir, std::string& why) {
    std::uint16_t port = 0;
    ::close(listen_loopback(port));  // a free port, handed to redis
    std::vector<std::string> args{"redis-server", "--port", std::to_string(port), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no", "--protected-mode", "no",
                                  "--dir", dir.string(), "--logfile", (dir / "redis.log").string()};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = -1;
    if (::posix_spawnp(&pid, "redis-server", nullptr, nullptr, argv.data(), environ) != 0) {
      why = "redis-server is not installed";
      return std::nullopt;
    }
    redis_peer peer{child(pid)};
    for (int i = 0; i < 500 && !peer.ctx_; ++i) {
      redisContext* c = redisConnect("127.0.0.1", port);
      if (c && !c->err) {
        peer.ctx_ = c;
        break;
      }
      if (c) redisFree(c);
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!peer.ctx_) {
      why = "redis-server did not accept connections";
      return std::nullopt;
    }
    // hiredis shrinks its read buffer back to 16 KiB when idle; large
    // replies would then regrow it on every call. Redis at its best: no limit.
    peer.ctx_->reader->maxbuf = 0;
    const redis_reply pong(peer.command({"PING"}));
    if (!pong || pong->type != REDIS_REPLY_STATUS) {
      why = "redis-server does not answer PING";
      return std::nullopt;
    }
    return peer;
  }

  redis_peer(redis_peer&& o) noexcept : process_(std::move(o.process_)), ctx_(std::exchange(o.ctx_, nullptr)) {}
  ~redis_peer() {
    if (ctx_) redisFree(ctx_);
  }

  // One command from argument views; the reply, or nullptr on a failure.
  // hiredis formats the command, but it is sent here: hiredis 0.14 sends
  // from its output buffer and moves the unsent rest to the front after
  // each partial write, which is quadratic in the command's size (a 4 MiB
  // MSET took 25 ms instead of 1.5). Redis is measured at its best.
  redis_reply command(const std::vector<std::string_view>& args) {
    argv_.clear();
    lengths_.clear();
    for (auto a : args) {
      argv_.push_back(a.data());
      lengths_.push_back(a.size());
    }
    char* formatted = nullptr;
    const long long length =
        redisFormatCommandArgv(&formatted, static_cast<int>(argv_.size()), argv_.data(), lengths_.data());
    if (length < 0) return nullptr;
    const bool sent = send_all(ctx_->fd, formatted, static_cast<std::size_t>(length));
    redisFreeCommand(formatted);
    void* reply = nullptr;
    if (!sent || redisGetReply(ctx_, &reply) != REDIS_OK) return nullptr;
    return redis_reply(static_cast<redisReply*>(reply));
  }

 private:
  explicit redis_peer(child process) : process_(std::move(process)) {}
  child process_;
  redisContext* ctx_ = nullptr;
  std::vector<const char*> argv_;
  std::vector<std::size_t> lengths_;
};
#endif

// ------------------------------------------------------------ data sets

// `windows` batches of `batch` keys, values of `value_bytes`, each value a
// pattern of its key's index, so a read can be checked byte for byte.
struct dataset {
  std::size_t batch = 0, value_bytes = 0, windows = 0;
  std::vector<std::string> keys;
  std::vector<std::vector<std::string_view>> window_keys;
  std::vector<std::vector<char>> values;  // one per key
  std::vector<std::vector<query_result>> leases;

  dataset(const std::string& prefix, std::size_t b, std::size_t v, std::size_t window_count = 4)
      : batch(b), value_bytes(v), windows(window_count) {
    for (std::size_t i = 0; i < batch * windows; ++i) {
      keys.push_back(fmt::format("{}/{}x{}/{:06}", prefix, batch, value_bytes, i));
      values.emplace_back(value_bytes, static_cast<char>('a' + i % 26));
      values.back()[0] = static_cast<char>(i);  // no two neighbours alike
    }
    for (std::size_t w = 0; w < windows; ++w)
      window_keys.emplace_back(keys.begin() + static_cast<std::ptrdiff_t>(w * batch),
                               keys.begin() + static_cast<std::ptrdiff_t>((w + 1) * batch));
  }
  std::span<const std::vector<char>> window_values(std::size_t w) const {
    return std::span(values).subspan(w * batch, batch);
  }
  std::size_t batch_bytes() const { return batch * value_bytes; }
};

// The destination of every read: one contiguous block, a buffer per key.
struct destination {
  std::vector<char> bytes;
  std::vector<asio::mutable_buffer> buffers;
  destination(std::size_t batch, std::size_t value_bytes) : bytes(batch * value_bytes, 0) {
    for (std::size_t i = 0; i < batch; ++i) buffers.push_back(asio::buffer(bytes.data() + i * value_bytes, value_bytes));
  }
  bool holds(const dataset& d, std::size_t window) const {
    for (std::size_t i = 0; i < d.batch; ++i)
      if (std::memcmp(bytes.data() + i * d.value_bytes, d.values[window * d.batch + i].data(), d.value_bytes) != 0)
        return false;
    return true;
  }
};

void require_all(const std::vector<get_result>& got, const char* what) {
  for (auto& r : got)
    if (!r.ok()) fail(fmt::format("{}: a key failed: {}", what, r.ec().message()));
}
void require_all(const std::vector<errc>& got, const char* what) {
  for (auto e : got)
    if (e != errc::success) fail(fmt::format("{}: a key failed: {}", what, std::error_code(e).message()));
}

asio::awaitable<void> put_dataset(cluster_store& kv, dataset& d) {
  for (std::size_t w = 0; w < d.windows; ++w) {
    std::vector<asio::const_buffer> values;
    for (auto& v : d.window_values(w)) values.push_back(asio::buffer(v));
    require_all(co_await kv.batch_put(d.window_keys[w], values), "put");
  }
}

asio::awaitable<void> lease_dataset(cluster_store& kv, dataset& d) {
  d.leases.clear();
  for (std::size_t w = 0; w < d.windows; ++w) d.leases.push_back(co_await kv.batch_query(d.window_keys[w]));
}

// Reads every batch of a leased dataset once into a cleared destination and
// checks every byte, before anything is timed.
asio::awaitable<void> check_every_batch(cluster_store& kv, const dataset& d, destination& dst, const char* path) {
  for (std::size_t w = 0; w < d.windows; ++w) {
    std::fill(dst.bytes.begin(), dst.bytes.end(), 0);
    require_all(co_await kv.batch_get(d.window_keys[w], d.leases[w], dst.buffers), path);
    if (!dst.holds(d, w)) fail(fmt::format("{}: wrong bytes", path));
  }
}

// ------------------------------------------------------------ the run

struct context {
  context(double s, cluster_store& t, cluster_store& m, std::uint16_t raw) : seconds(s), tcp(t), shm(m), raw_port(raw) {}
  bool wants(std::string_view section) const {
    return sections.empty() || ("," + sections + ",").find("," + std::string(section) + ",") != std::string::npos;
  }
  std::string sections;  // comma-separated; empty: all
  double seconds;
  cluster_store& tcp;   // reaches the node by TCP only
  cluster_store& shm;   // reaches it through the mapped memfd
  std::uint16_t raw_port;
  nlohmann::json rows = nlohmann::json::array();
#if COROKV_BENCH_HAVE_HIREDIS
  redis_peer* redis = nullptr;
#endif
  std::string redis_missing;
};

std::string size_text(std::size_t bytes) {
  return bytes >= (1u << 20) ? fmt::format("{}M", bytes >> 20) : fmt::format("{}K", bytes >> 10);
}

asio::awaitable<void> query_section(context& c) {
  constexpr std::size_t batch = 1024, batches = 64;
  dataset d("query", batch, 64, batches);
  co_await put_dataset(c.tcp, d);

  fmt::print("\n== query: remote batch_query over loopback, {} keys per batch ({} keys stored)\n", batch, d.keys.size());
  fmt::print("{:>9} {:>14} {:>12} {:>10}\n", "in flight", "keys/s", "µs/batch", "target");
  for (std::size_t depth : {std::size_t{1}, std::size_t{4}}) {
    std::uint64_t done = 0;
    const auto start = bench_clock::now();
    auto worker = [&](std::size_t first) -> asio::awaitable<void> {
      co_await timed(c.seconds, [&](std::uint64_t round) -> asio::awaitable<void> {
        const auto& keys = d.window_keys[(first + round * depth) % batches];
        const auto got = co_await c.shm.batch_query(keys);
        for (auto& q : got)
          if (!q.ok()) fail("query: a key failed: " + q.ec().message());
        done += keys.size();
      });
    };
    auto ex = co_await asio::this_coro::executor;
    using op = decltype(asio::co_spawn(ex, worker(0), asio::deferred));
    std::vector<op> ops;
    for (std::size_t k = 0; k < depth; ++k) ops.push_back(asio::co_spawn(ex, worker(k), asio::deferred));
    auto [order, errors] = co_await asio::experimental::make_parallel_group(std::move(ops))
                               .async_wait(asio::experimental::wait_for_all(), asio::deferred);
    for (auto& e : errors)
      if (e) std::rethrow_exception(e);
    const double elapsed = std::chrono::duration<double>(bench_clock::now() - start).count();
    const double keys_per_s = static_cast<double>(done) / elapsed;
    fmt::print("{:>9} {:>13.2f}M {:>12.1f} {:>10}\n", depth, keys_per_s / 1e6,
               1e6 * elapsed / (static_cast<double>(done) / batch) * static_cast<double>(depth), "2.00M");
    c.rows.push_back({{"section", "query"}, {"batch", batch}, {"in_flight", depth}, {"keys_per_s", keys_per_s},
                      {"target_keys_per_s", 2e6}});
  }
}

// One row of a get table: a mode against the limit measured in the same
// rounds (bench_support.hpp: interleaved and compare).
void get_row(context& c, const char* section, const dataset& d, const char* mode, const bench::versus& v,
             const char* limit_name, double target) {
  const double gib = static_cast<double>(d.batch_bytes()) / (v.median_us * 1e-6) / static_cast<double>(1u << 30);
  const double limit_gib = static_cast<double>(d.batch_bytes()) / (v.limit_median_us * 1e-6) / static_cast<double>(1u << 30);
  fmt::print("{:>6} {:>6} {:>13} {:>9.2f} {:>10.1f} {:>9.0f}% {:>13}  {} {:.2f} GiB/s{}\n", d.batch,
             size_text(d.value_bytes), mode, gib, v.median_us, 100 * v.ratio,
             fmt::format("({:.0f}-{:.0f}%)", 100 * v.ratio_p10, 100 * v.ratio_p90), limit_name, limit_gib,
             target > 0 ? fmt::format(" (target {:.0f}%)", 100 * target) : "");
  c.rows.push_back({{"section", section},
                    {"batch", d.batch},
                    {"value_bytes", d.value_bytes},
                    {"mode", mode},
                    {"gib_per_s", gib},
                    {"us_per_batch", v.median_us},
                    {"limit", limit_name},
                    {"limit_gib_per_s", limit_gib},
                    {"limit_us_per_batch", v.limit_median_us},
                    {"ratio_to_limit", v.ratio},
                    {"ratio_to_limit_p10", v.ratio_p10},
                    {"ratio_to_limit_p90", v.ratio_p90},
                    {"rounds", v.rounds},
                    {"target_ratio", target}});
}

using datasets = std::vector<std::unique_ptr<dataset>>;

void get_table_header(const char* title) {
  fmt::print("\n== {} (modes interleaved round by round; median ratio, p10-p90)\n{:>6} {:>6} {:>13} {:>9} {:>10} {:>10} {:>13}\n",
             title, "batch", "value", "mode", "GiB/s", "µs/batch", "vs limit", "spread");
}

// How many batches each mode runs per round: about 2 ms of the slowest.
template <class Step>
asio::awaitable<std::size_t> reps_for_round(Step& step, std::size_t slowest_mode) {
  const auto t0 = bench_clock::now();
  co_await step(slowest_mode, 0);
  co_return bench::reps_for(std::chrono::duration<double, std::micro>(bench_clock::now() - t0).count(), 2000);
}

asio::awaitable<void> tcp_section(context& c, datasets& sets) {
  raw_client raw(c.raw_port);
  get_table_header("tcp: batch_get over loopback TCP against a raw socket moving the same bytes");
  for (auto& dp : sets) {
    dataset& d = *dp;
    destination dst(d.batch, d.value_bytes);
    co_await lease_dataset(c.tcp, d);
    co_await check_every_batch(c.tcp, d, dst, "tcp get");
    auto step = [&](std::size_t mode, std::uint64_t n) -> asio::awaitable<void> {
      const std::size_t w = n % d.windows;
      if (mode == 0) {
        raw.read(static_cast<std::uint32_t>(w), dst.bytes);
      } else if (mode == 1) {
        require_all(co_await c.tcp.batch_get(d.window_keys[w], d.leases[w], dst.buffers), "tcp get");
      } else {
        const auto leases = co_await c.tcp.batch_query(d.window_keys[w]);
        require_all(co_await c.tcp.batch_get(d.window_keys[w], leases, dst.buffers), "tcp query+get");
      }
    };
    const std::size_t reps = co_await reps_for_round(step, 2);
    const auto us = co_await bench::interleaved(c.seconds * 3, 3, reps, step);
    get_row(c, "tcp", d, "with-results", bench::compare(us[1], us[0]), "raw socket",
            d.value_bytes <= (4u << 10) ? 0.70 : 0.85);
    get_row(c, "tcp", d, "query+get", bench::compare(us[2], us[0]), "raw socket", 0);
  }
}

asio::awaitable<void> shm_section(context& c, datasets& sets) {
  get_table_header("shm: batch_get through the mapped memfd against memcpy of the same bytes");
  auto [list_ec, segments] = co_await c.shm.metadata().list_segments();
  if (list_ec || segments.size() != 1) fail("shm: expected the node's one segment");
  const auto mapping = memory::peer_mapping::open(segments[0]);
  if (!mapping) fail("shm: the node's segment cannot be mapped");
  for (auto& dp : sets) {
    dataset& d = *dp;
    destination dst(d.batch, d.value_bytes);
    co_await lease_dataset(c.shm, d);
    co_await check_every_batch(c.shm, d, dst, "shm get");
    auto step = [&](std::size_t mode, std::uint64_t n) -> asio::awaitable<void> {
      const std::size_t w = n % d.windows;
      if (mode == 0) {
        const auto& leases = d.leases[w];
        for (std::size_t i = 0; i < d.batch; ++i)
          std::memcpy(dst.bytes.data() + i * d.value_bytes, mapping->data() + leases[i].replicas[0].offset,
                      d.value_bytes);
      } else {
        require_all(co_await c.shm.batch_get(d.window_keys[w], d.leases[w], dst.buffers), "shm get");
      }
      co_return;
    };
    const std::size_t reps = co_await reps_for_round(step, 1);
    const auto us = co_await bench::interleaved(c.seconds * 3, 2, reps, step);
    get_row(c, "shm", d, "with-results", bench::compare(us[1], us[0]), "memcpy", 0.80);
  }
}

// The two-step read's saving, as latency per batch. The three modes take
// turns within each round (in rotating order), so the machine's drift over
// the run touches all of them alike; the saving is the median of each
// round's own difference between query+get and get with query results.
asio::awaitable<void> two_step_section(context& c, dataset& d) {
  fmt::print("\n== two-step: latency per batch of {} x {}, modes interleaved\n{:>5} {:>13} {:>10} {:>10} {:>10} {:>12}\n",
             d.batch, size_text(d.value_bytes), "path", "mode", "p50 µs", "p99 µs", "mean µs", "metadata RTs");
  for (cluster_store* kv : {&c.tcp, &c.shm}) {
    const char* path = kv == &c.tcp ? "tcp" : "shm";
    destination dst(d.batch, d.value_bytes);
    co_await lease_dataset(*kv, d);
    constexpr std::array<const char*, 3> modes{"query+get", "with-results", "cache"};
    std::array<std::vector<double>, 3> us;
    std::array<std::uint64_t, 3> trips{};
    std::vector<double> saving;
    auto step = [&](std::size_t mode, std::size_t w) -> asio::awaitable<double> {
      const auto rts = kv->counters().metadata_round_trips;
      const auto t0 = bench_clock::now();
      if (mode == 0) {
        const auto leases = co_await kv->batch_query(d.window_keys[w]);
        require_all(co_await kv->batch_get(d.window_keys[w], leases, dst.buffers), "query+get");
      } else if (mode == 1) {
        require_all(co_await kv->batch_get(d.window_keys[w], d.leases[w], dst.buffers), "with-results");
      } else {
        require_all(co_await kv->batch_get(d.window_keys[w], dst.buffers), "cache");
      }
      const double took = std::chrono::duration<double, std::micro>(bench_clock::now() - t0).count();
      us[mode].push_back(took);
      trips[mode] += kv->counters().metadata_round_trips - rts;
      co_return took;
    };
    co_await timed(c.seconds * 3, [&](std::uint64_t round) -> asio::awaitable<void> {
      const std::size_t w = round % d.windows;
      std::array<double, 3> took{};
      for (std::size_t k = 0; k < 3; ++k) {
        const std::size_t mode = (round + k) % 3;
        took[mode] = co_await step(mode, w);
      }
      saving.push_back(took[0] - took[1]);
    });
    for (std::size_t mode = 0; mode < 3; ++mode) {
      const double rts = static_cast<double>(trips[mode]) / static_cast<double>(us[mode].size());
      const bench::latency l = bench::percentiles(us[mode]);
      fmt::print("{:>5} {:>13} {:>10.1f} {:>10.1f} {:>10.1f} {:>12.2f}\n", path, modes[mode], l.p50_us, l.p99_us,
                 l.mean_us, rts);
      c.rows.push_back({{"section", "two-step"}, {"path", path}, {"batch", d.batch}, {"value_bytes", d.value_bytes},
                        {"mode", modes[mode]}, {"p50_us", l.p50_us}, {"p99_us", l.p99_us}, {"mean_us", l.mean_us},
                        {"metadata_round_trips_per_batch", rts}});
    }
    const double query_get_p50 = bench::percentiles(us[0]).p50_us;
    const double saved = bench::percentiles(saving).p50_us;
    fmt::print("{:>5} saving of the two-step read: {:.1f} µs per batch, median of paired rounds ({:.0f}% of query+get)\n",
               path, saved, 100 * saved / query_get_p50);
    c.rows.push_back({{"section", "two-step"}, {"path", path}, {"mode", "saving"}, {"paired_median_us", saved},
                      {"fraction_of_query_get", saved / query_get_p50}});
  }
}

// Redis: the same keys and values, MGET into the same destination. corokv
// is measured over TCP (the transport Redis uses) and as a store on this
// host runs by default (the replica's memfd mapped, no socket); the raw
// socket shows what any TCP store could reach here.
asio::awaitable<void> redis_section(context& c, datasets& sets) {
  fmt::print("\n== redis: MGET and MSET+DEL through hiredis, against corokv (ratios to Redis)\n");
#if COROKV_BENCH_HAVE_HIREDIS
  if (!c.redis) {
    fmt::print("not measured: {}\n", c.redis_missing);
    c.rows.push_back({{"section", "redis"}, {"skipped", c.redis_missing}});
    co_return;
  }
  redis_peer& redis = *c.redis;
  raw_client raw(c.raw_port);
  fmt::print("(sides interleaved round by round; each a median ratio to Redis, p10-p90)\n");
  fmt::print("{:>6} {:>6} {:>10} {:>12} {:>18} {:>18} {:>18}\n", "batch", "value", "op", "redis GiB/s", "corokv tcp",
             "corokv same-host", "raw socket");
  for (auto& dp : sets) {
    dataset& d = *dp;
    destination dst(d.batch, d.value_bytes);
    for (std::size_t w = 0; w < d.windows; ++w) {
      std::vector<std::string_view> args{"MSET"};
      for (std::size_t i = 0; i < d.batch; ++i) {
        args.push_back(d.window_keys[w][i]);
        args.emplace_back(d.values[w * d.batch + i].data(), d.value_bytes);
      }
      const redis_reply ok = redis.command(args);
      if (!ok || ok->type != REDIS_REPLY_STATUS) fail("redis MSET failed");
    }
    auto mget = [&](std::size_t w) {
      std::vector<std::string_view> args{"MGET"};
      args.insert(args.end(), d.window_keys[w].begin(), d.window_keys[w].end());
      const redis_reply r = redis.command(args);
      if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != d.batch) fail("redis MGET failed");
      for (std::size_t i = 0; i < d.batch; ++i) {
        const redisReply* e = r->element[i];
        if (e->type != REDIS_REPLY_STRING || e->len != d.value_bytes) fail("redis MGET: a key is missing");
        std::memcpy(dst.buffers[i].data(), e->str, e->len);
      }
    };
    mget(0);
    if (!dst.holds(d, 0)) fail("redis MGET: wrong bytes");
    // Both stores read with leases they hold; the four sides take turns.
    co_await lease_dataset(c.tcp, d);
    auto shm_leases = d.leases;
    co_await lease_dataset(c.shm, d);
    std::swap(shm_leases, d.leases);  // d.leases: the TCP store's
    auto get_step = [&](std::size_t side, std::uint64_t n) -> asio::awaitable<void> {
      const std::size_t w = n % d.windows;
      if (side == 0) {
        mget(w);
      } else if (side == 1) {
        raw.read(static_cast<std::uint32_t>(w), dst.bytes);
      } else if (side == 2) {
        require_all(co_await c.tcp.batch_get(d.window_keys[w], d.leases[w], dst.buffers), "get");
      } else {
        require_all(co_await c.shm.batch_get(d.window_keys[w], shm_leases[w], dst.buffers), "get");
      }
    };

    // Writes: fresh keys put, then removed, on every side.
    std::vector<std::string> fresh;
    for (std::size_t i = 0; i < d.batch; ++i) fresh.push_back(fmt::format("fresh/{}x{}/{:04}", d.batch, d.value_bytes, i));
    std::vector<asio::const_buffer> values;
    for (auto& v : d.window_values(0)) values.push_back(asio::buffer(v));
    auto put_step = [&](std::size_t side, std::uint64_t n) -> asio::awaitable<void> {
      if (side == 0) {
        std::vector<std::string_view> set{"MSET"}, del{"DEL"};
        for (std::size_t i = 0; i < d.batch; ++i) {
          set.push_back(fresh[i]);
          set.emplace_back(static_cast<const char*>(values[i].data()), values[i].size());
          del.push_back(fresh[i]);
        }
        const redis_reply r1 = redis.command(set);
        const redis_reply r2 = redis.command(del);
        if (!r1 || r1->type != REDIS_REPLY_STATUS || !r2 || r2->type != REDIS_REPLY_INTEGER) fail("redis MSET/DEL failed");
      } else if (side == 1) {
        raw.write(static_cast<std::uint32_t>(n % d.windows), dst.bytes);
      } else {
        cluster_store& kv = side == 2 ? c.tcp : c.shm;
        require_all(co_await kv.batch_put(fresh, values), "put");
        require_all(co_await kv.batch_remove(fresh), "remove");
      }
    };
    const std::size_t get_reps = co_await reps_for_round(get_step, 0);
    const auto get_us = co_await bench::interleaved(c.seconds * 2, 4, get_reps, get_step);
    const std::size_t put_reps = co_await reps_for_round(put_step, 0);
    const auto put_us = co_await bench::interleaved(c.seconds * 2, 4, put_reps, put_step);

    // Each side against Redis, from the same rounds: the median of each
    // round's ratio (Redis time / side time), with the 10th-90th percentiles.
    auto row = [&](const char* op, const std::vector<std::vector<double>>& us) {
      const double redis_gib =
          static_cast<double>(d.batch_bytes()) / (bench::quantile(us[0], 0.5) * 1e-6) / static_cast<double>(1u << 30);
      auto side = [&](std::size_t k) { return bench::compare(us[k], us[0]); };
      auto cell = [&](const bench::versus& v) {
        return fmt::format("{:.1f}x ({:.1f}-{:.1f})", v.ratio, v.ratio_p10, v.ratio_p90);
      };
      const bench::versus raw_side = side(1), tcp_side = side(2), shm_side = side(3);
      fmt::print("{:>6} {:>6} {:>10} {:>12.2f} {:>18} {:>18} {:>18}\n", d.batch, size_text(d.value_bytes), op, redis_gib,
                 cell(tcp_side), cell(shm_side), cell(raw_side));
      c.rows.push_back({{"section", "redis"}, {"batch", d.batch}, {"value_bytes", d.value_bytes}, {"op", op},
                        {"redis_gib_per_s", redis_gib},
                        {"tcp_ratio_to_redis", tcp_side.ratio}, {"tcp_ratio_p10", tcp_side.ratio_p10},
                        {"tcp_ratio_p90", tcp_side.ratio_p90},
                        {"same_host_ratio_to_redis", shm_side.ratio}, {"same_host_ratio_p10", shm_side.ratio_p10},
                        {"same_host_ratio_p90", shm_side.ratio_p90},
                        {"raw_socket_ratio_to_redis", raw_side.ratio}, {"rounds", tcp_side.rounds},
                        {"target_ratio", 3.0}});
    };
    row("get", get_us);
    row("put+remove", put_us);
  }
  fmt::print("(target: corokv at least 3x Redis for 64 KiB values)\n");
#else
  fmt::print("not measured: built without hiredis (install libhiredis-dev and reconfigure)\n");
  c.rows.push_back({{"section", "redis"}, {"skipped", "built without hiredis"}});
  co_return;
#endif
}

asio::awaitable<void> run_all(context& c) {
  if (c.wants("query")) co_await query_section(c);
  if (!c.wants("tcp") && !c.wants("shm") && !c.wants("two-step") && !c.wants("redis")) co_return;
  const std::vector<std::pair<std::size_t, std::size_t>> shapes{{64, 4 << 10}, {64, 64 << 10}, {16, 1 << 20}};
  datasets sets;
  for (auto [batch, value] : shapes) {
    sets.push_back(std::make_unique<dataset>("data", batch, value));
    co_await put_dataset(c.tcp, *sets.back());
  }
  if (c.wants("tcp")) co_await tcp_section(c, sets);
  if (c.wants("shm")) co_await shm_section(c, sets);
  if (c.wants("two-step"))
    for (std::size_t i : {0, 1}) co_await two_step_section(c, *sets[i]);  // 64 x 4 KiB, 64 x 64 KiB
  if (c.wants("redis")) co_await redis_section(c, sets);
  if (c.shm.transport().lane<tcp_lane>().stats().exchanges != 0 || c.tcp.transport().lane<memcpy_lane>().stats().bytes_same_host != 0)
    fail("a store moved bytes on the other's path");
}

cluster_store client_store(asio::io_context& io, std::uint16_t master_port, bool shared_memory) {
  cluster_options o;
  o.master.port = master_port;
  o.transport.serve = false;  // a client: it contributes no memory
  o.transport.shared_memory = shared_memory;
  o.store.lease_ttl = std::chrono::seconds(30);  // the longest a master grants: leases outlive each measured run
  return make_cluster_store(io.get_executor(), o);
}

}  // namespace

int main(int argc, char** argv) {
  bench::arguments args("net_bench",
                        {{"--seconds", "S"}, {"--json", "PATH"}, {"--sections", "query,tcp,shm,two-step,redis"}});
  if (!args.parse(argc, argv)) return 2;
  const double seconds = args.number("--seconds", 0.5);
  const std::string json_path = args.text("--json", ""), sections = args.text("--sections", "");
  try {
    // Children first, while this process has no threads and no io_context.
    constexpr std::size_t raw_block = 16u << 20, raw_windows = 4;
    std::uint16_t master_port = 0, data_port = 0, raw_port = 0;
    child master = fork_server("master", run_master, master_port);
    child node = fork_server("node", [&](int fd) { return run_node(fd, master_port, std::uint64_t{512} << 20); },
                             data_port);
    child raw = fork_server("raw socket server", [&](int fd) { return run_raw_server(fd, raw_block, raw_windows); },
                            raw_port);
    fmt::print("net_bench: master on port {}, node data server on {}, raw socket server on {}\n", master_port,
               data_port, raw_port);

    asio::io_context io(1);
    auto tcp = client_store(io, master_port, false);
    auto shm = client_store(io, master_port, true);
    context c{seconds, tcp, shm, raw_port};
    c.sections = sections;
#if COROKV_BENCH_HAVE_HIREDIS
    const auto redis_dir = std::filesystem::temp_directory_path() / fmt::format("corokv-net-bench-{}", ::getpid());
    std::filesystem::create_directories(redis_dir);
    std::optional<redis_peer> redis = redis_peer::start(redis_dir, c.redis_missing);
    if (redis) c.redis = &*redis;
#endif
    // The stores' sessions keep the io_context busy (heartbeats), so it is
    // stopped when the run ends.
    std::exception_ptr failure;
    asio::co_spawn(io, run_all(c), [&](std::exception_ptr e) {
      failure = e;
      io.stop();
    });
    io.run();
    if (failure) std::rethrow_exception(failure);
#if COROKV_BENCH_HAVE_HIREDIS
    redis.reset();
    std::filesystem::remove_all(redis_dir);
#endif
    bench::write_json(json_path, "net_bench", seconds, c.rows);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "net_bench failed: %s\n", e.what());
    return 1;
  }
  return 0;
}
