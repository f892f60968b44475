#pragma once
// The disk tier of a store (corokv::uring): a preallocated file on this
// node's disk, mounted as a disk segment, read and written by the disk lane
// (io_uring); a demoter that keeps the memory tier's oldest objects copied
// to it; and an index beside the file that brings them back when the node
// restarts.
//
//   co_await store.add_segment(1 << 30);
//   auto [ec, tier] = co_await corokv::disk_tier<my_store>::open(store, {"/ssd/kv.tier", 64ull << 30});
//   co_spawn(ex, tier->run(100ms), detached);
//
// A demotion pass asks the metadata service for work (tiering_endpoint::
// demote_start: objects on this node's memory, oldest first, once memory is
// above the demote watermark, each with an extent of this disk reserved),
// reads each object from its memory replica, writes it to its extent,
// flushes the file and reports (demote_end): the service commits the disk
// copy beside the memory one. The object stays readable throughout; when
// eviction later takes it, its memory is released and it is read from disk.
// Nothing with a disk copy is dropped until the disk itself is full.
//
// The index (disk/tier_index.hpp, PATH.index) gets a record per committed
// copy (key, version, extent, CRC-32C of the bytes) and per copy the
// service released (removed, or dropped from disk), appended and flushed
// with io_uring after each pass. open() on a file that is already there
// replays the index, reads every listed copy and checks its CRC (a torn or
// corrupted copy is dropped, never announced), mounts the file again under
// its old segment id (held, as any remount, until older leases are over)
// and offers the copies to the service (adopt_disk_copies), which takes
// those whose key is free and which it did not release meanwhile; the index
// is then rewritten with exactly those. The same happens while the process
// lives on, when the service asks for the copies again (demote_start's
// offer_copies: the node was declared dead and came back, or the master
// restarted, and its disk was mounted again without them).
//
// Readers need nothing: the store's transport routes a disk replica to the
// disk lane (rank disk), which reads it straight into the caller's buffer
// where alignment allows; other nodes read it through this node's data
// server.
//
// One pass runs at a time (run() awaits each): the service relies on it to
// hand out a late reservation again only after its write has ended.

#include <corokv/client/demotion_plan.hpp>
#include <corokv/client/embedded_metadata.hpp>
#include <corokv/client/metadata_endpoint.hpp>
#include <corokv/client/segment_proposal.hpp>
#include <corokv/cluster.hpp>
#include <corokv/detail/identity.hpp>
#include <corokv/disk/crc32c.hpp>
#include <corokv/disk/disk_file.hpp>
#include <corokv/disk/tier_index.hpp>
#include <corokv/embedded.hpp>
#include <corokv/io/uring_queue.hpp>
#include <corokv/node.hpp>
#include <corokv/store.hpp>
#include <corokv/transport/disk_lane.hpp>
#include <corokv/transport/lane_router.hpp>
#include <corokv/transport/memcpy_lane.hpp>
#include <corokv/transport/node_transport.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <system_error>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

namespace corokv {

using transport::disk_lane;
using transport::disk_lane_options;
using transport::disk_lane_stats;

struct disk_tier_options {
  std::filesystem::path path;  // the tier's file: created, or reopened at the same size (warm)
  std::uint64_t size = 0;      // bytes, rounded down to whole disk blocks
  bool direct = true;          // O_DIRECT where the file system allows it
  std::size_t batch_objects = 256;         // per demotion pass, at most...
  std::uint64_t batch_bytes = 64u << 20;  // ...and this many bytes
  // A restarted node mounts its file under the segment id it had; while the
  // service still lists the previous process (until it declares it dead,
  // node_ttl), it waits this long at most.
  duration remount_wait = std::chrono::seconds(60);
};

struct disk_tier_stats {
  std::uint64_t passes = 0;
  std::uint64_t demoted = 0;        // disk copies committed
  std::uint64_t bytes_demoted = 0;
  std::uint64_t failed_copies = 0;  // a read or write of the copy failed
  std::uint64_t refused = 0;        // the service answered other than success (the object went meanwhile)
  std::uint64_t released = 0;       // copies the service released, forgotten by the index
  std::uint64_t index_failures = 0; // index appends that failed (those copies are not found after a restart)
  // At open, from the index:
  std::uint64_t found = 0;          // copies the index listed
  std::uint64_t corrupt = 0;        // dropped: their bytes did not match their CRC
  std::uint64_t adopted = 0;        // taken back by the service
  std::uint64_t not_adopted = 0;    // refused (key taken, or released while away)
  bool index_torn = false;          // the index ended in a torn or corrupted record
  // Later, when the service asked for the copies again (offer_copies):
  std::uint64_t offers = 0;         // times it asked
  std::uint64_t readopted = 0;      // copies taken back then
  std::uint64_t not_readopted = 0;  // copies refused then (dropped from the index)
};

// Whether a transport is a lane router with lane L.
template <class T, class L>
concept has_lane = requires { T::template has_lane<L>; } && T::template has_lane<L>;

// A transport reaches the tier when it is a lane router with a disk lane.
template <class T>
concept disk_reaching_transport = data_transport<T> && has_lane<T, disk_lane>;

template <class Store>
  requires tiering_endpoint<typename Store::metadata_type> && disk_reaching_transport<typename Store::transport_type>
class disk_tier {
  struct private_tag {};
  struct free_deleter {
    void operator()(std::byte* p) const noexcept { std::free(p); }
  };
  using aligned_buffer = std::unique_ptr<std::byte, free_deleter>;

 public:
  disk_tier(private_tag, Store& store, disk_tier_options options, std::shared_ptr<disk::disk_file> file)
      : store_(store), options_(std::move(options)), file_(std::move(file)) {}
  disk_tier(const disk_tier&) = delete;
  disk_tier& operator=(const disk_tier&) = delete;
  // The segment stays mounted while the store lives (it leaves with the
  // store's node); the lane keeps the file while a read uses it.
  ~disk_tier() {
    if (index_fd_ >= 0) ::close(index_fd_);
  }

  // Opens the file (and its index), makes it reachable through the disk
  // lane, mounts it as a disk segment of the store's node and, for a file
  // that was there, offers the copies it still holds. Errors: the file's
  // (invalid_argument for a size under one block or a file of another size,
  // EAGAIN when another process holds it), io_uring's (the disk lane), the
  // index's, the mount's.
  static boost::asio::awaitable<std::pair<error_code, std::unique_ptr<disk_tier>>> open(Store& store,
                                                                                      disk_tier_options o) {
    using result = std::pair<error_code, std::unique_ptr<disk_tier>>;
    o.size = o.size / disk::block_size * disk::block_size;
    std::error_code ec;
    auto file = std::make_shared<disk::disk_file>(disk::disk_file::open(o.path, o.size, ec, o.direct));
    if (ec) co_return result{ec, nullptr};
    auto tier = std::make_unique<disk_tier>(private_tag{}, store, std::move(o), file);
    ec = co_await tier->start();
    if (ec) co_return result{ec, nullptr};
    co_return result{error_code{}, std::move(tier)};
  }

  segment_id segment() const noexcept { return segment_; }
  const disk::disk_file& file() const noexcept { return *file_; }
  std::filesystem::path index_path() const { return index_path_of(options_.path); }
  disk_tier_stats stats() const noexcept {
    disk_tier_stats s = found_;
    s.passes = passes_.load();
    s.demoted = demoted_.load();
    s.bytes_demoted = bytes_demoted_.load();
    s.failed_copies = failed_copies_.load();
    s.refused = refused_.load();
    s.released = released_.load();
    s.index_failures = index_failures_.load();
    s.offers = offers_.load();
    s.readopted = readopted_.load();
    s.not_readopted = not_readopted_.load();
    return s;
  }

  static std::filesystem::path index_path_of(const std::filesystem::path& data) {
    auto p = data;
    p += ".index";
    return p;
  }

  // One demotion pass; the number of disk copies committed. The error_code
  // is a failure of the whole pass (the metadata service unreachable).
  boost::asio::awaitable<std::pair<error_code, std::size_t>> demote() {
    using result = std::pair<error_code, std::size_t>;
    ++passes_;
    auto [ec, answer] = co_await store_.metadata().demote_start(store_.node(), options_.batch_objects,
                                                                options_.batch_bytes, saved_through_, offered_);
    if (ec) co_return result{ec, 0};
    client::demotion_plan plan;
    plan.start(answer);
    for (version_t v : plan.released()) live_.erase(v);
    released_ += plan.released().size();
    const std::uint64_t through = answer.released_through;
    aligned_buffer buffer(plan.buffer_size() == 0
                              ? nullptr
                              : static_cast<std::byte*>(std::aligned_alloc(disk::block_size, plan.buffer_size())));
    plan.use_buffer(buffer.get());
    using step = client::demotion_plan::step;
    for (step next = plan.next(); next != step::done; next = plan.next()) {
      switch (next) {
        case step::offer: {
          // The service lost sight of this disk's copies: offer them again
          // and rewrite the index with those it takes (that also writes down
          // the released ones). Only once all that is done does the next
          // pass say so (offered_); until then the service keeps refusing
          // stale copies and asks again, and a copy it took already is
          // answered success.
          ++offers_;
          std::vector<disk::index_entry> copies;
          copies.reserve(live_.size());
          for (auto& [version, entry] : live_) copies.push_back(std::move(entry));
          live_.clear();
          const std::size_t offered = copies.size();
          auto [offer_ec, kept] = co_await offer(std::move(copies));
          for (auto& e : kept) live_.emplace(e.version, e);
          if (offer_ec) co_return result{offer_ec, 0};
          readopted_ += kept.size();
          not_readopted_ += offered - kept.size();
          if (const auto index_ec = rewrite_index(kept)) {
            ++index_failures_;
            co_return result{index_ec, 0};
          }
          saved_through_ = through;
          offered_ = answer.offer_copies;
          co_return result{error_code{}, 0};
        }
        case step::read:
          plan.on_read(co_await store_.transport().read(plan.reads(), plan.read_status()));
          break;
        case step::write:
          plan.on_written(co_await store_.transport().write(plan.writes(), plan.write_status()));
          break;
        case step::sync:
          plan.on_synced(co_await sync(file_->fd()));
          break;
        case step::report:
          plan.on_reported(co_await store_.metadata().demote_end(plan.report_keys(), plan.report_versions(),
                                                                 plan.copied(), plan.answers()));
          break;
        case step::done:
          break;
      }
    }
    const auto& counts = plan.counts();
    failed_copies_ += counts.failed;
    refused_ += counts.refused;
    demoted_ += counts.committed;
    bytes_demoted_ += counts.bytes;
    for (auto& entry : plan.committed()) live_.emplace(entry.version, std::move(entry));
    if (co_await append_index(plan.index_records())) saved_through_ = through;
    co_return result{plan.error(), counts.committed};
  }

  // Demotion passes until cancelled: back to back while there is work, else
  // one per `interval`.
  boost::asio::awaitable<void> run(duration interval) {
    boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor);
    for (;;) {
      auto [ec, n] = co_await demote();
      if (n == 0) {
        timer.expires_after(interval);
        auto [waited] = co_await timer.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
        if (waited) co_return;
      }
      auto cs = co_await boost::asio::this_coro::cancellation_state;
      if (cs.cancelled() != boost::asio::cancellation_type::none) co_return;
    }
  }

 private:
  static std::error_code last_error() { return {errno, std::system_category()}; }

  boost::asio::awaitable<std::error_code> start() {
    std::error_code ec;
    queue_ = io::uring_queue::open(store_.get_executor(), {8}, ec);
    if (ec) co_return ec;

    // What the index says is on the file, if it was there.
    disk::index_replay replay;
    const auto index = index_path();
    if (file_->existed() && std::filesystem::exists(index)) {
      std::ifstream in(index, std::ios::binary);
      const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      if (!in.good() && !in.eof()) co_return last_error();
      replay = disk::replay_index(
          std::span<const std::byte>(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()), file_->size());
      found_.found = replay.entries.size();
      found_.index_torn = replay.torn;
    }
    const bool warm = replay.segment != 0;

    // Reachable through the lane under the old id (warm) or a fresh one.
    disk_lane& lane = store_.transport().template lane<disk_lane>();
    const segment_id first_id = warm ? replay.segment : detail::random_id();
    if ((ec = lane.attach(first_id, file_))) co_return ec;

    std::vector<disk::index_entry> verified;
    if (warm) verified = co_await verify(first_id, std::move(replay.entries));

    segment_endpoints where;
    where.host_id = detail::host_id();
    // Remote readers reach it through this node's data server.
    if constexpr (has_lane<typename Store::transport_type, tcp_lane>)
      store_.transport().template lane<tcp_lane>().advertise(where);
    // A fresh id that is taken: another one. The old id (warm): the previous
    // process still holds it until the service declares it dead; wait.
    const auto proposal = warm ? client::segment_proposal::again(first_id, clock_type::now() + options_.remount_wait)
                               : client::segment_proposal::fresh(first_id);
    auto mount = [&](segment_id id) -> boost::asio::awaitable<std::pair<std::error_code, segment_id>> {
      co_return co_await store_.metadata().mount(store_.node(), file_->size(), where, id, storage_tier::disk,
                                                 /*remount=*/warm);
    };
    auto reach = [&](segment_id id) { return lane.attach(id, file_); };
    auto withdraw = [&](segment_id id) { lane.detach(id); };
    auto pause = [&]() -> boost::asio::awaitable<void> {
      boost::asio::steady_timer timer(store_.get_executor(), std::chrono::milliseconds(250));
      co_await timer.async_wait(boost::asio::use_awaitable);
    };
    const auto mounted = co_await client::mount_proposed(proposal, mount, reach, withdraw, pause);
    if (mounted.first) co_return mounted.first;
    segment_ = mounted.second;

    // Offer what the file still holds (the service waits for that offer,
    // even an empty one, before it reserves anything on a disk mounted
    // again); keep in the index what is taken.
    std::vector<disk::index_entry> kept;
    std::uint64_t token = 0;
    if (warm) {
      // The service's token for this offer (a disk mounted again is away
      // until its node echoes it); nothing else of this answer is used.
      auto [start_ec, first] = co_await store_.metadata().demote_start(store_.node(), 0, 0, 0, 0);
      ec = start_ec;
      token = first.offer_copies;
      if (!ec) {
        const std::size_t offered = verified.size();
        std::tie(ec, kept) = co_await offer(std::move(verified));
        found_.adopted = kept.size();
        found_.not_adopted = offered - kept.size();
      }
    }
    if (!ec) ec = rewrite_index(kept);
    if (ec) {
      // Not started: the disk leaves the service again (it would stay away,
      // waiting for an offer nobody makes) and the lane. The first error is
      // the one returned; if the unmount fails too, the service retires the
      // disk after away_disk_ttl.
      (void)co_await store_.metadata().unmount(segment_);
      lane.detach(segment_);
      co_return ec;
    }
    for (auto& e : kept) live_.emplace(e.version, e);
    offered_ = token;
    co_return std::error_code{};
  }

  // Offers copies to the service in parts that fit a frame (wire limits:
  // 65,536 items per list), always at least one call; the copies it took
  // (after a failed call, also those not offered yet).
  boost::asio::awaitable<std::pair<std::error_code, std::vector<disk::index_entry>>> offer(
      std::vector<disk::index_entry> copies) {
    std::vector<disk::index_entry> kept;
    constexpr std::size_t per_call = 4096;
    std::size_t first = 0;
    do {
      const std::size_t n = std::min(per_call, copies.size() - first);
      std::vector<disk_copy> part;
      for (std::size_t i = first; i < first + n; ++i) {
        const auto& e = copies[i];
        part.push_back({e.key, e.version, {segment_, store_.node(), e.offset, e.length}});
      }
      std::vector<errc> answers(n);
      const std::error_code ec = co_await store_.metadata().adopt_disk_copies(store_.node(), part, answers);
      if (ec) {
        // Not offered: kept as they were (the service asks again).
        for (std::size_t i = first; i < copies.size(); ++i) kept.push_back(std::move(copies[i]));
        co_return std::pair{ec, std::move(kept)};
      }
      for (std::size_t i = 0; i < n; ++i)
        if (answers[i] == errc::success) kept.push_back(std::move(copies[first + i]));
      first += n;
    } while (first < copies.size());
    co_return std::pair{std::error_code{}, std::move(kept)};
  }

  // Reads every listed copy and keeps those whose bytes match their CRC.
  boost::asio::awaitable<std::vector<disk::index_entry>> verify(segment_id id, std::vector<disk::index_entry> entries) {
    std::vector<disk::index_entry> good;
    constexpr std::uint64_t chunk = 64u << 20;
    for (std::size_t first = 0; first < entries.size();) {
      std::size_t last = first;
      std::uint64_t bytes = 0;
      while (last < entries.size() && (last == first || bytes + disk::round_up_to_block(entries[last].length) <= chunk))
        bytes += disk::round_up_to_block(entries[last++].length);
      aligned_buffer buffer(static_cast<std::byte*>(std::aligned_alloc(disk::block_size, bytes)));
      if (!buffer) co_return good;  // out of memory: nothing more is offered
      std::vector<read_request> reads;
      std::uint64_t at = 0;
      for (std::size_t i = first; i < last; ++i) {
        reads.push_back({{id, store_.node(), entries[i].offset, entries[i].length},
                         boost::asio::mutable_buffer(buffer.get() + at, entries[i].length)});
        at += disk::round_up_to_block(entries[i].length);
      }
      std::vector<errc> status(reads.size());
      const std::error_code ec = co_await store_.transport().read(reads, status);
      at = 0;
      for (std::size_t i = first; i < last; ++i) {
        const bool read = !ec && status[i - first] == errc::success;
        if (read &&
            disk::crc32c(std::span<const std::byte>(buffer.get() + at, entries[i].length)) == entries[i].data_crc)
          good.push_back(std::move(entries[i]));
        else
          ++found_.corrupt;
        at += disk::round_up_to_block(entries[i].length);
      }
      first = last;
    }
    co_return good;
  }

  // The index, from scratch: the segment and the copies kept. Written
  // aside, flushed, then renamed over the old one.
  std::error_code rewrite_index(const std::vector<disk::index_entry>& kept) {
    std::vector<std::byte> bytes;
    disk::append_segment_record(bytes, segment_);
    for (const auto& e : kept) disk::append_added_record(bytes, e);
    const auto index = index_path();
    auto tmp = index;
    tmp += ".tmp";
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return last_error();
    std::size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
      if (n <= 0) {
        const auto ec = last_error();
        ::close(fd);
        return ec;
      }
      done += static_cast<std::size_t>(n);
    }
    if (::fdatasync(fd) != 0 || ::close(fd) != 0) return last_error();
    std::error_code ec;
    std::filesystem::rename(tmp, index, ec);
    if (ec) return ec;
    if (const int dir = ::open(index.parent_path().empty() ? "." : index.parent_path().c_str(), O_RDONLY | O_CLOEXEC);
        dir >= 0) {
      ::fsync(dir);
      ::close(dir);
    }
    if (index_fd_ >= 0) ::close(index_fd_);  // the replaced file's (an offer while running)
    index_fd_ = ::open(index.c_str(), O_WRONLY | O_CLOEXEC);
    if (index_fd_ < 0) return last_error();
    index_end_ = bytes.size();
    return {};
  }

  boost::asio::awaitable<bool> sync(int fd) {
    io::uring_request r;
    r.op = io::uring_request::kind::fsync;
    r.file = fd;
    auto one = std::span<io::uring_request>(&r, 1);
    const std::error_code ec = co_await queue_->run(one);
    co_return !ec && r.result == 0;
  }

  // Appends records at the index's end and flushes them; false if that
  // failed (the service then tells the released copies again).
  boost::asio::awaitable<bool> append_index(const std::vector<std::byte>& records) {
    if (records.empty()) co_return true;
    std::uint64_t done = 0;
    bool ok = true;
    while (ok && done < records.size()) {
      io::uring_request w;
      w.op = io::uring_request::kind::write;
      w.file = index_fd_;
      w.data = const_cast<std::byte*>(records.data() + done);
      w.length = static_cast<std::uint32_t>(records.size() - done);
      w.offset = index_end_ + done;
      auto one = std::span<io::uring_request>(&w, 1);
      const std::error_code ec = co_await queue_->run(one);
      ok = !ec && w.result > 0;
      if (ok) done += static_cast<std::uint64_t>(w.result);
    }
    if (ok) ok = co_await sync(index_fd_);
    if (ok)
      index_end_ += records.size();
    else
      ++index_failures_;  // a torn record at the end is dropped by the next replay
    co_return ok;
  }

  Store& store_;
  disk_tier_options options_;
  std::shared_ptr<disk::disk_file> file_;
  std::shared_ptr<io::uring_queue> queue_;  // the index's appends and the flushes
  segment_id segment_ = 0;
  int index_fd_ = -1;
  std::uint64_t index_end_ = 0;
  std::uint64_t saved_through_ = 0;  // released copies written down, as the service numbers them
  std::uint64_t offered_ = 0;        // the service's token for the last offer made in full
  // The copies the index lists, by version: offered again when the service
  // asks. Touched by start() and demote() only, which never overlap.
  std::unordered_map<version_t, disk::index_entry> live_;
  disk_tier_stats found_;
  std::atomic<std::uint64_t> passes_{0}, demoted_{0}, bytes_demoted_{0}, failed_copies_{0}, refused_{0}, released_{0},
      index_failures_{0}, offers_{0}, readopted_{0}, not_readopted_{0};
};

// The embedded store with a disk tier: memcpy for memory, io_uring for disk.
using embedded_disk_transport = lane_router<memcpy_lane, disk_lane>;
using embedded_disk_store = basic_store<embedded_metadata, embedded_disk_transport>;

static_assert(data_transport<embedded_disk_transport>);

// A cluster node with a disk tier is node_store<disk_lane> (node.hpp):
//
//   auto kv = corokv::make_node_store<corokv::disk_lane>(ex, node, disk_lane_options{});
//
// and with RDMA as well, node_store<rdma_lane, disk_lane>. The names below
// are what programs called before there was one node type: each a one-line
// alias of node.hpp's (disk_cluster_options keeps the disk lane's options
// beside the node's, as it did).
using disk_cluster_transport = node_transport<disk_lane>;
using disk_cluster_store = node_store<disk_lane>;
struct disk_cluster_options : node_options { disk_lane_options disk; };
inline disk_cluster_store make_disk_cluster_store(boost::asio::any_io_executor ex, disk_cluster_options o) { return make_node_store<disk_lane>(std::move(ex), o, o.disk); }
inline disk_cluster_transport make_disk_cluster_transport(boost::asio::any_io_executor ex, segment_lister list, node_transport_options o = {}, disk_lane_options disk = {}) { return make_node_transport<disk_lane>(std::move(ex), std::move(list), std::move(o), disk); }

}  // namespace corokv
