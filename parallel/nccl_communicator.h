// The NCCL communicator: GPU tensors go GPU to GPU through NCCL, queued on the rank's compute
// stream (kernels/cuda/cuda_memory.h) in order with its kernels; host tensors and bytes go over
// the host communicator it was made from (MPI), so it is a drop-in Communicator for a model group.
//
//   - Setup: rank 0 of the group makes the ncclUniqueId, the host communicator broadcasts it, and
//     every rank joins a non-blocking NCCL communicator on its GPU.
//   - A stuck collective (a peer that died or never called) becomes an error: every NCCL call is
//     watched (parallel/completion_watchdog.h) and, after options.timeout_seconds, the NCCL
//     communicator is aborted (so whoever waits on the stream returns) and the next call throws
//     one line naming the collective, the group and the timeout.
//   - Tags are ignored: NCCL matches a pair's sends and receives in the order they are issued,
//     which is how the model uses them.
//   - NCCL is opened at run time (dlopen "libnccl.so.2", or $TESSERA_NCCL_LIBRARY), so a tessera
//     built with it runs where it is absent, on MPI; available() says why not.
// NCCL refuses two ranks of one communicator on one GPU: ranks that share a GPU use MPI instead.
// No CUDA or NCCL types here.
#pragma once

#include <memory>
#include <string>

#include "parallel/communicator.h"

namespace tessera {

struct NcclOptions {
  int gpu = 0;                   // the GPU this rank's tensors are on (Device::cuda(gpu))
  double timeout_seconds = 600;  // setup, or a collective, not done by then is an error
};

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `host` (its ranks, in its order). Throws when NCCL cannot be loaded or the
  // communicator cannot be set up in time.
  static std::unique_ptr<NcclCommunicator> create(std::unique_ptr<Communicator> host,
                                                  const NcclOptions& options);
  // "" when NCCL can be loaded here, else why not (the loader's words). Never throws.
  static std::string unavailable_reason();
  // "2.28.9" of the NCCL that was loaded ("" when none).
  static std::string version();
  ~NcclCommunicator() override;

  int rank() const override;
  int size() const override;
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
  // Waits for this rank's queued collectives (or throws what went wrong), then the host barrier.
  void barrier() override;
  bool graph_capturable() const override { return true; }
  void check_healthy() const override;
  void watch_queued_work(const std::string& what) override;
  // Blocks until every collective queued so far has finished; throws a failure or a timeout.
  void synchronize();

 private:
  struct Impl;
  explicit NcclCommunicator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera
