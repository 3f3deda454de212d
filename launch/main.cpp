// tessera: the command-line entry point. Only here is MPI initialised, and only here are errors
// turned into one clear line (naming the rank when there are several) and MPI_Abort.
#include <mpi.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>

#include "kernels/error.h"
#include "launch/commands.h"
#include "launch/job_failure.h"
#include "parallel/mpi_communicator.h"

namespace {

constexpr const char* kUsage = R"(tessera: distributed LLM inference

Usage: tessera COMMAND [options]      (tessera COMMAND --help for each command's options)

Commands:
  generate   generate text from a prompt (--prompt) or a JSONL file of requests (--input)
  serve      an OpenAI-compatible HTTP endpoint on rank 0 (/v1/completions, /v1/chat/completions)
  doctor     under mpirun or srun: can every rank run this model and layout? (hosts, devices,
             the model file, free memory, each group's all-reduce latency and bandwidth)
  perplexity how well a model predicts a text (teacher forcing), on any layout
  bench      a fixed workload with continuous and with static batching: throughput, TTFT, KV use
  bench-gpu  one GPU's copy bandwidth and GEMM rate, and decode and prefill of a random model
             of a published shape against them
  convert    turn a GGUF file or a Hugging Face checkpoint folder into a tessera model file
  inspect    print a model file's configuration and tensor table
  tokenize   print the token ids of a text (or of each line of a JSONL file of strings)
  plan       which tp x pp x dp layouts fit a model on a cluster, and the one to use

Example:
  tessera convert --input SmolLM2-135M-Instruct.Q4_1.gguf --output smollm2.h5
  tessera generate --model smollm2.h5 --chat --prompt "What is the capital of France?"
)";

[[noreturn]] void fail(const std::string& message) {
  tessera::cli::end_job_with_error(message);
}

// SPMD: every rank must run the same command line, or ranks would disagree about what to do
// and wait on each other forever. Rank 0's arguments are the reference.
void check_same_arguments(int argc, char** argv) {
  int size = 1, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (size == 1) return;
  std::string mine;
  for (int i = 1; i < argc; ++i) mine += std::string(argv[i]) + '\0';
  std::string reference = mine;
  long long n = static_cast<long long>(reference.size());
  MPI_Bcast(&n, 1, MPI_LONG_LONG, 0, MPI_COMM_WORLD);
  reference.resize(static_cast<size_t>(n));
  MPI_Bcast(reference.data(), int(n), MPI_CHAR, 0, MPI_COMM_WORLD);
  int differs = reference != mine, any = 0;
  MPI_Allreduce(&differs, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (differs)
    fail(
        "this rank was started with other arguments than rank 0 (every rank must run "
        "the same command)");
  if (any) {  // wait for the differing rank's message and abort, instead of going on
    MPI_Barrier(MPI_COMM_WORLD);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") ||
      !std::strcmp(argv[1], "help")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  tessera::cli::Args args(argv + 2, argv + argc);
  // Commands that run a model are SPMD programs: every rank runs them. The others are local tools.
  const bool needs_mpi = command == "generate" || command == "bench" || command == "serve" ||
                         command == "doctor" || command == "perplexity";
  if (needs_mpi) {
    // serve's connection threads never call MPI: only the main thread does.
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    if (provided < MPI_THREAD_FUNNELED)
      fail("this MPI library cannot run with threads that do not call MPI (MPI_THREAD_FUNNELED)");
    check_same_arguments(argc, argv);
    tessera::MpiCommunicator::gather_hosts();  // (so that a stuck step can name its peers' hosts)
    tessera::cli::remember_world();
  }
  int code = 0;
  try {
    if (command == "generate") {
      code = tessera::cli::run_generate(args);
    } else if (command == "perplexity") {
      code = tessera::cli::run_perplexity(args);
    } else if (command == "doctor") {
      code = tessera::cli::run_doctor(args);
    } else if (command == "serve") {
      code = tessera::cli::run_serve(args);
    } else if (command == "bench") {
      code = tessera::cli::run_bench(args);
    } else if (command == "bench-gpu") {
      code = tessera::cli::run_bench_gpu(args);
    } else if (command == "convert") {
      code = tessera::cli::run_convert(args);
    } else if (command == "inspect") {
      code = tessera::cli::run_inspect(args);
    } else if (command == "tokenize") {
      code = tessera::cli::run_tokenize(args);
    } else if (command == "plan") {
      code = tessera::cli::run_plan(args);
    } else {
      fail("unknown command '" + command + "' (try tessera --help)");
    }
  } catch (const tessera::Error& e) {
    fail(e.what());
  } catch (const std::exception& e) {
    fail(std::string("unexpected failure: ") + e.what());
  }
  if (needs_mpi) MPI_Finalize();
  return code;
}
