// MaxRoiPool (ONNX semantics, as onnxruntime): max over each bin of each RoI.
//
// x [N, C, H, W], rois [R, 5] as (batch, x1, y1, x2, y2) in input-image coordinates,
// y [R, C, pooled_h, pooled_w]. One thread per output element (a grid-stride loop with a
// 64-bit index: see visionrt_cuda.cuh); consecutive threads walk pooled_w, then pooled_h, then C, so stores are coalesced and neighbouring threads read
// neighbouring bins of the same feature plane.
//
// Compile-time constant (floats cannot be TensorRT AOT kernel arguments):
//   SPATIAL_SCALE  float, image coordinates -> feature-map coordinates
#include "visionrt_cuda.cuh"

#ifndef SPATIAL_SCALE
#error "define SPATIAL_SCALE"
#endif

template <typename T>
__device__ __forceinline__ void roi_pool(const T* __restrict__ x, const T* __restrict__ rois,
                                         int batch, int channels, int height, int width,
                                         int pooled_h, int pooled_w, long long index,
                                         T* __restrict__ y) {
    const int pw = static_cast<int>(index % pooled_w);
    const int ph = static_cast<int>(index / pooled_w % pooled_h);
    const int c = static_cast<int>(index / (pooled_w * pooled_h) % channels);
    const int r = static_cast<int>(index / (static_cast<long long>(pooled_w) * pooled_h * channels));

    const T* roi = rois + static_cast<long long>(r) * 5;
    const int b = static_cast<int>(to_float(roi[0]));
    const int start_w = static_cast<int>(roundf(to_float(roi[1]) * SPATIAL_SCALE));
    const int start_h = static_cast<int>(roundf(to_float(roi[2]) * SPATIAL_SCALE));
    const int end_w = static_cast<int>(roundf(to_float(roi[3]) * SPATIAL_SCALE));
    const int end_h = static_cast<int>(roundf(to_float(roi[4]) * SPATIAL_SCALE));
    const float bin_h = static_cast<float>(max(end_h - start_h + 1, 1)) / static_cast<float>(pooled_h);
    const float bin_w = static_cast<float>(max(end_w - start_w + 1, 1)) / static_cast<float>(pooled_w);

    const int hstart = min(max(static_cast<int>(floorf(static_cast<float>(ph) * bin_h)) + start_h, 0), height);
    const int hend = min(max(static_cast<int>(ceilf(static_cast<float>(ph + 1) * bin_h)) + start_h, 0), height);
    const int wstart = min(max(static_cast<int>(floorf(static_cast<float>(pw) * bin_w)) + start_w, 0), width);
    const int wend = min(max(static_cast<int>(ceilf(static_cast<float>(pw + 1) * bin_w)) + start_w, 0), width);

    // An empty bin, or a RoI naming a batch entry that does not exist, gives 0.
    const bool empty = hend <= hstart || wend <= wstart || b < 0 || b >= batch;
    float result = empty ? 0.0f : -VRT_FLT_MAX;
    if (!empty) {
        const T* plane = x + (static_cast<long long>(b) * channels + c) * height * width;
        for (int h = hstart; h < hend; ++h) {
            for (int w = wstart; w < wend; ++w) {
                const float v = to_float(plane[h * width + w]);
                if (v > result) result = v;
            }
        }
    }
    y[index] = from_float<T>(result);
}

#define ROI_POOL_ENTRY(T, SUFFIX)                                                           \
    extern "C" __global__ void __launch_bounds__(256) visionrt_roi_pool_##SUFFIX(           \
        const T* __restrict__ x, const T* __restrict__ rois, int batch, int channels,      \
        int height, int width, int pooled_h, int pooled_w, int num_rois,                   \
        T* __restrict__ y) {                                                               \
        VRT_FOR_EACH_ELEMENT(index, static_cast<long long>(num_rois) * channels * pooled_h * pooled_w) \
        roi_pool<T>(x, rois, batch, channels, height, width, pooled_h, pooled_w, index, y); \
    }

ROI_POOL_ENTRY(float, f32)
ROI_POOL_ENTRY(half_t, f16)
