// Batched multi-class NMS with fixed-size, EfficientNMS-style outputs.
//
// boxes [B, N, 4] as (x1, y1, x2, y2) (corners in either order), scores [B, N, C]
//   -> num_detections [B, 1] int32, det_boxes [B, K, 4], det_scores [B, K], det_classes [B, K] int32,
// sorted by score (ties: lower flat index n * C + c first), zero-padded after num_detections.
// Candidates are the (box, class) pairs scoring above SCORE_THRESHOLD; the top
// min(pre_nms_top_k, NMS_MAX_CANDIDATES) of them go through greedy NMS (suppress when
// IoU > IOU_THRESHOLD; same class only unless class_agnostic), keeping at most K.
//
// One block of NMS_BLOCK threads per image, a single launch:
//   1. radix select (8-bit digits, histograms in shared memory) of the top-k 64-bit keys
//      (orderable score bits << 32 | ~flat index): all keys are distinct, so the selection
//      is exact and ties are broken by index;
//   2. bitonic sort of the selected keys in shared memory (descending);
//   3. greedy NMS: each thread owns NMS_MAX_CANDIDATES / NMS_BLOCK sorted candidates in
//      registers; per kept box, two barriers: the owner publishes it, every thread
//      suppresses its own candidates and the block finds the next survivor (min reduction).
//
// Compile-time constants (floats cannot be TensorRT AOT kernel arguments; the limits are
// visionrt's, set in Python):
//   SCORE_THRESHOLD, IOU_THRESHOLD   float
//   NMS_BLOCK                        threads per block (= per image)
//   NMS_MAX_CANDIDATES               candidates per image that fit shared memory (8 bytes each)
#include "visionrt_cuda.cuh"

#if !defined(SCORE_THRESHOLD) || !defined(IOU_THRESHOLD) || !defined(NMS_BLOCK) || !defined(NMS_MAX_CANDIDATES)
#error "define SCORE_THRESHOLD, IOU_THRESHOLD, NMS_BLOCK and NMS_MAX_CANDIDATES"
#endif
static_assert(NMS_MAX_CANDIDATES % NMS_BLOCK == 0 && NMS_BLOCK % 32 == 0,
              "whole warps, candidates split evenly over the threads");
static_assert((NMS_MAX_CANDIDATES & (NMS_MAX_CANDIDATES - 1)) == 0, "bitonic sort needs a power of two");

#define NMS_PER_THREAD (NMS_MAX_CANDIDATES / NMS_BLOCK)
#define NMS_NONE 0x7fffffff

typedef unsigned long long u64;

// Monotonic map float -> uint32 (a < b  <=>  orderable(a) < orderable(b)); -0 counts as +0.
__device__ __forceinline__ unsigned orderable(float f) {
    const unsigned u = __float_as_uint(f + 0.0f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ float from_orderable(unsigned o) {
    return __uint_as_float((o & 0x80000000u) ? (o & 0x7fffffffu) : ~o);
}

__device__ __forceinline__ u64 candidate_key(float score, int flat) {
    return (static_cast<u64>(orderable(score)) << 32) | (0xffffffffu - static_cast<unsigned>(flat));
}

__device__ __forceinline__ int key_index(u64 key) {
    return static_cast<int>(0xffffffffu - static_cast<unsigned>(key));
}

struct Box {
    float x1, y1, x2, y2;
};

// onnxruntime's SuppressByIOU: corners normalised, degenerate boxes never suppress.
__device__ __forceinline__ bool overlaps(const Box& a, const Box& b) {
    const float ax_min = fminf(a.x1, a.x2), ax_max = fmaxf(a.x1, a.x2);
    const float ay_min = fminf(a.y1, a.y2), ay_max = fmaxf(a.y1, a.y2);
    const float bx_min = fminf(b.x1, b.x2), bx_max = fmaxf(b.x1, b.x2);
    const float by_min = fminf(b.y1, b.y2), by_max = fmaxf(b.y1, b.y2);
    const float ix_min = fmaxf(ax_min, bx_min), ix_max = fminf(ax_max, bx_max);
    const float iy_min = fmaxf(ay_min, by_min), iy_max = fminf(ay_max, by_max);
    if (ix_max <= ix_min || iy_max <= iy_min) return false;
    const float intersection = (ix_max - ix_min) * (iy_max - iy_min);
    if (intersection <= 0.0f) return false;
    const float area_a = (ax_max - ax_min) * (ay_max - ay_min);
    const float area_b = (bx_max - bx_min) * (by_max - by_min);
    const float union_area = area_a + area_b - intersection;
    if (area_a <= 0.0f || area_b <= 0.0f || union_area <= 0.0f) return false;
    return intersection / union_area > IOU_THRESHOLD;
}

template <typename T>
__device__ __forceinline__ Box load_box(const T* __restrict__ boxes, int n) {
    const T* b = boxes + 4 * n;
    return Box{to_float(b[0]), to_float(b[1]), to_float(b[2]), to_float(b[3])};
}

struct SelectState {
    u64 prefix;         // decided high digits of the k-th largest key
    u64 mask;           // which digits are decided
    unsigned remaining; // how many keys with this prefix are still to take
    int done;
};

// Step 1: the smallest key to keep, so that exactly min(limit, candidates) keys are >= it (limit >= 1).
template <typename T>
__device__ u64 select_threshold(const T* __restrict__ scores, int total, unsigned limit,
                                unsigned* hist, SelectState* st) {
    if (threadIdx.x == 0) *st = SelectState{0ull, 0ull, limit, 0};
    for (int shift = 56; shift >= 0; shift -= 8) {
        for (int i = threadIdx.x; i < 256; i += NMS_BLOCK) hist[i] = 0;
        __syncthreads();
        const u64 prefix = st->prefix, mask = st->mask;
        for (int i = threadIdx.x; i < total; i += NMS_BLOCK) {
            const float s = to_float(scores[i]);
            if (!(s > SCORE_THRESHOLD)) continue;
            const u64 key = candidate_key(s, i);
            if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 0xff], 1u);
        }
        __syncthreads();
        if (threadIdx.x < 32) {  // warp 0 finds the digit where the running count (from the top) reaches `remaining`
            const int lane = threadIdx.x;
            const unsigned remaining = st->remaining;
            // Every lane must have read st->remaining before the one lane below rewrites it. The
            // shuffles make the lanes meet but are no memory barrier: the compiler or the memory
            // system may still let the load happen after another lane's store. __syncwarp orders
            // the warp's shared-memory accesses before it against those after it.
            __syncwarp();
            unsigned counts[8], sum = 0;
#pragma unroll
            for (int q = 0; q < 8; ++q) {
                counts[q] = hist[255 - 8 * lane - q];
                sum += counts[q];
            }
            unsigned inclusive = sum;
#pragma unroll
            for (int offset = 1; offset < 32; offset <<= 1) {
                const unsigned v = __shfl_up_sync(0xffffffffu, inclusive, offset);
                if (lane >= offset) inclusive += v;
            }
            const unsigned exclusive = inclusive - sum;
            if (exclusive < remaining && remaining <= inclusive) {
                unsigned before = exclusive;
#pragma unroll
                for (int q = 0; q < 8; ++q) {
                    if (before < remaining && remaining <= before + counts[q]) {
                        st->prefix |= static_cast<u64>(255 - 8 * lane - q) << shift;
                        st->mask |= 0xffull << shift;
                        st->remaining = remaining - before;
                        st->done = counts[q] == remaining - before;
                    }
                    before += counts[q];
                }
            }
            if (lane == 31 && inclusive < remaining) st->done = 1;  // fewer candidates than the limit: take all
        }
        __syncthreads();
        if (st->done) break;
    }
    return st->prefix;
}

template <typename T>
__device__ __forceinline__ void efficient_nms(
    const T* __restrict__ all_boxes, const T* __restrict__ all_scores, int num_boxes,
    int num_classes, int max_output, int pre_nms_top_k, int class_agnostic,
    int* __restrict__ num_detections, T* __restrict__ det_boxes, T* __restrict__ det_scores,
    int* __restrict__ det_classes) {
    __shared__ u64 keys[NMS_MAX_CANDIDATES];
    __shared__ unsigned hist[256];
    __shared__ SelectState st;
    __shared__ unsigned n_selected;
    __shared__ int next[2];
    __shared__ Box kept_box;
    __shared__ int kept_class;

    const int image = blockIdx.x;
    const int total = num_boxes * num_classes;
    const T* boxes = all_boxes + static_cast<long long>(image) * num_boxes * 4;
    const T* scores = all_scores + static_cast<long long>(image) * total;
    const int limit = min(max(pre_nms_top_k, 0), NMS_MAX_CANDIDATES);

    // 1. select
    const u64 threshold = limit > 0 ? select_threshold(scores, total, limit, hist, &st) : 0ull;
    if (threadIdx.x == 0) n_selected = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < total && limit > 0; i += NMS_BLOCK) {
        const float s = to_float(scores[i]);
        if (!(s > SCORE_THRESHOLD)) continue;
        const u64 key = candidate_key(s, i);
        if (key >= threshold) keys[atomicAdd(&n_selected, 1u)] = key;
    }
    __syncthreads();
    const int n = static_cast<int>(n_selected);

    // 2. sort, descending; padding keys are 0 (below every candidate key)
    int n_pow2 = 1;
    while (n_pow2 < n) n_pow2 <<= 1;
    for (int i = n + threadIdx.x; i < n_pow2; i += NMS_BLOCK) keys[i] = 0ull;
    __syncthreads();
    for (int k = 2; k <= n_pow2; k <<= 1) {
        for (int j = k >> 1; j > 0; j >>= 1) {
            for (int i = threadIdx.x; i < n_pow2; i += NMS_BLOCK) {
                const int partner = i ^ j;
                if (partner > i) {
                    const u64 a = keys[i], b = keys[partner];
                    if (((i & k) == 0) ? (a < b) : (a > b)) {
                        keys[i] = b;
                        keys[partner] = a;
                    }
                }
            }
            __syncthreads();
        }
    }

    // 3. greedy NMS over the sorted candidates; thread t owns slots t, t + NMS_BLOCK, ...
    Box own_box[NMS_PER_THREAD];
    int own_class[NMS_PER_THREAD];
    bool alive[NMS_PER_THREAD];
#pragma unroll
    for (int q = 0; q < NMS_PER_THREAD; ++q) {
        const int slot = threadIdx.x + q * NMS_BLOCK;
        alive[q] = slot < n;
        const int flat = alive[q] ? key_index(keys[slot]) : 0;
        own_box[q] = alive[q] ? load_box(boxes, flat / num_classes) : Box{0.0f, 0.0f, 0.0f, 0.0f};
        own_class[q] = flat % num_classes;
    }
    if (threadIdx.x == 0) {
        next[0] = n > 0 ? 0 : NMS_NONE;
        next[1] = NMS_NONE;
    }
    __syncthreads();

    T* out_boxes = det_boxes + static_cast<long long>(image) * max_output * 4;
    T* out_scores = det_scores + static_cast<long long>(image) * max_output;
    int* out_classes = det_classes + static_cast<long long>(image) * max_output;
    int kept = 0;
    for (; kept < max_output; ++kept) {
        const int current = next[kept & 1];
        if (current == NMS_NONE) break;
#pragma unroll
        for (int q = 0; q < NMS_PER_THREAD; ++q) {  // the owner publishes it and writes the detection
            if (static_cast<int>(threadIdx.x) + q * NMS_BLOCK != current) continue;
            kept_box = own_box[q];
            kept_class = own_class[q];
            alive[q] = false;
            out_boxes[4 * kept + 0] = from_float<T>(own_box[q].x1);
            out_boxes[4 * kept + 1] = from_float<T>(own_box[q].y1);
            out_boxes[4 * kept + 2] = from_float<T>(own_box[q].x2);
            out_boxes[4 * kept + 3] = from_float<T>(own_box[q].y2);
            out_scores[kept] = from_float<T>(from_orderable(static_cast<unsigned>(keys[current] >> 32)));
            out_classes[kept] = own_class[q];
        }
        if (threadIdx.x == 0) next[(kept + 1) & 1] = NMS_NONE;
        __syncthreads();
        const Box box = kept_box;
        const int cls = kept_class;
        int first_alive = NMS_NONE;
#pragma unroll
        for (int q = 0; q < NMS_PER_THREAD; ++q) {
            if (!alive[q]) continue;
            if ((class_agnostic || own_class[q] == cls) && overlaps(box, own_box[q])) alive[q] = false;
            else first_alive = min(first_alive, static_cast<int>(threadIdx.x) + q * NMS_BLOCK);
        }
#pragma unroll
        for (int offset = 16; offset > 0; offset >>= 1)
            first_alive = min(first_alive, __shfl_xor_sync(0xffffffffu, first_alive, offset));
        if ((threadIdx.x & 31) == 0 && first_alive != NMS_NONE) atomicMin(&next[(kept + 1) & 1], first_alive);
        __syncthreads();
    }

    // zero-pad the slots after the last detection
    for (int i = kept + threadIdx.x; i < max_output; i += NMS_BLOCK) {
        out_boxes[4 * i + 0] = from_float<T>(0.0f);
        out_boxes[4 * i + 1] = from_float<T>(0.0f);
        out_boxes[4 * i + 2] = from_float<T>(0.0f);
        out_boxes[4 * i + 3] = from_float<T>(0.0f);
        out_scores[i] = from_float<T>(0.0f);
        out_classes[i] = 0;
    }
    if (threadIdx.x == 0) num_detections[image] = kept;
}

#define NMS_ENTRY(T, SUFFIX)                                                                    \
    extern "C" __global__ void __launch_bounds__(NMS_BLOCK, 1) visionrt_efficient_nms_##SUFFIX( \
        const T* __restrict__ boxes, const T* __restrict__ scores, int num_boxes,              \
        int num_classes, int max_output, int pre_nms_top_k, int class_agnostic,                \
        int* __restrict__ num_detections, T* __restrict__ det_boxes,                           \
        T* __restrict__ det_scores, int* __restrict__ det_classes) {                           \
        efficient_nms<T>(boxes, scores, num_boxes, num_classes, max_output, pre_nms_top_k,     \
                         class_agnostic, num_detections, det_boxes, det_scores, det_classes);  \
    }

NMS_ENTRY(float, f32)
NMS_ENTRY(half_t, f16)
