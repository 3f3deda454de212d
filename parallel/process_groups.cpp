#include "parallel/process_groups.h"

#include "parallel/mpi_communicator.h"
#include "parallel/timed_communicator.h"

namespace tessera {

ProcessGroups ProcessGroups::create(const GridShape& shape, std::unique_ptr<MpiCommunicator> world,
                                    const GroupTransport& transport) {
  TESSERA_CHECK(world->size() == shape.world(),
                "the layout dp " << shape.dp << " x pp " << shape.pp << " x sp " << shape.sp
                                 << " x tp " << shape.tp << " needs " << shape.world()
                                 << " ranks, but " << world->size() << " were started");
  ProcessGroups g;
  g.shape = shape;
  g.coord = grid_coord(shape, world->rank());
  const GridCoord c = g.coord;
  // A group's color is the world rank of its member with that coordinate at zero.
  auto color = [&](GridCoord z) { return grid_rank(shape, z); };
  // The model's groups are timed so a run can report its communication share.
  const auto model_group = [&](std::unique_ptr<MpiCommunicator> mpi, const char* name) {
    mpi->set_name(name);
    std::unique_ptr<Communicator> carried;
    if (transport && mpi->size() > 1)
      carried = transport(std::move(mpi));
    else
      carried = std::move(mpi);
    return std::make_unique<TimedCommunicator>(std::move(carried));
  };
  g.tp = model_group(world->split(color({c.dp, c.pp, c.sp, 0}), c.tp), "tp");
  g.sp = model_group(world->split(color({c.dp, c.pp, 0, c.tp}), c.sp), "sp");
  g.pp = model_group(world->split(color({c.dp, 0, c.sp, c.tp}), c.pp), "pp");
  std::unique_ptr<MpiCommunicator> dp = world->split(color({0, c.pp, c.sp, c.tp}), c.dp);
  dp->set_name("dp");
  g.dp = std::move(dp);
  g.world = std::move(world);
  return g;
}

double ProcessGroups::model_communication_seconds() const {
  double s = 0;
  for (const Communicator* c : {tp.get(), sp.get(), pp.get()})
    if (auto* timed = dynamic_cast<const TimedCommunicator*>(c)) s += timed->seconds();
  return s;
}

double ProcessGroups::model_communication_bytes() const {
  double bytes = 0;
  for (const Communicator* c : {tp.get(), sp.get(), pp.get()})
    if (auto* timed = dynamic_cast<const TimedCommunicator*>(c)) bytes += timed->bytes_sent();
  return bytes;
}

ProcessGroups ProcessGroups::single() {
  ProcessGroups g;
  g.world = make_local_communicator();
  g.tp = make_local_communicator();
  g.sp = make_local_communicator();
  g.pp = make_local_communicator();
  g.dp = make_local_communicator();
  return g;
}

}  // namespace tessera
