// What the ranks did during an engine run, reported by rank 0: the busy share of each pipeline
// stage (computing steps, against the run's wall time) and, on request, a timeline of every
// rank's steps in the Chrome trace format (chrome://tracing, ui.perfetto.dev).
#pragma once

#include <string>

#include "parallel/process_groups.h"
#include "runtime/engine.h"

namespace tessera::cli {

// Collective over the world. Prints one line on rank 0; writes trace_path when not empty.
void report_engine(ProcessGroups& groups, const EngineStats& stats, const std::string& trace_path);

// On the leader, with interval_seconds > 0: a line on stderr about that often while the engine
// runs (running and waiting requests, KV blocks, prefix hits, preemptions, tokens/s since the
// last line), like vLLM's periodic stats.
void report_progress(Engine& engine, double interval_seconds);

}  // namespace tessera::cli
