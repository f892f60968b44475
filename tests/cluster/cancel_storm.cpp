// The cancellation storm of issue 22, as a child of the process tests
// (process_test.cpp starts it; --corokv-child=cancel-storm), run as the
// issue's asyncio program runs it: rounds of `calls` calls at once (batch
// put, batch_get into buffers, batch_get into the store's buffers,
// batch_remove, batch_exist_prefix), started from this thread, a third of
// them cancelled (cancellation_type::all, as the Python binding emits) at a
// random moment within 5 ms from a thread of their own, every call awaited,
// again, for `seconds`. Reads name this client's keys and a key a dead node
// held. A cluster store with a segment of its own, on `threads` I/O
// threads. It prints a JSON report and exits 0 only if every call
// completed, with its results or as cancelled, and every byte read back is
// the byte written.

#include <corokv/cluster.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_future.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace corokv;
using namespace std::chrono_literals;
namespace asio = boost::asio;
using json = nlohmann::json;

constexpr std::size_t value_size = 16 * 1024, keys_per_task = 8, per_batch = 4;

// A key's value: bytes that follow from its name alone, so that any read,
// whichever put it saw, can be checked.
std::vector<std::byte> value_of(const std::string& key) {
  std::vector<std::byte> v(value_size);
  const std::size_t seed = std::hash<std::string>{}(key);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<std::byte>((seed >> (i % 7)) + i * 131);
  return v;
}

enum class operation { put, get_into, get_owned, remove, exist_prefix };
const char* name_of(operation op) {
  switch (op) {
    case operation::put: return "put";
    case operation::get_into: return "get_into";
    case operation::get_owned: return "get_owned";
    case operation::remove: return "remove";
    case operation::exist_prefix: return "exist_prefix";
  }
  return "?";
}

// What the storm saw; every task updates it under the lock.
struct storm_report {
  std::mutex mu;
  std::uint64_t calls = 0, completed = 0, cancel_requests = 0, cancelled = 0, corrupt = 0, dead_keys_read = 0;
  std::map<std::string, std::uint64_t> by_operation, call_errors, key_statuses;

  json to_json() {
    std::lock_guard lock(mu);
    return json{{"calls", calls},
                {"completed", completed},
                {"cancel_requests", cancel_requests},
                {"cancelled", cancelled},
                {"corrupt", corrupt},
                {"dead_keys_read", dead_keys_read},
                {"by_operation", by_operation},
                {"call_errors", call_errors},
                {"key_statuses", key_statuses}};
  }
};

// Cancellations come from a thread of their own, posted to the calling
// task's strand, as the Python binding posts a cancel to its I/O thread:
// they land anywhere among the I/O threads' handlers. (A timer on an I/O
// thread would fire only between two of the reactor's batches, and missed
// the crash of issue 22 that this catches at once.)
class canceller {
 public:
  explicit canceller(storm_report& report) : report_(report) {}
  ~canceller() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    thread_.join();
  }

  void cancel_at(std::chrono::steady_clock::time_point at, std::shared_ptr<asio::cancellation_signal> signal,
                 asio::any_io_executor strand) {
    std::lock_guard lock(mu_);
    due_.push_back({at, std::move(signal), std::move(strand)});
  }

 private:
  struct due {
    std::chrono::steady_clock::time_point at;
    std::shared_ptr<asio::cancellation_signal> signal;
    asio::any_io_executor strand;
  };

  void run() {
    std::vector<due> now;
    for (;;) {
      std::this_thread::sleep_for(100us);
      {
        std::lock_guard lock(mu_);
        if (stop_) return;
        const auto t = std::chrono::steady_clock::now();
        auto split = std::partition(due_.begin(), due_.end(), [&](const due& d) { return d.at > t; });
        now.assign(std::make_move_iterator(split), std::make_move_iterator(due_.end()));
        due_.erase(split, due_.end());
      }
      for (due& d : now)
        asio::post(d.strand, [signal = std::move(d.signal), &r = report_] {
          {
            std::lock_guard lock(r.mu);
            ++r.cancel_requests;
          }
          signal->emit(asio::cancellation_type::all);
        });
      now.clear();
    }
  }

  storm_report& report_;
  std::mutex mu_;
  std::vector<due> due_;
  bool stop_ = false;
  std::thread thread_{[this] { run(); }};
};

// Records a completed call: the whole-call error (cancelled, or anything
// else, which the test reports), and per key its status.
void record(storm_report& r, operation op, const boost::system::error_code& ec, const std::vector<errc>& statuses) {
  std::lock_guard lock(r.mu);
  ++r.completed;
  ++r.by_operation[name_of(op)];
  if (ec == errc::cancelled) {
    ++r.cancelled;
  } else if (ec) {
    ++r.call_errors[ec.category().name() + std::string(": ") + ec.message()];
  }
  for (errc e : statuses) ++r.key_statuses[make_error_code(e).message()];
}

// The calls of one round, started from the storm's own thread (as the
// Python binding starts them from the interpreter's), each completing on a
// strand of its own, where its cancellation is emitted too: serialised with
// its completion, as Asio requires.
class round_of_calls {
 public:
  round_of_calls(cluster_store& kv, storm_report& report, canceller& cancels, std::size_t calls)
      : kv_(kv), report_(report), cancels_(cancels), left_(calls) {}

  // Starts call `n`: per_batch of task n's keys from a random start; reads
  // also name one key the dead node held.
  void start(std::mt19937& random, const std::string& prefix, std::size_t n, const std::vector<std::string>& dead_keys) {
    auto c = std::make_shared<call>();
    c->strand = asio::make_strand(kv_.get_executor());
    c->op = static_cast<operation>(random() % 5);
    const std::size_t first = random() % (keys_per_task - per_batch + 1);
    for (std::size_t k = 0; k < per_batch; ++k) {
      c->keys.push_back(prefix + std::to_string(n) + "-" + std::to_string(first + k));
      c->values.push_back(value_of(c->keys.back()));
    }
    if (c->op == operation::get_into || c->op == operation::get_owned) c->keys.push_back(dead_keys[random() % dead_keys.size()]);
    {
      std::lock_guard lock(report_.mu);
      ++report_.calls;
    }
    const bool cancel = random() % 3 == 0;
    const auto cancel_after = std::chrono::microseconds(random() % 5000);
    auto token = [&](auto handler) {
      return asio::bind_cancellation_slot(c->signal->slot(), asio::bind_executor(c->strand, std::move(handler)));
    };
    switch (c->op) {
      case operation::put: {
        for (auto& v : c->values) c->sources.push_back(asio::buffer(v));
        kv_.batch_put(c->keys, c->sources, token([this, c](boost::system::error_code ec, std::vector<errc> statuses) {
          done(*c, ec, statuses);
        }));
        break;
      }
      case operation::get_into: {
        c->into.assign(c->keys.size(), std::vector<std::byte>(value_size));
        for (auto& b : c->into) c->destinations.push_back(asio::buffer(b));
        kv_.batch_get(c->keys, c->destinations,
                      token([this, c](boost::system::error_code ec, std::vector<get_result> results) {
                        std::vector<errc> statuses;
                        for (std::size_t k = 0; k < results.size(); ++k) {
                          statuses.push_back(results[k].status);
                          if (!ec && results[k].ok()) check_read(*c, k, std::span(c->into[k]).first(results[k].size));
                        }
                        done(*c, ec, statuses);
                      }));
        break;
      }
      case operation::get_owned: {
        kv_.batch_get(c->keys, token([this, c](boost::system::error_code ec, std::vector<get_buffer_result> results) {
          std::vector<errc> statuses;
          for (std::size_t k = 0; k < results.size(); ++k) {
            statuses.push_back(results[k].status);
            if (!ec && results[k].ok()) check_read(*c, k, results[k].buffer.bytes());
          }
          done(*c, ec, statuses);
        }));
        break;
      }
      case operation::remove: {
        kv_.batch_remove(c->keys, token([this, c](boost::system::error_code ec, std::vector<errc> statuses) {
          done(*c, ec, statuses);
        }));
        break;
      }
      case operation::exist_prefix: {
        kv_.batch_exist_prefix(c->keys, token([this, c](boost::system::error_code ec, prefix_result) {
          done(*c, ec, {});
        }));
        break;
      }
    }
    // A third of the calls are cancelled within 5 ms, once started (a
    // signal is not emitted while its slot is being connected; it outlives
    // the call: the cancellation may come after the call completed).
    if (cancel) cancels_.cancel_at(std::chrono::steady_clock::now() + cancel_after, c->signal, c->strand);
  }

  // Waits until every call of the round completed; false if one has not
  // within `limit`.
  bool wait(std::chrono::seconds limit) {
    std::unique_lock lock(mu_);
    return all_done_.wait_for(lock, limit, [&] { return left_ == 0; });
  }

 private:
  struct call {
    operation op = operation::put;
    asio::any_io_executor strand;
    std::shared_ptr<asio::cancellation_signal> signal = std::make_shared<asio::cancellation_signal>();
    std::vector<std::string> keys;
    std::vector<std::vector<std::byte>> values, into;
    std::vector<asio::const_buffer> sources;
    std::vector<asio::mutable_buffer> destinations;
  };

  // Each key the client wrote must come back exact; a key of the dead node
  // cannot come back at all.
  void check_read(const call& c, std::size_t k, std::span<const std::byte> got) {
    std::lock_guard lock(report_.mu);
    if (k >= per_batch) {
      ++report_.dead_keys_read;
      return;
    }
    const auto& want = c.values[k];
    if (got.size() != want.size() || !std::equal(got.begin(), got.end(), want.begin())) ++report_.corrupt;
  }

  void done(const call& c, const boost::system::error_code& ec, const std::vector<errc>& statuses) {
    record(report_, c.op, ec, statuses);
    std::lock_guard lock(mu_);
    if (--left_ == 0) all_done_.notify_all();
  }

  cluster_store& kv_;
  storm_report& report_;
  canceller& cancels_;
  std::mutex mu_;
  std::condition_variable all_done_;
  std::size_t left_;
};

}  // namespace

// Arguments: master host and port, seconds, I/O threads, calls per round,
// this client's key prefix, the dead node's key prefix and key count.
int cancel_storm_main(const std::string& host, std::uint16_t port, int seconds, int threads, int calls,
                      const std::string& prefix, const std::string& dead_prefix, int dead_keys) {
  asio::io_context io(threads);
  auto work = asio::make_work_guard(io);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back([&] { io.run(); });
  cluster_options o;
  o.master.host = host;
  o.master.port = port;
  o.transport.shared_memory = false;  // every other node over TCP
  storm_report report;
  std::uint64_t rounds = 0;
  {
    auto kv = make_cluster_store(io.get_executor(), o);
    canceller cancels(report);
    auto mounted = kv.add_segment(16 << 20, asio::use_future);
    if (mounted.wait_for(10s) != std::future_status::ready) {
      std::fprintf(stderr, "cancel storm: no segment\n");
      std::_Exit(3);
    }
    std::vector<std::string> dead;
    for (int k = 0; k < dead_keys; ++k) dead.push_back(dead_prefix + std::to_string(k));
    std::mt19937 random(static_cast<unsigned>(std::hash<std::string>{}(prefix)));
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    // Rounds, as the asyncio program runs them: `calls` calls at
    // once, a third of them cancelled, all awaited, again.
    while (std::chrono::steady_clock::now() < until) {
      round_of_calls round(kv, report, cancels, static_cast<std::size_t>(calls));
      for (int n = 0; n < calls; ++n) round.start(random, prefix, static_cast<std::size_t>(n), dead);
      if (!round.wait(60s)) {
        std::fprintf(stderr, "cancel storm: calls still waiting 60 s into round %llu\n",
                     static_cast<unsigned long long>(rounds));
        std::fprintf(stderr, "%s\n", report.to_json().dump().c_str());
        std::_Exit(3);  // the store cannot be destroyed with calls in flight
      }
      ++rounds;
    }
  }  // the canceller stops, then the store is destroyed with its io_context running
  work.reset();
  io.stop();
  for (auto& t : pool) t.join();

  json out = report.to_json();
  out["rounds"] = rounds;
  out["calls_per_round"] = calls;
  out["threads"] = threads;
  out["seconds"] = seconds;
  std::printf("%s\n", out.dump().c_str());
  std::fflush(stdout);
  const bool clean = report.calls == report.completed && report.corrupt == 0 && report.call_errors.empty() &&
                     report.key_statuses.count(make_error_code(errc::internal_error).message()) == 0;
  return clean ? 0 : 1;
}
