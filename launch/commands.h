// The tessera subcommands. Each takes the arguments after its name and returns the exit code;
// errors are thrown (tessera::Error) and reported by main().
#pragma once

#include <string>
#include <vector>

namespace tessera::cli {

using Args = std::vector<std::string>;

int run_convert(const Args& args);
int run_inspect(const Args& args);
int run_generate(const Args& args);
int run_serve(const Args& args);
int run_doctor(const Args& args);
int run_tokenize(const Args& args);
int run_plan(const Args& args);
int run_bench(const Args& args);
int run_bench_gpu(const Args& args);
int run_perplexity(const Args& args);

}  // namespace tessera::cli
