// A CUDA graph of one GPU's compute stream (kernels/cuda/cuda_memory.h): the kernels, cuBLAS
// calls, device-to-device copies and NCCL collectives queued between begin_capture() and
// end_capture() are recorded, not run; replay() queues them all again at the cost of one launch,
// reading and writing the same memory (the tensors made while capturing are held: see
// KeepAllocations in kernels/tensor.h). Nothing captured may touch host memory, so a step's
// inputs are copied into the graph's buffers before replay() and its outputs out after.
// On an emulated GPU the CUDA emulator records and replays instead. No CUDA types here.
#pragma once

#include <memory>
#include <vector>

#include "kernels/tensor.h"

namespace tessera::cuda {

class StreamGraph {
 public:
  explicit StreamGraph(int gpu);
  ~StreamGraph();
  StreamGraph(const StreamGraph&) = delete;
  StreamGraph& operator=(const StreamGraph&) = delete;

  // Work queued on the GPU's stream by this thread is recorded from now on (throws if the GPU's
  // stream is already being captured).
  void begin_capture();
  // Stops recording and makes the graph replayable; on failure (something in the capture the
  // stream could not record) throws, naming it, and the graph stays empty.
  void end_capture();
  // Gives up a capture that went wrong part way (after an exception), so the stream works again.
  void abandon_capture() noexcept;
  bool ready() const;
  // Queues the recorded work on the GPU's stream (in order with what is already there).
  void replay();
  int gpu() const { return gpu_; }

 private:
  struct Impl;
  int gpu_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera::cuda
