#pragma once
// The decisions of one batch_get, without I/O: which keys are read with the
// caller's query results, which with the store's cache and which need the
// one re-query; where each key's bytes go (the caller's buffers or the
// store's pool); which replica each transfer pass tries; which reads
// finished after their lease and must be re-validated; and what each key
// finally answers. The store's coroutine asks next() what to do, does it
// (the awaits live there), and hands the outcome back:
//
//   plan.start(keys, now, options);
//   plan.read_into(buffers) or plan.read_into(pool);
//   plan.use_results(given) or plan.use_cache(find);
//   for (;;) switch (plan.next(clock, cancelled())) {
//     case step::query:     plan.on_query(co_await query(plan.query_keys(), plan.query_results()));
//     case step::transfer:  plan.on_transfer(co_await transport.read(plan.transfers(), plan.transfer_status()));
//     case step::validate:  plan.on_validate(co_await validate(plan.validate_keys(), ...));
//
// A late read is checked against the replica it was read from, not only
// the version: an object can outlive one of its replicas (memory released
// after a disk copy, a disk copy dropped, a segment unmounted, a node
// declared dead), and that memory can hold another object by the time the
// read ends.
//     case step::done:      return plan.error() or plan.take_results();
//   }
//
// The usual batch (every key leased, into the caller's buffers) is touched
// in two passes over its keys: one admits each key, checks its result and
// buffer and builds its read; one after the transfer settles each read.
// Tested step by step without an io_context (tests/client/read_plan_test).
// A plan is reused across batches: its vectors keep their capacity.

#include <corokv/client/options.hpp>
#include <corokv/detail/key_admission.hpp>
#include <corokv/error.hpp>
#include <corokv/memory/buffer_pool.hpp>
#include <corokv/memory/transfer.hpp>
#include <corokv/types.hpp>

#include <boost/asio/buffer.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <span>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace corokv::client {

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
  // A new batch, started at `now`. Then one of the read_into forms, then
  // one of use_results / use_cache.
  void start(key_span keys, time_point now, get_options options) {
    keys_ = keys;
    started_ = now;
    options_ = options;
    phase_ = phase::metadata;
    error_ = {};
    queried_ = false;
    tally_ = {};
    by_source_ = {};
    pass_ = 0;
    const std::size_t n = keys.size();
    results_.assign(n, get_result{});
    meta_.resize(n);
    copies_.resize(n);
    requery_.clear();
    pending_.clear();
    // A pass reads at most one replica per key: room for all, filled by
    // index (no growth checks on the way).
    if (reads_.size() < n) {
      reads_.resize(n);
      read_owner_.resize(n);
      read_status_.resize(n);
    }
    read_count_ = 0;
    late_.clear();
    late_keys_.clear();
    late_versions_.clear();
    late_replicas_.clear();
    expired_.clear();
    buffers_ = {};
    pool_ = nullptr;
    handles_.clear();
  }

  // Where the bytes go: buffers[i] for key i (buffer_too_small, nothing
  // written, if it is smaller than the object) ...
  void read_into(std::span<const boost::asio::mutable_buffer> buffers) { buffers_ = buffers; }
  // ... or a handle from the store's pool per key, allocated once the sizes
  // are known (pool_exhausted for a key that does not fit).
  void read_into(memory::buffer_pool& pool) {
    pool_ = &pool;
    sizes_.assign(keys_.size(), 0);
    handles_.resize(keys_.size());
  }

  // The caller's query results: used while their lease holds; missing,
  // failed or expired ones are re-queried, or reported in strict mode.
  void use_results(std::span<const query_result> given) {
    admission_.reset(keys_, false);  // no cache lookup: the cheaper hash finds repeats
    for (std::uint32_t i = 0; i < keys_.size(); ++i) {
      get_result& r = results_[i];
      if ((r.status = admission_.admit(i)) != errc::success) continue;
      const query_result& q = given[i];
      if (q.ok() && !describes_object(q)) {
        r.status = errc::size_mismatch;
      } else if (q.ok() && q.lease_deadline > started_) {
        if (pool_ || buffers_[i].size() < q.size) {
          accept(i, &q, key_source::caller);
          continue;
        }
        // The usual key, planned here: read replica 0 into its buffer.
        meta_[i] = &q;
        r.source = key_source::caller;
        plan_read(i, q.replicas[0], boost::asio::mutable_buffer(buffers_[i].data(), static_cast<std::size_t>(q.size)));
      } else if (options_.strict)
        r.status = q.ok() ? errc::lease_expired : q.status;
      else
        requery_.push_back(i);
    }
  }

  // The store's cache: find(key, hash) is the cached result whose lease is
  // still valid at the start, or null. Called with the cache locked; hits
  // are copied, since entries may go once the lock is released.
  template <class Find>
  void use_cache(Find&& find) {
    admission_.reset(keys_, true);  // the cache wants each key's hash
    for (std::uint32_t i = 0; i < keys_.size(); ++i) {
      if ((results_[i].status = admission_.admit(i)) != errc::success) continue;
      if (const query_result* q = find(keys_[i], admission_.hash(i))) {
        copies_[i] = *q;
        accept(i, &copies_[i], key_source::cache);
      } else {
        requery_.push_back(i);
      }
    }
  }

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
        if (pool_) allocate_from_pool();
        if (cancelled) return finish(errc::cancelled);
        phase_ = phase::transfers;
        return start_pass();
      case phase::transfers:
        // A pass just ended.
        settle_pass(now());
        if (cancelled) return finish(errc::cancelled);
        next_pass();
        return start_pass();
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
      if (!others || ec != condition::per_key) {
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
  std::span<const memory::read_request> transfers() const noexcept { return {reads_.data(), read_count_}; }
  std::span<errc> transfer_status() noexcept { return {read_status_.data(), read_count_}; }
  // A whole-call failure ends the operation with it; a key that failed
  // tries its next replica in the next pass.
  void on_transfer(std::error_code ec) {
    if (ec) fail(ec);
  }

  // Keys read after their lease, with the versions they were read at and
  // the replicas they were read from.
  std::span<const std::string_view> validate_keys() const noexcept { return late_keys_; }
  std::span<const version_t> validate_versions() const noexcept { return late_versions_; }
  std::span<const replica_descriptor> validate_replicas() const noexcept { return late_replicas_; }
  std::span<errc> validate_status() noexcept { return late_status_; }
  // A late key stands only if the service still lists the replica it was
  // read from under the version read; otherwise it fails with
  // lease_expired (or the call's own error, per key). Bytes are never
  // reported good on faith.
  void on_validate(std::error_code ec) {
    if (ec && ec != condition::per_key) {
      fail(ec);
      return;
    }
    if (ec) std::fill(late_status_.begin(), late_status_.end(), as_per_key_status(ec));
    tally_.revalidated += late_.size();
    for (std::size_t k = 0; k < late_.size(); ++k) {
      get_result& r = results_[late_[k]];
      if (late_status_[k] == errc::success) {
        count_good(r);
        continue;
      }
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
  std::vector<memory::buffer_handle> take_handles() { return std::move(handles_); }
  // Keys whose cached metadata turned out stale.
  std::span<const std::string_view> expired_keys() const noexcept { return expired_; }
  const tally& counts() noexcept {
    tally_.from_caller = by_source_[static_cast<std::size_t>(key_source::caller)];
    tally_.from_cache = by_source_[static_cast<std::size_t>(key_source::cache)];
    tally_.from_requery = by_source_[static_cast<std::size_t>(key_source::requery)];
    return tally_;
  }

 private:
  enum class phase { metadata, transfers, validating, finished };

  // Key i will be read with q: into the caller's buffer (its first read is
  // planned now), or into the pool (sized now, allocated once every key is
  // known).
  void accept(std::uint32_t i, const query_result* q, key_source source) {
    meta_[i] = q;
    get_result& r = results_[i];
    r.source = source;
    if (pool_) {
      sizes_[i] = q->size;
      return;
    }
    if (buffers_[i].size() < q->size) {
      r.status = errc::buffer_too_small;
      return;
    }
    plan_read(i, q->replicas[0], boost::asio::mutable_buffer(buffers_[i].data(), static_cast<std::size_t>(q->size)));
  }

  void plan_read(std::uint32_t i, const replica_descriptor& replica, boost::asio::mutable_buffer into) {
    reads_[read_count_] = {replica, into};
    read_owner_[read_count_++] = i;
  }

  // One lock for the batch's handles; a key that does not fit fails.
  void allocate_from_pool() {
    pool_->allocate(sizes_, handles_);
    for (std::uint32_t i = 0; i < keys_.size(); ++i) {
      if (sizes_[i] == 0 || results_[i].status != errc::success) continue;
      if (!handles_[i]) {
        results_[i].status = errc::pool_exhausted;
        continue;
      }
      plan_read(i, meta_[i]->replicas[0], handles_[i].buffer());
    }
  }

  // The transfer step if there is anything to read, else what follows it.
  step start_pass() {
    if (read_count_ > 0) {
      std::fill_n(read_status_.begin(), read_count_, errc::transfer_failed);
      return step::transfer;
    }
    if (late_.empty()) return finish({});
    late_status_.assign(late_.size(), errc::success);
    phase_ = phase::validating;
    return step::validate;
  }

  // What a pass read: each key that got its bytes has its size and
  // version, and stands unless the read finished at or after its lease
  // deadline (then it waits for re-validation); each that did not keeps the
  // status and tries its next replica.
  void settle_pass(time_point finished) {
    pending_.clear();
    for (std::size_t k = 0; k < read_count_; ++k) {
      const std::uint32_t i = read_owner_[k];
      get_result& r = results_[i];
      r.status = read_status_[k];
      if (r.status != errc::success) {
        pending_.push_back(i);
        continue;
      }
      const query_result& q = *meta_[i];
      r.size = q.size;
      r.version = q.version;
      if (q.lease_deadline <= finished) {
        late_.push_back(i);
        late_keys_.push_back(keys_[i]);
        late_versions_.push_back(q.version);
        late_replicas_.push_back(reads_[k].replica);
      } else {
        count_good(r);
      }
    }
  }

  // Every key whose last replica failed tries its next one (every key reads
  // replica p in pass p); one with none left keeps its last status.
  void next_pass() {
    ++pass_;
    read_count_ = 0;
    for (std::uint32_t i : pending_) {
      const replica_list& replicas = meta_[i]->replicas;
      if (pass_ >= replicas.size()) continue;
      const boost::asio::mutable_buffer into =
          pool_ ? handles_[i].buffer()
                : boost::asio::mutable_buffer(buffers_[i].data(), static_cast<std::size_t>(meta_[i]->size));
      plan_read(i, replicas[pass_], into);
    }
  }

  void count_good(const get_result& r) {
    tally_.bytes += r.size;
    ++by_source_[static_cast<std::size_t>(r.source)];
  }

  step fail(std::error_code ec) {
    error_ = ec;
    phase_ = phase::finished;
    handles_.clear();
    return step::done;
  }

  // The end: every key's answer stands (a pool handle of a key that failed
  // goes back at once).
  step finish(std::error_code ec) {
    if (ec) return fail(ec);
    if (pool_)
      for (std::size_t i = 0; i < results_.size(); ++i)
        if (!results_[i].ok()) handles_[i].release();
    phase_ = phase::finished;
    return step::done;
  }

  key_span keys_;
  time_point started_{};
  get_options options_;
  phase phase_ = phase::finished;
  std::error_code error_;
  bool queried_ = false;
  tally tally_;
  std::array<std::uint64_t, 4> by_source_{};  // keys that stood, by key_source
  std::size_t pass_ = 0;  // every key reads replica pass_ in this pass
  detail::key_admission admission_;
  std::vector<get_result> results_;
  std::vector<const query_result*> meta_;  // the metadata each key is read with
  std::vector<query_result> copies_;       // cache hits, copied
  std::vector<std::uint32_t> requery_;
  std::vector<std::string_view> query_keys_;
  std::vector<query_result> query_results_;
  std::span<const boost::asio::mutable_buffer> buffers_;
  memory::buffer_pool* pool_ = nullptr;
  std::vector<std::uint64_t> sizes_;
  std::vector<memory::buffer_handle> handles_;
  std::vector<std::uint32_t> pending_;
  std::vector<memory::read_request> reads_;        // the pass's reads: the first read_count_
  std::vector<std::uint32_t> read_owner_;
  std::size_t read_count_ = 0;
  std::vector<errc> read_status_;
  std::vector<std::uint32_t> late_;
  std::vector<std::string_view> late_keys_;
  std::vector<version_t> late_versions_;
  std::vector<replica_descriptor> late_replicas_;
  std::vector<errc> late_status_;
  std::vector<std::string_view> expired_;
};

}  // namespace corokv::client
