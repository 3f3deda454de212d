// The KV pool's types and scales: an e4m3 pool keeps each layer's scales, other types take none
// (their scales are 1, and the ops refuse others for them), bad scales are refused.
#include <gtest/gtest.h>

#include <cmath>

#include "kernels/error.h"
#include "kernels/ops.h"
#include "runtime/kv_cache.h"

namespace tessera {
namespace {

KvPoolShape shape(DType dtype) {
  KvPoolShape s;
  s.layers = 2, s.kv_heads = 1, s.head_dim = 8, s.block_size = 4, s.dtype = dtype;
  return s;
}

TEST(KvPool, AnE4m3PoolKeepsItsLayersScalesAndOtherTypesTakeNone) {
  const std::vector<ops::KvScale> scales = {{0.5f, 2.0f}, {3.0f, 0.25f}};
  KvPool fp8(shape(DType::kE4M3), 3, scales);
  EXPECT_EQ(fp8.scale(1).key, 3.0f);
  EXPECT_EQ(fp8.scale(1).value, 0.25f);
  EXPECT_EQ(fp8.shape().bytes_per_block(), 2 * 2 * 4 * 8);  // one byte per element
  EXPECT_EQ(fp8.keys(0).dtype(), DType::kE4M3);
  for (const DType t : {DType::kF32, DType::kF16}) {
    const KvPool plain(shape(t), 3, scales);
    EXPECT_EQ(plain.scale(0).key, 1.0f) << dtype_name(t);
    EXPECT_EQ(plain.scale(1).value, 1.0f) << dtype_name(t);
  }
  EXPECT_EQ(KvPool(shape(DType::kE4M3), 3).scale(1).key, 1.0f);         // none given: 1
  EXPECT_THROW(KvPool(shape(DType::kE4M3), 3, {{1.0f, 1.0f}}), Error);  // one for two layers
  EXPECT_THROW(KvPool(shape(DType::kE4M3), 3, {{1.0f, 0.0f}, {1.0f, 1.0f}}), Error);
  EXPECT_THROW(KvPool(shape(DType::kE4M3), 3, {{NAN, 1.0f}, {1.0f, 1.0f}}), Error);
  EXPECT_THROW(KvPool(shape(DType::kBF16), 3), Error);  // not a CPU cache type
}

TEST(KvPool, OnlyAnE4m3CacheTakesScalesInTheOps) {
  KvPool pool(shape(DType::kF16), 2);
  const Tensor k = Tensor::zeros({1, 1, 8}, DType::kF32), v = k.clone();
  const Tensor slots = Tensor::from_i64({0}, {1});
  EXPECT_THROW(ops::store_kv(pool.keys(0), pool.values(0), k, v, slots, {2.0f, 1.0f}), Error);
  Tensor x = k.clone();
  EXPECT_THROW(ops::round_through(x, DType::kF16, 2.0f), Error);
  ops::store_kv(pool.keys(0), pool.values(0), k, v, slots, {});
  ops::round_through(x, DType::kE4M3, 2.0f);
}

}  // namespace
}  // namespace tessera
