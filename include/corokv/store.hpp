#pragma once
// The corokv client. A store talks to one metadata endpoint and moves data
// with one transport; `corokv::store` is the embedded default: the metadata
// service in this process, segments in this process's memory, memcpy.
//
// Every batch operation is an Asio initiating function whose completion
// signature is void(boost::system::error_code, Result) and whose token
// defaults to asio::deferred, so `co_await store.batch_get(...)` works in an
// asio::awaitable, and callbacks, use_future, as_tuple and use_awaitable work
// too. Results are vectors aligned with the keys: index i answers key i. The
// error_code reports failures of the whole operation (invalid arguments,
// metadata or transport failure, cancellation); per-key outcomes sit in the
// results.
//
// As with any Asio operation, the keys, values, query results and buffers
// passed in must stay valid until the operation completes.
//
// Thread safety: a store may be used by any number of operations at once,
// from any threads (a multi-threaded io_context, a thread_pool). The metadata
// service, the cache, the counters and the segment registry are each
// internally synchronised. Construction and destruction are not concurrent
// with operations: destroy a store only after its operations completed.

#include <corokv/client/counters.hpp>
#include <corokv/client/embedded_metadata.hpp>
#include <corokv/client/metadata_cache.hpp>
#include <corokv/client/options.hpp>
#include <corokv/detail/async_operation.hpp>
#include <corokv/detail/batch_plan.hpp>
#include <corokv/detail/identity.hpp>
#include <corokv/transport/local_segment.hpp>
#include <corokv/transport/local_transport.hpp>
#include <corokv/types.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/this_coro.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace corokv {

namespace asio = boost::asio;


#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
// GCC 12 reports Asio's coroutine frames (class-specific operator new with a
// matching sized operator delete) as a mismatched new/delete pair at the end
// of each coroutine. It is a false positive; silence it here only.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

template <class Metadata, class Transport>
class basic_store {
 public:
  using executor_type = asio::any_io_executor;
  using metadata_type = Metadata;
  using transport_type = Transport;

  template <class T>
  using signature = void(boost::system::error_code, T);

  basic_store(executor_type ex, Metadata metadata, Transport transport, store_options options = {})
      : executor_(std::move(ex)),
        options_(sanitize(std::move(options))),
        node_(options_.node),
        metadata_(std::move(metadata)),
        transport_(std::move(transport)),
        cache_(options_.cache_capacity) {}

  explicit basic_store(executor_type ex, store_options options = {})
    requires(std::is_default_constructible_v<Metadata> && std::is_default_constructible_v<Transport>)
      : basic_store(std::move(ex), Metadata{}, Transport{}, std::move(options)) {}

  basic_store(const basic_store&) = delete;
  basic_store& operator=(const basic_store&) = delete;

  // Leaves the cluster: the node's segments are unmounted and its pending
  // puts revoked before its memory is unmapped.
  ~basic_store() {
    metadata_.leave(node_);
    for (auto& s : segments_) transport_.registry().remove(s.id);
  }

  executor_type get_executor() const noexcept { return executor_; }
  node_id node() const noexcept { return node_; }
  const store_options& options() const noexcept { return options_; }
  Metadata& metadata() noexcept { return metadata_; }
  Transport& transport() noexcept { return transport_; }
  metadata_cache& cache() noexcept { return cache_; }

  store_counters counters() const noexcept { return counters_.snapshot(); }
  nlohmann::json counters_json() const { return counters_.snapshot(); }

  // ------------------------------------------------------------ memory
  // Contributes `size` bytes of this process's memory to the pool.
  // Completes with the segment id the metadata service assigned.
  template <asio::completion_token_for<signature<segment_id>> Token = asio::deferred_t>
  auto add_segment(std::uint64_t size, Token&& token = {}) {
    return launch<segment_id>(std::forward<Token>(token), [this, size](detail::cancellation_check) { return add_segment_coro(size); });
  }

  // Registers a region of the caller's memory that batch_get and batch_put
  // buffers will come from. The memcpy transport needs no registration, so
  // for it this is bookkeeping that rejects empty and overlapping regions;
  // transports that must pin or register memory with a device use it.
  std::error_code register_buffer(asio::mutable_buffer region) {
    if (region.size() == 0) return errc::invalid_argument;
    const auto* begin = static_cast<const std::byte*>(region.data());
    std::lock_guard lock(buffers_mu_);
    for (auto& r : buffers_) {
      const auto* rb = static_cast<const std::byte*>(r.data());
      if (begin < rb + r.size() && rb < begin + region.size()) return errc::invalid_argument;
    }
    buffers_.push_back(region);
    return {};
  }
  std::error_code unregister_buffer(asio::mutable_buffer region) {
    std::lock_guard lock(buffers_mu_);
    auto it = std::find_if(buffers_.begin(), buffers_.end(), [&](const asio::mutable_buffer& r) {
      return r.data() == region.data() && r.size() == region.size();
    });
    if (it == buffers_.end()) return errc::invalid_argument;
    buffers_.erase(it);
    return {};
  }
  std::size_t registered_buffers() const {
    std::lock_guard lock(buffers_mu_);
    return buffers_.size();
  }

  // ------------------------------------------------------------ batches
  // Stores values[i] under keys[i]: one metadata round trip to reserve space
  // and a version, the writes, and one to commit (plus one to revoke what
  // failed to write). Per key: success, or why not (already_exists,
  // put_in_progress, invalid_key, duplicate_key, invalid_argument for an
  // empty value, no_space, replicas_unavailable, a transfer status).
  template <asio::completion_token_for<signature<std::vector<errc>>> Token = asio::deferred_t>
  auto batch_put(key_span keys, std::span<const asio::const_buffer> values, Token&& token = {}) {
    return batch_put(keys, values, put_options{}, std::forward<Token>(token));
  }
  template <asio::completion_token_for<signature<std::vector<errc>>> Token = asio::deferred_t>
  auto batch_put(key_span keys, std::span<const asio::const_buffer> values, put_options opts, Token&& token = {}) {
    return launch<std::vector<errc>>(std::forward<Token>(token), [=, this](detail::cancellation_check cancelled) {
      return put_coro(keys, values, opts, cancelled);
    });
  }

  // Existence, per key; grants no lease.
  template <asio::completion_token_for<signature<std::vector<errc>>> Token = asio::deferred_t>
  auto batch_exist(key_span keys, Token&& token = {}) {
    return launch<std::vector<errc>>(std::forward<Token>(token), [=, this](detail::cancellation_check) { return exist_coro(keys); });
  }

  // How many leading keys exist: the longest cached prefix of a prompt.
  template <asio::completion_token_for<signature<prefix_result>> Token = asio::deferred_t>
  auto batch_exist_prefix(key_span keys, Token&& token = {}) {
    return launch<prefix_result>(std::forward<Token>(token), [=, this](detail::cancellation_check) { return exist_prefix_coro(keys); });
  }

  // One metadata round trip; grants leases. Each found key's lease_deadline
  // is on this store's clock: sent_at + lease_ttl - lease_margin. The results
  // also fill the metadata cache.
  template <asio::completion_token_for<signature<std::vector<query_result>>> Token = asio::deferred_t>
  auto batch_query(key_span keys, Token&& token = {}) {
    return launch<std::vector<query_result>>(std::forward<Token>(token), [=, this](detail::cancellation_check) { return query_coro(keys); });
  }

  // Reads keys[i] into buffers[i], using cached metadata where its lease is
  // valid and re-querying the rest in one round trip.
  template <asio::completion_token_for<signature<std::vector<get_result>>> Token = asio::deferred_t>
  auto batch_get(key_span keys, std::span<const asio::mutable_buffer> buffers, Token&& token = {}) {
    return batch_get(keys, buffers, get_options{}, std::forward<Token>(token));
  }
  template <asio::completion_token_for<signature<std::vector<get_result>>> Token = asio::deferred_t>
  auto batch_get(key_span keys, std::span<const asio::mutable_buffer> buffers, get_options opts,
                 Token&& token = {}) {
    return launch<std::vector<get_result>>(std::forward<Token>(token), [=, this](detail::cancellation_check cancelled) {
      return get_coro(keys, {}, false, buffers, opts, cancelled);
    });
  }

  // The second step of the two-step read: no metadata round trip for keys
  // whose query result is still leased. The others are re-queried together
  // in one round trip, or reported per key in strict mode. query_results of
  // another length than keys fail the operation with invalid_argument.
  template <asio::completion_token_for<signature<std::vector<get_result>>> Token = asio::deferred_t>
  auto batch_get(key_span keys, std::span<const query_result> query_results,
                 std::span<const asio::mutable_buffer> buffers, Token&& token = {}) {
    return batch_get(keys, query_results, buffers, get_options{}, std::forward<Token>(token));
  }
  template <asio::completion_token_for<signature<std::vector<get_result>>> Token = asio::deferred_t>
  auto batch_get(key_span keys, std::span<const query_result> query_results,
                 std::span<const asio::mutable_buffer> buffers, get_options opts, Token&& token = {}) {
    return launch<std::vector<get_result>>(std::forward<Token>(token), [=, this](detail::cancellation_check cancelled) {
      return get_coro(keys, query_results, true, buffers, opts, cancelled);
    });
  }

  // Hides each key at once; memory is freed when no lease holds it.
  template <asio::completion_token_for<signature<std::vector<errc>>> Token = asio::deferred_t>
  auto batch_remove(key_span keys, Token&& token = {}) {
    return launch<std::vector<errc>>(std::forward<Token>(token), [=, this](detail::cancellation_check) { return remove_coro(keys); });
  }

 private:
  template <class T>
  using coro = asio::awaitable<detail::op_result<T>>;

  struct owned_segment {
    segment_id id;
    std::shared_ptr<local_segment> memory;
  };

  static bool is_corokv_error(const std::error_code& ec) { return ec.category() == error_category(); }

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
    detail::counter_set& counters;
    clock_type::time_point started = clock_type::now();
    ~metadata_timer() {
      detail::counter_set::add(counters.metadata_round_trips, 1);
      detail::counter_set::add(counters.metadata_ns, elapsed_ns(started));
    }
  };
  struct data_timer {
    detail::counter_set& counters;
    clock_type::time_point started = clock_type::now();
    ~data_timer() { detail::counter_set::add(counters.data_ns, elapsed_ns(started)); }
  };
  static std::uint64_t elapsed_ns(clock_type::time_point since) {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now() - since).count());
  }

  template <class T>
  T finish(T result) {
    detail::counter_set::add(counters_.batches, 1);
    return result;
  }

  // A caller-supplied result must describe one object consistently.
  static bool describes_object(const query_result& q) {
    return !q.replicas.empty() && std::all_of(q.replicas.begin(), q.replicas.end(),
                                              [&](const replica_descriptor& r) { return r.length == q.size; });
  }

  // The memory is reachable under its id before the id is announced: the
  // store proposes a random id, enters the memory in the registry under it,
  // and only then mounts, so no allocation can land in memory the transport
  // cannot find yet. A proposal that is taken (already_exists) is retried.
  coro<segment_id> add_segment_coro(std::uint64_t size) {
    using result = detail::op_result<segment_id>;
    std::pair<std::error_code, segment_id> mounted{errc::already_exists, 0};
    std::shared_ptr<local_segment> memory;
    for (int attempt = 0; attempt < 3 && mounted.first == errc::already_exists; ++attempt) {
      const segment_id proposal = detail::random_id();
      auto [made, where] = make_segment(size, proposal);
      if (!made->valid()) co_return finish(result{made->error(), 0});
      memory = std::move(made);
      transport_.registry().add(proposal, memory->data(), memory->size(), memory);
      {
        metadata_timer timing{counters_};
        mounted = co_await metadata_.mount(node_, size, std::move(where), proposal);
      }
      if (mounted.first) transport_.registry().remove(proposal);
    }
    if (mounted.first) co_return finish(result{mounted.first, 0});
    {
      std::lock_guard lock(segments_mu_);
      segments_.push_back({mounted.second, std::move(memory)});
    }
    registered_ = true;
    co_return finish(result{{}, mounted.second});
  }

  // The transport decides what memory its peers can reach and how; one
  // without an opinion gets private memory, reachable in this process only.
  std::pair<std::shared_ptr<local_segment>, segment_endpoints> make_segment(std::uint64_t size, segment_id id) {
    if constexpr (requires { transport_.make_segment(size, true, id); }) {
      return transport_.make_segment(size, options_.populate_segments, id);
    } else {
      auto memory = std::make_shared<local_segment>(size, options_.populate_segments);
      segment_endpoints where;
      where.host_id = detail::host_id();
      where.base_address = reinterpret_cast<std::uintptr_t>(memory->data());
      return {std::move(memory), std::move(where)};
    }
  }

  // A writer must be a registered node, so that its death revokes its puts.
  asio::awaitable<std::error_code> ensure_registered() {
    if (registered_) co_return std::error_code{};
    std::error_code ec;
    {
      metadata_timer timing{counters_};
      ec = co_await metadata_.register_node(node_);
    }
    if (!ec) registered_ = true;
    co_return ec;
  }

  // One query round trip; results get client-side deadlines and go into the
  // cache.
  asio::awaitable<std::error_code> query_metadata(key_span keys, std::span<query_result> out) {
    const time_point sent_at = options_.clock();
    std::error_code ec;
    {
      metadata_timer timing{counters_};
      ec = co_await metadata_.query(keys, options_.lease_ttl, out);
    }
    if (ec) co_return ec;
    const time_point deadline = sent_at + options_.lease_ttl - options_.lease_margin;
    for (query_result& r : out)
      if (r.ok()) r.lease_deadline = deadline;
    cache_.locked([&](metadata_cache::view& cache) { cache.store_all(keys, out); });
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

  coro<std::vector<errc>> remove_coro(key_span keys) {
    std::vector<errc> out(keys.size());
    std::error_code ec;
    {
      metadata_timer timing{counters_};
      ec = co_await metadata_.remove(keys, out);
    }
    // Drop cached metadata even if the call failed: whether the removal
    // happened is unknown then.
    cache_.locked([&](metadata_cache::view& cache) {
      for (std::size_t i = 0; i < keys.size(); ++i)
        if (check_key(keys[i]) == errc::success) cache.invalidate(keys[i]);
    });
    if (ec) out.clear();
    co_return finish(detail::op_result<std::vector<errc>>{ec, std::move(out)});
  }

  coro<std::vector<errc>> put_coro(key_span keys, std::span<const asio::const_buffer> values, put_options opts,
                                   detail::cancellation_check cancelled) {
    using result = detail::op_result<std::vector<errc>>;
    // Cancellation is handled here, step by step, not by exceptions.
    co_await asio::this_coro::throw_if_cancelled(false);
    if (values.size() != keys.size() || opts.replicas == 0 || opts.replicas > max_replicas)
      co_return finish(result{errc::invalid_argument, {}});
    const std::size_t n = keys.size();
    std::vector<errc> status(n);
    // The per-thread plan is read only before the first suspension: the
    // coroutine may resume on another thread, and metadata calls rebuild it.
    detail::batch_plan& plan = detail::thread_batch_plan();
    plan.build(keys, 1);

    // The keys that go to the metadata service, by index into the batch.
    std::vector<std::uint32_t> index;
    std::vector<std::string_view> sub_keys;
    std::vector<std::uint64_t> sizes;
    for (std::uint32_t i = 0; i < n; ++i) {
      status[i] = plan.admission(i);
      if (status[i] == errc::success && values[i].size() == 0) status[i] = errc::invalid_argument;
      if (status[i] != errc::success) continue;
      index.push_back(i);
      sub_keys.push_back(keys[i]);
      sizes.push_back(values[i].size());
    }
    if (index.empty()) co_return finish(result{{}, std::move(status)});

    std::vector<put_start_result> started(index.size());
    std::error_code ec;
    // A writer must be registered. node_unknown means the service forgot this
    // node (declared it dead, or restarted): register again and retry once.
    for (int attempt = 0; attempt < 2; ++attempt) {
      if ((ec = co_await ensure_registered())) break;
      {
        metadata_timer timing{counters_};
        ec = co_await metadata_.put_start(sub_keys, sizes, opts, node_, started);
      }
      if (ec != errc::node_unknown) break;
      registered_ = false;
    }
    if (ec) co_return finish(result{ec, {}});

    // Every replica of a reserved object is written.
    std::vector<write_request> writes;
    std::vector<std::uint32_t> write_owner;  // index into sub_keys
    std::vector<errc> outcome(index.size(), errc::success);
    for (std::uint32_t k = 0; k < index.size(); ++k) {
      if (!started[k].ok()) {
        outcome[k] = started[k].status;
        continue;
      }
      for (const replica_descriptor& r : started[k].replicas) {
        if (!transport_.reaches(r)) {
          outcome[k] = errc::replicas_unavailable;
          continue;
        }
        writes.push_back({r, values[index[k]]});
        write_owner.push_back(k);
      }
    }
    bool abandon = cancelled();
    if (!abandon && !writes.empty()) {
      std::vector<errc> written(writes.size());
      {
        data_timer timing{counters_};
        ec = co_await transport_.write(writes, written);
      }
      abandon = static_cast<bool>(ec) || cancelled();
      for (std::size_t w = 0; w < writes.size() && !abandon; ++w) {
        if (written[w] != errc::success && outcome[write_owner[w]] == errc::success)
          outcome[write_owner[w]] = written[w];
        if (written[w] == errc::success) detail::counter_set::add(counters_.bytes_written, writes[w].source.size());
      }
    }
    if (abandon && !ec) ec = errc::cancelled;

    // Commit what was written; revoke the rest of what was reserved.
    std::vector<std::string_view> commit_keys, revoke_keys;
    std::vector<version_t> commit_versions, revoke_versions;
    std::vector<std::uint32_t> committed;  // index into sub_keys
    for (std::uint32_t k = 0; k < index.size(); ++k) {
      if (!started[k].ok()) continue;
      if (!abandon && outcome[k] == errc::success) {
        commit_keys.push_back(sub_keys[k]);
        commit_versions.push_back(started[k].version);
        committed.push_back(k);
      } else {
        revoke_keys.push_back(sub_keys[k]);
        revoke_versions.push_back(started[k].version);
      }
    }
    if (!commit_keys.empty()) {
      std::vector<errc> ended(commit_keys.size());
      std::error_code end_ec;
      {
        metadata_timer timing{counters_};
        end_ec = co_await metadata_.put_end(commit_keys, commit_versions, ended);
      }
      if (end_ec) {
        // Whether anything committed is unknown: revoke all of it (a
        // committed key answers already_exists and stays) and report the
        // failure after the clean-up below.
        ec = end_ec;
        revoke_keys.insert(revoke_keys.end(), commit_keys.begin(), commit_keys.end());
        revoke_versions.insert(revoke_versions.end(), commit_versions.begin(), commit_versions.end());
      } else {
        for (std::size_t c = 0; c < committed.size(); ++c) outcome[committed[c]] = ended[c];
      }
    }
    if (!revoke_keys.empty()) {
      // Best effort: a reservation that cannot be revoked now expires by the
      // service's put timeout.
      std::vector<errc> revoked(revoke_keys.size());
      metadata_timer timing{counters_};
      (void)co_await metadata_.put_revoke(revoke_keys, revoke_versions, revoked);
    }
    cache_.locked([&](metadata_cache::view& cache) {
      for (auto key : sub_keys) cache.invalidate(key);
    });
    if (ec) co_return finish(result{ec, {}});
    for (std::uint32_t k = 0; k < index.size(); ++k) status[index[k]] = outcome[k];
    co_return finish(result{{}, std::move(status)});
  }

  coro<std::vector<get_result>> get_coro(key_span keys, std::span<const query_result> given, bool use_given,
                                         std::span<const asio::mutable_buffer> buffers, get_options opts,
                                         detail::cancellation_check cancelled) {
    using result = detail::op_result<std::vector<get_result>>;
    // Cancellation is handled here, step by step, not by exceptions. Once a
    // transfer has started, the operation completes only after it returned:
    // nothing may write into the caller's buffers after completion.
    co_await asio::this_coro::throw_if_cancelled(false);
    if (buffers.size() != keys.size() || (use_given && given.size() != keys.size()))
      co_return finish(result{errc::invalid_argument, {}});
    const std::size_t n = keys.size();
    std::vector<get_result> results(n);
    struct key_read {
      query_result meta;              // the metadata the key is read with
      std::uint8_t next_replica = 0;  // the replica to try next
    };
    std::vector<key_read> reading(n);
    // The per-thread plan is read only in step 1, before the first
    // suspension: the coroutine may resume on another thread, and metadata
    // calls rebuild it.
    detail::batch_plan& plan = detail::thread_batch_plan();
    plan.build(keys, 1);
    const time_point started = options_.clock();

    // 1. Metadata for each key: the caller's results or the cache, while
    //    their lease holds; the rest is re-queried below.
    std::vector<std::uint32_t> requery;
    auto accept = [&](std::uint32_t i, const query_result& q, key_source source) {
      reading[i].meta = q;
      results[i].source = source;
    };
    if (use_given) {
      for (std::uint32_t i = 0; i < n; ++i) {
        if ((results[i].status = plan.admission(i)) != errc::success) continue;
        const query_result& q = given[i];
        if (q.ok() && !describes_object(q))
          results[i].status = errc::size_mismatch;
        else if (q.ok() && q.lease_deadline > started)
          accept(i, q, key_source::caller);
        else if (opts.strict)
          results[i].status = q.ok() ? errc::lease_expired : q.status;
        else
          requery.push_back(i);
      }
    } else {
      cache_.locked([&](metadata_cache::view& cache) {
        for (std::uint32_t i = 0; i < n; ++i) {
          if ((results[i].status = plan.admission(i)) != errc::success) continue;
          if (const query_result* q = cache.find(keys[i], started))
            accept(i, *q, key_source::cache);
          else
            requery.push_back(i);
        }
      });
    }

    // 2. At most one metadata round trip for everything else.
    if (!requery.empty()) {
      std::vector<std::string_view> sub(requery.size());
      for (std::size_t k = 0; k < requery.size(); ++k) sub[k] = keys[requery[k]];
      std::vector<query_result> fresh(requery.size());
      if (std::error_code ec = co_await query_metadata(sub, fresh)) {
        // The metadata is unreachable (a lost connection, a timeout). Keys
        // that have leased metadata are still read; the others fail with
        // that error, per key. With nothing left to read, the whole
        // operation fails with it.
        const bool others = std::any_of(results.begin(), results.end(),
                                        [](const get_result& r) { return r.source != key_source::none; });
        if (!others || !is_corokv_error(ec)) co_return finish(result{ec, {}});
        for (std::uint32_t i : requery) results[i].status = static_cast<errc>(ec.value());
        requery.clear();
      }
      for (std::size_t k = 0; k < requery.size(); ++k) {
        if (fresh[k].ok())
          accept(requery[k], fresh[k], key_source::requery);
        else
          results[requery[k]].status = fresh[k].status;
      }
    }

    // 3. Transfers, in passes: a key whose replica fails is tried again on
    //    its next reachable replica.
    std::vector<std::uint32_t> pending;
    for (std::uint32_t i = 0; i < n; ++i) {
      if (results[i].source == key_source::none) continue;
      if (buffers[i].size() < reading[i].meta.size) {
        results[i].status = errc::buffer_too_small;
        continue;
      }
      pending.push_back(i);
      results[i].status = errc::replicas_unavailable;  // until a replica delivers
    }
    std::vector<read_request> reads;
    std::vector<std::uint32_t> read_owner;
    std::vector<errc> read_status;
    while (!pending.empty()) {
      reads.clear();
      read_owner.clear();
      for (std::uint32_t i : pending) {
        const replica_list& replicas = reading[i].meta.replicas;
        std::uint8_t& next = reading[i].next_replica;
        while (next < replicas.size() && !transport_.reaches(replicas[next])) ++next;
        if (next == replicas.size()) continue;  // none left: keeps its last status
        reads.push_back({replicas[next++], asio::mutable_buffer(buffers[i].data(), reading[i].meta.size)});
        read_owner.push_back(i);
      }
      if (reads.empty()) break;
      if (cancelled()) co_return finish(result{errc::cancelled, {}});
      read_status.assign(reads.size(), errc::transfer_failed);
      std::error_code ec;
      {
        data_timer timing{counters_};
        ec = co_await transport_.read(reads, read_status);
      }
      if (ec) co_return finish(result{ec, {}});
      pending.clear();
      for (std::size_t k = 0; k < reads.size(); ++k) {
        const std::uint32_t i = read_owner[k];
        results[i].status = read_status[k];
        if (read_status[k] != errc::success) pending.push_back(i);
      }
    }

    if (cancelled()) co_return finish(result{errc::cancelled, {}});

    // 4. A read that finished after its lease is re-validated, all such keys
    //    in one round trip: success only if the same version is still
    //    committed, else lease_expired. Bytes are never reported good on faith.
    const time_point finished = options_.clock();
    std::vector<std::uint32_t> late;
    for (std::uint32_t i = 0; i < n; ++i) {
      if (results[i].status != errc::success || results[i].source == key_source::none) continue;
      results[i].size = reading[i].meta.size;
      results[i].version = reading[i].meta.version;
      if (reading[i].meta.lease_deadline <= finished) late.push_back(i);
    }
    if (!late.empty()) {
      std::vector<std::string_view> sub(late.size());
      std::vector<version_t> versions(late.size());
      for (std::size_t k = 0; k < late.size(); ++k) {
        sub[k] = keys[late[k]];
        versions[k] = reading[late[k]].meta.version;
      }
      std::vector<errc> still(late.size());
      std::error_code ec;
      {
        metadata_timer timing{counters_};
        ec = co_await metadata_.validate(sub, versions, still);
      }
      // Unconfirmed bytes are not reported good: each late key fails with
      // the metadata's error, the others stand.
      if (ec && !is_corokv_error(ec)) co_return finish(result{ec, {}});
      if (ec) std::fill(still.begin(), still.end(), static_cast<errc>(ec.value()));
      detail::counter_set::add(counters_.keys_revalidated, late.size());
      cache_.locked([&](metadata_cache::view& cache) {
        for (std::size_t k = 0; k < late.size(); ++k) {
          if (still[k] == errc::success) continue;
          get_result& r = results[late[k]];
          r = get_result{ec ? still[k] : errc::lease_expired, 0, no_version, r.source};
          cache.invalidate(sub[k]);
          detail::counter_set::add(counters_.lease_expiries, 1);
        }
      });
    }

    std::uint64_t bytes = 0, from_caller = 0, from_cache = 0, from_requery = 0;
    for (const get_result& r : results) {
      if (!r.ok()) continue;
      bytes += r.size;
      from_caller += r.source == key_source::caller;
      from_cache += r.source == key_source::cache;
      from_requery += r.source == key_source::requery;
    }
    detail::counter_set::add(counters_.bytes_read, bytes);
    detail::counter_set::add(counters_.keys_from_caller, from_caller);
    detail::counter_set::add(counters_.keys_from_cache, from_cache);
    detail::counter_set::add(counters_.keys_requeried, from_requery);
    co_return finish(result{{}, std::move(results)});
  }

  executor_type executor_;
  store_options options_;
  node_id node_;
  Metadata metadata_;
  Transport transport_;
  metadata_cache cache_;
  detail::counter_set counters_;
  std::atomic<bool> registered_{false};
  std::mutex segments_mu_;
  std::vector<owned_segment> segments_;
  mutable std::mutex buffers_mu_;
  std::vector<asio::mutable_buffer> buffers_;
};

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// The embedded default: metadata service, segments and data in this process.
using store = basic_store<embedded_metadata, local_transport>;

}  // namespace corokv
