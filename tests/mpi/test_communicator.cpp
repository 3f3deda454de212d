// The MPI communicator and the process groups, checked against values every rank can compute.
#include <gtest/gtest.h>

#include <numeric>

#include "parallel/mpi_communicator.h"
#include "parallel/process_groups.h"

namespace tessera {
namespace {

std::vector<float> iota_from(float start, size_t n) {
  std::vector<float> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

TEST(MpiCommunicator, AllReduceSumMaxMin) {
  auto world = MpiCommunicator::world();
  const int r = world->rank(), p = world->size();
  Tensor t = Tensor::from_f32(iota_from(float(r), 37), {37});
  world->all_reduce(t, ReduceOp::kSum);
  for (int i = 0; i < 37; ++i)  // sum over ranks of (r + i)
    EXPECT_EQ(t.data<float>()[i], float(p * i + p * (p - 1) / 2)) << i;
  Tensor m = Tensor::from_f32({float(r), -float(r)}, {2});
  world->all_reduce(m, ReduceOp::kMax);
  EXPECT_EQ(m.data<float>()[0], float(p - 1));
  EXPECT_EQ(m.data<float>()[1], 0.0f);
  Tensor ints = Tensor::from_i32({r, 1}, {2});
  world->all_reduce(ints, ReduceOp::kMin);
  EXPECT_EQ(ints.data<int32_t>()[0], 0);
  EXPECT_EQ(ints.data<int32_t>()[1], 1);
}

TEST(MpiCommunicator, AllGatherStacksInRankOrder) {
  auto world = MpiCommunicator::world();
  const int r = world->rank(), p = world->size();
  Tensor in = Tensor::from_f32({float(10 * r), float(10 * r + 1), float(10 * r + 2)}, {1, 3});
  Tensor out = Tensor::empty({p, 3}, DType::kF32);
  world->all_gather(in, out);
  for (int q = 0; q < p; ++q)
    for (int j = 0; j < 3; ++j) EXPECT_EQ(out.data<float>()[q * 3 + j], float(10 * q + j));
}

TEST(MpiCommunicator, ReduceScatterGivesEachRankItsRows) {
  auto world = MpiCommunicator::world();
  const int r = world->rank(), p = world->size();
  // Every rank contributes in[i] = i * (r + 1); the sum is i * p(p+1)/2.
  std::vector<float> v(size_t(p) * 4);
  for (size_t i = 0; i < v.size(); ++i) v[i] = float(i) * float(r + 1);
  Tensor in = Tensor::from_f32(v, {p * 4});
  Tensor out = Tensor::empty({4}, DType::kF32);
  world->reduce_scatter(in, out, ReduceOp::kSum);
  for (int j = 0; j < 4; ++j)
    EXPECT_EQ(out.data<float>()[j], float(r * 4 + j) * float(p * (p + 1) / 2));
}

TEST(MpiCommunicator, SendRecvAroundTheRing) {
  auto world = MpiCommunicator::world();
  const int r = world->rank(), p = world->size();
  Tensor out = Tensor::from_f32(iota_from(float(100 * r), 5), {5});
  Tensor in = Tensor::empty({5}, DType::kF32);
  // Even ranks send first, odd ranks receive first: no deadlock for any size.
  const int next = (r + 1) % p, prev = (r + p - 1) % p;
  if (r % 2 == 0) {
    world->send(out, next, 7);
    world->recv(in, prev, 7);
  } else {
    world->recv(in, prev, 7);
    world->send(out, next, 7);
  }
  EXPECT_EQ(in.to_f32_vector(), iota_from(float(100 * prev), 5));
}

TEST(MpiCommunicator, BroadcastTensorAndBytes) {
  auto world = MpiCommunicator::world();
  const int root = world->size() - 1;
  Tensor t = Tensor::from_f32({float(world->rank()), 2.5f}, {2});
  world->broadcast(t, root);
  EXPECT_EQ(t.data<float>()[0], float(root));
  std::string plan = world->rank() == root ? std::string("step plan \0 with bytes", 22) : "";
  world->broadcast_bytes(plan, root);
  EXPECT_EQ(plan, std::string("step plan \0 with bytes", 22));
  world->barrier();
}

// Every factorisation of the world into dp x pp x sp x tp: each group has the members the grid
// arithmetic says, in its order.
TEST(ProcessGroups, GroupsMatchGridArithmetic) {
  const int p = MpiCommunicator::world()->size();
  for (int tp = 1; tp <= p; ++tp)
    for (int sp = 1; tp * sp <= p; ++sp)
      for (int pp = 1; tp * sp * pp <= p; ++pp) {
        if (p % (tp * sp * pp) != 0) continue;
        const GridShape shape{p / (tp * sp * pp), pp, sp, tp};
        ProcessGroups g = ProcessGroups::create(shape, MpiCommunicator::world());
        SCOPED_TRACE("dp " + std::to_string(shape.dp) + " pp " + std::to_string(pp) + " sp " +
                     std::to_string(sp) + " tp " + std::to_string(tp));
        EXPECT_EQ(g.coord, grid_coord(shape, g.world->rank()));
        EXPECT_EQ(g.tp->size(), tp);
        EXPECT_EQ(g.sp->size(), sp);
        EXPECT_EQ(g.pp->size(), pp);
        EXPECT_EQ(g.dp->size(), shape.dp);
        EXPECT_EQ(g.tp->rank(), g.coord.tp);
        EXPECT_EQ(g.pp->rank(), g.coord.pp);
        // Gather the world ranks of each TP group: they must be the grid's.
        Tensor me = Tensor::from_i32({g.world->rank()}, {1});
        Tensor members = Tensor::empty({tp}, DType::kI32);
        g.tp->all_gather(me, members);
        for (int t = 0; t < tp; ++t) {
          GridCoord c = g.coord;
          c.tp = t;
          EXPECT_EQ(members.data<int32_t>()[t], grid_rank(shape, c));
        }
        Tensor pp_members = Tensor::empty({pp}, DType::kI32);
        g.pp->all_gather(me, pp_members);
        for (int s = 0; s < pp; ++s) {
          GridCoord c = g.coord;
          c.pp = s;
          EXPECT_EQ(pp_members.data<int32_t>()[s], grid_rank(shape, c));
        }
      }
}

TEST(ProcessGroups, RefusesWrongWorldSize) {
  auto world = MpiCommunicator::world();
  const GridShape shape{1, 1, 1, world->size() + 1};
  EXPECT_THROW(ProcessGroups::create(shape, std::move(world)), Error);
}

}  // namespace
}  // namespace tessera
