// A communicator that measures the wall time spent inside another one's calls (waiting for
// peers included), so a run can say what share of its time went to communication, and the bytes
// its calls put on the wire: each call counts this rank's even share of the least any algorithm
// must send for it (a tensor of m bytes: all-reduce 2 (p - 1) / p m, the ring's; all-gather of
// m from each rank (p - 1) m; reduce-scatter of m (p - 1) / p m; broadcast (p - 1) / p m; send
// m), so that the sum over a group's ranks is the call's traffic.
#pragma once

#include <memory>

#include "parallel/communicator.h"

namespace tessera {

class TimedCommunicator final : public Communicator {
 public:
  explicit TimedCommunicator(std::unique_ptr<Communicator> inner) : inner_(std::move(inner)) {}
  double seconds() const { return seconds_; }
  int64_t calls() const { return calls_; }
  double bytes_sent() const { return bytes_; }

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  void all_reduce(Tensor& t, ReduceOp op) override;
  void all_gather(const Tensor& in, Tensor& out) override;
  void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) override;
  void send(const Tensor& t, int dst, int tag) override;
  void recv(Tensor& t, int src, int tag) override;
  void send_recv(const Tensor& out, int dst, Tensor& in, int src, int tag) override;
  void broadcast(Tensor& t, int root) override;
  void broadcast_bytes(std::string& bytes, int root) override;
  void send_bytes(const std::string& bytes, int dst, int tag) override;
  void recv_bytes(std::string& bytes, int src, int tag) override;
  void barrier() override;
  bool graph_capturable() const override { return inner_->graph_capturable(); }
  void check_healthy() const override { inner_->check_healthy(); }
  void watch_queued_work(const std::string& what) override { inner_->watch_queued_work(what); }

 private:
  template <typename F>
  void timed(double bytes, F&& f);
  std::unique_ptr<Communicator> inner_;
  double seconds_ = 0;
  int64_t calls_ = 0;
  double bytes_ = 0;
};

}  // namespace tessera
