// MaxPool with the Indices output, and MaxUnpool (ONNX semantics, as onnxruntime), 2-D.
//
// visionrt_max_pool_with_indices_*: x [N, C, H, W] -> y, indices [N, C, out_h, out_w];
//   indices are int64 and flat over N*C*H*W (storage_order 0); the first maximum of a
//   window in row-major order wins; padding never wins. As PyTorch's max_pool2d: a NaN in a
//   window wins (the last NaN in row-major order), and a window of -inf only gives -inf at
//   its first element inside the input. (onnxruntime skips NaN and gives no valid index
//   for such a window; see README.md.)
// visionrt_max_unpool_*: y, indices [N, C, in_h, in_w] -> out [N, C, H, W], every element
//   that no index names is 0.
//
// Both are one thread per output element, in a grid-stride loop with a 64-bit index (see
// visionrt_cuda.cuh): the element count is `planes` (N*C) times the output plane. MaxUnpool is a gather, so that zeroing and
// placing happen in one launch with no race: an output element looks at the pooling windows
// that contain it (at most ceil(k/s) per axis, overlapping windows included) and takes the
// value of the last one whose index names it, which is what onnxruntime's scatter
// (last write wins) gives. The limit: an index must lie inside its own pooling window of
// the same N*C plane, as the indices of a MaxPool with the same kernel, strides and pads do.
#include "visionrt_cuda.cuh"

template <typename T>
__device__ __forceinline__ void max_pool_with_indices(
    const T* __restrict__ x, int height, int width, int out_h, int out_w, int kernel_h,
    int kernel_w, int stride_h, int stride_w, int pad_top, int pad_left, long long index,
    T* __restrict__ y, long long* __restrict__ indices) {
    const int ow = static_cast<int>(index % out_w);
    const int oh = static_cast<int>(index / out_w % out_h);
    const long long plane = index / (static_cast<long long>(out_w) * out_h);  // n * C + c

    const int hstart = oh * stride_h - pad_top, wstart = ow * stride_w - pad_left;
    const int hend = min(hstart + kernel_h, height), wend = min(wstart + kernel_w, width);
    const T* xp = x + plane * height * width;
    float best = -__int_as_float(0x7f800000);  // -inf
    int best_h = max(hstart, 0), best_w = max(wstart, 0);
    for (int h = max(hstart, 0); h < hend; ++h) {
        for (int w = max(wstart, 0); w < wend; ++w) {
            const float v = to_float(xp[h * width + w]);
            if (v > best || isnan(v)) {
                best = v;
                best_h = h;
                best_w = w;
            }
        }
    }
    y[index] = from_float<T>(best);
    indices[index] = plane * height * width + best_h * width + best_w;
}

template <typename T>
__device__ __forceinline__ void max_unpool(
    const T* __restrict__ y, const long long* __restrict__ indices, int in_h, int in_w,
    int height, int width, int kernel_h, int kernel_w, int stride_h, int stride_w, int pad_top,
    int pad_left, long long index, T* __restrict__ out) {
    const int w = static_cast<int>(index % width);
    const int h = static_cast<int>(index / width % height);
    const long long plane = index / (static_cast<long long>(width) * height);

    // Windows i along an axis cover [i*s - pad, i*s - pad + k): those containing position p
    // run from first = (p + pad - k) / s + 1 (0 if p + pad < k) to last = (p + pad) / s.
    const int top = h + pad_top - kernel_h, left = w + pad_left - kernel_w;
    const int ih_first = top < 0 ? 0 : top / stride_h + 1;
    const int iw_first = left < 0 ? 0 : left / stride_w + 1;
    const int ih_last = min((h + pad_top) / stride_h, in_h - 1);
    const int iw_last = min((w + pad_left) / stride_w, in_w - 1);
    const long long target = index;
    const long long base = plane * in_h * in_w;
    float value = 0.0f;
    for (int ih = ih_first; ih <= ih_last; ++ih) {
        for (int iw = iw_first; iw <= iw_last; ++iw) {
            const long long i = base + ih * in_w + iw;
            if (indices[i] == target) value = to_float(y[i]);
        }
    }
    out[index] = from_float<T>(value);
}

#define MAX_POOL_ENTRY(T, SUFFIX)                                                              \
    extern "C" __global__ void __launch_bounds__(256) visionrt_max_pool_with_indices_##SUFFIX( \
        const T* __restrict__ x, int height, int width, int out_h, int out_w, int kernel_h,   \
        int kernel_w, int stride_h, int stride_w, int pad_top, int pad_left, int planes,      \
        T* __restrict__ y, long long* __restrict__ indices) {                                 \
        VRT_FOR_EACH_ELEMENT(index, static_cast<long long>(planes) * out_h * out_w)           \
        max_pool_with_indices<T>(x, height, width, out_h, out_w, kernel_h, kernel_w,          \
                                 stride_h, stride_w, pad_top, pad_left, index, y, indices);   \
    }

#define MAX_UNPOOL_ENTRY(T, SUFFIX)                                                            \
    extern "C" __global__ void __launch_bounds__(256) visionrt_max_unpool_##SUFFIX(            \
        const T* __restrict__ y, const long long* __restrict__ indices, int in_h, int in_w,   \
        int height, int width, int kernel_h, int kernel_w, int stride_h, int stride_w,        \
        int pad_top, int pad_left, int planes, T* __restrict__ out) {                         \
        VRT_FOR_EACH_ELEMENT(index, static_cast<long long>(planes) * height * width)          \
        max_unpool<T>(y, indices, in_h, in_w, height, width, kernel_h, kernel_w, stride_h,    \
                      stride_w, pad_top, pad_left, index, out);                               \
    }

MAX_POOL_ENTRY(float, f32)
MAX_POOL_ENTRY(half_t, f16)
MAX_UNPOOL_ENTRY(float, f32)
MAX_UNPOOL_ENTRY(half_t, f16)
