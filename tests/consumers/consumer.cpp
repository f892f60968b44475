// A downstream program: includes corokv as a user would and checks that the
// library it got works (the service: a put, a query, an error message; the
// embedded store: a put and a read into a store-owned buffer).

#include <corokv/corokv.hpp>

#ifdef EXPECT_OPTIONAL_LAYERS
#if !defined(COROKV_HAS_RDMA) || !defined(COROKV_HAS_URING)
#error "the optional layers' targets did not bring their definitions"
#endif
#include <corokv/rdma.hpp>
#include <liburing.h>
#endif

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

int main() {
  corokv::meta::service svc;
  if (svc.mount_segment(1, 1 << 20).status != corokv::errc::success) return 1;
  std::vector<std::string> keys{"consumer-key"};
  std::vector<std::uint64_t> sizes{4096};
  std::vector<corokv::put_start_result> started(1);
  svc.put_start(keys, sizes, {}, 0, started);
  std::vector<corokv::version_t> versions{started[0].version};
  std::vector<corokv::errc> ended(1);
  svc.put_end(keys, versions, ended);
  std::vector<corokv::query_result> q(1);
  svc.query(keys, q);
  const std::error_code missing = corokv::errc::not_found;
  bool ok = q[0].ok() && q[0].size == 4096 && missing.message() == "key not found" &&
             std::string(missing.category().name()) == "corokv";

  boost::asio::io_context io;
  corokv::store kv(io.get_executor());
  const std::string value(1000, 'c');
  auto read_back = boost::asio::co_spawn(
      io,
      [&]() -> boost::asio::awaitable<bool> {
        co_await kv.add_segment(1 << 20);
        std::vector<boost::asio::const_buffer> values{boost::asio::buffer(value)};
        const auto put = co_await kv.batch_put(keys, values);
        const auto got = co_await kv.batch_get(keys);
        co_return put[0] == corokv::errc::success && got[0].ok() && got[0].size() == value.size() &&
            std::memcmp(got[0].buffer.data(), value.data(), value.size()) == 0;
      },
      boost::asio::use_future);
  io.run();
  ok = ok && read_back.get();
#ifdef EXPECT_OPTIONAL_LAYERS
  // Linked for real: the symbols resolve through the exported targets. The
  // RDMA lane opens the first device there is, or stays idle and says why.
  corokv::rdma_lane lane(io.get_executor());
  const std::string rdma = lane.available() ? "device " + lane.device_name() : lane.unavailable_reason();
  io_uring ring;
  const bool uring_ok = io_uring_queue_init(4, &ring, 0) == 0;
  if (uring_ok) io_uring_queue_exit(&ring);
  std::printf("consumer: %s; io_uring %s\n", rdma.c_str(), uring_ok ? "available" : "unavailable here");
#endif
  std::printf("consumer: %s\n", ok ? "corokv works" : "corokv is broken");
  return ok ? 0 : 1;
}
