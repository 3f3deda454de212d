// tessera doctor: under mpirun or srun, checks that a job can run before it is submitted for
// real. Every rank reports its host, device, whether it can read the model file, and its free
// memory; the layout is checked against the model; then the communicators of the layout are
// exercised (all-reduce latency and bandwidth of every TP, PP, SP and DP group) and printed as a
// table, after the point-to-point latency and bandwidth between rank 0's host and every other
// host. A mismatch (a rank that cannot read the file, a missing GPU, a layout that cannot work, a
// rank that never reports) fails with one line.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>

#include "io/model_store.h"
#include "launch/commands.h"
#include "launch/gpu_setup.h"
#include "launch/kv_budget.h"
#include "launch/options.h"
#include "launch/step_watchdog.h"
#include "parallel/layout.h"
#include "parallel/mpi_communicator.h"
#include "parallel/process_groups.h"

#if TESSERA_HAVE_CUDA
#include "kernels/cuda/cuda_memory.h"
#endif

namespace tessera::cli {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// This rank's report: host, device, the model file as it sees it, free memory.
json own_report(const std::string& model, const DeviceOptions& device_options,
                std::optional<Device>& device) {
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  json r = {{"host", host}, {"pid", int(getpid())}};
  try {
    const Device d = start_device(device_options);
    device = d;
    r["device"] = describe_device(d);
#if TESSERA_HAVE_CUDA
    if (!d.is_cpu() && !cuda::is_emulated(d.index))
      r["device_free_bytes"] = cuda::free_memory(d.index);
#endif
  } catch (const Error& e) {
    r["problem"] = std::string("no device: ") + e.what();
  }
  r["host_free_bytes"] = available_memory();
  std::error_code ec;
  if (!std::filesystem::exists(model, ec)) {
    r["problem"] = model + " does not exist here";
  } else {
    try {
      ModelReader reader(model);  // opens it and reads the header
      r["model_bytes"] = uint64_t(std::filesystem::file_size(model, ec));
    } catch (const Error& e) {
      r["problem"] = std::string("cannot read ") + model + ": " + e.what();
    }
  }
  return r;
}

// Rank 0 collects every rank's report, waiting `timeout` seconds at most: a rank that does not
// report (stuck on a file system, or never started) is named instead of waited for forever.
std::vector<json> gather_reports(MpiCommunicator& world, const json& mine, double timeout) {
  const int rank = world.rank(), size = world.size();
  constexpr int kTag = 7100;
  if (rank != 0) {
    world.send_bytes(mine.dump(), 0, kTag);
    return {};
  }
  std::vector<json> all(static_cast<size_t>(size));
  all[0] = mine;
  std::vector<bool> got(static_cast<size_t>(size), false);
  got[0] = true;
  int left = size - 1;
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout);
  while (left > 0 && Clock::now() < deadline) {
    const std::optional<MpiCommunicator::Arrival> a = world.arrived(kTag);  // who has reported
    if (!a) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      continue;
    }
    std::string buf;
    world.recv_bytes(buf, a->source, kTag);
    all[size_t(a->source)] = json::parse(buf);
    got[size_t(a->source)] = true;
    --left;
  }
  if (left > 0) {
    std::string missing;
    for (int r = 0; r < size; ++r)
      if (!got[size_t(r)]) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
    TESSERA_FAIL("rank(s) " << missing << " did not report within " << timeout
                            << " s (--timeout): stuck, or not started");
  }
  return all;
}

std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f GiB", bytes / double(1ull << 30));
  return buf;
}

struct GroupFigures {
  double latency_us = 0, bus_gbps = 0;
};

// All-reduce of 4 floats (latency: the mean of 200 back to back) and of `bytes` (bus bandwidth:
// 2 (n - 1) / n of the data crosses each rank's link, as nccl-tests count it; the best of 5).
GroupFigures exercise(Communicator& c, int64_t bytes, Device device) {
  GroupFigures f;
  Tensor small = Tensor::zeros({4}, DType::kF32).to(device);
  for (int i = 0; i < 5; ++i) c.all_reduce(small);  // warm-up
  c.barrier();
  const auto a = Clock::now();
  constexpr int kRounds = 200;  // back to back, as osu_allreduce counts latency
  for (int i = 0; i < kRounds; ++i) c.all_reduce(small);
  f.latency_us = 1e6 * std::chrono::duration<double>(Clock::now() - a).count() / kRounds;
  Tensor big = Tensor::zeros({bytes / 4}, DType::kF32).to(device);
  double best = 1e30;
  for (int i = 0; i < 6; ++i) {
    c.barrier();
    const auto a = Clock::now();
    c.all_reduce(big);
    const double s = std::chrono::duration<double>(Clock::now() - a).count();
    if (i > 0) best = std::min(best, s);
  }
  const int n = c.size();
  f.bus_gbps = 2.0 * double(n - 1) / double(n) * double(bytes) / best / 1e9;
  return f;
}

struct LinkFigures {
  double latency_us = 0, gbps = 0;
};

// Between world ranks 0 and `peer` (the first rank of another host): a ping-pong of 8 bytes
// (latency: half the mean round trip of 200) and `bytes` sent one way and acknowledged (the best
// of 5; the acknowledgement's 1 byte is not counted). Both ranks call it; rank 0's figures count.
LinkFigures exercise_link(MpiCommunicator& world, int peer, int64_t bytes) {
  constexpr int kTag = 7200;
  const bool first = world.rank() == 0;
  const int other = first ? peer : 0;
  // (tensors, whose sends and receives the step watchdog watches: a cut link ends the doctor
  // with a line naming the host instead of a hang)
  Tensor small = Tensor::zeros({8}, DType::kU8), small_back = Tensor::zeros({8}, DType::kU8);
  const auto ping = [&] {
    if (first) {
      world.send(small, other, kTag);
      world.recv(small_back, other, kTag);
    } else {
      world.recv(small_back, other, kTag);
      world.send(small, other, kTag);
    }
  };
  for (int i = 0; i < 5; ++i) ping();  // warm-up
  LinkFigures f;
  constexpr int kRounds = 200;
  auto a = Clock::now();
  for (int i = 0; i < kRounds; ++i) ping();
  f.latency_us = 1e6 * std::chrono::duration<double>(Clock::now() - a).count() / kRounds / 2;
  Tensor big = Tensor::zeros({bytes}, DType::kU8), ack = Tensor::zeros({1}, DType::kU8);
  double best = 1e30;
  for (int i = 0; i < 6; ++i) {
    a = Clock::now();
    if (first) {
      world.send(big, other, kTag);
      world.recv(ack, other, kTag);
    } else {
      world.recv(big, other, kTag);
      world.send(ack, other, kTag);
    }
    const double s = std::chrono::duration<double>(Clock::now() - a).count();
    if (i > 0) best = std::min(best, s);
  }
  f.gbps = double(bytes) / best / 1e9;
  return f;
}

std::string fixed(double v, int decimals, const char* unit) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*f %s", decimals, v, unit);
  return buf;
}

}  // namespace

int run_doctor(const Args& args) {
  po::options_description desc("Options");
  std::string model, bytes_text = "16MiB";
  GridShape layout;
  DeviceOptions device;
  double timeout = 60;
  // clang-format off
  desc.add_options()
      ("model,m", po::value(&model), "the model file every rank must read")
      ("tp", po::value(&layout.tp)->default_value(1), "tensor-parallel ranks")
      ("pp", po::value(&layout.pp)->default_value(1), "pipeline-parallel stages")
      ("sp", po::value(&layout.sp)->default_value(1), "sequence-parallel ranks")
      ("dp", po::value(&layout.dp)->default_value(1), "data-parallel replicas")
      ("bytes", po::value(&bytes_text)->default_value(bytes_text),
       "all-reduce size for the bandwidth figure")
      ("timeout", po::value(&timeout)->default_value(timeout, "60"),
       "seconds rank 0 waits for every rank's report");
  // clang-format on
  device.add_to(desc);
  po::variables_map vm;
  if (!parse_options("doctor", "--model FILE [--tp N --pp N --sp N --dp N] [options]", desc, args,
                     vm))
    return 0;
  TESSERA_CHECK(!model.empty(), "--model is required");
  TESSERA_CHECK(timeout > 0, "--timeout must be > 0");
  const int64_t bytes = int64_t(parse_bytes(bytes_text, "--bytes")) / 4 * 4;
  TESSERA_CHECK(bytes >= 4, "--bytes must be at least 4");
  const std::unique_ptr<MpiCommunicator> world = MpiCommunicator::world();
  const int rank = world->rank(), size = world->size();

  std::optional<Device> own_device;
  const std::vector<json> reports =
      gather_reports(*world, own_report(model, device, own_device), timeout);
  std::string verdict;  // rank 0's: empty when every rank can run the layout
  if (rank == 0) {
    std::printf("%-5s %-20s %-8s %-44s %-12s %s\n", "rank", "host", "pid", "device", "free memory",
                "model file");
    for (int r = 0; r < size; ++r) {
      const json& j = reports[size_t(r)];
      const double free = j.contains("device_free_bytes") ? j["device_free_bytes"].get<double>()
                                                          : j["host_free_bytes"].get<double>();
      std::printf(
          "%-5d %-20s %-8d %-44s %-12s %s\n", r, j["host"].get<std::string>().c_str(),
          j["pid"].get<int>(), j.value("device", "-").c_str(), gib(free).c_str(),
          j.contains("model_bytes") ? gib(j["model_bytes"].get<double>()).c_str() : "unreadable");
    }
    for (int r = 0; r < size && verdict.empty(); ++r)
      if (reports[size_t(r)].contains("problem"))
        verdict = "rank " + std::to_string(r) + " on " +
                  reports[size_t(r)]["host"].get<std::string>() + ": " +
                  reports[size_t(r)]["problem"].get<std::string>();
    for (int r = 1; r < size && verdict.empty(); ++r)
      if (reports[size_t(r)]["model_bytes"] != reports[0]["model_bytes"])
        verdict = "rank " + std::to_string(r) + " sees " + model + " with another size than rank 0";
    if (verdict.empty()) {
      const auto problem = layout_problem(layout, size, layout_dims(ModelReader(model)));
      if (problem) verdict = *problem;
    }
  }
  world->broadcast_bytes(verdict, 0);
  TESSERA_CHECK(verdict.empty(), verdict);

  // From here on every exchange is watched (--step-timeout): a peer that stops answering ends the
  // doctor with one line naming it and its host.
  StepWatchdog watchdog(device.step_timeout);

  // Between hosts: rank 0 against the first rank of every other host, over whatever carries
  // MPI between them (TCP across real hosts), one pair at a time while the other ranks wait.
  std::string peers_text;  // "rank host" lines, from rank 0
  if (rank == 0) {
    std::vector<std::string> seen = {reports[0]["host"].get<std::string>()};
    for (int r = 1; r < size; ++r) {
      const std::string host = reports[size_t(r)]["host"].get<std::string>();
      if (std::find(seen.begin(), seen.end(), host) != seen.end()) continue;
      seen.push_back(host);
      peers_text += std::to_string(r) + " " + host + "\n";
    }
  }
  world->broadcast_bytes(peers_text, 0);
  std::istringstream peer_lines(peers_text);
  int peer;
  std::string peer_host;
  bool header = false;
  while (peer_lines >> peer >> peer_host) {
    if (rank == 0 && !header) {
      std::printf(
          "\n%-20s %-20s %-18s %-12s  (MPI point to point: 8 bytes there and back; %s one way)\n",
          "host of rank 0", "host", "latency", "bandwidth", bytes_text.c_str());
      header = true;
    }
    LinkFigures f;
    if (rank == 0 || rank == peer) f = exercise_link(*world, peer, bytes);
    if (rank == 0)
      std::printf("%-20s %-20s %-18s %-12s\n", reports[0]["host"].get<std::string>().c_str(),
                  (peer_host + " (rank " + std::to_string(peer) + ")").c_str(),
                  fixed(f.latency_us, 1, "us").c_str(), fixed(f.gbps, 2, "GB/s").c_str());
    world->barrier();
  }

  // The groups as a job of this layout makes them: NCCL between GPUs where --comm allows it (its
  // set-up bounded by --nccl-timeout), else MPI; the all-reduces run on the rank's device.
  const Device d = *own_device;
  const GroupTransport transport = group_transport(device, d);
  ProcessGroups groups = ProcessGroups::create(layout, MpiCommunicator::world(), transport);
  struct Row {
    const char* kind;
    Communicator* c;
  };
  const Row rows[] = {{"tp", groups.tp.get()},
                      {"pp", groups.pp.get()},
                      {"sp", groups.sp.get()},
                      {"dp", groups.dp.get()}};
  if (rank == 0)
    std::printf("\n%-6s %-6s %-18s %-22s  (all-reduce of %s, %s)\n", "group", "ranks",
                "latency (4 floats)", "bus bandwidth", bytes_text.c_str(),
                describe_transport(transport).c_str());
  for (const Row& row : rows) {
    if (row.c->size() == 1) continue;
    const GroupFigures f = exercise(*row.c, bytes, d);
    // Each group's figures from rank 0's group (every group of a kind is alike in a grid).
    if (rank == 0)
      std::printf("%-6s %-6d %-18s %-22s\n", row.kind, row.c->size(),
                  (std::to_string(int64_t(f.latency_us * 10 + 0.5) / 10) + "." +
                   std::to_string(int64_t(f.latency_us * 10 + 0.5) % 10) + " us")
                      .c_str(),
                  (std::to_string(int64_t(f.bus_gbps * 100 + 0.5) / 100) + "." +
                   std::to_string(100 + int64_t(f.bus_gbps * 100 + 0.5) % 100).substr(1) + " GB/s")
                      .c_str());
  }
  if (rank == 0)
    std::printf("\ntessera doctor: %d ranks can run %s as tp %d x pp %d x sp %d x dp %d\n", size,
                model.c_str(), layout.tp, layout.pp, layout.sp, layout.dp);
  return 0;
}

}  // namespace tessera::cli
