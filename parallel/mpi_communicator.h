// The MPI communicator: host tensors, Open MPI underneath. MPI itself is initialised by launch/
// (or a test's main); this class only wraps communicators. RAII: a communicator made by split()
// is freed with its object; the world one is not.
#pragma once

#include <mpi.h>

#include <memory>

#include "parallel/communicator.h"

namespace tessera {

class MpiCommunicator final : public Communicator {
 public:
  // MPI_COMM_WORLD. Errors come back as tessera::Error instead of aborting inside MPI.
  static std::unique_ptr<MpiCommunicator> world();
  ~MpiCommunicator() override;

  // Ranks passing the same color form one communicator, ordered by key (MPI_Comm_split).
  // Collective over this communicator.
  std::unique_ptr<MpiCommunicator> split(int color, int key) const;
  MPI_Comm comm() const { return comm_; }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
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

 private:
  MpiCommunicator(MPI_Comm comm, bool owned);
  MPI_Comm comm_;
  bool owned_;
  int rank_ = 0, size_ = 1;
};

}  // namespace tessera
