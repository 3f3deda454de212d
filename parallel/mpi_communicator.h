// The MPI communicator: host tensors, Open MPI underneath. MPI itself is initialised by launch/
// (or a test's main); this class only wraps communicators. RAII: a communicator made by split()
// is freed with its object; the world one is not.
#pragma once

#include <mpi.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "parallel/communicator.h"

namespace tessera {

class MpiCommunicator final : public Communicator {
 public:
  // MPI_COMM_WORLD. Errors come back as tessera::Error instead of aborting inside MPI.
  static std::unique_ptr<MpiCommunicator> world();
  // Whether MPI is initialised and not yet finalised (tools that run without mpirun's MPI_Init
  // ask first).
  static bool initialized();
  // Ends every rank of the job: MPI_Abort on the world (Open MPI takes it from any thread).
  [[noreturn]] static void abort_job(int code);
  // MPI_Finalize, when MPI is initialised and not finalised yet.
  static void finalize();
  ~MpiCommunicator() override;

  // Ranks passing the same color form one communicator, ordered by key (MPI_Comm_split).
  // Collective over this communicator.
  std::unique_ptr<MpiCommunicator> split(int color, int key) const;
  // The ranks of this communicator that share this rank's node (its memory), in rank order.
  // Collective over this communicator.
  std::unique_ptr<MpiCommunicator> node_local() const;
  MPI_Comm comm() const { return comm_; }

  // What the group is called in messages ("tp", "pp", ...; "world", or "unnamed" until named).
  const std::string& name() const { return name_; }
  void set_name(std::string name) { name_ = std::move(name); }
  // The world rank of this communicator's rank r.
  int world_rank_of(int r) const { return world_ranks_.at(size_t(r)); }

  // Every world rank's host name, gathered once (collective over the world; launch/ calls it at
  // start), for messages that name where a peer runs; host_of is "" before that.
  static void gather_hosts();
  static std::string host_of(int world_rank);

  // A message that has arrived and not been received yet: from whom, with which tag.
  struct Arrival {
    int source = 0, tag = 0;
  };
  static constexpr int kAnyTag = MPI_ANY_TAG;
  // The first such message with `tag` (kAnyTag: any) from any rank, if there is one; it stays to
  // be received (recv_bytes with its source and tag). Never blocks.
  std::optional<Arrival> arrived(int tag) const;

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
  std::string name_;
  std::vector<int> world_ranks_;  // of ranks 0 .. size - 1
};

}  // namespace tessera
