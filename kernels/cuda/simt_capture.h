// Stream capture on the CUDA emulator (a CUDA graph where there is no GPU): while a thread
// captures, the emulator's launches (kernels/cuda/simt_emulator.h) and the emulated GPU's copies
// are recorded instead of run; replaying the recording runs them again, with the arguments they
// had when recorded. No CUDA here: kernels/cuda/stream_graph.cpp includes it beside the runtime.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace tessera::simt {

// One recorded piece of work: "" or what went wrong when it ran.
using Recorded = std::function<std::string()>;

void begin_capture();                 // throws when this thread already captures
std::vector<Recorded> end_capture();  // what was recorded since begin_capture
bool capturing();                     // on this thread
void record(Recorded work);           // while capturing

}  // namespace tessera::simt
