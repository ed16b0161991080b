// Attention of many queries on CPU in bfloat16: the ViT's over each crop and the decoder's causal prefill (see
// cpu_attention.py for why), on Intel AMX tiles where the CPU has them, else on AVX512-BF16's dot products.
//
// out[b, i, h, :] = sum_j softmax_j(scale * <q_i, k_j>) v_j over the keys of kv head h / G (G query heads share
// one: grouped-query attention; G = 1 in the ViT), j over all L keys, or j <= i when causal. One task per
// (sequence, query head), taken by whichever thread is free. A task copies its keys and values into the layouts
// the products read (below; kept for the next query head of the same kv head), then goes down the queries 32 at a
// time:
//   1. scores S [32, keys] = Q Kᵀ: on AMX 2 x 2 accumulator tiles of 16 x 16 float32, head_dim in steps of 32;
//      on AVX-512 8 query rows x 32 keys in 16 registers, head_dim a channel pair at a time;
//   2. softmax of each row in float32 on AVX-512: e = 2^(c s - c max), c = scale log2(e), P = bf16(e), 1 / sum(e);
//   3. out [32, D] = P V (tiles, or 4 rows x up to 6 vectors of 16 channels in registers), each row times its
//      1 / sum, rounded once to bfloat16.
// Causal: the 32 queries from q0 on read keys 0..q0+31 only (step 1 and 3 stop there), and row i's softmax
// covers keys 0..i. All of it stays in the core's cache: a crop's keys and values are 0.2 MB, a 1,800-token
// prompt's 0.9 MB; S and P for 32 rows at most 0.35 MB.
//
// AMX in short: 8 tile registers of up to 16 rows x 64 bytes; `_tile_dpbf16ps(C, A, B)` adds A B to C for
// A = 16 rows x 32 bf16, C = 16 x 16 float32, and B = 32 x 16 bf16 stored as 16 rows of 16 (even, odd) pairs
// ("VNNI": B[k][n] and B[k+1][n] side by side). AVX512-BF16's `_mm512_dpbf16_ps(c, a, b)` is one row of that: it
// adds a[2n] b[2n] + a[2n+1] b[2n+1] to float32 lane n of c, so it reads the same pairs. So Kᵀ is stored as pairs
// of channels per key and V as pairs of keys per channel, each B tile's 16 rows one after the other (1 KB): a tile
// load then reads 16 consecutive cache lines rather than 16 lines a row of keys apart (one ViT pass of 5 crops'
// attention 0.9x the time, a prefill's 0.85x, with the softmax's instructions below; medians of 25 interleaved runs
// on 2 cores of an Intel Xeon with AMX, 2026-12-04), and an AVX-512 step reads one of those rows (16 keys' pair of
// channels, or one key pair's 16 channels) as one vector. Zero padding makes every size a whole number of tiles:
// keys to a multiple of 32 (their scores are masked out of the softmax, their P is 0), head_dim to a multiple of 32
// (zeros add nothing; the AVX-512 steps skip the padding's whole vectors).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include "simd.h"

constexpr int64_t kRows = 32;  // queries per step: two 16-row A tiles

// std::vector's memory on a cache-line boundary. A tile row is 64 bytes; one that straddles two lines costs two
// reads, and malloc's large blocks start 16 bytes past a line (its header). Measured on one core of an Intel Xeon
// with AMX (2026-12-04), a pass of 5 crops: Q Kᵀ 7.6 -> 5.4 ms, P V 8.2 -> 5.7 ms, 28.0 -> 23.3 ms in all.
template <class T>
struct LineAligned {
  using value_type = T;
  LineAligned() = default;
  template <class U> LineAligned(const LineAligned<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64))); }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t(64)); }
  template <class U> bool operator==(const LineAligned<U>&) const { return true; }
  template <class U> bool operator!=(const LineAligned<U>&) const { return false; }
};
template <class T> using Buffer = std::vector<T, LineAligned<T>>;

// Linux hands a process the AMX tile state only once asked (oneDNN asks too; asking twice is harmless).
static bool amx_permitted() {
  static const bool ok = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0;
  return ok;
}

// Every tile 16 rows x 64 bytes: the tile configuration is per thread and oneDNN may change it between tasks.
static void configure_tiles() {
  struct {
    uint8_t palette = 1, start_row = 0, reserved[14] = {};
    uint16_t colsb[16] = {};
    uint8_t rows[16] = {};
  } cfg;
  for (int t = 0; t < 8; ++t) cfg.colsb[t] = 64, cfg.rows[t] = 16;
  _tile_loadconfig(&cfg);
}

// A head's inputs in tile layouts, zero-padded; reused from task to task, and from call to call while L and D stay
// the same (each thread keeps its own, see attention_bf16). The padding is zeroed once, here: the loads write only
// the real keys and channels (the gathers' and masked loads' lanes past L or D write zeros, the same zeros).
struct Head {
  int64_t L, D, Lpad, Dpad;
  Buffer<uint16_t> q;   // [Lpad, Dpad]: rows of A tiles
  Buffer<uint32_t> kt;  // [Lpad / 16, Dpad / 2, 16]: B tiles of Kᵀ, (channel 2p, 2p+1) pairs (kt_at)
  Buffer<uint32_t> v;   // [Lpad / 32, Dpad / 16, 16, 16]: B tiles of V, (key 2j, 2j+1) pairs (v_at)
  Buffer<float> scores;  // [kRows, Lpad]
  Buffer<uint16_t> probs;  // [kRows, Lpad] bf16
  Buffer<float> out;     // [16, Dpad]

  Head(int64_t L, int64_t D)
      : L(L), D(D), Lpad((L + 31) / 32 * 32), Dpad((D + 31) / 32 * 32), q(Lpad * Dpad), kt(Dpad / 2 * Lpad),
        v(Lpad / 2 * Dpad), scores(kRows * Lpad), probs(kRows * Lpad), out(16 * Dpad) {}

  // The word of key j's channels (2p, 2p+1): B tiles of 16 keys x 16 pairs, key blocks outer, pairs inner.
  uint32_t* kt_at(int64_t j, int64_t p) { return &kt[((j / 16) * (Dpad / 2) + p) * 16 + j % 16]; }
  // The word of keys (j, j+1) (j even) at channel d: B tiles of 16 key pairs x 16 channels, key blocks outer.
  uint32_t* v_at(int64_t j, int64_t d) {
    return &v[((j / 32) * (Dpad / 16) + d / 16) * 256 + ((j / 2) % 16) * 16 + d % 16];
  }

  void load_queries(const uint16_t* Q, int64_t row_stride) {
    for (int64_t j = 0; j < L; ++j) std::memcpy(&q[j * Dpad], Q + j * row_stride, D * 2);
  }

  void load_keys_values(const uint16_t* K, const uint16_t* V, int64_t row_stride) {
    // Kᵀ: a key's (2p, 2p+1) channels are one 32-bit word of its row; gather that word of 16 keys at once.
    const __m512i key_offsets = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13,
                                                                     14, 15), _mm512_set1_epi32(row_stride * 2));
    for (int64_t j0 = 0; j0 < L; j0 += 16)
      for (int64_t p = 0; p < D / 2; ++p)
        _mm512_storeu_si512(kt_at(j0, p), _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), first(L - j0),
                                                                      key_offsets, K + j0 * row_stride + 2 * p, 1));
    if (D % 2)  // the last channel pairs with a zero
      for (int64_t j = 0; j < L; ++j) *kt_at(j, D / 2) = K[j * row_stride + D - 1];
    // V: keys 2j and 2j+1 interleaved channel by channel, 16 channels at a time.
    const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                                23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    for (int64_t j = 0; j < L; j += 2)
      for (int64_t d = 0; d < D; d += 16) {
        const __m256i even = _mm256_maskz_loadu_epi16(first(D - d), V + j * row_stride + d);
        const __m256i odd = j + 1 < L ? _mm256_maskz_loadu_epi16(first(D - d), V + (j + 1) * row_stride + d)
                                      : _mm256_setzero_si256();
        const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(even), odd, 1);
        _mm512_storeu_si512(v_at(j, d), _mm512_permutexvar_epi16(interleave, both));
      }
  }
};

// Step 1: scores of queries q0..q0+31 against keys 0..keys-1 (a multiple of 32).
static void score_rows(Head& h, int64_t q0, int64_t keys) {
  const int64_t Lpad = h.Lpad, Dpad = h.Dpad;
  for (int64_t j0 = 0; j0 < keys; j0 += 32) {
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    for (int64_t d0 = 0; d0 < Dpad; d0 += 32) {
      _tile_loadd(4, &h.q[q0 * Dpad + d0], Dpad * 2);
      _tile_loadd(5, &h.q[(q0 + 16) * Dpad + d0], Dpad * 2);
      _tile_loadd(6, h.kt_at(j0, d0 / 2), 64);
      _tile_loadd(7, h.kt_at(j0 + 16, d0 / 2), 64);
      _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7); _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, &h.scores[j0], Lpad * 4);
    _tile_stored(1, &h.scores[j0 + 16], Lpad * 4);
    _tile_stored(2, &h.scores[16 * Lpad + j0], Lpad * 4);
    _tile_stored(3, &h.scores[16 * Lpad + j0 + 16], Lpad * 4);
  }
}

// One 32-bit word (a pair of bf16) in all 16 lanes: an A operand of `_mm512_dpbf16_ps`.
static inline __m512bh broadcast_pair(const uint16_t* pair) {
  int32_t word;
  std::memcpy(&word, pair, 4);
  return (__m512bh)_mm512_set1_epi32(word);
}

// Step 1 without tiles: the same scores, 8 query rows x 32 keys at a time in 16 float32 registers, a channel pair
// per step (two vectors of Kᵀ, each met by 8 broadcast query pairs), over the channels that hold values only.
static void score_rows_avx512(Head& h, int64_t q0, int64_t keys) {
  const int64_t Lpad = h.Lpad, Dpad = h.Dpad, pairs = (h.D + 1) / 2;
  for (int64_t r0 = 0; r0 < kRows; r0 += 8)
    for (int64_t j0 = 0; j0 < keys; j0 += 32) {
      __m512 acc[8][2];
      for (auto& row : acc) row[0] = row[1] = _mm512_setzero_ps();
      const uint16_t* rows = &h.q[(q0 + r0) * Dpad];
      for (int64_t p = 0; p < pairs; ++p) {
        const __m512bh k0 = (__m512bh)_mm512_loadu_si512(h.kt_at(j0, p));
        const __m512bh k1 = (__m512bh)_mm512_loadu_si512(h.kt_at(j0 + 16, p));
        for (int r = 0; r < 8; ++r) {
          const __m512bh a = broadcast_pair(rows + r * Dpad + 2 * p);
          acc[r][0] = _mm512_dpbf16_ps(acc[r][0], a, k0);
          acc[r][1] = _mm512_dpbf16_ps(acc[r][1], a, k1);
        }
      }
      for (int r = 0; r < 8; ++r) {
        _mm512_storeu_ps(&h.scores[(r0 + r) * Lpad + j0], acc[r][0]);
        _mm512_storeu_ps(&h.scores[(r0 + r) * Lpad + j0 + 16], acc[r][1]);
      }
    }
}

// Step 2: one row's softmax numerators over its first n scores as bf16 (0 for the rest of the `keys` that step 3
// reads) and 1 / their float32 sum. Counted in instructions, as it is the kernel's one part off the tiles: the max
// in four running maxima (one would be a chain of dependent instructions), the numerators two vectors at a time
// (one instruction rounds both to bf16), summed one after the other, in the order of the keys. As the numerators
// are rounded to bf16, simd.h's exp2_for_bf16 computes them (1 / their sum inherits its relative error of at most
// 7.5e-5): one ViT block's attention over 13 crops 30.7 -> 29.4 ms against exp2_float (medians of 31), a prefill
// layer's 8.6 -> 8.3 ms (medians of 21; interleaved, 2 cores of an Intel Xeon with AMX, 2026-12-04), the largest
// error against float32 attention unchanged (16 % of the outputs one bfloat16 step apart).
static float softmax_row(const float* s, uint16_t* p, int64_t n, int64_t keys, float scale) {
  __m512 top[4];
  for (__m512& t : top) t = _mm512_set1_ps(-INFINITY);
  for (int64_t j = 0; j < n; j += 64)
    for (int64_t t = 0; t < 4; ++t)
      top[t] = _mm512_max_ps(top[t], _mm512_mask_loadu_ps(top[t], first(n - j - 16 * t), s + j + 16 * t));
  const __m512 row_max = _mm512_max_ps(_mm512_max_ps(top[0], top[1]), _mm512_max_ps(top[2], top[3]));
  const float c = scale * 1.44269504088896341f;  // e^(scale x) = 2^(c x)
  const __m512 cv = _mm512_set1_ps(c), c_max = _mm512_set1_ps(c * _mm512_reduce_max_ps(row_max));
  __m512 total = _mm512_setzero_ps();
  int64_t j = 0;
  for (; j + 32 <= n; j += 32) {
    const __m512 e0 = exp2_for_bf16(_mm512_fmsub_ps(_mm512_loadu_ps(s + j), cv, c_max));
    const __m512 e1 = exp2_for_bf16(_mm512_fmsub_ps(_mm512_loadu_ps(s + j + 16), cv, c_max));
    total = _mm512_add_ps(_mm512_add_ps(total, e0), e1);
    _mm512_storeu_si512(p + j, (__m512i)_mm512_cvtne2ps_pbh(e1, e0));
  }
  for (; j < keys; j += 16) {  // the rest: the last scores, then the numerators of keys past n are 0
    const __m512 e = _mm512_maskz_mov_ps(first(n - j), exp2_for_bf16(_mm512_fmsub_ps(_mm512_loadu_ps(s + j), cv,
                                                                                        c_max)));
    total = _mm512_add_ps(total, e);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + j), (__m256i)_mm512_cvtneps_pbh(e));
  }
  return 1.0f / _mm512_reduce_add_ps(total);
}

// Step 3 for 16 rows of P over keys 0..keys-1: out [16, Dpad] float32, in passes of up to 6 accumulator tiles
// (A = tile 6, B = 7).
template <int N>
static void values_pass(Head& h, const uint16_t* P, int64_t keys, int64_t c0) {
  const int64_t Lpad = h.Lpad, Dpad = h.Dpad;
  if constexpr (N > 0) _tile_zero(0);
  if constexpr (N > 1) _tile_zero(1);
  if constexpr (N > 2) _tile_zero(2);
  if constexpr (N > 3) _tile_zero(3);
  if constexpr (N > 4) _tile_zero(4);
  if constexpr (N > 5) _tile_zero(5);
  for (int64_t j0 = 0; j0 < keys; j0 += 32) {
    _tile_loadd(6, P + j0, Lpad * 2);
    const uint32_t* b = h.v_at(j0, c0);  // the next column tiles follow at 256 words
    if constexpr (N > 0) { _tile_loadd(7, b, 64); _tile_dpbf16ps(0, 6, 7); }
    if constexpr (N > 1) { _tile_loadd(7, b + 256, 64); _tile_dpbf16ps(1, 6, 7); }
    if constexpr (N > 2) { _tile_loadd(7, b + 512, 64); _tile_dpbf16ps(2, 6, 7); }
    if constexpr (N > 3) { _tile_loadd(7, b + 768, 64); _tile_dpbf16ps(3, 6, 7); }
    if constexpr (N > 4) { _tile_loadd(7, b + 1024, 64); _tile_dpbf16ps(4, 6, 7); }
    if constexpr (N > 5) { _tile_loadd(7, b + 1280, 64); _tile_dpbf16ps(5, 6, 7); }
  }
  float* o = h.out.data() + c0;
  if constexpr (N > 0) _tile_stored(0, o, Dpad * 4);
  if constexpr (N > 1) _tile_stored(1, o + 16, Dpad * 4);
  if constexpr (N > 2) _tile_stored(2, o + 32, Dpad * 4);
  if constexpr (N > 3) _tile_stored(3, o + 48, Dpad * 4);
  if constexpr (N > 4) _tile_stored(4, o + 64, Dpad * 4);
  if constexpr (N > 5) _tile_stored(5, o + 80, Dpad * 4);
}

// Only the tiles of output columns that hold channels: head_dim 72 takes 5 of Dpad's 6.
static void weighted_values(Head& h, const uint16_t* P, int64_t keys) {
  const int64_t tiles = (h.D + 15) / 16;
  for (int64_t t0 = 0; t0 < tiles; t0 += 6) {  // passes of up to 6 tiles
    switch (std::min<int64_t>(6, tiles - t0)) {
      case 6: values_pass<6>(h, P, keys, 16 * t0); break;
      case 5: values_pass<5>(h, P, keys, 16 * t0); break;
      case 4: values_pass<4>(h, P, keys, 16 * t0); break;
      case 3: values_pass<3>(h, P, keys, 16 * t0); break;
      case 2: values_pass<2>(h, P, keys, 16 * t0); break;
      default: values_pass<1>(h, P, keys, 16 * t0);
    }
  }
}

// Step 3 without tiles for 4 rows of P (from row r0 of the 16 at P) and C vectors of output channels from c0:
// 4 x C float32 registers, a key pair per step (C vectors of V, each met by 4 broadcast pairs of P).
template <int C>
static void values_rows_avx512(Head& h, const uint16_t* P, int64_t keys, int64_t c0, int64_t r0) {
  __m512 acc[4][C];
  for (auto& row : acc)
    for (auto& a : row) a = _mm512_setzero_ps();
  for (int64_t j = 0; j < keys; j += 2) {
    const uint32_t* b = h.v_at(j, c0);  // the next vectors of channels follow at 256 words
    __m512bh values[C];
    for (int c = 0; c < C; ++c) values[c] = (__m512bh)_mm512_loadu_si512(b + 256 * c);
    for (int r = 0; r < 4; ++r) {
      const __m512bh a = broadcast_pair(P + (r0 + r) * h.Lpad + j);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], a, values[c]);
    }
  }
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < C; ++c) _mm512_storeu_ps(&h.out[(r0 + r) * h.Dpad + c0 + 16 * c], acc[r][c]);
}

// Step 3 without tiles, 16 rows of P (`rows` of them real) into out [16, Dpad]: the vectors of channels that hold
// values in equal passes of up to 6 (head_dim 72: one pass of 5; 128: two of 4).
static void weighted_values_avx512(Head& h, const uint16_t* P, int64_t keys, int64_t rows) {
  const int64_t vectors = (h.D + 15) / 16, passes = (vectors + 5) / 6, per_pass = (vectors + passes - 1) / passes;
  for (int64_t r0 = 0; r0 < rows; r0 += 4)
    for (int64_t t0 = 0; t0 < vectors; t0 += per_pass) {
      switch (std::min(per_pass, vectors - t0)) {
        case 6: values_rows_avx512<6>(h, P, keys, 16 * t0, r0); break;
        case 5: values_rows_avx512<5>(h, P, keys, 16 * t0, r0); break;
        case 4: values_rows_avx512<4>(h, P, keys, 16 * t0, r0); break;
        case 3: values_rows_avx512<3>(h, P, keys, 16 * t0, r0); break;
        case 2: values_rows_avx512<2>(h, P, keys, 16 * t0, r0); break;
        default: values_rows_avx512<1>(h, P, keys, 16 * t0, r0);
      }
    }
}

static void attend_head(Head& h, float scale, bool causal, bool tiles, uint16_t* out, int64_t out_row_stride) {
  if (tiles) configure_tiles();
  for (int64_t q0 = 0; q0 < h.L; q0 += kRows) {
    const int64_t keys = causal ? std::min(h.Lpad, q0 + kRows) : h.Lpad;  // the keys these 32 queries may see
    if (tiles) score_rows(h, q0, keys);
    else score_rows_avx512(h, q0, keys);
    float inv_sum[kRows];
    // Rows past L (zero queries) are left as they are: a row of P V depends on its own row of P alone, and
    // those rows are never written out.
    for (int64_t r = 0; r < std::min(kRows, h.L - q0); ++r)
      inv_sum[r] = softmax_row(&h.scores[r * h.Lpad], &h.probs[r * h.Lpad], causal ? q0 + r + 1 : h.L, keys, scale);
    for (int64_t r0 = 0; r0 < kRows && q0 + r0 < h.L; r0 += 16) {
      if (tiles) weighted_values(h, &h.probs[r0 * h.Lpad], keys);
      else weighted_values_avx512(h, &h.probs[r0 * h.Lpad], keys, std::min<int64_t>(16, h.L - q0 - r0));
      for (int64_t r = 0; r < 16 && q0 + r0 + r < h.L; ++r) {
        const __m512 inv = _mm512_set1_ps(inv_sum[r0 + r]);
        uint16_t* o = out + (q0 + r0 + r) * out_row_stride;
        for (int64_t d = 0; d < h.D; d += 16) {
          const __m256bh y = _mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_loadu_ps(&h.out[r * h.Dpad + d]), inv));
          _mm256_mask_storeu_epi16(o + d, first(h.D - d), (__m256i)y);
        }
      }
    }
  }
}

// q [B, Hq, L, D], k and v [B, Hkv, L, D] bfloat16 (Hq a multiple of Hkv), unit stride along D, k and v with the
// same strides (q may have its own). Returns out [B, L, Hq, D]: the heads already side by side, as the out
// projection reads them. `tiles`: on AMX (the caller checks amx_permitted), else AVX512-BF16 alone.
torch::Tensor attention_bf16(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, double scale,
                             bool causal, bool tiles) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && k.sizes() == v.sizes() && q.size(0) == k.size(0) &&
              q.size(2) == k.size(2) && q.size(3) == k.size(3) && k.size(1) > 0 && q.size(1) % k.size(1) == 0,
              "attention_bf16: q [B, Hq, L, D] and k, v [B, Hkv, L, D] with Hq a multiple of Hkv expected");
  TORCH_CHECK(q.scalar_type() == at::kBFloat16 && k.scalar_type() == at::kBFloat16 &&
              v.scalar_type() == at::kBFloat16, "attention_bf16: bfloat16 only");
  TORCH_CHECK(k.strides() == v.strides() && q.stride(3) == 1 && k.stride(3) == 1,
              "attention_bf16: unit stride along D and k, v with the same strides expected");
  TORCH_CHECK(!tiles || amx_permitted(), "attention_bf16: the kernel did not get the AMX tile state");
  TORCH_CHECK(k.stride(2) < (int64_t{1} << 26), "attention_bf16: key rows too far apart for 32-bit gathers");
  const int64_t B = q.size(0), H = q.size(1), G = H / k.size(1), L = q.size(2), D = q.size(3);
  auto out = torch::empty({B, L, H, D}, q.options());
  const auto* Q = reinterpret_cast<const uint16_t*>(q.data_ptr());
  const auto* K = reinterpret_cast<const uint16_t*>(k.data_ptr());
  const auto* V = reinterpret_cast<const uint16_t*>(v.data_ptr());
  auto* O = reinterpret_cast<uint16_t*>(out.data_ptr());
  // Tasks are handed out one at a time, not in equal shares fixed in advance: a VM's cores may run the tiles at
  // different speeds (measured 1.0 and 2.3 TFLOP/s on the two vCPUs of one VM), and the faster one should not wait.
  // One ViT block's attention [13, 16, 729, 72] on that VM: 98 ms against 120 in equal shares (medians of 15).
  std::atomic<int64_t> next_task{0};
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    // The buffers outlive the call (1.7 MB a thread for a 1,774-token prompt): allocating and zeroing them anew
    // each time took 6 % of a ViT pass's attention and 7 % of a prefill layer's (medians of 25, same VM).
    thread_local std::unique_ptr<Head> kept;
    if (!kept || kept->L != L || kept->D != D) kept = std::make_unique<Head>(L, D);
    Head& head = *kept;
    int64_t loaded = -1;  // the (sequence, kv head) whose keys and values the buffers hold
    for (int64_t task; (task = next_task.fetch_add(1)) < B * H;) {
      const int64_t b = task / H, h = task % H, kv = b * k.size(1) + h / G;
      if (kv != loaded) {
        const int64_t offset = b * k.stride(0) + (h / G) * k.stride(1);
        head.load_keys_values(K + offset, V + offset, k.stride(2));
        loaded = kv;
      }
      head.load_queries(Q + b * q.stride(0) + h * q.stride(1), q.stride(2));
      attend_head(head, static_cast<float>(scale), causal, tiles, O + (b * L * H + h) * D, H * D);
    }
    if (tiles) _tile_release();
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("attention_bf16", &attention_bf16, "attention of many queries, bfloat16, full or causal, on AMX tiles or AVX512-BF16");
  m.def("amx_permitted", &amx_permitted, "whether Linux gave this process the AMX tile state");
}
