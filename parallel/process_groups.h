// The communicators of one rank's place in the grid (parallel/process_grid.h): the world and one
// group per kind of parallelism, each made by MPI_Comm_split with the grid arithmetic's colors.
#pragma once

#include <functional>
#include <memory>

#include "parallel/communicator.h"
#include "parallel/process_grid.h"

namespace tessera {

class MpiCommunicator;

// What carries a model group's tensors: given the group's MPI communicator, the communicator the
// model uses (an NCCL one between GPUs). Empty: MPI itself.
using GroupTransport =
    std::function<std::unique_ptr<Communicator>(std::unique_ptr<MpiCommunicator>)>;

struct ProcessGroups {
  GridShape shape;
  GridCoord coord;
  std::unique_ptr<Communicator> world;
  std::unique_ptr<Communicator> tp;  // same dp, pp, sp; ranked by tp
  std::unique_ptr<Communicator> sp;  // same dp, pp, tp; ranked by sp
  std::unique_ptr<Communicator> pp;  // same dp, sp, tp; ranked by pp (stage order)
  std::unique_ptr<Communicator> dp;  // same pp, sp, tp; ranked by dp

  // Collective over `world`, whose size must be shape.world(). `transport` makes the TP, SP and
  // PP groups of more than one rank (the DP group and the world stay MPI).
  static ProcessGroups create(const GridShape& shape, std::unique_ptr<MpiCommunicator> world,
                              const GroupTransport& transport = {});
  // One rank: every group is the local communicator.
  static ProcessGroups single();
  // Seconds this rank spent inside the TP, SP and PP groups' calls (waiting included).
  double model_communication_seconds() const;
  // Bytes this rank's calls to the TP, SP and PP groups put on the wire
  // (TimedCommunicator::bytes_sent).
  double model_communication_bytes() const;
};

}  // namespace tessera
