// What crosses ranks between the model's groups (--comm-dtype): the tensor-parallel all-reduce's
// partial sums and the hidden states passed between pipeline stages.
//   f32:  as computed, exact (a bf16 model's hidden states go as bf16; its sums are taken in f32)
//   bf16: 2 bytes a value, each rounded to the nearest bf16
//   q8:   blocks of 32 values: the block's largest magnitude in bf16 with its index, the other 31
//         as int8 times an f16 scale: 37 bytes per 32 values, 0.29 of f32's bytes; a tail of
//         fewer than 32 values is padded with zeros. (The default model's residual stream has a
//         few channels of 100 to 22,500 among values near 3: scaled with its block, such a value
//         leaves its 31 neighbours 1 or 2 bits. As plain int8 blocks (GGML's Q8_0) the model's
//         top-1 agreement with f32 was 96.8-96.9% over 2048 positions under TP=3 and TP=3 x
//         PP=2; with the largest kept aside, 99.3-99.4%: README, "What crosses the wire".)
// A compressed all-reduce gathers every rank's encoded partial sum, and each rank decodes them and
// sums in float32, in rank order: one rounding per partial sum, and every rank the same result.
// Embedding lookups, logits and everything else a step sends stay exact.
#pragma once

#include <cstdint>
#include <string_view>

#include "parallel/communicator.h"

namespace tessera {

enum class WireFormat : uint8_t { kF32, kBF16, kQ8 };

// "f32", "bf16", "q8"; from_name throws naming the choices.
std::string_view wire_format_name(WireFormat format);
WireFormat wire_format_from_name(std::string_view name);

// Bytes of n float values in the format (q8: whole blocks).
int64_t wire_bytes(WireFormat format, int64_t n);
// dst[0, wire_bytes(format, n)) = src[0, n) encoded.
void wire_encode(WireFormat format, const float* src, int64_t n, uint8_t* dst);
// dst[0, n) = (or, with accumulate, +=) the n values encoded at src.
void wire_decode(WireFormat format, const uint8_t* src, int64_t n, float* dst, bool accumulate);

// t = the sum over c's ranks of t (f32 or bf16, on any device), what crosses ranks in `format`.
// Collective over c.
void all_reduce_sum(Communicator& c, Tensor& t, WireFormat format);
// Point to point: t to dst, and its counterpart from src (shape and dtype known to the receiver).
void send_in(WireFormat format, Communicator& c, const Tensor& t, int dst, int tag);
void recv_in(WireFormat format, Communicator& c, Tensor& t, int src, int tag);

}  // namespace tessera
