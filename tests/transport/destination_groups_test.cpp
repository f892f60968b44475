// Grouping a batch by destination and scattering the groups' statuses back
// (transport/destination_groups.hpp), and the request-shape rules the
// router checks for every lane (transport/request_shape.hpp).

#include <corokv/transport/destination_groups.hpp>
#include <corokv/transport/request_shape.hpp>

#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

using namespace corokv;
using corokv::memory::read_request;
using corokv::memory::write_request;
using corokv::transport::check_request_shapes;
using corokv::transport::destination_groups;
using corokv::transport::request_shape;

TEST_CASE("destination groups: groups in order of first request, requests in batch order, statuses back in place") {
  destination_groups<std::string> groups;
  const std::vector<std::string> to{"b", "a", "b", "c", "a", "a", "b"};
  for (std::uint32_t k = 0; k < to.size(); ++k) groups.add(to[k], k);
  REQUIRE(groups.size() == 3);
  CHECK(groups.key(0) == "b");
  CHECK(groups.key(1) == "a");
  CHECK(groups.key(2) == "c");
  CHECK(std::vector<std::uint32_t>(groups.index(0).begin(), groups.index(0).end()) ==
        std::vector<std::uint32_t>{0, 2, 6});
  CHECK(std::vector<std::uint32_t>(groups.index(1).begin(), groups.index(1).end()) ==
        std::vector<std::uint32_t>{1, 4, 5});
  CHECK(std::vector<std::uint32_t>(groups.index(2).begin(), groups.index(2).end()) == std::vector<std::uint32_t>{3});

  std::vector<errc> status(to.size(), errc::internal_error);
  const std::array<errc, 3> of_b{errc::success, errc::transfer_failed, errc::cancelled};
  const std::array<errc, 3> of_a{errc::segment_not_found, errc::success, errc::success};
  const std::array<errc, 1> of_c{errc::transfer_failed};
  groups.scatter(0, of_b, status);
  groups.scatter(1, of_a, status);
  groups.scatter(2, of_c, status);
  CHECK(status == std::vector<errc>{errc::success, errc::segment_not_found, errc::transfer_failed,
                                    errc::transfer_failed, errc::success, errc::success, errc::cancelled});
}

TEST_CASE("destination groups: cleared, they start over and keep their memory") {
  destination_groups<int> groups;
  for (std::uint32_t k = 0; k < 100; ++k) groups.add(static_cast<int>(k % 4), k);
  REQUIRE(groups.size() == 4);
  const std::uint32_t* kept = groups.index(0).data();
  groups.clear();
  CHECK(groups.empty());
  groups.add(9, 0);
  groups.add(9, 1);
  REQUIRE(groups.size() == 1);
  CHECK(groups.key(0) == 9);
  CHECK(groups.index(0).size() == 2);
  CHECK(groups.index(0).data() == kept);  // the first group's vector, reused
  // An empty batch: no groups.
  groups.clear();
  CHECK(groups.size() == 0);
}

TEST_CASE("request shape: a read needs room for the replica, a write exactly its bytes") {
  std::array<std::byte, 16> memory{};
  const replica_descriptor replica{1, 1, 0, 10};
  CHECK(request_shape(read_request{replica, boost::asio::mutable_buffer(memory.data(), 10)}) == errc::success);
  CHECK(request_shape(read_request{replica, boost::asio::mutable_buffer(memory.data(), 16)}) == errc::success);
  CHECK(request_shape(read_request{replica, boost::asio::mutable_buffer(memory.data(), 9)}) == errc::buffer_too_small);
  CHECK(request_shape(write_request{replica, boost::asio::const_buffer(memory.data(), 10)}) == errc::success);
  CHECK(request_shape(write_request{replica, boost::asio::const_buffer(memory.data(), 11)}) == errc::size_mismatch);
  CHECK(request_shape(write_request{replica, boost::asio::const_buffer(memory.data(), 9)}) == errc::size_mismatch);

  const std::vector<read_request> reads{{replica, boost::asio::mutable_buffer(memory.data(), 10)},
                                        {replica, boost::asio::mutable_buffer(memory.data(), 2)},
                                        {replica, boost::asio::mutable_buffer(memory.data(), 12)}};
  std::vector<errc> status(3, errc::internal_error);
  CHECK_FALSE(check_request_shapes<read_request>(reads, status));
  CHECK(status == std::vector<errc>{errc::internal_error, errc::buffer_too_small, errc::internal_error});  // the good ones untouched
  std::vector<errc> fine(1, errc::internal_error);
  CHECK(check_request_shapes<read_request>(std::span(reads).first(1), fine));
  CHECK(fine[0] == errc::internal_error);
}
