// Collective and point-to-point communication over tensor views, for one group of ranks.
// Implementations: MPI (host memory; the CPU path and CI), local (a world of one); NCCL (device
// memory) comes with the CUDA backend behind the same interface. A communicator is passed
// explicitly to whoever needs it: there is no global "current group".
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/tensor.h"

namespace tessera {

enum class ReduceOp { kSum, kMax, kMin };

class Communicator {
 public:
  Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;

  // t = op over every rank's t (in place). f32, i32 or i64.
  virtual void all_reduce(Tensor& t, ReduceOp op = ReduceOp::kSum) = 0;
  // out(size * n, ...) = every rank's in(n, ...) stacked along dim 0, in rank order.
  virtual void all_gather(const Tensor& in, Tensor& out) = 0;
  // out(n, ...) = rows [rank * n, (rank + 1) * n) of op over every rank's in(size * n, ...).
  virtual void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op = ReduceOp::kSum) = 0;
  // Blocking point to point; the receiver's tensor must have the sender's shape and dtype.
  virtual void send(const Tensor& t, int dst, int tag = 0) = 0;
  virtual void recv(Tensor& t, int src, int tag = 0) = 0;
  // Sends `out` to dst and receives `in` from src at once (a ring step cannot deadlock).
  virtual void send_recv(const Tensor& out, int dst, Tensor& in, int src, int tag = 0) = 0;
  // t on every rank becomes root's t.
  virtual void broadcast(Tensor& t, int root) = 0;
  // Variable-size bytes (a serialised plan, a string): every rank ends with root's bytes.
  virtual void broadcast_bytes(std::string& bytes, int root) = 0;
  // Variable-size bytes point to point (a step plan passed down the pipeline); blocking.
  virtual void send_bytes(const std::string& bytes, int dst, int tag = 0) = 0;
  virtual void recv_bytes(std::string& bytes, int src, int tag = 0) = 0;
  virtual void barrier() = 0;
  // Whether its collectives on GPU tensors can be captured in a CUDA graph (queued on the GPU's
  // stream without the host waiting): NCCL's can; MPI's stage through host memory, so only a
  // group of one (where they do nothing) can.
  virtual bool graph_capturable() const { return size() == 1; }
  // For work queued outside its calls (a CUDA graph replay holding its collectives): throws if
  // an earlier collective failed; and, after the work is queued, has it watched like its own
  // calls (a stuck collective in it becomes an error instead of a hang). Nothing for MPI.
  virtual void check_healthy() const {}
  virtual void watch_queued_work(const std::string& what) { (void)what; }
};

// A world of one: every collective is the identity; send and recv have no peer and throw.
std::unique_ptr<Communicator> make_local_communicator();

}  // namespace tessera
