#pragma once
// The decisions of one batch_put, without I/O: which keys go to the
// metadata service; whether the writer must register (again, after the
// service forgot it); which replica writes follow a reservation; what is
// committed and what revoked after writes that failed, a cancellation or a
// commit that failed as a whole; and what each key finally answers. The
// store's coroutine asks next() what to do and hands back the outcome, as
// with read_plan.hpp:
//
//   register_node -> reserve (put_start) -> write -> commit (put_end)
//                 -> revoke (put_revoke) -> done
//
// A step with nothing to do is skipped. Tested without an io_context
// (tests/client/put_plan_test).

#include <corokv/detail/batch_plan.hpp>
#include <corokv/error.hpp>
#include <corokv/memory/transfer.hpp>
#include <corokv/types.hpp>

#include <boost/asio/buffer.hpp>

#include <cstdint>
#include <span>
#include <string_view>
#include <system_error>
#include <vector>

namespace corokv::client {

class put_plan {
 public:
  enum class step { register_node, reserve, write, commit, revoke, done };

  // A new batch. `registered`: whether this store's node is known to be
  // registered with the service (else the first step registers it).
  void start(key_span keys, std::span<const boost::asio::const_buffer> values, bool registered) {
    const std::size_t n = keys.size();
    error_ = {};
    abandon_ = false;
    retried_registration_ = false;
    bytes_written_ = 0;
    status_.assign(n, errc::success);
    outcome_.clear();
    reservations_.clear();
    index_.clear();
    keys_.clear();
    sizes_.clear();
    values_ = values;
    admission_.build(keys, 1);
    for (std::uint32_t i = 0; i < n; ++i) {
      status_[i] = admission_.admission(i);
      if (status_[i] == errc::success && values[i].size() == 0) status_[i] = errc::invalid_argument;
      if (status_[i] != errc::success) continue;
      index_.push_back(i);
      keys_.push_back(keys[i]);
      sizes_.push_back(values[i].size());
    }
    phase_ = index_.empty() ? phase::finished : registered ? phase::reserve : phase::register_node;
  }

  step next(bool cancelled) {
    switch (phase_) {
      case phase::register_node:
        return step::register_node;
      case phase::reserve:
        reservations_.assign(keys_.size(), put_start_result{});
        return step::reserve;
      case phase::write:
        // Cancelled before anything was written: give back what was reserved.
        if (cancelled) abandon(errc::cancelled);
        if (!abandon_ && !writes_.empty()) {
          phase_ = phase::writing;
          return step::write;
        }
        return plan_commit();
      case phase::written:
        // Cancelled while writing: the bytes are there, but the caller asked
        // to stop, so nothing is committed.
        if (cancelled) abandon(errc::cancelled);
        return plan_commit();
      case phase::committed:
        return plan_revoke();
      case phase::writing:
        return step::write;
      case phase::committing:
        return step::commit;
      case phase::revoking:
        return step::revoke;
      case phase::finished:
        return step::done;
    }
    return step::done;
  }

  // register_node: a failure fails the operation.
  void on_registered(std::error_code ec) {
    if (ec) {
      error_ = ec;
      phase_ = phase::finished;
      return;
    }
    phase_ = phase::reserve;
  }

  // reserve: put_start of these keys and sizes, results into reservations().
  std::span<const std::string_view> reserve_keys() const noexcept { return keys_; }
  std::span<const std::uint64_t> reserve_sizes() const noexcept { return sizes_; }
  std::span<put_start_result> reservations() noexcept { return reservations_; }
  // node_unknown: the service forgot this node (declared it dead, or
  // restarted); it registers again and reserves once more. Any other
  // whole-call failure fails the operation; nothing was reserved.
  void on_reserved(std::error_code ec) {
    if (ec == errc::node_unknown && !retried_registration_) {
      retried_registration_ = true;
      phase_ = phase::register_node;
      return;
    }
    if (ec) {
      error_ = ec;
      phase_ = phase::finished;
      return;
    }
    // Every replica of a reserved object is written.
    outcome_.assign(keys_.size(), errc::success);
    writes_.clear();
    write_owner_.clear();
    for (std::uint32_t k = 0; k < keys_.size(); ++k) {
      if (!reservations_[k].ok()) {
        outcome_[k] = reservations_[k].status;
        continue;
      }
      for (const replica_descriptor& r : reservations_[k].replicas) {
        writes_.push_back({r, values_[index_[k]]});
        write_owner_.push_back(k);
      }
    }
    write_status_.assign(writes_.size(), errc::transfer_failed);
    phase_ = phase::write;
  }

  // write: the replicas' bytes.
  std::span<const memory::write_request> writes() const noexcept { return writes_; }
  std::span<errc> write_status() noexcept { return write_status_; }
  // A whole-call failure abandons the batch: nothing is committed, every
  // reservation revoked, the operation fails with it. A failed replica
  // fails its key, which is revoked.
  void on_written(std::error_code ec) {
    phase_ = phase::written;
    if (ec) {
      abandon(ec);
      return;
    }
    for (std::size_t w = 0; w < writes_.size(); ++w) {
      if (write_status_[w] == errc::success) {
        bytes_written_ += writes_[w].source.size();
      } else if (outcome_[write_owner_[w]] == errc::success) {
        outcome_[write_owner_[w]] = write_status_[w];
      }
    }
  }

  // commit: put_end of what was written in full.
  std::span<const std::string_view> commit_keys() const noexcept { return commit_keys_; }
  std::span<const version_t> commit_versions() const noexcept { return commit_versions_; }
  std::span<errc> commit_status() noexcept { return commit_status_; }
  // A whole-call failure leaves unknown what committed: all of it is
  // revoked too (a committed key answers already_exists and stays), and
  // the operation fails with it after the clean-up.
  void on_committed(std::error_code ec) {
    phase_ = phase::committed;
    if (ec) {
      error_ = ec;
      revoke_keys_.insert(revoke_keys_.end(), commit_keys_.begin(), commit_keys_.end());
      revoke_versions_.insert(revoke_versions_.end(), commit_versions_.begin(), commit_versions_.end());
      return;
    }
    for (std::size_t c = 0; c < committed_.size(); ++c) outcome_[committed_[c]] = commit_status_[c];
  }

  // revoke: put_revoke of the rest of what was reserved. Best effort: a
  // reservation not revoked now expires by the service's put timeout.
  std::span<const std::string_view> revoke_keys() const noexcept { return revoke_keys_; }
  std::span<const version_t> revoke_versions() const noexcept { return revoke_versions_; }
  std::span<errc> revoke_status() noexcept { return revoke_status_; }
  void on_revoked(std::error_code) { phase_ = phase::finished; }

  // ------------------------------------------------------------ outcome
  std::error_code error() const noexcept { return error_; }
  std::vector<errc> take_results() {
    if (outcome_.size() == index_.size())
      for (std::size_t k = 0; k < index_.size(); ++k) status_[index_[k]] = outcome_[k];
    return std::move(status_);
  }
  // The keys sent to the service: the store drops them from its cache.
  std::span<const std::string_view> touched_keys() const noexcept { return keys_; }
  std::uint64_t bytes_written() const noexcept { return bytes_written_; }

 private:
  enum class phase { register_node, reserve, write, writing, written, committing, committed, revoking, finished };

  void abandon(std::error_code ec) {
    abandon_ = true;
    if (!error_) error_ = ec;
  }

  // What was written in full is committed, unless the batch was abandoned.
  step plan_commit() {
    commit_keys_.clear();
    commit_versions_.clear();
    committed_.clear();
    revoke_keys_.clear();
    revoke_versions_.clear();
    for (std::uint32_t k = 0; k < keys_.size(); ++k) {
      if (!reservations_[k].ok()) continue;
      if (!abandon_ && outcome_[k] == errc::success) {
        commit_keys_.push_back(keys_[k]);
        commit_versions_.push_back(reservations_[k].version);
        committed_.push_back(k);
      } else {
        revoke_keys_.push_back(keys_[k]);
        revoke_versions_.push_back(reservations_[k].version);
      }
    }
    commit_status_.assign(commit_keys_.size(), errc::success);
    if (!commit_keys_.empty()) {
      phase_ = phase::committing;
      return step::commit;
    }
    return plan_revoke();
  }

  step plan_revoke() {
    revoke_status_.assign(revoke_keys_.size(), errc::success);
    if (revoke_keys_.empty()) {
      phase_ = phase::finished;
      return step::done;
    }
    phase_ = phase::revoking;
    return step::revoke;
  }

  std::error_code error_;
  bool abandon_ = false;
  bool retried_registration_ = false;
  phase phase_ = phase::finished;
  std::uint64_t bytes_written_ = 0;
  detail::batch_plan admission_;
  std::span<const boost::asio::const_buffer> values_;
  std::vector<errc> status_;                   // per key of the batch
  std::vector<std::uint32_t> index_;           // admitted keys, by index into the batch
  std::vector<std::string_view> keys_;         // ... their keys
  std::vector<std::uint64_t> sizes_;           // ... and value sizes
  std::vector<put_start_result> reservations_;
  std::vector<errc> outcome_;                  // per admitted key
  std::vector<memory::write_request> writes_;
  std::vector<std::uint32_t> write_owner_;     // index into keys_
  std::vector<errc> write_status_;
  std::vector<std::string_view> commit_keys_, revoke_keys_;
  std::vector<version_t> commit_versions_, revoke_versions_;
  std::vector<std::uint32_t> committed_;       // index into keys_
  std::vector<errc> commit_status_, revoke_status_;
};

}  // namespace corokv::client
