#pragma once
// A transport that runs a hook before each read and then forwards to the
// transport it wraps: tests hold a read in flight this way and change the
// cluster underneath it (a lease ends, memory is released and reused).

#include <corokv/transport/data_transport.hpp>

#include <boost/asio/awaitable.hpp>

#include <functional>
#include <memory>
#include <span>
#include <utility>
#include <vector>

namespace corokv::test {

template <data_transport Inner>
class hooked_transport {
 public:
  using hook = std::function<boost::asio::awaitable<void>()>;

  explicit hooked_transport(Inner inner) : inner_(std::move(inner)), before_read_(std::make_shared<hook>()) {}

  Inner& inner() noexcept { return inner_; }
  // Run (and awaited) before every read; empty: none.
  hook& before_read() noexcept { return *before_read_; }

  std::pair<std::error_code, segment_endpoints> add_segment(segment_id id, std::uint64_t size, bool populate) {
    return inner_.add_segment(id, size, populate);
  }
  void remove_segment(segment_id id) { inner_.remove_segment(id); }
  std::error_code register_buffer(boost::asio::mutable_buffer region) { return inner_.register_buffer(region); }
  std::error_code unregister_buffer(boost::asio::mutable_buffer region) { return inner_.unregister_buffer(region); }
  std::size_t registered_buffers() const { return inner_.registered_buffers(); }
  std::vector<lane_counters> counters_by_lane() const { return inner_.counters_by_lane(); }

  boost::asio::awaitable<std::error_code> read(std::span<const read_request> requests, std::span<errc> status) {
    const hook run_first = *before_read_;  // a copy: the test may replace it meanwhile
    if (run_first) co_await run_first();
    co_return co_await inner_.read(requests, status);
  }
  boost::asio::awaitable<std::error_code> write(std::span<const write_request> requests, std::span<errc> status) {
    return inner_.write(requests, status);
  }

 private:
  Inner inner_;
  std::shared_ptr<hook> before_read_;
};

}  // namespace corokv::test
