#include "parallel/mpi_communicator.h"

#include <cstdlib>

#include "kernels/ops.h"
#include "parallel/operation_watch.h"

#include <unistd.h>
#include <chrono>
#include <climits>
#include <mutex>
#include <thread>

namespace tessera {
namespace {

void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  TESSERA_THROW_KIND(ErrorKind::kIo,
                     "MPI " << what << " failed: " << std::string(text, size_t(len)));
}

// Polls `done` until it says true, without holding a core: it spins for the first millisecond
// (a message that is about to come is taken at once), then sleeps between polls for a fiftieth
// of the time waited so far, at most a millisecond. A follower rank of an idle server (whose
// next step plan may be minutes away) then costs no CPU, and a late message is taken within 2%
// of the wait.
template <typename Poll>
void wait_patiently(Poll done) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  while (!done()) {
    const auto waited = clock::now() - start;
    if (waited < std::chrono::milliseconds(1)) continue;
    std::this_thread::sleep_for(
        std::min<clock::duration>(waited / 50, std::chrono::milliseconds(1)));
  }
}

MPI_Datatype mpi_type(DType dt) {
  switch (dt) {
    case DType::kF32:
      return MPI_FLOAT;
    case DType::kI32:
      return MPI_INT32_T;
    case DType::kI64:
      return MPI_INT64_T;
    case DType::kU8:
      return MPI_UINT8_T;
    case DType::kF16:
    case DType::kBF16:
      return MPI_UINT16_T;  // moved, never reduced
    default:
      break;
  }
  TESSERA_ASSERT(false, "MPI moves no " << dtype_name(dt)
                                        << " tensors (quantized weights stay "
                                           "where they are loaded)");
  return MPI_BYTE;
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return MPI_SUM;
    case ReduceOp::kMax:
      return MPI_MAX;
    case ReduceOp::kMin:
      return MPI_MIN;
  }
  return MPI_SUM;
}

// The element count MPI is given (GPU tensors are staged through host memory: OnHost).
int element_count(const Tensor& t, const char* what) {
  TESSERA_ASSERT(t.defined(), what << " of an undefined tensor");
  TESSERA_ASSERT(t.numel() <= INT_MAX,
                 what << ": " << t.numel() << " elements exceed MPI's int count");
  return int(t.numel());
}

void check_reducible(const Tensor& t, const char* what) {
  TESSERA_ASSERT(t.dtype() == DType::kF32 || t.dtype() == DType::kI32 || t.dtype() == DType::kI64,
                 what << " of " << dtype_name(t.dtype()) << " tensors");
}

// The host memory MPI reads or writes for a tensor: the tensor itself when it is in host
// memory; otherwise a host copy (of its values when MPI reads them), copied back by done() when
// MPI wrote it. (MPI here is not CUDA-aware; NCCL is the GPU-to-GPU path.)
class OnHost {
 public:
  OnHost(const Tensor& t, bool mpi_reads) : t_(t) {
    if (t.device().is_cpu())
      host_ = t;
    else
      host_ = mpi_reads ? t.to(Device::cpu()) : Tensor::empty(t.shape(), t.dtype());
  }
  void* raw() const { return host_.raw(); }
  void done() {  // after MPI wrote the host memory
    if (t_.device().is_cpu()) return;
    Tensor dst = t_;
    ops::copy(host_, dst);
  }

 private:
  Tensor t_, host_;
};

}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm comm, bool owned)
    : comm_(comm), owned_(owned), name_(comm == MPI_COMM_WORLD ? "world" : "unnamed") {
  check_mpi(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "set_errhandler");
  check_mpi(MPI_Comm_rank(comm_, &rank_), "comm_rank");
  check_mpi(MPI_Comm_size(comm_, &size_), "comm_size");
  MPI_Group mine, world;  // (local: no communication)
  check_mpi(MPI_Comm_group(comm_, &mine), "comm_group");
  check_mpi(MPI_Comm_group(MPI_COMM_WORLD, &world), "comm_group");
  std::vector<int> ranks(static_cast<size_t>(size_));
  for (int r = 0; r < size_; ++r) ranks[size_t(r)] = r;
  world_ranks_.resize(ranks.size());
  check_mpi(MPI_Group_translate_ranks(mine, size_, ranks.data(), world, world_ranks_.data()),
            "group_translate_ranks");
  MPI_Group_free(&mine);
  MPI_Group_free(&world);
}

namespace {
std::mutex hosts_mutex;
std::vector<std::string> world_hosts;  // (with hosts_mutex held)
}  // namespace

void MpiCommunicator::gather_hosts() {
  char name[MPI_MAX_PROCESSOR_NAME] = {};
  gethostname(name, sizeof name - 1);
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  std::vector<char> all(static_cast<size_t>(size) * MPI_MAX_PROCESSOR_NAME);
  check_mpi(MPI_Allgather(name, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, all.data(),
                          MPI_MAX_PROCESSOR_NAME, MPI_CHAR, MPI_COMM_WORLD),
            "allgather");
  std::lock_guard<std::mutex> lock(hosts_mutex);
  world_hosts.clear();
  for (int r = 0; r < size; ++r) world_hosts.emplace_back(&all[size_t(r) * MPI_MAX_PROCESSOR_NAME]);
}

std::string MpiCommunicator::host_of(int world_rank) {
  std::lock_guard<std::mutex> lock(hosts_mutex);
  return world_rank >= 0 && size_t(world_rank) < world_hosts.size()
             ? world_hosts[size_t(world_rank)]
             : std::string();
}

MpiCommunicator::~MpiCommunicator() {
  if (owned_) MPI_Comm_free(&comm_);
}

std::unique_ptr<MpiCommunicator> MpiCommunicator::world() {
  int init = 0;
  MPI_Initialized(&init);
  TESSERA_ASSERT(init, "MPI is not initialised (launch/ initialises it)");
  return std::unique_ptr<MpiCommunicator>(new MpiCommunicator(MPI_COMM_WORLD, false));
}

bool MpiCommunicator::initialized() {
  int init = 0, finalized = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&finalized);
  return init && !finalized;
}

void MpiCommunicator::abort_job(int code) {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::abort();  // (MPI_Abort does not return; the compiler cannot know)
}

void MpiCommunicator::finalize() {
  if (initialized()) MPI_Finalize();
}

std::unique_ptr<MpiCommunicator> MpiCommunicator::node_local() const {
  MPI_Comm node = MPI_COMM_NULL;
  check_mpi(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node),
            "comm_split_type");
  std::unique_ptr<MpiCommunicator> local(new MpiCommunicator(node, true));
  local->set_name("node-local");
  return local;
}

std::optional<MpiCommunicator::Arrival> MpiCommunicator::arrived(int tag) const {
  int flag = 0;
  MPI_Status st;
  check_mpi(MPI_Iprobe(MPI_ANY_SOURCE, tag, comm_, &flag, &st), "iprobe");
  if (!flag) return std::nullopt;
  return Arrival{st.MPI_SOURCE, st.MPI_TAG};
}

std::unique_ptr<MpiCommunicator> MpiCommunicator::split(int color, int key) const {
  MPI_Comm out = MPI_COMM_NULL;
  check_mpi(MPI_Comm_split(comm_, color, key, &out), "comm_split");
  return std::unique_ptr<MpiCommunicator>(new MpiCommunicator(out, true));
}

void MpiCommunicator::all_reduce(Tensor& t, ReduceOp op) {
  check_reducible(t, "all_reduce");
  OnHost h(t, true);
  const OperationWatch::Scope watch("all_reduce", *this, t.numel(), dtype_name(t.dtype()));
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, h.raw(), element_count(t, "all_reduce"),
                          mpi_type(t.dtype()), mpi_op(op), comm_),
            "all_reduce");
  h.done();
}

void MpiCommunicator::all_gather(const Tensor& in, Tensor& out) {
  const int n = element_count(in, "all_gather");
  TESSERA_ASSERT(out.dtype() == in.dtype() && element_count(out, "all_gather") == n * size_,
                 "all_gather: " << shape_str(in.shape()) << " x " << size_ << " ranks into "
                                << shape_str(out.shape()));
  const MPI_Datatype type = mpi_type(in.dtype());
  OnHost hin(in, true), hout(out, false);
  const OperationWatch::Scope watch("all_gather", *this, in.numel(), dtype_name(in.dtype()));
  check_mpi(MPI_Allgather(hin.raw(), n, type, hout.raw(), n, type, comm_), "all_gather");
  hout.done();
}

void MpiCommunicator::reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) {
  check_reducible(in, "reduce_scatter");
  const int n = element_count(out, "reduce_scatter");
  TESSERA_ASSERT(out.dtype() == in.dtype() && element_count(in, "reduce_scatter") == n * size_,
                 "reduce_scatter: " << shape_str(in.shape()) << " over " << size_ << " ranks into "
                                    << shape_str(out.shape()));
  OnHost hin(in, true), hout(out, false);
  const OperationWatch::Scope watch("reduce_scatter", *this, in.numel(), dtype_name(in.dtype()));
  check_mpi(
      MPI_Reduce_scatter_block(hin.raw(), hout.raw(), n, mpi_type(in.dtype()), mpi_op(op), comm_),
      "reduce_scatter");
  hout.done();
}

void MpiCommunicator::send(const Tensor& t, int dst, int tag) {
  OnHost h(t, true);
  const OperationWatch::Scope watch("send", *this, t.numel(), dtype_name(t.dtype()), dst);
  check_mpi(MPI_Send(h.raw(), element_count(t, "send"), mpi_type(t.dtype()), dst, tag, comm_),
            "send");
}

void MpiCommunicator::recv(Tensor& t, int src, int tag) {
  MPI_Status status;
  OnHost h(t, false);
  const OperationWatch::Scope watch("recv", *this, t.numel(), dtype_name(t.dtype()), src);
  check_mpi(
      MPI_Recv(h.raw(), element_count(t, "recv"), mpi_type(t.dtype()), src, tag, comm_, &status),
      "recv");
  h.done();
  int got = 0;
  MPI_Get_count(&status, mpi_type(t.dtype()), &got);
  TESSERA_ASSERT(got == int(t.numel()), "recv from rank " << src << ": " << got
                                                          << " elements for a tensor of "
                                                          << t.numel());
}

void MpiCommunicator::send_recv(const Tensor& out, int dst, Tensor& in, int src, int tag) {
  MPI_Status status;
  OnHost hout(out, true), hin(in, false);
  const OperationWatch::Scope watch("send_recv", *this, out.numel(), dtype_name(out.dtype()), src,
                                    dst);
  check_mpi(MPI_Sendrecv(hout.raw(), element_count(out, "send_recv"), mpi_type(out.dtype()), dst,
                         tag, hin.raw(), element_count(in, "send_recv"), mpi_type(in.dtype()), src,
                         tag, comm_, &status),
            "send_recv");
  hin.done();
}

void MpiCommunicator::broadcast(Tensor& t, int root) {
  OnHost h(t, rank_ == root);
  const OperationWatch::Scope watch("broadcast", *this, t.numel(), dtype_name(t.dtype()));
  check_mpi(MPI_Bcast(h.raw(), element_count(t, "broadcast"), mpi_type(t.dtype()), root, comm_),
            "broadcast");
  h.done();
}

void MpiCommunicator::broadcast_bytes(std::string& bytes, int root) {
  int64_t n = int64_t(bytes.size());
  MPI_Request request;  // the size patiently: this is where a follower waits for its next plan
  check_mpi(MPI_Ibcast(&n, 1, MPI_INT64_T, root, comm_, &request), "broadcast");
  wait_patiently([&] {
    int done = 0;
    check_mpi(MPI_Test(&request, &done, MPI_STATUS_IGNORE), "broadcast");
    return done != 0;
  });
  TESSERA_ASSERT(n <= INT_MAX, "broadcast of " << n << " bytes");
  bytes.resize(size_t(n));
  const OperationWatch::Scope watch("broadcast", *this, n, "bytes");
  check_mpi(MPI_Bcast(bytes.data(), int(n), MPI_BYTE, root, comm_), "broadcast");
}

void MpiCommunicator::send_bytes(const std::string& bytes, int dst, int tag) {
  TESSERA_ASSERT(bytes.size() <= size_t(INT_MAX), "send of " << bytes.size() << " bytes");
  const OperationWatch::Scope watch("send", *this, int64_t(bytes.size()), "bytes", dst);
  check_mpi(MPI_Send(bytes.data(), int(bytes.size()), MPI_BYTE, dst, tag, comm_), "send");
}

void MpiCommunicator::recv_bytes(std::string& bytes, int src, int tag) {
  MPI_Status status;  // patiently: this is where a later stage waits for its next plan
  MPI_Message message;
  wait_patiently([&] {
    int found = 0;
    check_mpi(MPI_Improbe(src, tag, comm_, &found, &message, &status), "probe");
    return found != 0;
  });
  int n = 0;
  check_mpi(MPI_Get_count(&status, MPI_BYTE, &n), "get_count");
  bytes.resize(size_t(n));
  const OperationWatch::Scope watch("recv", *this, n, "bytes", status.MPI_SOURCE);
  check_mpi(MPI_Mrecv(bytes.data(), n, MPI_BYTE, &message, MPI_STATUS_IGNORE), "recv");
}

void MpiCommunicator::barrier() {
  const OperationWatch::Scope watch("barrier", *this, 0, "elements");
  check_mpi(MPI_Barrier(comm_), "barrier");
}

}  // namespace tessera
