// Decoding's two memory-bound loops, and the decoder's elementwise passes (RMSNorms, q/k norm + RoPE, the SwiGLU
// gate), for CPUs with AVX512-BF16 (see decoder_kernels.py for why and when).
//
// 1. gemv_bf16: the matrix-vector products.
// y[m, o] = sum_i x[m, i] * w[o, i] for bfloat16 x [M, I] and w [O, I] (nn.Linear's layout), float32 y [M, O].
// One decoding step multiplies a single token's vector by every decoder matrix: 2 bytes of weight are read per
// multiply-add, so the speed is the speed of streaming w from memory, and the loop below does nothing else.
// Each thread takes a contiguous band of rows and reads it front to back, `side_by_side` rows at a time (1 or 4):
// which streams memory faster depends on the CPU. On 2 cores of an Intel Xeon (AMX), 2026-12-02, over the 28
// layers' matrices and the LM head: one row at a time 15.1 GB/s, four side by side 21.1 GB/s (a plain sum over
// 1 GB: 17-18); on the 2-core AMD EPYC of the README, four side by side read 25 % slower than one (decoder_kernels.py
// picks by vendor).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "simd.h"

constexpr int64_t kLanes = 32;  // bfloat16 values in one 512-bit register

// <w, x> over I values (I a multiple of 32). Two independent sums, so each multiply-add need not wait for the
// one before it; vdpbf16ps adds two exact bf16 x bf16 products into each of its 16 float32 lanes (it reads
// denormal inputs as zero, far below anything a weight or activation holds).
static float dot(const uint16_t* w, const uint16_t* x, int64_t I) {
  __m512 even = _mm512_setzero_ps(), odd = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 2 * kLanes <= I; i += 2 * kLanes) {
    even = _mm512_dpbf16_ps(even, (__m512bh)_mm512_loadu_si512(w + i), (__m512bh)_mm512_loadu_si512(x + i));
    odd = _mm512_dpbf16_ps(odd, (__m512bh)_mm512_loadu_si512(w + i + kLanes),
                           (__m512bh)_mm512_loadu_si512(x + i + kLanes));
  }
  if (i < I) even = _mm512_dpbf16_ps(even, (__m512bh)_mm512_loadu_si512(w + i), (__m512bh)_mm512_loadu_si512(x + i));
  return _mm512_reduce_add_ps(_mm512_add_ps(even, odd));
}

// <w_r, x> for R rows w_r = w + r * I side by side: x is loaded once for all R, each row has its own sum.
// Each row also asks for the cache line 16 KB ahead of the one it reads, into L2 (`kAhead`): the CPU's own
// prefetchers stop at every 4 KB page, and a decoder row is one page (2,048 values) or three. All 28 layers'
// matrices and the LM head, one token's reads (3.44 GB), on 2 cores of an Intel Xeon with AMX (2026-12-04), medians
// of 20 interleaved: 113.3 ms against 126.3 without (30.4 against 27.3 GB/s); 4 KB ahead 117.8-119.9, 8 KB 117.6,
// 32 KB 115.0, 64 KB 115.9; 16 KB into L1 rather than L2 114.5. A prefetch past the end of w is only a hint: it never
// faults (the address is computed as an integer, not as a pointer past the tensor).
constexpr uintptr_t kAhead = 16384;  // bytes

template <int R>
static void dots(const uint16_t* w, const uint16_t* x, int64_t I, float* y) {
  __m512 sums[R];
  for (int r = 0; r < R; ++r) sums[r] = _mm512_setzero_ps();
  for (int64_t i = 0; i < I; i += kLanes) {
    const __m512bh xs = (__m512bh)_mm512_loadu_si512(x + i);
    for (int r = 0; r < R; ++r)
      _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(w + r * I + i) + kAhead), _MM_HINT_T1);
    for (int r = 0; r < R; ++r) sums[r] = _mm512_dpbf16_ps(sums[r], (__m512bh)_mm512_loadu_si512(w + r * I + i), xs);
  }
  for (int r = 0; r < R; ++r) y[r] = _mm512_reduce_add_ps(sums[r]);
}

torch::Tensor gemv_bf16(const torch::Tensor& x, const torch::Tensor& w, int64_t side_by_side) {
  TORCH_CHECK(x.dim() == 2 && w.dim() == 2 && x.size(1) == w.size(1), "gemv_bf16: x [M, I] and w [O, I] expected");
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 && w.scalar_type() == at::kBFloat16, "gemv_bf16: bfloat16 only");
  TORCH_CHECK(x.is_contiguous() && w.is_contiguous() && x.size(1) % kLanes == 0,
              "gemv_bf16: contiguous tensors with I a multiple of 32 expected");
  TORCH_CHECK(side_by_side == 1 || side_by_side == 4, "gemv_bf16: side_by_side is 1 or 4");
  const int64_t M = x.size(0), I = x.size(1), O = w.size(0), R = side_by_side;
  auto y = torch::empty({M, O}, x.options().dtype(at::kFloat));
  const auto* W = reinterpret_cast<const uint16_t*>(w.data_ptr());
  const auto* X = reinterpret_cast<const uint16_t*>(x.data_ptr());
  float* Y = y.data_ptr<float>();
  at::parallel_for(0, (O + R - 1) / R, 64 / R, [&](int64_t begin, int64_t end) {
    for (int64_t group = begin; group < end; ++group) {
      const int64_t o = group * R;
      for (int64_t m = 0; m < M; ++m) {  // for m > 0 the rows come from cache, not memory
        if (R == 4 && o + 4 <= O)
          dots<4>(W + o * I, X + m * I, I, Y + m * O + o);
        else
          for (int64_t r = o; r < std::min(o + R, O); ++r) Y[m * O + r] = dot(W + r * I, X + m * I, I);
      }
    }
  });
  return y;
}

// 16 bfloat16 values -> float32 (a bfloat16 is the top half of a float32).
static inline __m512 bf16_to_float(const uint16_t* p) {
  const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

// 2. attend_bf16: one new query per head against the KV cache, for a kv head shared by G query heads.
//
// out[b, h, g] = sum_j softmax_j(scale * <q[b, h, g], k[b, h, j]>) v[b, h, j] over the L cached positions.
// q [B, Hkv, G, D] (the G query heads of kv head h, as layers.attention lays them out); k, v [B, Hkv, L, D],
// views into the preallocated cache (rows of D contiguous values, any head and batch strides); no mask.
// The scores and the weighted sum are float32, rounded once to bfloat16 at the end.

// One row of scores -> its softmax, in place, float32: e = 2^((w - max) log2(e)) (simd.h), then e / sum.
static void softmax_in_place(float* w, int64_t L) {
  __m512 top = _mm512_set1_ps(-INFINITY);
  for (int64_t j = 0; j < L; j += 16) top = _mm512_max_ps(top, _mm512_mask_loadu_ps(top, first(L - j), w + j));
  const __m512 max = _mm512_set1_ps(_mm512_reduce_max_ps(top)), log2e = _mm512_set1_ps(1.44269504088896341f);
  __m512 total = _mm512_setzero_ps();
  for (int64_t j = 0; j < L; j += 16) {
    const __m512 e = exp2_float(_mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(first(L - j), w + j), max), log2e));
    total = _mm512_add_ps(total, _mm512_maskz_mov_ps(first(L - j), e));
    _mm512_mask_storeu_ps(w + j, first(L - j), e);
  }
  const __m512 sum = _mm512_set1_ps(_mm512_reduce_add_ps(total));
  for (int64_t j = 0; j < L; j += 16)
    _mm512_mask_storeu_ps(w + j, first(L - j), _mm512_div_ps(_mm512_maskz_loadu_ps(first(L - j), w + j), sum));
}

// out[g] = sum_j p[g][j] v_j for kRowsAtOnce (1 or 2) query heads g0.., in one pass over the values: each value
// row is converted to float32 once for both.
template <int kChunks, int kRowsAtOnce>
static void weighted_sum(const float* p, const uint16_t* values, int64_t L, uint16_t* out) {
  constexpr int64_t D = 16 * kChunks;
  __m512 sums[kRowsAtOnce][kChunks];
  for (int r = 0; r < kRowsAtOnce; ++r)
    for (int c = 0; c < kChunks; ++c) sums[r][c] = _mm512_setzero_ps();
  for (int64_t j = 0; j < L; ++j)
    for (int c = 0; c < kChunks; ++c) {
      const __m512 value = bf16_to_float(values + j * D + 16 * c);
      for (int r = 0; r < kRowsAtOnce; ++r) sums[r][c] = _mm512_fmadd_ps(_mm512_set1_ps(p[r * L + j]), value, sums[r][c]);
    }
  for (int r = 0; r < kRowsAtOnce; ++r)
    for (int c = 0; c < kChunks; ++c)  // round to nearest even, as torch's float -> bfloat16
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + r * D + 16 * c), (__m256i)_mm512_cvtneps_pbh(sums[r][c]));
}

// One (batch, kv head): q [G, D], keys and values [L, D]; `weights` is scratch for G x L floats.
template <int kChunks>  // D = 16 * kChunks: the weighted sum of D channels lives in kChunks registers per head
static void attend_head(const uint16_t* q, const uint16_t* keys, const uint16_t* values, int64_t G, int64_t L,
                        float scale, float* weights, uint16_t* out) {
  constexpr int64_t D = 16 * kChunks;
  for (int64_t j = 0; j < L; ++j)  // scores: one pass over the keys
    for (int64_t g = 0; g < G; ++g) weights[g * L + j] = scale * dot(keys + j * D, q + g * D, D);
  for (int64_t g = 0; g < G; ++g) softmax_in_place(weights + g * L, L);
  int64_t g = 0;
  for (; g + 2 <= G; g += 2) weighted_sum<kChunks, 2>(weights + g * L, values, L, out + g * D);
  if (g < G) weighted_sum<kChunks, 1>(weights + g * L, values, L, out + g * D);
}

torch::Tensor attend_bf16(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, double scale) {
  TORCH_CHECK(q.dim() == 4 && k.sizes() == v.sizes() && k.dim() == 4 && q.size(0) == k.size(0) &&
              q.size(1) == k.size(1) && q.size(3) == k.size(3), "attend_bf16: q [B, H, G, D], k = v [B, H, L, D]");
  TORCH_CHECK(q.scalar_type() == at::kBFloat16 && k.scalar_type() == at::kBFloat16 &&
              v.scalar_type() == at::kBFloat16, "attend_bf16: bfloat16 only");
  const int64_t B = q.size(0), H = q.size(1), G = q.size(2), D = q.size(3), L = k.size(2);
  TORCH_CHECK(q.is_contiguous() && (D == 32 || D == 64 || D == 128) && k.stride(3) == 1 && k.stride(2) == D &&
              v.stride(3) == 1 && v.stride(2) == D, "attend_bf16: contiguous rows of D = 32, 64 or 128 values expected");
  auto out = torch::empty_like(q);
  const auto* Q = reinterpret_cast<const uint16_t*>(q.data_ptr());
  const auto* K = reinterpret_cast<const uint16_t*>(k.data_ptr());
  const auto* V = reinterpret_cast<const uint16_t*>(v.data_ptr());
  auto* OUT = reinterpret_cast<uint16_t*>(out.data_ptr());
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> weights(G * L);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const uint16_t* keys = K + b * k.stride(0) + h * k.stride(1);
      const uint16_t* values = V + b * v.stride(0) + h * v.stride(1);
      const auto run = D == 128 ? attend_head<8> : D == 64 ? attend_head<4> : attend_head<2>;
      run(Q + bh * G * D, keys, values, G, L, float(scale), weights.data(), OUT + bh * G * D);
    }
  });
  return out;
}

// 3. rms_norm_bf16 and norm_rope_bf16: Qwen3's RMSNorm of each row (of the hidden states; of each head's q or k,
// then RoPE), in one pass.
//
// The same roundings as the plain ops (layers.rms_norm, rope.apply_rope), in the same order: n = bf16(x r) with
// r = 1 / sqrt(mean(x^2) + eps) in float32; y = bf16(n w); for RoPE out = bf16(y cos + rotate_half(y) sin), each
// product and the sum rounded to float32 (no fused multiply-add: CFLAGS has -ffp-contract=off). Only the order of
// the float32 sum of squares differs from PyTorch's.
static inline __m512 round_bf16(__m512 v) {  // float -> bf16 -> float
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(v)), 16));
}

// y = bf16(bf16(x r) w) for one row of D values (D a multiple of 16), as float32.
static void rms_norm_row(const uint16_t* x, const uint16_t* w, int64_t D, float eps, float* y) {
  __m512 squares = _mm512_setzero_ps();
  for (int64_t d = 0; d < D; d += 16) {
    const __m512 v = bf16_to_float(x + d);
    squares = _mm512_add_ps(squares, _mm512_mul_ps(v, v));
  }
  const __m512 r = _mm512_set1_ps(1.0f / std::sqrt(_mm512_reduce_add_ps(squares) / D + eps));
  for (int64_t d = 0; d < D; d += 16)
    _mm512_storeu_ps(y + d, round_bf16(_mm512_mul_ps(round_bf16(_mm512_mul_ps(bf16_to_float(x + d), r)),
                                                     bf16_to_float(w + d))));
}

// x [..., D] bfloat16 with contiguous rows (any row stride: `row_stride`), weight [D] bf16 -> [..., D] contiguous.
torch::Tensor rms_norm_bf16(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  TORCH_CHECK(x.dim() >= 1 && x.scalar_type() == at::kBFloat16 && x.stride(-1) == 1 && weight.is_contiguous() &&
              weight.scalar_type() == at::kBFloat16 && weight.numel() == x.size(-1) && x.size(-1) % 32 == 0,
              "rms_norm_bf16: x [..., D] bfloat16 with unit stride on D (a multiple of 32), weight [D]");
  const int64_t D = x.size(-1);
  const auto rows = x.reshape({-1, D});  // [rows, D], a view where the strides allow
  auto out = torch::empty(rows.sizes(), x.options());
  const auto* X = reinterpret_cast<const uint16_t*>(rows.data_ptr());
  const auto* W = reinterpret_cast<const uint16_t*>(weight.data_ptr());
  auto* OUT = reinterpret_cast<uint16_t*>(out.data_ptr());
  at::parallel_for(0, rows.size(0), 16, [&](int64_t begin, int64_t end) {
    std::vector<float> y(D);
    for (int64_t row = begin; row < end; ++row) {
      rms_norm_row(X + row * rows.stride(0), W, D, float(eps), y.data());
      for (int64_t d = 0; d < D; d += 16)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(OUT + row * D + d),
                            (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(&y[d])));
    }
  });
  return out.view(x.sizes());
}

// x [B, H, L, D] (any strides, unit stride on D), weight [D] bf16, cos, sin [B, 1, L, D] float32 contiguous;
// out [B, H, L, D] with x's [B, L, H, D] memory order, as PyTorch's.
torch::Tensor norm_rope_bf16(const torch::Tensor& x, const torch::Tensor& weight, double eps, const torch::Tensor& cos,
                             const torch::Tensor& sin) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kBFloat16 && x.stride(3) == 1 && weight.is_contiguous() &&
              weight.scalar_type() == at::kBFloat16 && weight.numel() == x.size(3) && x.size(3) % 32 == 0,
              "norm_rope_bf16: x [B, H, L, D] bfloat16 with unit stride on D (a multiple of 32), weight [D]");
  const int64_t B = x.size(0), H = x.size(1), L = x.size(2), D = x.size(3), half = D / 2;
  TORCH_CHECK(cos.is_contiguous() && sin.is_contiguous() && cos.scalar_type() == at::kFloat &&
              sin.scalar_type() == at::kFloat && cos.numel() == B * L * D && sin.numel() == B * L * D,
              "norm_rope_bf16: cos, sin [B, 1, L, D] float32 contiguous expected");
  auto out = torch::empty({B, L, H, D}, x.options());
  const auto* X = reinterpret_cast<const uint16_t*>(x.data_ptr());
  const auto* W = reinterpret_cast<const uint16_t*>(weight.data_ptr());
  const float* COS = cos.data_ptr<float>();
  const float* SIN = sin.data_ptr<float>();
  auto* OUT = reinterpret_cast<uint16_t*>(out.data_ptr());
  at::parallel_for(0, B * L * H, 64, [&](int64_t begin, int64_t end) {
    std::vector<float> y(D);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / (L * H), l = row / H % L, h = row % H;
      rms_norm_row(X + b * x.stride(0) + h * x.stride(1) + l * x.stride(2), W, D, float(eps), y.data());
      const float* c = COS + (b * L + l) * D;
      const float* s = SIN + (b * L + l) * D;
      uint16_t* o = OUT + row * D;
      for (int64_t d = 0; d < D; d += 16) {  // rotate_half: (-second half, first half)
        const __m512 turned = d < half ? _mm512_sub_ps(_mm512_setzero_ps(), _mm512_loadu_ps(&y[d + half]))
                                       : _mm512_loadu_ps(&y[d - half]);
        const __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(&y[d]), _mm512_loadu_ps(c + d)),
                                       _mm512_mul_ps(turned, _mm512_loadu_ps(s + d)));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + d), (__m256i)_mm512_cvtneps_pbh(v));
      }
    }
  });
  return out.transpose(1, 2);
}

// 4. silu_gate_bf16: the SwiGLU MLP's gate, silu(gate) * value, in one pass over [value; gate] rows.
//
// The plain ops' roundings: s = bf16(g / (1 + e^-g)) in float32, out = bf16(s v). e^-g = 2^(-g log2(e)) by
// simd.h (within 7.5e-8 relative; PyTorch's Sleef exp is within 1 ulp); it overflows to inf for g < -88 as
// std::exp does, giving -0 as PyTorch's.

// x [..., 2n] bfloat16 contiguous ([value; gate] along the last axis, n a multiple of 16) -> [..., n].
torch::Tensor silu_gate_bf16(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() >= 1 && x.scalar_type() == at::kBFloat16 && x.is_contiguous() && x.size(-1) % 32 == 0,
              "silu_gate_bf16: x [..., 2n] bfloat16 contiguous with n a multiple of 16 expected");
  const int64_t n = x.size(-1) / 2, rows = x.numel() / x.size(-1);
  auto sizes = x.sizes().vec();
  sizes.back() = n;
  auto out = torch::empty(sizes, x.options());
  const auto* X = reinterpret_cast<const uint16_t*>(x.data_ptr());
  auto* OUT = reinterpret_cast<uint16_t*>(out.data_ptr());
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const uint16_t* value = X + row * 2 * n;
      const uint16_t* gate = value + n;
      for (int64_t d = 0; d < n; d += 16) {
        const __m512 g = bf16_to_float(gate + d);
        const __m512 e = exp2_float(_mm512_mul_ps(g, _mm512_set1_ps(-1.44269504088896341f)));
        const __m512 silu = round_bf16(_mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0f), e)));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(OUT + row * n + d),
                            (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(silu, bf16_to_float(value + d))));
      }
    }
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("gemv_bf16", &gemv_bf16, "y = x w^T, bfloat16 in, float32 out, 1 or 4 weight rows at a time");
  m.def("attend_bf16", &attend_bf16, "one query per head against the KV cache, bfloat16");
  m.def("rms_norm_bf16", &rms_norm_bf16, "RMSNorm of each row, one pass, bfloat16");
  m.def("norm_rope_bf16", &norm_rope_bf16, "per-head RMSNorm then RoPE, one pass, bfloat16");
  m.def("silu_gate_bf16", &silu_gate_bf16, "silu(gate) * value of [value; gate] rows, one pass, bfloat16");
}
