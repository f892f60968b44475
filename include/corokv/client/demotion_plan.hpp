#pragma once
// The decisions of one demotion pass of a disk tier (disk_tier.hpp),
// without I/O: what the service's answer to demote_start asks for (write
// down the copies it released; offer the disk's copies again; copy
// objects), where each object sits in the pass's aligned buffer, which
// copies are read, written, flushed and reported, what the index records
// and what the tier's list of live copies gains and loses. The tier's
// coroutine asks next() what to do and hands back the outcome, as the store
// does with put_plan.hpp:
//
//   plan.start(answer);                       // demote_start's demotion_work
//   plan.use_buffer(aligned_alloc(block, plan.buffer_size()));
//   for (;;) switch (plan.next()) {
//     case step::offer:  the tier offers its copies (its own path); done
//     case step::read:   plan.on_read(co_await transport.read(plan.reads(), plan.read_status()));
//     case step::write:  plan.on_written(co_await transport.write(plan.writes(), plan.write_status()));
//     case step::sync:   plan.on_synced(co_await fsync(file));
//     case step::report: plan.on_reported(co_await demote_end(plan.report_keys(), ..., plan.answers()));
//     case step::done:   append plan.index_records(); adopt plan.committed(); forget plan.released()
//   }
//
// Every copy handed out is reported, failed or not: the service frees the
// extent of each one that is not there. Tested step by step, each step
// failing in turn (tests/client/demotion_plan_test).

#include <corokv/disk/crc32c.hpp>
#include <corokv/disk/disk_file.hpp>
#include <corokv/disk/tier_index.hpp>
#include <corokv/error.hpp>
#include <corokv/memory/transfer.hpp>
#include <corokv/types.hpp>

#include <boost/asio/buffer.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <system_error>
#include <vector>

namespace corokv::client {

class demotion_plan {
 public:
  enum class step { offer, read, write, sync, report, done };

  // What one pass amounts to, for the tier's counters (valid once done).
  struct tally {
    std::size_t committed = 0;
    std::uint64_t bytes = 0;
    std::size_t failed = 0;   // the copy could not be made (read, write or flush)
    std::size_t refused = 0;  // made, but the service answered other than success
  };

  // The service's answer; `work` must outlive the pass.
  void start(const demotion_work& work) {
    work_ = &work;
    const std::size_t n = work.copies.size();
    error_ = {};
    tally_ = {};
    records_.clear();
    committed_.clear();
    for (version_t v : work.released) disk::append_dropped_record(records_, v);
    offsets_.resize(n);
    buffer_size_ = 0;
    for (std::size_t i = 0; i < n; ++i) {
      offsets_[i] = buffer_size_;  // each at a block boundary: O_DIRECT writes go straight from it
      buffer_size_ += disk::round_up_to_block(work.copies[i].from.length);
    }
    copied_.assign(n, errc::success);
    crc_.assign(n, 0);
    answers_.assign(n, errc::success);
    base_ = nullptr;
    phase_ = work.offer_copies != 0 ? phase::offer : n == 0 ? phase::finished : phase::read;
  }

  // The aligned buffer of buffer_size() bytes the copies pass through (null:
  // none could be had, and every copy fails).
  std::uint64_t buffer_size() const noexcept { return buffer_size_; }
  void use_buffer(std::byte* base) {
    base_ = base;
    if (!base_) std::fill(copied_.begin(), copied_.end(), errc::transfer_failed);
  }

  step next() {
    switch (phase_) {
      case phase::offer:
        phase_ = phase::finished;
        return step::offer;
      case phase::read:
        plan_reads();
        phase_ = phase::write;
        if (!reads_.empty()) return step::read;
        [[fallthrough]];
      case phase::write:
        plan_writes();
        phase_ = phase::sync;
        if (!writes_.empty()) return step::write;
        [[fallthrough]];
      case phase::sync:
        phase_ = phase::report;
        if (!writes_.empty()) return step::sync;
        [[fallthrough]];
      case phase::report:
        plan_report();
        phase_ = phase::finished;
        return step::report;
      case phase::finished:
        return step::done;
    }
    return step::done;
  }

  // Each copy read from its memory replica into its place in the buffer.
  std::span<const memory::read_request> reads() const noexcept { return reads_; }
  std::span<errc> read_status() noexcept { return transfer_status_; }
  void on_read(std::error_code ec) { settle(ec, read_index_); }

  // Each copy that was read, written to its disk extent.
  std::span<const memory::write_request> writes() const noexcept { return writes_; }
  std::span<errc> write_status() noexcept { return transfer_status_; }
  void on_written(std::error_code ec) { settle(ec, write_index_); }

  // The file flushed: on the device before the service is told.
  void on_synced(bool flushed) {
    if (!flushed)
      for (std::size_t i : write_index_) copied_[i] = errc::transfer_failed;
  }

  // demote_end: every copy, with whether it is there.
  std::span<const std::string_view> report_keys() const noexcept { return report_keys_; }
  std::span<const version_t> report_versions() const noexcept { return report_versions_; }
  std::span<const errc> copied() const noexcept { return copied_; }
  std::span<errc> answers() noexcept { return answers_; }
  // A failure of the whole report ends the pass with it: nothing is
  // committed (the service frees the reservations when they expire).
  void on_reported(std::error_code ec) {
    if (ec) {
      error_ = ec;
      return;
    }
    const auto& copies = work_->copies;
    for (std::size_t i = 0; i < copies.size(); ++i) {
      if (copied_[i] != errc::success) {
        ++tally_.failed;
      } else if (answers_[i] != errc::success) {
        ++tally_.refused;
      } else {
        ++tally_.committed;
        tally_.bytes += copies[i].to.length;
        disk::index_entry entry{copies[i].key, copies[i].version, copies[i].to.offset, copies[i].to.length, crc_[i]};
        disk::append_added_record(records_, entry);
        committed_.push_back(std::move(entry));
      }
    }
  }

  // ------------------------------------------------------------ outcome
  std::error_code error() const noexcept { return error_; }
  const tally& counts() const noexcept { return tally_; }
  // For the index: the released copies dropped, the committed ones added.
  const std::vector<std::byte>& index_records() const noexcept { return records_; }
  // Copies the disk now holds for the service, and those it must forget.
  std::vector<disk::index_entry>& committed() noexcept { return committed_; }
  std::span<const version_t> released() const noexcept { return work_->released; }

 private:
  enum class phase { offer, read, write, sync, report, finished };

  void plan_reads() {
    reads_.clear();
    read_index_.clear();
    const auto& copies = work_->copies;
    for (std::size_t i = 0; base_ && i < copies.size(); ++i) {
      reads_.push_back({copies[i].from, boost::asio::mutable_buffer(base_ + offsets_[i], copies[i].from.length)});
      read_index_.push_back(i);
    }
    transfer_status_.assign(reads_.size(), errc::transfer_failed);
  }

  void plan_writes() {
    writes_.clear();
    write_index_.clear();
    const auto& copies = work_->copies;
    for (std::size_t i = 0; i < copies.size(); ++i) {
      if (copied_[i] != errc::success) continue;
      const std::span<const std::byte> bytes(base_ + offsets_[i], copies[i].to.length);
      crc_[i] = disk::crc32c(bytes);
      writes_.push_back({copies[i].to, boost::asio::const_buffer(bytes.data(), bytes.size())});
      write_index_.push_back(i);
    }
    transfer_status_.assign(writes_.size(), errc::transfer_failed);
  }

  void plan_report() {
    report_keys_.clear();
    report_versions_.clear();
    for (const auto& d : work_->copies) {
      report_keys_.push_back(d.key);
      report_versions_.push_back(d.version);
    }
  }

  // A transfer's outcome, per copy: its status, or the whole call's failure.
  void settle(std::error_code ec, const std::vector<std::size_t>& index) {
    for (std::size_t j = 0; j < index.size(); ++j) copied_[index[j]] = ec ? errc::transfer_failed : transfer_status_[j];
  }

  const demotion_work* work_ = nullptr;
  phase phase_ = phase::finished;
  std::error_code error_;
  tally tally_;
  std::vector<std::byte> records_;
  std::vector<disk::index_entry> committed_;
  std::vector<std::uint64_t> offsets_;
  std::uint64_t buffer_size_ = 0;
  std::byte* base_ = nullptr;
  std::vector<errc> copied_;
  std::vector<std::uint32_t> crc_;
  std::vector<memory::read_request> reads_;
  std::vector<memory::write_request> writes_;
  std::vector<std::size_t> read_index_, write_index_;
  std::vector<errc> transfer_status_;
  std::vector<std::string_view> report_keys_;
  std::vector<version_t> report_versions_;
  std::vector<errc> answers_;
};

}  // namespace corokv::client
