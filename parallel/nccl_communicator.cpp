#include "parallel/nccl_communicator.h"

#include <cuda_runtime.h>
#include <dlfcn.h>
#include <nccl.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>
#include <thread>

#include "kernels/cuda/cuda_memory.h"
#include "parallel/completion_watchdog.h"

namespace tessera {
namespace {

// The NCCL functions tessera calls, from the library opened at run time.
struct NcclApi {
  decltype(&ncclGetVersion) get_version = nullptr;
  decltype(&ncclGetUniqueId) get_unique_id = nullptr;
  decltype(&ncclCommInitRankConfig) init_rank_config = nullptr;
  decltype(&ncclCommGetAsyncError) async_error = nullptr;
  decltype(&ncclCommFinalize) finalize = nullptr;
  decltype(&ncclCommDestroy) destroy = nullptr;
  decltype(&ncclCommAbort) comm_abort = nullptr;
  decltype(&ncclGetErrorString) error_string = nullptr;
  decltype(&ncclGetLastError) last_error = nullptr;
  decltype(&ncclAllReduce) all_reduce = nullptr;
  decltype(&ncclAllGather) all_gather = nullptr;
  decltype(&ncclReduceScatter) reduce_scatter = nullptr;
  decltype(&ncclBroadcast) broadcast = nullptr;
  decltype(&ncclSend) send = nullptr;
  decltype(&ncclRecv) recv = nullptr;
  decltype(&ncclGroupStart) group_start = nullptr;
  decltype(&ncclGroupEnd) group_end = nullptr;
  std::string error;  // why the library could not be used ("" when it can)
  int version = 0;
};

NcclApi load_nccl() {
  NcclApi a;
  std::vector<std::string> names;
  if (const char* env = std::getenv("TESSERA_NCCL_LIBRARY"); env && *env) names.push_back(env);
  names.insert(names.end(), {"libnccl.so.2", "libnccl.so"});
  void* lib = nullptr;
  std::string tried;
  for (const std::string& n : names) {
    if ((lib = dlopen(n.c_str(), RTLD_NOW | RTLD_LOCAL))) break;
    const char* e = dlerror();
    tried += (tried.empty() ? "" : "; ") + std::string(e ? e : n.c_str());
  }
  if (!lib) {
    a.error = "cannot load the NCCL library (" + tried +
              "); put libnccl.so.2 on LD_LIBRARY_PATH or name it in TESSERA_NCCL_LIBRARY";
    return a;
  }
  const auto find = [&](auto& fn, const char* name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
    if (!fn && a.error.empty())
      a.error = std::string("the NCCL library lacks ") + name + " (NCCL 2.14 or newer is needed)";
  };
  find(a.get_version, "ncclGetVersion");
  find(a.get_unique_id, "ncclGetUniqueId");
  find(a.init_rank_config, "ncclCommInitRankConfig");
  find(a.async_error, "ncclCommGetAsyncError");
  find(a.finalize, "ncclCommFinalize");
  find(a.destroy, "ncclCommDestroy");
  find(a.comm_abort, "ncclCommAbort");
  find(a.error_string, "ncclGetErrorString");
  find(a.last_error, "ncclGetLastError");
  find(a.all_reduce, "ncclAllReduce");
  find(a.all_gather, "ncclAllGather");
  find(a.reduce_scatter, "ncclReduceScatter");
  find(a.broadcast, "ncclBroadcast");
  find(a.send, "ncclSend");
  find(a.recv, "ncclRecv");
  find(a.group_start, "ncclGroupStart");
  find(a.group_end, "ncclGroupEnd");
  if (a.error.empty() && a.get_version(&a.version) != ncclSuccess)
    a.error = "ncclGetVersion failed";
  return a;
}

const NcclApi& nccl() {
  static const NcclApi api = load_nccl();
  return api;
}

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::kF32:
      return ncclFloat32;
    case DType::kF16:
      return ncclFloat16;
    case DType::kBF16:
      return ncclBfloat16;
    case DType::kI32:
      return ncclInt32;
    case DType::kI64:
      return ncclInt64;
    case DType::kU8:
      return ncclUint8;
    default:  // the quantized formats and e4m3 have no NCCL type
      break;
  }
  TESSERA_FAIL("NCCL cannot carry " << dtype_name(t) << " tensors");
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kMax:
      return ncclMax;
    case ReduceOp::kMin:
      return ncclMin;
  }
  return ncclSum;
}

}  // namespace

struct NcclCommunicator::Impl {
  std::unique_ptr<Communicator> host;
  ncclComm_t comm = nullptr;
  int gpu = 0;
  cudaStream_t stream = nullptr;
  double timeout = 600;
  std::string where;     // "the NCCL group of 4 ranks (rank 1, GPU 1)"
  std::mutex nccl_mu;    // around NCCL calls: the owner's, and the watchdog's abort
  bool aborted = false;  // under nccl_mu
  std::unique_ptr<CompletionWatchdog> watchdog;

  std::string describe(ncclResult_t r) const {
    std::string s = nccl().error_string(r);
    if (const char* last = nccl().last_error(comm); last && *last) s += std::string(": ") + last;
    return s;
  }
  void abort_nccl() {
    std::lock_guard<std::mutex> lock(nccl_mu);
    if (aborted || !comm) return;
    nccl().comm_abort(comm);
    aborted = true;
  }
  // A non-blocking communicator's calls may return before they are done (ncclInProgress): waits
  // until NCCL has taken the call, or throws after the timeout (the watchdog aborts the
  // communicator and drops what it watches, so nothing polls a communicator that is gone).
  void settle(ncclResult_t r, const std::string& what) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout);
    while (r == ncclInProgress) {
      if (std::chrono::steady_clock::now() > deadline) {
        std::ostringstream m;
        m << what << " on " << where << " did not finish within " << timeout
          << " s (a peer rank is stuck or gone)";
        if (watchdog)
          watchdog->fail_now(m.str());
        else
          abort_nccl();
        TESSERA_THROW_KIND(ErrorKind::kIo, m.str());
      }
      std::this_thread::sleep_for(std::chrono::microseconds(20));
      std::lock_guard<std::mutex> lock(nccl_mu);
      if (aborted) break;
      nccl().async_error(comm, &r);
    }
    if (aborted && watchdog) watchdog->check();  // the watchdog's reason, if it aborted
    TESSERA_CHECK_IO(!aborted, what << " on " << where << ": the communicator was aborted");
    TESSERA_CHECK_IO(r == ncclSuccess, what << " on " << where << " failed: " << describe(r));
  }
  // Has the watchdog follow the work queued on the stream so far.
  void watch_stream(const std::string& what) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    cudaStreamIsCapturing(stream, &capture);
    if (capture != cudaStreamCaptureStatusNone) return;  // a graph's node: watched when replayed
    cudaEvent_t raw = nullptr;
    cudaError_t e = cudaEventCreateWithFlags(&raw, cudaEventDisableTiming);
    if (e == cudaSuccess) e = cudaEventRecord(raw, stream);
    TESSERA_CHECK_IO(e == cudaSuccess, what << ": " << cudaGetErrorString(e));
    std::shared_ptr<CUevent_st> event(raw, cudaEventDestroy);
    const int device = gpu;
    watchdog->watch(what + " on " + where, [this, event, device](std::string& why) {
      thread_local int current = -1;  // the watchdog's thread works on this rank's GPU
      if (current != device) cudaSetDevice(current = device);
      const cudaError_t q = cudaEventQuery(event.get());
      if (q == cudaSuccess) return CompletionWatchdog::State::kDone;
      if (q != cudaErrorNotReady) {
        why = cudaGetErrorString(q);
        return CompletionWatchdog::State::kFailed;
      }
      ncclResult_t async = ncclSuccess;
      {
        std::lock_guard<std::mutex> lock(nccl_mu);  // (order: the watchdog's lock, then this)
        if (aborted) {
          why = "the communicator was aborted";
          return CompletionWatchdog::State::kFailed;
        }
        nccl().async_error(comm, &async);
      }
      if (async != ncclSuccess && async != ncclInProgress) {
        why = nccl().error_string(async);
        return CompletionWatchdog::State::kFailed;
      }
      return CompletionWatchdog::State::kRunning;
    });
  }
  // Runs `call` (NCCL calls queuing work on the stream), then has the watchdog follow that work.
  template <class F>
  void enqueue(const std::string& what, F&& call) {
    watchdog->check();
    ncclResult_t r;
    {
      std::lock_guard<std::mutex> lock(nccl_mu);
      TESSERA_CHECK_IO(!aborted, where << " was aborted after an earlier failure");
      cudaSetDevice(gpu);
      r = call();
    }
    settle(r, what);
    watch_stream(what);
  }
  // GPU tensors of this communicator's GPU go through NCCL; host tensors through `host`.
  bool on_gpu(const Tensor& t, const char* what) const {
    TESSERA_ASSERT(t.defined(), what << " of an undefined tensor");
    if (t.device().is_cpu()) return false;
    TESSERA_ASSERT(t.device() == Device::cuda(gpu) && !cuda::is_emulated(gpu),
                   what << " of a tensor on " << t.device().str() << " over " << where);
    return true;
  }
  std::string count(const char* what, const Tensor& t) const {
    return std::string(what) + " of " + std::to_string(t.numel()) + " " +
           std::string(dtype_name(t.dtype()));
  }
};

std::string NcclCommunicator::unavailable_reason() {
  return nccl().error;
}

std::string NcclCommunicator::version() {
  const int v = nccl().version;
  if (!v) return "";
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." +
         std::to_string(v % 100);
}

std::unique_ptr<NcclCommunicator> NcclCommunicator::create(std::unique_ptr<Communicator> host,
                                                           const NcclOptions& options) {
  const NcclApi& api = nccl();
  TESSERA_CHECK_IO(api.error.empty(), "NCCL: " << api.error);
  TESSERA_CHECK(options.timeout_seconds > 0, "the NCCL timeout must be positive");
  auto impl = std::make_unique<Impl>();
  impl->gpu = options.gpu;
  impl->timeout = options.timeout_seconds;
  impl->stream = static_cast<cudaStream_t>(cuda::compute_stream(options.gpu));
  TESSERA_ASSERT(!cuda::is_emulated(options.gpu),
                 "NCCL needs a real GPU, cuda:" << options.gpu << " is emulated");
  const int rank = host->rank(), size = host->size();
  impl->where = "the NCCL group of " + std::to_string(size) + " rank(s) (rank " +
                std::to_string(rank) + ", GPU " + std::to_string(options.gpu) + ")";
  ncclUniqueId id;
  std::string bytes;
  if (rank == 0) {
    const ncclResult_t r = api.get_unique_id(&id);
    TESSERA_CHECK_IO(r == ncclSuccess, "ncclGetUniqueId failed: " << api.error_string(r));
    bytes.assign(reinterpret_cast<const char*>(&id), sizeof id);
  }
  host->broadcast_bytes(bytes, 0);
  TESSERA_CHECK_IO(bytes.size() == sizeof id, "NCCL setup: the unique id arrived as "
                                                  << bytes.size() << " bytes, not " << sizeof id);
  std::memcpy(&id, bytes.data(), sizeof id);
  TESSERA_CHECK_IO(cudaSetDevice(options.gpu) == cudaSuccess, "cannot use GPU " << options.gpu);
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // calls return at once; settle() and the watchdog bound every wait
  ncclResult_t r;
  {
    std::lock_guard<std::mutex> lock(impl->nccl_mu);
    r = api.init_rank_config(&impl->comm, size, id, rank, &config);
  }
  Impl* raw = impl.get();
  impl->watchdog =
      std::make_unique<CompletionWatchdog>(options.timeout_seconds, [raw] { raw->abort_nccl(); });
  try {
    raw->settle(r, "NCCL setup");
  } catch (...) {
    impl->watchdog.reset();
    impl->abort_nccl();  // (nothing else frees a communicator that never came up)
    throw;
  }
  impl->host = std::move(host);
  return std::unique_ptr<NcclCommunicator>(new NcclCommunicator(std::move(impl)));
}

NcclCommunicator::NcclCommunicator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

NcclCommunicator::~NcclCommunicator() {
  Impl& m = *impl_;
  try {
    m.watchdog->wait_all();  // what is queued finishes (or times out and aborts)
  } catch (const std::exception&) {
  }
  m.watchdog.reset();
  if (!m.aborted && m.comm) {
    // Finalize flushes, destroy frees; a finalize that does not end in time aborts instead.
    ncclResult_t r = nccl().finalize(m.comm);
    try {
      m.settle(r, "NCCL finalize");
      nccl().destroy(m.comm);
    } catch (const std::exception&) {
      m.abort_nccl();
    }
  }
}

int NcclCommunicator::rank() const {
  return impl_->host->rank();
}
int NcclCommunicator::size() const {
  return impl_->host->size();
}

void NcclCommunicator::all_reduce(Tensor& t, ReduceOp op) {
  Impl& m = *impl_;
  if (!m.on_gpu(t, "all_reduce")) return m.host->all_reduce(t, op);
  m.enqueue(m.count("all_reduce", t), [&] {
    return nccl().all_reduce(t.raw(), t.raw(), size_t(t.numel()), nccl_type(t.dtype()), nccl_op(op),
                             m.comm, m.stream);
  });
}

void NcclCommunicator::all_gather(const Tensor& in, Tensor& out) {
  Impl& m = *impl_;
  const bool gpu = m.on_gpu(in, "all_gather");
  TESSERA_ASSERT(gpu == m.on_gpu(out, "all_gather"), "all_gather between host and GPU tensors");
  if (!gpu) return m.host->all_gather(in, out);
  TESSERA_ASSERT(out.numel() == in.numel() * size() && out.dtype() == in.dtype(),
                 "all_gather of " << shape_str(in.shape()) << " into " << shape_str(out.shape()));
  m.enqueue(m.count("all_gather", in), [&] {
    return nccl().all_gather(in.raw(), out.raw(), size_t(in.numel()), nccl_type(in.dtype()), m.comm,
                             m.stream);
  });
}

void NcclCommunicator::reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) {
  Impl& m = *impl_;
  const bool gpu = m.on_gpu(in, "reduce_scatter");
  TESSERA_ASSERT(gpu == m.on_gpu(out, "reduce_scatter"),
                 "reduce_scatter between host and GPU tensors");
  if (!gpu) return m.host->reduce_scatter(in, out, op);
  TESSERA_ASSERT(
      in.numel() == out.numel() * size() && out.dtype() == in.dtype(),
      "reduce_scatter of " << shape_str(in.shape()) << " into " << shape_str(out.shape()));
  m.enqueue(m.count("reduce_scatter", out), [&] {
    return nccl().reduce_scatter(in.raw(), out.raw(), size_t(out.numel()), nccl_type(in.dtype()),
                                 nccl_op(op), m.comm, m.stream);
  });
}

void NcclCommunicator::send(const Tensor& t, int dst, int tag) {
  Impl& m = *impl_;
  if (!m.on_gpu(t, "send")) return m.host->send(t, dst, tag);
  m.enqueue(m.count("send", t) + " to rank " + std::to_string(dst), [&] {
    return nccl().send(t.raw(), size_t(t.numel()), nccl_type(t.dtype()), dst, m.comm, m.stream);
  });
}

void NcclCommunicator::recv(Tensor& t, int src, int tag) {
  Impl& m = *impl_;
  if (!m.on_gpu(t, "recv")) return m.host->recv(t, src, tag);
  m.enqueue(m.count("recv", t) + " from rank " + std::to_string(src), [&] {
    return nccl().recv(t.raw(), size_t(t.numel()), nccl_type(t.dtype()), src, m.comm, m.stream);
  });
}

void NcclCommunicator::send_recv(const Tensor& out, int dst, Tensor& in, int src, int tag) {
  Impl& m = *impl_;
  const bool gpu = m.on_gpu(out, "send_recv");
  TESSERA_ASSERT(gpu == m.on_gpu(in, "send_recv"), "send_recv between host and GPU tensors");
  if (!gpu) return m.host->send_recv(out, dst, in, src, tag);
  m.enqueue(m.count("send_recv", out) + " to rank " + std::to_string(dst) + " from rank " +
                std::to_string(src),
            [&] {
              // One group: both go at once, so a ring step cannot deadlock.
              ncclResult_t r = nccl().group_start();
              if (r == ncclSuccess)
                r = nccl().send(out.raw(), size_t(out.numel()), nccl_type(out.dtype()), dst, m.comm,
                                m.stream);
              if (r == ncclSuccess || r == ncclInProgress)
                r = nccl().recv(in.raw(), size_t(in.numel()), nccl_type(in.dtype()), src, m.comm,
                                m.stream);
              const ncclResult_t end = nccl().group_end();
              return r == ncclSuccess || r == ncclInProgress ? end : r;
            });
}

void NcclCommunicator::broadcast(Tensor& t, int root) {
  Impl& m = *impl_;
  if (!m.on_gpu(t, "broadcast")) return m.host->broadcast(t, root);
  m.enqueue(m.count("broadcast", t) + " from rank " + std::to_string(root), [&] {
    return nccl().broadcast(t.raw(), t.raw(), size_t(t.numel()), nccl_type(t.dtype()), root, m.comm,
                            m.stream);
  });
}

void NcclCommunicator::broadcast_bytes(std::string& bytes, int root) {
  impl_->host->broadcast_bytes(bytes, root);
}
void NcclCommunicator::send_bytes(const std::string& bytes, int dst, int tag) {
  impl_->host->send_bytes(bytes, dst, tag);
}
void NcclCommunicator::recv_bytes(std::string& bytes, int src, int tag) {
  impl_->host->recv_bytes(bytes, src, tag);
}

void NcclCommunicator::synchronize() {
  impl_->watchdog->wait_all();
}

void NcclCommunicator::check_healthy() const {
  impl_->watchdog->check();
  std::lock_guard<std::mutex> lock(impl_->nccl_mu);
  TESSERA_CHECK_IO(!impl_->aborted, impl_->where << " was aborted after an earlier failure");
}

void NcclCommunicator::watch_queued_work(const std::string& what) {
  impl_->watchdog->check();
  impl_->watch_stream(what);
}

void NcclCommunicator::barrier() {
  synchronize();
  impl_->host->barrier();
}

}  // namespace tessera
