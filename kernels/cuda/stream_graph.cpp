#include "kernels/cuda/stream_graph.h"

#include <cuda_runtime.h>

#include "kernels/cuda/cuda_memory.h"
#include "kernels/cuda/simt_capture.h"
#include "kernels/error.h"

namespace tessera::cuda {

struct StreamGraph::Impl {
  bool emulated = false;
  bool capturing = false;
  cudaStream_t stream = nullptr;
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  std::vector<simt::Recorded> recorded;  // emulated
  bool ready = false;
};

StreamGraph::StreamGraph(int gpu) : gpu_(gpu), impl_(std::make_unique<Impl>()) {
  impl_->emulated = is_emulated(gpu);
  impl_->stream = static_cast<cudaStream_t>(compute_stream(gpu));
}

StreamGraph::~StreamGraph() {
  abandon_capture();
  if (impl_->exec) cudaGraphExecDestroy(impl_->exec);
  if (impl_->graph) cudaGraphDestroy(impl_->graph);
}

void StreamGraph::begin_capture() {
  Impl& m = *impl_;
  TESSERA_ASSERT(!m.capturing && !m.ready, "a CUDA graph is captured once");
  if (m.emulated) {
    simt::begin_capture();
  } else {
    // Relaxed: other threads (the NCCL watchdog) may go on querying events meanwhile.
    const cudaError_t e = cudaStreamBeginCapture(m.stream, cudaStreamCaptureModeRelaxed);
    TESSERA_CHECK_IO(e == cudaSuccess,
                     "CUDA graph capture on cuda:" << gpu_ << ": " << cudaGetErrorString(e));
  }
  m.capturing = true;
}

void StreamGraph::end_capture() {
  Impl& m = *impl_;
  TESSERA_ASSERT(m.capturing, "end_capture without begin_capture");
  m.capturing = false;
  if (m.emulated) {
    m.recorded = simt::end_capture();
    m.ready = true;
    return;
  }
  cudaError_t e = cudaStreamEndCapture(m.stream, &m.graph);
  if (e == cudaSuccess) e = cudaGraphInstantiate(&m.exec, m.graph, 0);
  TESSERA_CHECK_IO(e == cudaSuccess,
                   "CUDA graph capture on cuda:" << gpu_ << " failed: " << cudaGetErrorString(e));
  m.ready = true;
}

void StreamGraph::abandon_capture() noexcept {
  Impl& m = *impl_;
  if (!m.capturing) return;
  m.capturing = false;
  if (m.emulated) {
    try {
      simt::end_capture();
    } catch (...) {
    }
    return;
  }
  cudaGraph_t g = nullptr;
  cudaStreamEndCapture(m.stream, &g);
  if (g) cudaGraphDestroy(g);
  cudaGetLastError();  // the failed capture's error is not the next call's
}

bool StreamGraph::ready() const {
  return impl_->ready;
}

void StreamGraph::replay() {
  Impl& m = *impl_;
  TESSERA_ASSERT(m.ready, "replay of a CUDA graph that was not captured");
  if (m.emulated) {
    for (const simt::Recorded& work : m.recorded) {
      const std::string e = work();
      TESSERA_CHECK_IO(e.empty(), "a kernel of a CUDA graph on the emulator failed: " << e);
    }
    return;
  }
  const cudaError_t e = cudaGraphLaunch(m.exec, m.stream);
  TESSERA_CHECK_IO(e == cudaSuccess,
                   "CUDA graph launch on cuda:" << gpu_ << ": " << cudaGetErrorString(e));
}

}  // namespace tessera::cuda
