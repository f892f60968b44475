#pragma once
// The corokv client: basic_store<Metadata, Transport>, a template over the
// metadata endpoint it talks to (client/metadata_endpoint.hpp) and the
// transport that moves its bytes (transport/data_transport.hpp). The
// embedded store (embedded.hpp) and the cluster store (cluster.hpp) are
// instances of it.
//
// Every batch operation is an Asio initiating function whose completion
// signature is void(corokv::error_code, Result) (boost::system::error_code,
// the type register_buffer returns too) and whose token defaults to
// boost::asio::deferred, so `co_await store.batch_get(...)` works in a
// boost::asio::awaitable, and callbacks, use_future, as_tuple and use_awaitable work
// too. Results are vectors aligned with the keys: index i answers key i. The
// error_code reports failures of the whole operation (invalid arguments,
// metadata or transport failure, cancellation); per-key outcomes sit in the
// results.
//
// As with any Asio operation, the keys, values, query results and buffers
// passed in must stay valid until the operation completes.
//
// The decisions of a read and of a put live in sans-I/O plans
// (client/read_plan.hpp, client/put_plan.hpp); the coroutines here do the
// awaits those plans ask for.
//
// Thread safety: a store may be used by any number of operations at once,
// from any threads (a multi-threaded io_context, a thread_pool). The metadata
// endpoint, the cache, the counters, the transport and the buffer pool are
// each internally synchronised. Construction and destruction are not
// concurrent with operations: destroy a store only after its operations
// completed.

#include <corokv/client/counters.hpp>
#include <corokv/client/metadata_cache.hpp>
#include <corokv/client/metadata_endpoint.hpp>
#include <corokv/client/options.hpp>
#include <corokv/client/put_plan.hpp>
#include <corokv/client/read_plan.hpp>
#include <corokv/client/segment_proposal.hpp>
#include <corokv/detail/async_operation.hpp>
#include <corokv/detail/identity.hpp>
#include <corokv/detail/scratch_pool.hpp>
#include <corokv/memory/buffer_pool.hpp>
#include <corokv/transport/data_transport.hpp>
#include <corokv/types.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/system/system_error.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

namespace corokv {

// The names programs call, each defined in the namespace of its folder
// (client/, memory/, transport/) and declared here under corokv.
using client::get_buffer_result;
using client::get_options;
using client::get_result;
using client::key_source;
using client::lane_counters;
using client::metadata_cache;
using client::metadata_endpoint;
using client::store_counters;
using client::store_options;
using client::tiering_endpoint;
using memory::buffer_handle;
using memory::buffer_pool;
using memory::lane_registration;
using memory::read_request;
using memory::registered_region;
using memory::segment_memory;
using memory::write_request;
using transport::data_transport;
using transport::directory_following_lane;
using transport::hosting_lane;
using transport::lane;
using transport::lane_rank;
using transport::published_segment;
using transport::publishing_lane;
using transport::registering_lane;
using transport::segment_route;
using transport::serving_lane;
using transport::synchronous_lane;
using transport::synchronous_transport;
namespace ranks = transport::ranks;


#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
// GCC 12 reports Asio's coroutine frames (class-specific operator new with a
// matching sized operator delete) as a mismatched new/delete pair at the end
// of each coroutine. It is a false positive; silence it here only.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

template <metadata_endpoint Metadata, data_transport Transport>
class basic_store {
 public:
  using executor_type = boost::asio::any_io_executor;
  using metadata_type = Metadata;
  using transport_type = Transport;

  template <class T>
  using signature = void(error_code, T);  // corokv::error_code, Asio's boost::system::error_code

  // Throws boost::system::system_error if the buffer pool cannot be mapped
  // or a lane refuses to register it.
  basic_store(executor_type ex, Metadata metadata, Transport transport, store_options options = {})
      : executor_(std::move(ex)),
        options_(sanitize(std::move(options))),
        node_(options_.node),
        metadata_(std::move(metadata)),
        pool_(options_.buffer_pool_size, options_.populate_buffer_pool),
        transport_(std::move(transport)),
        cache_(options_.cache_capacity) {
    if (options_.buffer_pool_size == 0) return;
    std::error_code ec = pool_.error();
    if (!ec) ec = transport_.register_buffer(pool_.region());
    if (ec) throw boost::system::system_error(ec, "corokv: cannot set up the store's buffer pool");
  }

  explicit basic_store(executor_type ex, store_options options = {})
    requires(std::is_default_constructible_v<Metadata> && std::is_default_constructible_v<Transport>)
      : basic_store(std::move(ex), Metadata{}, Transport{}, std::move(options)) {}

  basic_store(const basic_store&) = delete;
  basic_store& operator=(const basic_store&) = delete;

  // Leaves the cluster: the node's segments are unmounted and its pending
  // puts revoked before its memory is given up.
  ~basic_store() {
    metadata_.leave(node_);
    std::vector<segment_id> ids;
    {
      std::lock_guard lock(segments_mu_);
      ids.swap(segments_);
    }
    for (segment_id id : ids) transport_.remove_segment(id);
    if (pool_.valid()) (void)transport_.unregister_buffer(pool_.region());
  }

  executor_type get_executor() const noexcept { return executor_; }
  node_id node() const noexcept { return node_; }
  const store_options& options() const noexcept { return options_; }
  Metadata& metadata() noexcept { return metadata_; }
  Transport& transport() noexcept { return transport_; }
  client::metadata_cache& cache() noexcept { return cache_; }
  const memory::buffer_pool& pool() const noexcept { return pool_; }

  store_counters counters() const {
    store_counters c = counters_.snapshot();
    c.lanes = transport_.counters_by_lane();
    return c;
  }
  nlohmann::json counters_json() const { return counters(); }

  // ------------------------------------------------------------ memory
  // Contributes `size` bytes of this process's memory to the pool.
  // Completes with the segment id the metadata service assigned.
  template <boost::asio::completion_token_for<signature<segment_id>> Token = boost::asio::deferred_t>
  auto add_segment(std::uint64_t size, Token&& token = {}) {
    return launch<segment_id>(std::forward<Token>(token), [this, size](detail::cancellation_check) { return add_segment_coro(size); });
  }

  // Registers a region of the caller's memory that batch_get and batch_put
  // buffers will come from, with every lane of the transport (memcpy needs
  // nothing; an RDMA lane registers it with its device, once). Empty and
  // overlapping regions are refused with invalid_argument. Unregistering
  // (exactly the region registered) takes effect for new operations at
  // once; an operation already using the region keeps it until it
  // completes.
  error_code register_buffer(boost::asio::mutable_buffer region) { return transport_.register_buffer(region); }
  error_code unregister_buffer(boost::asio::mutable_buffer region) { return transport_.unregister_buffer(region); }
  // Registered regions, the buffer pool's included.
  std::size_t registered_buffers() const { return transport_.registered_buffers(); }

  // ------------------------------------------------------------ batches
  // Stores values[i] under keys[i]: one metadata round trip to reserve space
  // and a version, the writes, and one to commit (plus one to revoke what
  // failed to write). Per key: success, or why not (already_exists,
  // put_in_progress, invalid_key, duplicate_key, invalid_argument for an
  // empty value, no_space, replicas_unavailable, a transfer status).
  template <boost::asio::completion_token_for<signature<std::vector<errc>>> Token = boost::asio::deferred_t>
  auto batch_put(key_span keys, std::span<const boost::asio::const_buffer> values, Token&& token = {}) {
    return batch_put(keys, values, put_options{}, std::forward<Token>(token));
  }
  template <boost::asio::completion_token_for<signature<std::vector<errc>>> Token = boost::asio::deferred_t>
  auto batch_put(key_span keys, std::span<const boost::asio::const_buffer> values, put_options opts, Token&& token = {}) {
    return launch<std::vector<errc>>(std::forward<Token>(token), [=, this](detail::cancellation_check cancelled) {
      return put_coro(keys, values, opts, cancelled);
    });
  }

  // Existence, per key; grants no lease.
  template <boost::asio::completion_token_for<signature<std::vector<errc>>> Token = boost::asio::deferred_t>
  auto batch_exist(key_span keys, Token&& token = {}) {
    return launch<std::vector<errc>>(std::forward<Token>(token), [=, this](detail::cancellation_check) { return exist_coro(keys); });
  }

  // How many leading keys exist: the longest cached prefix of a prompt.
  template <boost::asio::completion_token_for<signature<prefix_result>> Token = boost::asio::deferred_t>
  auto batch_exist_prefix(key_span keys, Token&& token = {}) {
    return launch<prefix_result>(std::forward<Token>(token), [=, this](detail::cancellation_check) { return exist_prefix_coro(keys); });
  }

  // One metadata round trip; grants leases. Each found key's lease_deadline
  // is on this store's clock: sent_at + lease_ttl - lease_margin. The results
  // also fill the metadata cache.
  template <boost::asio::completion_token_for<signature<std::vector<query_result>>> Token = boost::asio::deferred_t>
  auto batch_query(key_span keys, Token&& token = {}) {
    return launch<std::vector<query_result>>(std::forward<Token>(token), [=, this](detail::cancellation_check) { return query_coro(keys); });
  }

  // Reads keys[i] into buffers[i], using cached metadata where its lease is
  // valid and re-querying the rest in one round trip.
  template <boost::asio::completion_token_for<signature<std::vector<get_result>>> Token = boost::asio::deferred_t>
  auto batch_get(key_span keys, std::span<const boost::asio::mutable_buffer> buffers, Token&& token = {}) {
    return batch_get(keys, buffers, get_options{}, std::forward<Token>(token));
  }
  template <boost::asio::completion_token_for<signature<std::vector<get_result>>> Token = boost::asio::deferred_t>
  auto batch_get(key_span keys, std::span<const boost::asio::mutable_buffer> buffers, get_options opts,
                 Token&& token = {}) {
    return launch_read<false>(std::forward<Token>(token), keys, {}, false, buffers, opts);
  }

  // The second step of the two-step read: no metadata round trip for keys
  // whose query result is still leased. The others are re-queried together
  // in one round trip, or reported per key in strict mode. query_results of
  // another length than keys fail the operation with invalid_argument.
  template <boost::asio::completion_token_for<signature<std::vector<get_result>>> Token = boost::asio::deferred_t>
  auto batch_get(key_span keys, std::span<const query_result> query_results,
                 std::span<const boost::asio::mutable_buffer> buffers, Token&& token = {}) {
    return batch_get(keys, query_results, buffers, get_options{}, std::forward<Token>(token));
  }
  template <boost::asio::completion_token_for<signature<std::vector<get_result>>> Token = boost::asio::deferred_t>
  auto batch_get(key_span keys, std::span<const query_result> query_results,
                 std::span<const boost::asio::mutable_buffer> buffers, get_options opts, Token&& token = {}) {
    return launch_read<false>(std::forward<Token>(token), keys, query_results, true, buffers, opts);
  }

  // The same two reads into memory the store owns: per key a handle owning
  // the bytes (get_buffer_result), from the store's buffer pool. The same
  // metadata round trips as the buffer forms: none with valid query results
  // or cached metadata. A key whose object does not fit in the pool now
  // fails with pool_exhausted; the rest proceed. A handle may outlive the
  // operation; destroy it before the store.
  template <boost::asio::completion_token_for<signature<std::vector<get_buffer_result>>> Token = boost::asio::deferred_t>
  auto batch_get(key_span keys, Token&& token = {}) {
    return batch_get(keys, get_options{}, std::forward<Token>(token));
  }
  template <boost::asio::completion_token_for<signature<std::vector<get_buffer_result>>> Token = boost::asio::deferred_t>
  auto batch_get(key_span keys, get_options opts, Token&& token = {}) {
    return launch_read<true>(std::forward<Token>(token), keys, {}, false, {}, opts);
  }
  template <boost::asio::completion_token_for<signature<std::vector<get_buffer_result>>> Token = boost::asio::deferred_t>
  auto batch_get(key_span keys, std::span<const query_result> query_results, Token&& token = {}) {
    return batch_get(keys, query_results, get_options{}, std::forward<Token>(token));
  }
  template <boost::asio::completion_token_for<signature<std::vector<get_buffer_result>>> Token = boost::asio::deferred_t>
  auto batch_get(key_span keys, std::span<const query_result> query_results, get_options opts, Token&& token = {}) {
    return launch_read<true>(std::forward<Token>(token), keys, query_results, true, {}, opts);
  }

  // Hides each key at once; memory is freed when no lease holds it.
  template <boost::asio::completion_token_for<signature<std::vector<errc>>> Token = boost::asio::deferred_t>
  auto batch_remove(key_span keys, Token&& token = {}) {
    return launch<std::vector<errc>>(std::forward<Token>(token), [=, this](detail::cancellation_check) { return remove_coro(keys); });
  }

  // Hides every committed object of the whole store (every node's), as
  // batch_remove would each; memory is freed when no lease holds it. Puts in
  // progress are not affected. Answers how many objects it hid.
  template <boost::asio::completion_token_for<signature<std::uint64_t>> Token = boost::asio::deferred_t>
  auto remove_all(Token&& token = {}) {
    return launch<std::uint64_t>(std::forward<Token>(token), [this](detail::cancellation_check) { return remove_all_coro(); });
  }

 private:
  template <class T>
  using coro = boost::asio::awaitable<detail::op_result<T>>;

  static store_options sanitize(store_options o) {
    if (o.node == 0) o.node = detail::random_id();
    if (!o.clock) o.clock = meta::steady_clock_source();
    if (o.lease_ttl < duration::zero()) o.lease_ttl = duration::zero();
    o.lease_margin = std::clamp(o.lease_margin, duration::zero(), o.lease_ttl);
    return o;
  }

  template <class T, class Token, class Make>
  auto launch(Token&& token, Make make) {
    return detail::launch<T>(executor_, std::forward<Token>(token), std::move(make));
  }

  // Times a metadata call and counts it as one round trip.
  struct metadata_timer {
    client::counter_set& counters;
    clock_type::time_point started = clock_type::now();
    ~metadata_timer() {
      client::counter_set::add(counters.metadata_round_trips, 1);
      client::counter_set::add(counters.metadata_ns, elapsed_ns(started));
    }
  };
  struct data_timer {
    client::counter_set& counters;
    clock_type::time_point started = clock_type::now();
    ~data_timer() { client::counter_set::add(counters.data_ns, elapsed_ns(started)); }
  };
  static std::uint64_t elapsed_ns(clock_type::time_point since) {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now() - since).count());
  }

  template <class T>
  T finish(T result) {
    client::counter_set::add(counters_.batches, 1);
    return result;
  }

  // The memory is reachable under its id before the id is announced: the
  // store proposes a random id, the transport makes the memory reachable
  // under it, and only then is it mounted, so no allocation can land in
  // memory the transport cannot find yet. A proposal that is taken
  // (already_exists) is retried (client/segment_proposal.hpp).
  coro<segment_id> add_segment_coro(std::uint64_t size) {
    using result = detail::op_result<segment_id>;
    using mount_answer = std::pair<std::error_code, segment_id>;
    const auto proposal = client::segment_proposal::fresh();
    segment_endpoints where;
    auto reach = [&](segment_id id) {
      auto [made, endpoints] = transport_.add_segment(id, size, options_.populate_segments);
      where = std::move(endpoints);
      return made;
    };
    if (std::error_code made = reach(proposal.id())) co_return finish(result{made, 0});
    auto mount = [&](segment_id id) -> boost::asio::awaitable<mount_answer> {
      metadata_timer timing{counters_};
      co_return co_await metadata_.mount(node_, size, where, id);
    };
    auto withdraw = [&](segment_id id) { transport_.remove_segment(id); };
    auto no_pause = []() -> boost::asio::awaitable<void> { co_return; };  // fresh ids never wait
    const mount_answer mounted = co_await client::mount_proposed(proposal, mount, reach, withdraw, no_pause);
    if (mounted.first) co_return finish(result{mounted.first, 0});
    {
      std::lock_guard lock(segments_mu_);
      segments_.push_back(mounted.second);
    }
    registered_ = true;
    co_return finish(detail::succeeded(mounted.second));
  }

  // One query round trip; results get client-side deadlines and go into the
  // cache, unless the store invalidated their key while the query was out.
  boost::asio::awaitable<std::error_code> query_metadata(key_span keys, std::span<query_result> out) {
    const time_point sent_at = options_.clock();
    client::metadata_cache::query_scope answer(cache_);
    std::error_code ec;
    {
      metadata_timer timing{counters_};
      ec = co_await metadata_.query(keys, options_.lease_ttl, out);
    }
    if (ec) co_return ec;
    const time_point deadline = sent_at + options_.lease_ttl - options_.lease_margin;
    for (query_result& r : out)
      if (r.ok()) r.lease_deadline = deadline;
    cache_.locked([&](client::metadata_cache::view& cache) { cache.store_all(keys, out, answer.ticket()); });
    co_return ec;
  }

  coro<std::vector<query_result>> query_coro(key_span keys) {
    std::vector<query_result> out(keys.size());
    const std::error_code ec = co_await query_metadata(keys, out);
    if (ec) out.clear();
    co_return finish(detail::op_result<std::vector<query_result>>{ec, std::move(out)});
  }

  coro<std::vector<errc>> exist_coro(key_span keys) {
    std::vector<errc> out(keys.size());
    std::error_code ec;
    {
      metadata_timer timing{counters_};
      ec = co_await metadata_.exist(keys, out);
    }
    if (ec) out.clear();
    co_return finish(detail::op_result<std::vector<errc>>{ec, std::move(out)});
  }

  coro<prefix_result> exist_prefix_coro(key_span keys) {
    std::pair<std::error_code, prefix_result> r;
    {
      metadata_timer timing{counters_};
      r = co_await metadata_.exist_prefix(keys);
    }
    co_return finish(detail::op_result<prefix_result>{r.first, r.second});
  }

  void invalidate(std::span<const std::string_view> keys) {
    if (keys.empty()) return;
    cache_.locked([&](client::metadata_cache::view& cache) {
      for (std::string_view key : keys)
        if (check_key(key) == errc::success) cache.invalidate(key);
    });
  }

  coro<std::vector<errc>> remove_coro(key_span keys) {
    std::vector<errc> out(keys.size());
    std::error_code ec;
    {
      metadata_timer timing{counters_};
      ec = co_await metadata_.remove(keys, out);
    }
    // Drop cached metadata even if the call failed: whether the removal
    // happened is unknown then.
    cache_.locked([&](client::metadata_cache::view& cache) {
      for (std::size_t i = 0; i < keys.size(); ++i)
        if (check_key(keys[i]) == errc::success) cache.invalidate(keys[i]);
    });
    if (ec) out.clear();
    co_return finish(detail::op_result<std::vector<errc>>{ec, std::move(out)});
  }

  coro<std::uint64_t> remove_all_coro() {
    std::pair<std::error_code, std::uint64_t> r;
    {
      metadata_timer timing{counters_};
      r = co_await metadata_.remove_all();
    }
    // Even if the call failed: whether it happened is unknown then.
    cache_.locked([](client::metadata_cache::view& cache) { cache.invalidate_all(); });
    co_return finish(detail::op_result<std::uint64_t>{r.first, r.first ? 0 : r.second});
  }

  // Does what client::put_plan asks until it is done.
  coro<std::vector<errc>> put_coro(key_span keys, std::span<const boost::asio::const_buffer> values, put_options opts,
                                   detail::cancellation_check cancelled) {
    using result = detail::op_result<std::vector<errc>>;
    // Cancellation is handled by the plan, step by step, not by exceptions.
    co_await boost::asio::this_coro::throw_if_cancelled(false);
    if (values.size() != keys.size() || opts.replicas == 0 || opts.replicas > max_replicas)
      co_return finish(detail::failed<typename result::second_type>(errc::invalid_argument));
    auto lease = put_plans_.take();
    client::put_plan& plan = *lease;
    plan.start(keys, values, registered_.load(std::memory_order_relaxed));
    using step = client::put_plan::step;
    for (;;) {
      const step next = plan.next(cancelled());
      if (next == step::done) break;
      std::error_code ec;
      if (next == step::write) {
        {
          data_timer timing{counters_};
          std::optional<std::error_code> now;
          if constexpr (synchronous_transport<Transport>) now = transport_.try_write_now(plan.writes(), plan.write_status());
          if (now)
            ec = *now;
          else
            ec = co_await transport_.write(plan.writes(), plan.write_status());
        }
        plan.on_written(ec);
        continue;
      }
      metadata_timer timing{counters_};
      switch (next) {
        case step::register_node:
          // A writer must be a registered node, so that its death revokes
          // its puts.
          registered_ = false;
          ec = co_await metadata_.register_node(node_);
          if (!ec) registered_ = true;
          plan.on_registered(ec);
          break;
        case step::reserve:
          ec = co_await metadata_.put_start(plan.reserve_keys(), plan.reserve_sizes(), opts, node_, plan.reservations());
          plan.on_reserved(ec);
          break;
        case step::commit:
          ec = co_await metadata_.put_end(plan.commit_keys(), plan.commit_versions(), plan.commit_status());
          plan.on_committed(ec);
          break;
        case step::revoke:
          ec = co_await metadata_.put_revoke(plan.revoke_keys(), plan.revoke_versions(), plan.revoke_status());
          plan.on_revoked(ec);
          break;
        case step::write:
        case step::done:
          break;
      }
    }
    client::counter_set::add(counters_.bytes_written, plan.bytes_written());
    invalidate(plan.touched_keys());
    if (plan.error()) co_return finish(detail::failed<typename result::second_type>(plan.error()));
    co_return finish(detail::succeeded(plan.take_results()));
  }

  // Step 1 of every read: where the bytes go, and the metadata each key is
  // read with, from the caller's results or from the cache.
  template <class Destination>
  void plan_metadata(client::read_plan& plan, key_span keys, std::span<const query_result> given, bool use_given,
                     get_options opts, Destination&& into) {
    const time_point started = options_.clock();
    plan.start(keys, started, opts);
    plan.read_into(std::forward<Destination>(into));
    if (use_given) {
      plan.use_results(given);
      return;
    }
    cache_.locked([&](client::metadata_cache::view& cache) {
      plan.use_cache([&](std::string_view key, std::uint64_t hash) { return cache.find(key, hash, started); });
    });
  }

  void count_read(const client::read_plan::tally& t) {
    client::counter_set::add(counters_.bytes_read, t.bytes);
    client::counter_set::add(counters_.keys_from_caller, t.from_caller);
    client::counter_set::add(counters_.keys_from_cache, t.from_cache);
    client::counter_set::add(counters_.keys_requeried, t.from_requery);
    client::counter_set::add(counters_.keys_revalidated, t.revalidated);
    client::counter_set::add(counters_.lease_expiries, t.expired);
  }

  // Every form of batch_get: does what client::read_plan asks until it is done.
  // Into the caller's buffers (Owned = false: vector<get_result>), or into
  // handles from the pool (Owned = true: vector<get_buffer_result>).
  template <bool Owned>
  using read_results = std::conditional_t<Owned, std::vector<get_buffer_result>, std::vector<get_result>>;

  // A read under way: its plan, and the step it waits to take.
  struct read_job {
    std::optional<typename detail::scratch_pool<client::read_plan>::lease> plan;
    client::read_plan::step pending = client::read_plan::step::done;
  };

  // A read is first attempted in the initiating call: with every key's
  // metadata at hand and a transport that moves bytes without waiting (an
  // embedded store, a same-host peer's mapped memory), it is done there and
  // its handler posted. Otherwise its coroutine carries on from where the
  // attempt stopped.
  template <bool Owned, class Token>
  auto launch_read(Token&& token, key_span keys, std::span<const query_result> given, bool use_given,
                   std::span<const boost::asio::mutable_buffer> buffers, get_options opts) {
    return detail::launch_attempt<read_results<Owned>>(
        executor_, std::forward<Token>(token),
        [=, this] { return attempt_read<Owned>(keys, given, use_given, buffers, opts); },
        [=, this](detail::cancellation_check cancelled, read_job job) {
          return read_coro<Owned>(keys, given, use_given, buffers, opts, cancelled, std::move(job));
        });
  }

  template <bool Owned>
  bool read_arguments_valid(key_span keys, std::span<const query_result> given, bool use_given,
                            std::span<const boost::asio::mutable_buffer> buffers) const {
    return !((!Owned && buffers.size() != keys.size()) || (use_given && given.size() != keys.size()));
  }

  // Takes a plan and plans the batch's metadata and destinations.
  template <bool Owned>
  read_job start_read(key_span keys, std::span<const query_result> given, bool use_given,
                      std::span<const boost::asio::mutable_buffer> buffers, get_options opts) {
    read_job job;
    job.plan.emplace(read_plans_.take());
    if constexpr (Owned)
      plan_metadata(**job.plan, keys, given, use_given, opts, pool_);
    else
      plan_metadata(**job.plan, keys, given, use_given, opts, buffers);
    return job;
  }

  // Takes every step that needs no waiting; returns the first that does
  // (or done).
  client::read_plan::step advance(client::read_plan& plan, bool cancelled) {
    using step = client::read_plan::step;
    auto now = [this] { return options_.clock(); };
    for (;;) {
      const step next = plan.next(now, cancelled);
      if constexpr (synchronous_transport<Transport>) {
        if (next == step::transfer) {
          data_timer timing{counters_};
          if (auto ec = transport_.try_read_now(plan.transfers(), plan.transfer_status())) {
            plan.on_transfer(*ec);
            continue;
          }
        }
      }
      return next;
    }
  }

  template <bool Owned>
  std::pair<std::optional<detail::op_result<read_results<Owned>>>, read_job> attempt_read(
      key_span keys, std::span<const query_result> given, bool use_given, std::span<const boost::asio::mutable_buffer> buffers,
      get_options opts) {
    using results = read_results<Owned>;
    if (!read_arguments_valid<Owned>(keys, given, use_given, buffers))
      return {finish(detail::failed<results>(errc::invalid_argument)), read_job{}};
    read_job job = start_read<Owned>(keys, given, use_given, buffers, opts);
    job.pending = advance(**job.plan, false);
    if (job.pending == client::read_plan::step::done) return {finish_read<Owned>(**job.plan), read_job{}};
    return {std::nullopt, std::move(job)};
  }

  template <bool Owned>
  coro<read_results<Owned>> read_coro(key_span keys, std::span<const query_result> given, bool use_given,
                                      std::span<const boost::asio::mutable_buffer> buffers, get_options opts,
                                      detail::cancellation_check cancelled, read_job job) {
    using results = read_results<Owned>;
    using step = client::read_plan::step;
    // Cancellation is handled by the plan, step by step, not by exceptions.
    // Once a transfer has started, the operation completes only after it
    // returned: nothing may write into the caller's buffers after completion.
    co_await boost::asio::this_coro::throw_if_cancelled(false);
    if (!job.plan) {  // nothing was attempted
      if (!read_arguments_valid<Owned>(keys, given, use_given, buffers))
        co_return finish(detail::failed<results>(errc::invalid_argument));
      job = start_read<Owned>(keys, given, use_given, buffers, opts);
      job.pending = advance(**job.plan, cancelled());
    }
    client::read_plan& plan = **job.plan;
    for (step next = job.pending; next != step::done; next = advance(plan, cancelled())) {
      switch (next) {
        case step::query:
          plan.on_query(co_await query_metadata(plan.query_keys(), plan.query_results()));
          break;
        case step::transfer: {
          std::error_code ec;
          {
            data_timer timing{counters_};
            ec = co_await transport_.read(plan.transfers(), plan.transfer_status());
          }
          plan.on_transfer(ec);
          break;
        }
        case step::validate: {
          std::error_code ec;
          {
            metadata_timer timing{counters_};
            ec = co_await metadata_.validate(plan.validate_keys(), plan.validate_versions(), plan.validate_replicas(),
                                             plan.validate_status());
          }
          plan.on_validate(ec);
          invalidate(plan.expired_keys());
          break;
        }
        case step::done:
          break;
      }
    }
    co_return finish_read<Owned>(plan);
  }

  // The operation's outcome from a finished plan.
  template <bool Owned>
  detail::op_result<read_results<Owned>> finish_read(client::read_plan& plan) {
    using results = read_results<Owned>;
    count_read(plan.counts());
    if (plan.error()) return finish(detail::failed<results>(plan.error()));
    if constexpr (!Owned) {
      return finish(detail::succeeded(plan.take_results()));
    } else {
      std::vector<get_result> read = plan.take_results();
      std::vector<buffer_handle> handles = plan.take_handles();
      results out(read.size());
      for (std::size_t i = 0; i < read.size(); ++i) {
        out[i].status = read[i].status;
        out[i].version = read[i].version;
        out[i].source = read[i].source;
        if (read[i].ok() && i < handles.size()) out[i].buffer = std::move(handles[i]);
      }
      return finish(detail::succeeded(std::move(out)));
    }
  }

  executor_type executor_;
  store_options options_;
  node_id node_;
  Metadata metadata_;
  memory::buffer_pool pool_;       // before the transport: its region is registered there
  Transport transport_;
  client::metadata_cache cache_;
  client::counter_set counters_;
  detail::scratch_pool<client::read_plan> read_plans_;
  detail::scratch_pool<client::put_plan> put_plans_;
  std::atomic<bool> registered_{false};
  std::mutex segments_mu_;
  std::vector<segment_id> segments_;
};
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

}  // namespace corokv
