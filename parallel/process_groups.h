// The communicators of one rank's place in the grid (parallel/process_grid.h): the world and one
// group per kind of parallelism, each made by MPI_Comm_split with the grid arithmetic's colors.
#pragma once

#include <memory>

#include "parallel/communicator.h"
#include "parallel/process_grid.h"

namespace tessera {

class MpiCommunicator;

struct ProcessGroups {
  GridShape shape;
  GridCoord coord;
  std::unique_ptr<Communicator> world;
  std::unique_ptr<Communicator> tp;  // same dp, pp, sp; ranked by tp
  std::unique_ptr<Communicator> sp;  // same dp, pp, tp; ranked by sp
  std::unique_ptr<Communicator> pp;  // same dp, sp, tp; ranked by pp (stage order)
  std::unique_ptr<Communicator> dp;  // same pp, sp, tp; ranked by dp

  // Collective over `world`, whose size must be shape.world().
  static ProcessGroups create(const GridShape& shape, std::unique_ptr<MpiCommunicator> world);
  // One rank: every group is the local communicator.
  static ProcessGroups single();
  // Seconds this rank spent inside the TP, SP and PP groups' calls (waiting included).
  double model_communication_seconds() const;
};

}  // namespace tessera
