// Fused CPU kernel for X-CLIP's Attention Over Similarity Matrix (AOSM) reductions, no autograd.
//
// Built at first use by xclip_pl.model.cpu_kernel (torch.utils.cpp_extension, -O3 -march=native).
// The maths is MultiGrainedSimilarity's (similarity.py): for scores x_i along one axis,
//     aosm(x) = sum_i softmax(x)_i (M x)_i = sum_j x_j (sum_i e_i M_ij) / sum_i e_i,  e_i = exp(x_i - max x)
// with masked positions out of the softmax and the sum, all in fp32. Instead of ~20 passes over the
// [a, w, f, b] frame-word scores, one pass keeps a [w, f] tile of 16 videos in registers / L1 and
// computes both level-1 reductions (over frames per word, over words per frame) and both level-2
// reductions from it. Lanes of the GCC vector type are 16 consecutive videos.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

namespace {

constexpr int kLanes = 16;  // videos per vector
typedef float vf __attribute__((vector_size(kLanes * 4)));
typedef int32_t vi __attribute__((vector_size(kLanes * 4)));
typedef uint32_t vu __attribute__((vector_size(kLanes * 4)));
typedef uint16_t vh __attribute__((vector_size(kLanes * 2)));

inline vf splat(float x) { return vf{} + x; }
inline vf vmax(vf a, vf b) { return a > b ? a : b; }
inline vf select(vi cond, vf a, vf b) { return cond ? a : b; }

// p * 2^n for integral n in [-126, 127]
inline vf scale_pow2(vf p, vf n) {
#if defined(__AVX512F__)
  static_assert(sizeof(vf) == sizeof(__m512), "16 float lanes");
  __m512 pm, nm;
  std::memcpy(&pm, &p, sizeof(pm));
  std::memcpy(&nm, &n, sizeof(nm));
  const __m512 r = _mm512_scalef_ps(pm, nm);
  vf out;
  std::memcpy(&out, &r, sizeof(out));
  return out;
#else
  const vi bits = (__builtin_convertvector(n, vi) + 127) << 23;
  vf scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
#endif
}

// exp(x) for x <= 0 (softmax arguments). Arguments below -87 (weights < 1.6e-38 of the maximum) give
// exp(-87), never a denormal. kHalf: for scores rounded to bf16/fp16 (relative error 4e-3 / 5e-4, i.e.
// exponent errors of ~1e-2 at 1/tau = 100), a degree-4 polynomial (relative error < 5e-5); otherwise
// Cody-Waite reduction and degree 6 (~2 ulp).
template <bool kHalf>
inline vf vexp(vf x) {
  x = vmax(x, splat(-87.0f));
  const vf n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x / ln 2)
  vf p;
  if (kHalf) {
    const vf r = x - n * 0.693147180559945f;
    p = splat(4.1666666666e-2f);
    p = p * r + 1.6666666666e-1f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
  } else {
    vf r = x - n * 0.693145751953125f;
    r = r - n * 1.428606765330187045e-06f;
    p = splat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
  }
  return scale_pow2(p, n);
}

inline bool any_lane(vi mask) {  // any lane set (OR of the 64 bytes)
  uint64_t words[sizeof(vi) / 8];
  std::memcpy(words, &mask, sizeof(words));
  uint64_t acc = 0;
  for (uint64_t w : words) acc |= w;
  return acc != 0;
}

template <typename T>
inline vf load(const T* p, int64_t count) {  // count < kLanes: the rest is zero
  float tmp[kLanes] = {};
  for (int64_t k = 0; k < count; ++k) tmp[k] = static_cast<float>(p[k]);
  vf v;
  std::memcpy(&v, tmp, sizeof(v));
  return v;
}
template <>
inline vf load<float>(const float* p, int64_t count) {
  vf v = splat(0.f);
  if (count == kLanes) std::memcpy(&v, p, sizeof(v));  // fixed size: one vector load
  else std::memcpy(&v, p, count * sizeof(float));
  return v;
}
template <>
inline vf load<at::BFloat16>(const at::BFloat16* p, int64_t count) {
  vh h = vh{} + 0;
  if (count == kLanes) std::memcpy(&h, p, sizeof(h));
  else std::memcpy(&h, p, count * sizeof(uint16_t));
  const vu u = __builtin_convertvector(h, vu) << 16;  // bf16 -> fp32 is a 16-bit shift
  vf v;
  std::memcpy(&v, &u, sizeof(v));
  return v;
}

inline void store(float* p, vf v, int64_t count) {
  if (count == kLanes) std::memcpy(p, &v, sizeof(v));
  else std::memcpy(p, &v, count * sizeof(float));
}

// Masks: keep[i] is all-ones lanes (-1) where position i takes part, 0 where it is masked.
struct Axis {
  const vf* x;      // n vectors, x[i * stride]
  int64_t n, stride;
  const vi* keep;   // n vectors or nullptr (every position kept)
};

// Adds sum_{c < C} x_{j0+c} q_{j0+c} to num, with q = e^T M for C columns of M kept in registers.
template <int C>
inline void mix_columns(const Axis& ax, const vf* e, int64_t es, const float* mix, int64_t j0, vf& num) {
  vf q[C];
  for (int c = 0; c < C; ++c) q[c] = splat(0.f);
  for (int64_t i = 0; i < ax.n; ++i) {
    const vf ei = e[i * es];
    const float* row = mix + i * ax.n + j0;
    for (int c = 0; c < C; ++c) q[c] += ei * row[c];
  }
  for (int c = 0; c < C; ++c) {  // masked scores are 0 in the mixed scores M x
    const vf xj = ax.x[(j0 + c) * ax.stride];
    num += q[c] * (ax.keep ? select(ax.keep[j0 + c], xj, splat(0.f)) : xj);
  }
}

// sum_i e_i (M x)_i / z for weights e[i * es] (0 at masked positions) and z = sum_i e_i; mix: [n, n]
// row-major fp32, or nullptr for the identity. Lanes with z = 0 give 0.
inline vf weighted(const Axis& ax, const vf* e, int64_t es, vf z, const float* mix) {
  vf num = splat(0.f);
  if (mix == nullptr) {
    for (int64_t i = 0; i < ax.n; ++i) num += e[i * es] * ax.x[i * ax.stride];
  } else {  // sum_j x_j q_j: 8, then 4, then single columns of q at a time
    int64_t j0 = 0;
    for (; j0 + 8 <= ax.n; j0 += 8) mix_columns<8>(ax, e, es, mix, j0, num);
    for (; j0 + 4 <= ax.n; j0 += 4) mix_columns<4>(ax, e, es, mix, j0, num);
    for (; j0 < ax.n; ++j0) mix_columns<1>(ax, e, es, mix, j0, num);
  }
  return select(z > 0.f, num / z, splat(0.f));
}

// AOSM over one axis, 16 lanes at once, with its own softmax maximum. e: scratch of n vectors.
// A lane with every position masked gives 0.
template <bool kHalf>
inline vf aosm(const Axis& ax, const float* mix, vf* e) {
  const vf neg_inf = splat(-std::numeric_limits<float>::infinity());
  vf m = neg_inf;
  for (int64_t i = 0; i < ax.n; ++i) {
    const vf xi = ax.x[i * ax.stride];
    m = vmax(m, ax.keep ? select(ax.keep[i], xi, neg_inf) : xi);
  }
  m = select(m == neg_inf, splat(0.f), m);
  vf z = splat(0.f);
  for (int64_t i = 0; i < ax.n; ++i) {
    vf ei = vexp<kHalf>(ax.x[i * ax.stride] - m);
    if (ax.keep) ei = select(ax.keep[i], ei, splat(0.f));
    e[i] = ei;
    z += ei;
  }
  return weighted(ax, e, 1, z, mix);
}

// The same with exponentials shared by both axes of a tile: exps[i * stride] = exp(x - c) for one
// shift c per lane (the tile maximum), which softmax does not depend on. Exact unless a lane's sum is
// tiny (its maximum far below c, where exp(-87)-clamped values would matter): then the lane's axis is
// recomputed with its own maximum.
constexpr float kMinSharedSum = 1e-28f;  // row maximum >= c - 64: clamped terms are < 2e-10 relative
template <bool kHalf>
inline vf aosm_shared(const Axis& ax, const vf* exps, const float* mix, vf* e) {
  vf z = splat(0.f);
  const vf* w = exps;  // the weights: the shared exponentials, or their masked copy in e
  int64_t ws = ax.stride;
  if (ax.keep) {
    for (int64_t i = 0; i < ax.n; ++i) {
      e[i] = select(ax.keep[i], exps[i * ax.stride], splat(0.f));
      z += e[i];
    }
    w = e;
    ws = 1;
  } else {
    for (int64_t i = 0; i < ax.n; ++i) z += exps[i * ax.stride];
  }
  if (any_lane(z < kMinSharedSum)) return aosm<kHalf>(ax, mix, e);
  return weighted(ax, w, ws, z, mix);
}

// Keep-vectors from a bool mask: word mask [A, W] (one scalar per word, same in every lane) or
// frame mask [F, B] (per video lane).
inline vi keep_scalar(bool keep) { return vi{} + (keep ? -1 : 0); }
inline vi keep_lanes(const bool* p, int64_t count) {
  int32_t tmp[kLanes];
  for (int64_t k = 0; k < kLanes; ++k) tmp[k] = k < count && !p[k] ? 0 : -1;  // lanes past the end: kept
  vi v;
  std::memcpy(&v, tmp, sizeof(v));
  return v;
}

struct Mix {  // a mixing matrix as contiguous fp32, or nullptr for the identity
  torch::Tensor holder;
  const float* ptr = nullptr;
};

Mix make_mix(const c10::optional<torch::Tensor>& m, int64_t n) {
  Mix out;
  if (!m.has_value() || !m->defined()) return out;
  TORCH_CHECK(m->dim() == 2 && m->size(0) == n && m->size(1) == n, "mixing matrix must be [", n, ", ", n, "]");
  out.holder = m->detach().to(torch::kCPU, torch::kFloat).contiguous();
  out.ptr = out.holder.data_ptr<float>();
  return out;
}

const bool* mask_ptr(const c10::optional<torch::Tensor>& mask, torch::Tensor& holder, at::IntArrayRef shape, const char* name) {
  if (!mask.has_value() || !mask->defined()) return nullptr;
  TORCH_CHECK(mask->sizes() == shape, name, " has shape ", mask->sizes(), ", expected ", shape);
  holder = mask->to(torch::kCPU, torch::kBool).contiguous();
  return holder.data_ptr<bool>();
}

// ---------------------------------------------------------------------------------- frame-word term
template <typename T>
void frame_word_impl(const T* scores, int64_t A, int64_t W, int64_t F, int64_t B, const Mix& w1, const Mix& f1,
                     const Mix& f2, const Mix& w2, const bool* word_keep, const bool* frame_keep, float* out) {
  constexpr bool kHalf = !std::is_same<T, float>::value;  // scores rounded to bf16 / fp16
  const int64_t chunks = (B + kLanes - 1) / kLanes;
  at::parallel_for(0, A * chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<vf> tile(W * F), exps(W * F), per_word(W), per_frame(F), scratch(std::max(W, F));
    std::vector<vi> wkeep(W), fkeep(F);
    for (int64_t job = begin; job < end; ++job) {
      const int64_t a = job / chunks, b0 = (job % chunks) * kLanes, lanes = std::min<int64_t>(kLanes, B - b0);
      const T* src = scores + a * W * F * B + b0;  // scores [A, W, F, B]
      for (int64_t i = 0; i < W * F; ++i) tile[i] = load<T>(src + i * B, lanes);  // tile [w, f]
      if (word_keep)
        for (int64_t w = 0; w < W; ++w) wkeep[w] = keep_scalar(word_keep[a * W + w]);
      if (frame_keep)
        for (int64_t f = 0; f < F; ++f) fkeep[f] = keep_lanes(frame_keep + f * B + b0, lanes);
      const vi* wk = word_keep ? wkeep.data() : nullptr;
      const vi* fk = frame_keep ? fkeep.data() : nullptr;
      vf c = tile[0];  // one softmax shift per lane for the whole tile
      for (int64_t i = 1; i < W * F; ++i) c = vmax(c, tile[i]);
      for (int64_t i = 0; i < W * F; ++i) exps[i] = vexp<kHalf>(tile[i] - c);
      for (int64_t w = 0; w < W; ++w)  // level 1 over frames, per word
        per_word[w] = aosm_shared<kHalf>({tile.data() + w * F, F, 1, fk}, exps.data() + w * F, f1.ptr, scratch.data());
      for (int64_t f = 0; f < F; ++f)  // level 1 over words, per frame
        per_frame[f] = aosm_shared<kHalf>({tile.data() + f, W, F, wk}, exps.data() + f, w1.ptr, scratch.data());
      const vf over_words = aosm<kHalf>({per_word.data(), W, 1, wk}, w2.ptr, scratch.data());
      const vf over_frames = aosm<kHalf>({per_frame.data(), F, 1, fk}, f2.ptr, scratch.data());
      store(out + a * B + b0, (over_frames + over_words) * 0.5f, lanes);
    }
  });
}

// ------------------------------------------------------------------------------- one-axis AOSM term
template <typename T>
void axis_impl(const T* scores, int64_t A, int64_t N, int64_t B, const Mix& mix, const bool* keep_an,
               const bool* keep_nb, float scale, float* out) {
  constexpr bool kHalf = !std::is_same<T, float>::value;
  const int64_t chunks = (B + kLanes - 1) / kLanes;
  at::parallel_for(0, A * chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<vf> x(N), scratch(N);
    std::vector<vi> keep(N);
    for (int64_t job = begin; job < end; ++job) {
      const int64_t a = job / chunks, b0 = (job % chunks) * kLanes, lanes = std::min<int64_t>(kLanes, B - b0);
      const T* src = scores + a * N * B + b0;  // scores [A, N, B]
      for (int64_t i = 0; i < N; ++i) x[i] = load<T>(src + i * B, lanes) * scale;
      if (keep_an)
        for (int64_t i = 0; i < N; ++i) keep[i] = keep_scalar(keep_an[a * N + i]);
      if (keep_nb)
        for (int64_t i = 0; i < N; ++i) keep[i] = keep_lanes(keep_nb + i * B + b0, lanes);
      store(out + a * B + b0, aosm<kHalf>({x.data(), N, 1, (keep_an || keep_nb) ? keep.data() : nullptr}, mix.ptr, scratch.data()), lanes);
    }
  });
}

template <typename Fn>
void dispatch(const torch::Tensor& t, Fn&& fn) {
  switch (t.scalar_type()) {
    case torch::kFloat: fn(t.data_ptr<float>()); break;
    case torch::kBFloat16: fn(reinterpret_cast<const at::BFloat16*>(t.data_ptr())); break;
    case torch::kHalf: fn(reinterpret_cast<const at::Half*>(t.data_ptr())); break;
    case torch::kDouble: TORCH_CHECK(false, "the fused AOSM kernel does not take float64 scores"); break;
    default: TORCH_CHECK(false, "the fused AOSM kernel takes float32, bfloat16 or float16 scores, not ", t.scalar_type());
  }
}

}  // namespace

// scores [A, W, F, B] (already in 1/tau units); word_mask [A, W]; frame_mask [F, B]; mixes [n, n] or None.
// Returns the two-level frame-word AOSM score [A, B] (fp32, 1/tau units).
torch::Tensor frame_word(torch::Tensor scores, c10::optional<torch::Tensor> w1, c10::optional<torch::Tensor> f1,
                         c10::optional<torch::Tensor> f2, c10::optional<torch::Tensor> w2,
                         c10::optional<torch::Tensor> word_mask, c10::optional<torch::Tensor> frame_mask) {
  TORCH_CHECK(scores.device().is_cpu() && scores.dim() == 4, "frame_word: scores must be a CPU tensor [a, w, f, b]");
  auto s = scores.contiguous();
  const int64_t A = s.size(0), W = s.size(1), F = s.size(2), B = s.size(3);
  const Mix mw1 = make_mix(w1, W), mf1 = make_mix(f1, F), mf2 = make_mix(f2, F), mw2 = make_mix(w2, W);
  torch::Tensor wm, fm;
  const bool* wk = mask_ptr(word_mask, wm, {A, W}, "word_mask");
  const bool* fk = mask_ptr(frame_mask, fm, {F, B}, "frame_mask");
  auto out = torch::empty({A, B}, s.options().dtype(torch::kFloat));
  if (A * B == 0) return out;
  dispatch(s, [&](auto ptr) { frame_word_impl(ptr, A, W, F, B, mw1, mf1, mf2, mw2, wk, fk, out.data_ptr<float>()); });
  return out;
}

// scores [A, N, B], multiplied by ``scale`` on load (1/tau); AOSM over N with mask keep_an [A, N] or
// keep_nb [N, B] (at most one). Returns [A, B] in the scaled units.
torch::Tensor axis_aosm(torch::Tensor scores, c10::optional<torch::Tensor> mix, c10::optional<torch::Tensor> keep_an,
                        c10::optional<torch::Tensor> keep_nb, double scale) {
  TORCH_CHECK(scores.device().is_cpu() && scores.dim() == 3, "axis_aosm: scores must be a CPU tensor [a, n, b]");
  auto s = scores.contiguous();
  const int64_t A = s.size(0), N = s.size(1), B = s.size(2);
  const Mix m = make_mix(mix, N);
  torch::Tensor h1, h2;
  const bool* an = mask_ptr(keep_an, h1, {A, N}, "keep_an");
  const bool* nb = mask_ptr(keep_nb, h2, {N, B}, "keep_nb");
  TORCH_CHECK(!(an && nb), "axis_aosm: give keep_an or keep_nb, not both");
  auto out = torch::empty({A, B}, s.options().dtype(torch::kFloat));
  if (A * B == 0) return out;
  dispatch(s, [&](auto ptr) { axis_impl(ptr, A, N, B, m, an, nb, static_cast<float>(scale), out.data_ptr<float>()); });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("frame_word", &frame_word, "two-level frame-word AOSM [a, w, f, b] -> [a, b]");
  m.def("axis_aosm", &axis_aosm, "AOSM over the middle axis [a, n, b] (times scale) -> [a, b]");
}
