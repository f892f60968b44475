#pragma once
// The decisions of one batch_get, without I/O: which keys are read with the
// caller's query results, which with the store's cache and which need the
// one re-query; where each key's bytes go (the caller's buffers or the
// store's pool); which replica each transfer pass tries; which reads
// finished after their lease and must be re-validated; and what each key
// finally answers. The store's coroutine asks next() what to do, does it
// (the awaits live there), and hands the outcome back:
//
//   plan.start(keys, now, options);  plan.use_results(given) or plan.use_cache(find);
//   plan.read_into(buffers) or plan.read_into(pool);
//   for (;;) switch (plan.next(clock, cancelled())) {
//     case step::query:     plan.on_query(co_await query(plan.query_keys(), plan.query_results()));
//     case step::transfer:  plan.on_transfer(co_await transport.read(plan.transfers(), plan.transfer_status()));
//     case step::validate:  plan.on_validate(co_await validate(plan.validate_keys(), ...));
//     case step::done:      return plan.error() or plan.take_results();
//   }
//
// Tested step by step without an io_context (tests/client/read_plan_test).
// A plan is reused across batches: its vectors keep their capacity.

#include <corokv/client/options.hpp>
#include <corokv/detail/batch_plan.hpp>
#include <corokv/error.hpp>
#include <corokv/memory/buffer_pool.hpp>
#include <corokv/memory/transfer.hpp>
#include <corokv/types.hpp>

#include <boost/asio/buffer.hpp>

#include <algorithm>
#include <cstdint>
#include <span>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace corokv::detail {

// Whether a caller-supplied result describes one object consistently.
inline bool describes_object(const query_result& q) noexcept {
  return !q.replicas.empty() && std::all_of(q.replicas.begin(), q.replicas.end(),
                                            [&](const replica_descriptor& r) { return r.length == q.size; });
}

class read_plan {
 public:
  enum class step { query, transfer, validate, done };

  // What the batch amounts to, for the store's counters (valid once done).
  struct tally {
    std::uint64_t from_caller = 0, from_cache = 0, from_requery = 0;
    std::uint64_t bytes = 0;
    std::uint64_t revalidated = 0, expired = 0;
  };

  // ------------------------------------------------------------ setup
  // A new batch, started at `now`: each key's admission (invalid_key,
  // duplicate_key). Then one of use_results / use_cache, and one of the
  // read_into forms.
  void start(key_span keys, time_point now, get_options options) {
    keys_ = keys;
    started_ = now;
    options_ = options;
    phase_ = phase::metadata;
    error_ = {};
    queried_ = false;
    tally_ = {};
    const std::size_t n = keys.size();
    admission_.build(keys, 1);
    results_.assign(n, get_result{});
    meta_.assign(n, nullptr);
    copies_.resize(n);
    next_replica_.assign(n, 0);
    requery_.clear();
    expired_.clear();
    buffers_ = {};
    pool_ = nullptr;
    handles_.clear();
  }

  // The caller's query results: used while their lease holds; missing,
  // failed or expired ones are re-queried, or reported in strict mode.
  void use_results(std::span<const query_result> given) {
    for (std::uint32_t i = 0; i < keys_.size(); ++i) {
      if ((results_[i].status = admission_.admission(i)) != errc::success) continue;
      const query_result& q = given[i];
      if (q.ok() && !describes_object(q))
        results_[i].status = errc::size_mismatch;
      else if (q.ok() && q.lease_deadline > started_)
        accept(i, &q, key_source::caller);
      else if (options_.strict)
        results_[i].status = q.ok() ? errc::lease_expired : q.status;
      else
        requery_.push_back(i);
    }
  }

  // The store's cache: find(key, hash) is the cached result whose lease is
  // still valid at the start, or null. Called with the cache locked; hits
  // are copied, since entries may go once the lock is released.
  template <class Find>
  void use_cache(Find&& find) {
    for (std::uint32_t i = 0; i < keys_.size(); ++i) {
      if ((results_[i].status = admission_.admission(i)) != errc::success) continue;
      if (const query_result* q = find(keys_[i], admission_.hash(i))) {
        copies_[i] = *q;
        accept(i, &copies_[i], key_source::cache);
      } else {
        requery_.push_back(i);
      }
    }
  }

  // Where the bytes go: buffers[i] for key i (buffer_too_small, nothing
  // written, if it is smaller than the object) ...
  void read_into(std::span<const boost::asio::mutable_buffer> buffers) { buffers_ = buffers; }
  // ... or a handle from the store's pool per key, allocated once the sizes
  // are known (pool_exhausted for a key that does not fit).
  void read_into(buffer_pool& pool) { pool_ = &pool; }

  // ------------------------------------------------------------ stepping
  // `now()` reads the clock; it is called only when the plan needs the time
  // (to find reads that finished after their lease).
  template <class Now>
  step next(Now&& now, bool cancelled) {
    switch (phase_) {
      case phase::metadata:
        if (!requery_.empty() && !queried_) {
          queried_ = true;
          query_keys_.resize(requery_.size());
          for (std::size_t k = 0; k < requery_.size(); ++k) query_keys_[k] = keys_[requery_[k]];
          query_results_.assign(requery_.size(), query_result{});
          return step::query;
        }
        prepare_transfers();
        phase_ = phase::transfers;
        [[fallthrough]];
      case phase::transfers:
        if (cancelled) return finish(errc::cancelled);
        if (build_pass()) return step::transfer;
        if (find_late(now())) {
          phase_ = phase::validating;
          return step::validate;
        }
        return finish({});
      case phase::validating:
        return finish({});
      case phase::finished:
        return step::done;
    }
    return step::done;
  }

  // The re-query: keys and where their results go.
  std::span<const std::string_view> query_keys() const noexcept { return query_keys_; }
  std::span<query_result> query_results() noexcept { return query_results_; }
  // Results are final (the store gave them their client-side deadlines). A
  // whole-call failure fails the keys that needed it, per key, if others
  // are still read; with nothing else to read, the whole operation.
  void on_query(std::error_code ec) {
    if (ec) {
      const bool others = std::any_of(results_.begin(), results_.end(),
                                      [](const get_result& r) { return r.source != key_source::none; });
      if (!others || !is_per_key_outcome(ec)) {
        fail(ec);
        return;
      }
      for (std::uint32_t i : requery_) results_[i].status = as_per_key_status(ec);
      return;
    }
    for (std::size_t k = 0; k < requery_.size(); ++k) {
      if (query_results_[k].ok())
        accept(requery_[k], &query_results_[k], key_source::requery);
      else
        results_[requery_[k]].status = query_results_[k].status;
    }
  }

  // A transfer pass: one request per key still to read, on its next replica.
  std::span<const read_request> transfers() const noexcept { return reads_; }
  std::span<errc> transfer_status() noexcept { return read_status_; }
  // A whole-call failure ends the operation with it; a key that failed
  // tries its next replica in the next pass.
  void on_transfer(std::error_code ec) {
    if (ec) {
      fail(ec);
      return;
    }
    pending_.clear();
    for (std::size_t k = 0; k < reads_.size(); ++k) {
      const std::uint32_t i = read_owner_[k];
      results_[i].status = read_status_[k];
      if (read_status_[k] != errc::success) pending_.push_back(i);
    }
  }

  // Keys read after their lease, with the versions they were read at.
  std::span<const std::string_view> validate_keys() const noexcept { return late_keys_; }
  std::span<const version_t> validate_versions() const noexcept { return late_versions_; }
  std::span<errc> validate_status() noexcept { return late_status_; }
  // A late key stands only if its version is still committed; otherwise it
  // fails with lease_expired (or the call's own error, per key). Bytes are
  // never reported good on faith.
  void on_validate(std::error_code ec) {
    if (ec && !is_per_key_outcome(ec)) {
      fail(ec);
      return;
    }
    if (ec) std::fill(late_status_.begin(), late_status_.end(), as_per_key_status(ec));
    tally_.revalidated += late_.size();
    for (std::size_t k = 0; k < late_.size(); ++k) {
      if (late_status_[k] == errc::success) continue;
      get_result& r = results_[late_[k]];
      r = get_result{ec ? late_status_[k] : errc::lease_expired, 0, no_version, r.source};
      expired_.push_back(late_keys_[k]);
      ++tally_.expired;
    }
  }

  // ------------------------------------------------------------ outcome
  // A failure of the whole operation; the results are not to be read then.
  std::error_code error() const noexcept { return error_; }
  std::vector<get_result> take_results() { return std::move(results_); }
  // Per key, the handle holding its bytes (read_into(pool) only; empty for
  // keys that failed).
  std::vector<buffer_handle> take_handles() { return std::move(handles_); }
  // Keys whose cached metadata turned out stale.
  std::span<const std::string_view> expired_keys() const noexcept { return expired_; }
  const tally& counts() const noexcept { return tally_; }

 private:
  enum class phase { metadata, transfers, validating, finished };

  void accept(std::uint32_t i, const query_result* q, key_source source) {
    meta_[i] = q;
    results_[i].source = source;
  }

  step fail(std::error_code ec) {
    error_ = ec;
    phase_ = phase::finished;
    handles_.clear();
    return step::done;
  }

  step finish(std::error_code ec) {
    if (ec) return fail(ec);
    for (std::size_t i = 0; i < results_.size(); ++i) {
      const get_result& r = results_[i];
      if (!r.ok()) {
        if (pool_ && i < handles_.size()) handles_[i].release();
        continue;
      }
      tally_.bytes += r.size;
      tally_.from_caller += r.source == key_source::caller;
      tally_.from_cache += r.source == key_source::cache;
      tally_.from_requery += r.source == key_source::requery;
    }
    phase_ = phase::finished;
    return step::done;
  }

  // Every key with metadata gets a destination and waits for its first
  // pass; its status stays replicas_unavailable until a replica delivers.
  void prepare_transfers() {
    const std::size_t n = keys_.size();
    destinations_.assign(n, boost::asio::mutable_buffer());
    pending_.clear();
    if (pool_) {
      sizes_.assign(n, 0);
      for (std::size_t i = 0; i < n; ++i)
        if (meta_[i] && results_[i].source != key_source::none) sizes_[i] = meta_[i]->size;
      handles_.resize(n);
      pool_->allocate(sizes_, handles_);
    }
    for (std::uint32_t i = 0; i < n; ++i) {
      if (results_[i].source == key_source::none || results_[i].status != errc::success) continue;
      const std::uint64_t size = meta_[i]->size;
      if (pool_) {
        if (!handles_[i]) {
          results_[i].status = errc::pool_exhausted;
          continue;
        }
        destinations_[i] = handles_[i].buffer();
      } else {
        if (buffers_[i].size() < size) {
          results_[i].status = errc::buffer_too_small;
          continue;
        }
        destinations_[i] = boost::asio::mutable_buffer(buffers_[i].data(), static_cast<std::size_t>(size));
      }
      pending_.push_back(i);
      results_[i].status = errc::replicas_unavailable;
    }
  }

  // The next pass: each pending key on its next replica. False when no key
  // has a replica left to try (they keep their last status).
  bool build_pass() {
    reads_.clear();
    read_owner_.clear();
    for (std::uint32_t i : pending_) {
      const replica_list& replicas = meta_[i]->replicas;
      std::uint8_t& next = next_replica_[i];
      if (next >= replicas.size()) continue;
      reads_.push_back({replicas[next++], destinations_[i]});
      read_owner_.push_back(i);
    }
    pending_.clear();
    read_status_.assign(reads_.size(), errc::transfer_failed);
    return !reads_.empty();
  }

  // Sets each read key's size and version; collects those read at or after
  // their lease deadline.
  bool find_late(time_point finished) {
    late_.clear();
    late_keys_.clear();
    late_versions_.clear();
    for (std::uint32_t i = 0; i < results_.size(); ++i) {
      get_result& r = results_[i];
      if (r.status != errc::success || r.source == key_source::none) continue;
      r.size = meta_[i]->size;
      r.version = meta_[i]->version;
      if (meta_[i]->lease_deadline <= finished) {
        late_.push_back(i);
        late_keys_.push_back(keys_[i]);
        late_versions_.push_back(r.version);
      }
    }
    late_status_.assign(late_.size(), errc::success);
    return !late_.empty();
  }

  key_span keys_;
  time_point started_{};
  get_options options_;
  phase phase_ = phase::finished;
  std::error_code error_;
  bool queried_ = false;
  tally tally_;
  batch_plan admission_;
  std::vector<get_result> results_;
  std::vector<const query_result*> meta_;  // the metadata each key is read with
  std::vector<query_result> copies_;       // cache hits, copied
  std::vector<std::uint8_t> next_replica_;
  std::vector<std::uint32_t> requery_;
  std::vector<std::string_view> query_keys_;
  std::vector<query_result> query_results_;
  std::span<const boost::asio::mutable_buffer> buffers_;
  buffer_pool* pool_ = nullptr;
  std::vector<std::uint64_t> sizes_;
  std::vector<buffer_handle> handles_;
  std::vector<boost::asio::mutable_buffer> destinations_;
  std::vector<std::uint32_t> pending_;
  std::vector<read_request> reads_;
  std::vector<std::uint32_t> read_owner_;
  std::vector<errc> read_status_;
  std::vector<std::uint32_t> late_;
  std::vector<std::string_view> late_keys_;
  std::vector<version_t> late_versions_;
  std::vector<errc> late_status_;
  std::vector<std::string_view> expired_;
};

}  // namespace corokv::detail
