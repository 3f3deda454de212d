// The MPI communicator and the process groups, checked against values every rank can compute.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>
#include <thread>

#include "kernels/ops.h"
#include "launch/step_watchdog.h"
#include "parallel/mpi_communicator.h"
#include "parallel/operation_watch.h"
#include "parallel/process_groups.h"
#include "parallel/timed_communicator.h"
#include "parallel/wire_format.h"
#if TESSERA_HAVE_CUDA
#include "kernels/cuda/cuda_memory.h"
#include "parallel/nccl_communicator.h"
#endif

namespace tessera {
namespace {

std::vector<float> iota_from(float start, size_t n) {
  std::vector<float> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

// A step's operation is seen while it waits, named with its group and the world ranks (and their
// hosts) it waits for; the step watchdog reports it once it has waited the timeout, and not
// before; an operation inside NotAStep is not seen.
TEST(MpiCommunicator, AWaitingOperationIsWatched) {
  MpiCommunicator::gather_hosts();
  auto world = MpiCommunicator::world();
  const int r = world->rank(), p = world->size();
  ASSERT_EQ(p % 2, 0) << "the test pairs ranks 2k and 2k + 1";
  std::unique_ptr<MpiCommunicator> pair = world->split(r / 2, r);  // world ranks 2k, 2k + 1
  pair->set_name("test pair");
  EXPECT_FALSE(OperationWatch::current().has_value());
  std::vector<std::string> reports;
  std::mutex mu;
  {
    // Rank 1 of each pair sends late: rank 0 waits in its receive for 3 s.
    cli::StepWatchdog dog(1.0, [&](const std::string& line) {
      std::lock_guard<std::mutex> lock(mu);
      reports.push_back(line);
    });
    Tensor t = Tensor::from_i32({7, 8}, {2});
    std::optional<WaitingOperation> seen;
    pair->barrier();  // (both start together)
    if (pair->rank() == 0) {
      std::thread look([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        seen = OperationWatch::current();
      });
      pair->recv(t, 1, 5);
      look.join();
      ASSERT_TRUE(seen.has_value());
      EXPECT_EQ(seen->what, "recv of 2 i32 in the test pair group");
      EXPECT_EQ(seen->peers, std::vector<int>{r + 1});
      EXPECT_GT(seen->seconds, 0.1);
      std::this_thread::sleep_for(std::chrono::milliseconds(300));  // (the watchdog's next look)
      std::lock_guard<std::mutex> lock(mu);
      ASSERT_EQ(reports.size(), 1u);
      EXPECT_NE(reports[0].find("MPI recv of 2 i32 in the test pair group has waited"),
                std::string::npos)
          << reports[0];
      EXPECT_NE(reports[0].find("(--step-timeout 1) for rank " + std::to_string(r + 1) +
                                " on host " + MpiCommunicator::host_of(r + 1)),
                std::string::npos)
          << reports[0];
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(3000));
      pair->send(t, 0, 5);
      std::lock_guard<std::mutex> lock(mu);
      EXPECT_TRUE(reports.empty()) << reports[0];  // its send did not wait
    }
  }
  EXPECT_FALSE(OperationWatch::current().has_value());
  {
    const OperationWatch::NotAStep end_of_run;
    std::optional<WaitingOperation> seen;
    std::thread look([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      seen = OperationWatch::current();
    });
    if (r == 0) std::this_thread::sleep_for(std::chrono::milliseconds(500));
    world->barrier();  // every rank but 0 waits here
    look.join();
    EXPECT_FALSE(seen.has_value()) << seen->what;
  }
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

// Rank q's partial sums for the compressed all-reduce: values every rank can compute.
std::vector<float> partial_sums(int q, int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    v[size_t(i)] = std::sin(float(i * 7 + q * 131)) * (i % 41 == q % 41 ? 300.0f : 2.0f);
  return v;
}

std::vector<float> decoded(WireFormat f, const std::vector<float>& x) {
  std::vector<uint8_t> bytes(size_t(wire_bytes(f, int64_t(x.size()))));
  wire_encode(f, x.data(), int64_t(x.size()), bytes.data());
  std::vector<float> y(x.size());
  wire_decode(f, bytes.data(), int64_t(x.size()), y.data(), false);
  return y;
}

// A compressed all-reduce gives every rank the same values: the f32 sum, in rank order, of every
// rank's decoded partial sums; within the formats' rounding of the exact sum. The bytes counted
// are the rank's share of the least traffic (TimedCommunicator).
TEST(WireFormat, CompressedAllReduceIsOneSumOnEveryRank) {
  auto world = MpiCommunicator::world();
  const int r = world->rank(), p = world->size();
  const int64_t n = 2 * 576 + 45;  // (rows of the default model's hidden size, and a tail)
  for (WireFormat f : {WireFormat::kF32, WireFormat::kBF16, WireFormat::kQ8}) {
    TimedCommunicator timed(world->split(0, r));
    Tensor t = Tensor::from_f32(partial_sums(r, n), {n});
    all_reduce_sum(timed, t, f);
    // (each rank's share of the least traffic: f32 2 (p - 1) / p of its tensor, the ring's;
    // gathered encoded sums p - 1 of them)
    const double sent = f == WireFormat::kF32 ? 2.0 * (p - 1) / p * double(wire_bytes(f, n))
                                              : double(p - 1) * double(wire_bytes(f, n));
    EXPECT_DOUBLE_EQ(timed.bytes_sent(), sent) << wire_format_name(f);
    std::vector<float> expected(size_t(n), 0.0f);
    std::vector<double> exact(size_t(n), 0.0), rounding(size_t(n), 0.0);
    for (int q = 0; q < p; ++q) {
      const std::vector<float> x = partial_sums(q, n), y = decoded(f, x);
      for (int64_t i = 0; i < n; ++i) {
        expected[size_t(i)] = q == 0 ? y[size_t(i)] : expected[size_t(i)] + y[size_t(i)];
        exact[size_t(i)] += x[size_t(i)];
        rounding[size_t(i)] += std::fabs(double(y[size_t(i)]) - x[size_t(i)]);
      }
    }
    const std::vector<float> got = t.to_f32_vector();
    for (int64_t i = 0; i < n; ++i) {
      if (f != WireFormat::kF32)  // (MPI's own f32 sum may take another order)
        ASSERT_EQ(got[size_t(i)], expected[size_t(i)]) << wire_format_name(f) << " at " << i;
      ASSERT_NEAR(got[size_t(i)], exact[size_t(i)], rounding[size_t(i)] + 1e-4 * p)
          << wire_format_name(f) << " at " << i;
    }
    Tensor all = Tensor::empty({p, n}, DType::kF32);
    world->all_gather(t.view({1, n}), all);
    for (int q = 1; q < p; ++q)
      ASSERT_EQ(std::memcmp(all.data<float>(), all.data<float>() + q * n, size_t(n) * 4), 0)
          << wire_format_name(f) << ": rank " << q << " summed otherwise than rank 0";
  }
}

// Around the ring in each format: what arrives is the sender's values decoded.
TEST(WireFormat, PointToPointSendsTheDecodedValues) {
  auto world = MpiCommunicator::world();
  const int r = world->rank(), p = world->size();
  const int next = (r + 1) % p, prev = (r + p - 1) % p;
  const int64_t n = 576;
  for (WireFormat f : {WireFormat::kF32, WireFormat::kBF16, WireFormat::kQ8}) {
    const Tensor out = Tensor::from_f32(partial_sums(r, n), {1, n});
    Tensor in = Tensor::empty({1, n}, DType::kF32);
    if (r % 2 == 0) {
      send_in(f, *world, out, next, 9);
      recv_in(f, *world, in, prev, 9);
    } else {
      recv_in(f, *world, in, prev, 9);
      send_in(f, *world, out, next, 9);
    }
    EXPECT_EQ(in.to_f32_vector(), decoded(f, partial_sums(prev, n))) << wire_format_name(f);
  }
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

#if TESSERA_HAVE_CUDA
// NCCL between GPUs, where every rank of the world has a GPU of its own (NCCL refuses two ranks
// on one GPU): each collective on random data gives what the MPI communicator gives on the same
// data, and a process grid carried by NCCL has its groups in the grid's order.
class NcclGroups : public ::testing::Test {
 protected:
  void SetUp() override {
    auto world = MpiCommunicator::world();
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
    int local_rank = 0, local_size = 1;
    MPI_Comm_rank(node, &local_rank);
    MPI_Comm_size(node, &local_size);
    MPI_Comm_free(&node);
    const int gpus = cuda::device_count();
    int ok = gpus >= local_size && NcclCommunicator::unavailable_reason().empty(), all = 0;
    MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!all)
      GTEST_SKIP() << "needs a GPU per rank and NCCL: " << gpus << " GPU(s) for " << local_size
                   << " rank(s) on this node ("
                   << (gpus ? NcclCommunicator::unavailable_reason() : cuda::no_device_reason())
                   << ")";
    gpu_ = local_rank;
    static bool reserved = false;
    if (!reserved) cuda::reserve_memory(gpu_, size_t(256) << 20);
    reserved = true;
  }
  int gpu_ = 0;
};

// The same random values on every rank r: seed r.
Tensor random_f32(int64_t n, int seed) {
  std::vector<float> v(static_cast<size_t>(n));
  uint32_t x = 2463534242u + uint32_t(seed) * 7919u;
  for (float& f : v) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    f = float(x % 20001) / 1000.0f - 10.0f;
  }
  return Tensor::from_f32(v, {n});
}

TEST_F(NcclGroups, CollectivesAgreeWithMpi) {
  auto mpi = MpiCommunicator::world();
  auto nccl =
      NcclCommunicator::create(MpiCommunicator::world()->split(0, mpi->rank()), {gpu_, 60.0});
  const int r = mpi->rank(), p = mpi->size();
  const Device gpu = Device::cuda(gpu_);
  Tensor host = random_f32(1000, r);
  Tensor dev = host.to(gpu);
  mpi->all_reduce(host, ReduceOp::kMax);  // max and min are exact whatever the order
  nccl->all_reduce(dev, ReduceOp::kMax);
  EXPECT_EQ(dev.to(Device::cpu()).to_f32_vector(), host.to_f32_vector());
  Tensor ints = Tensor::from_i32({r, 3 * r + 1}, {2}), dints = ints.to(gpu);
  mpi->all_reduce(ints, ReduceOp::kSum);  // integer sums too
  nccl->all_reduce(dints, ReduceOp::kSum);
  EXPECT_EQ(dints.to(Device::cpu()).to_f32_vector(), ints.to_f32_vector());
  Tensor mine = random_f32(64, 100 + r);
  Tensor gathered = Tensor::empty({p * 64}, DType::kF32), dgathered = gathered.to(gpu);
  mpi->all_gather(mine, gathered);
  nccl->all_gather(mine.to(gpu), dgathered);
  EXPECT_EQ(dgathered.to(Device::cpu()).to_f32_vector(), gathered.to_f32_vector());
  const int next = (r + 1) % p, prev = (r + p - 1) % p;
  Tensor in = Tensor::empty({64}, DType::kF32).to(gpu);
  nccl->send_recv(mine.to(gpu), next, in, prev, 3);
  EXPECT_EQ(in.to(Device::cpu()).to_f32_vector(), random_f32(64, 100 + prev).to_f32_vector());
  Tensor b = random_f32(10, r).to(gpu);
  nccl->broadcast(b, p - 1);
  EXPECT_EQ(b.to(Device::cpu()).to_f32_vector(), random_f32(10, p - 1).to_f32_vector());
  nccl->barrier();
}

TEST_F(NcclGroups, ProcessGroupsCarriedByNccl) {
  const int p = MpiCommunicator::world()->size();
  const NcclOptions options{gpu_, 60.0};
  const GroupTransport nccl = [&](std::unique_ptr<MpiCommunicator> m) {
    return std::unique_ptr<Communicator>(NcclCommunicator::create(std::move(m), options));
  };
  ProcessGroups g = ProcessGroups::create({1, 1, 1, p}, MpiCommunicator::world(), nccl);
  Tensor me = Tensor::from_i32({g.world->rank()}, {1}).to(Device::cuda(gpu_));
  Tensor members = Tensor::empty({p}, DType::kI32).to(Device::cuda(gpu_));
  g.tp->all_gather(me, members);
  const Tensor got = members.to(Device::cpu());
  for (int t = 0; t < p; ++t) EXPECT_EQ(got.data<int32_t>()[t], t);
}
#endif

TEST(ProcessGroups, RefusesWrongWorldSize) {
  auto world = MpiCommunicator::world();
  const GridShape shape{1, 1, 1, world->size() + 1};
  EXPECT_THROW(ProcessGroups::create(shape, std::move(world)), Error);
}

}  // namespace
}  // namespace tessera
