// RoiAlign (ONNX opset 16 semantics, as onnxruntime): bilinear samples averaged (or maxed)
// over each bin of each RoI.
//
// x [N, C, H, W], rois [R, 4] as (x1, y1, x2, y2) in input-image coordinates,
// batch_indices [R] int64, y [R, C, out_h, out_w]. One thread per output element;
// consecutive threads walk out_w, then out_h, then C (coalesced stores, neighbouring
// samples of the same feature plane). Arithmetic is float in onnxruntime's order.
//
// Compile-time constants (floats and strings cannot be TensorRT AOT kernel arguments):
//   SPATIAL_SCALE  float, image coordinates -> feature-map coordinates
//   HALF_PIXEL     1: coordinate_transformation_mode "half_pixel", 0: "output_half_pixel"
//   MODE_MAX       1: mode "max", 0: mode "avg"
#include "visionrt_cuda.cuh"

#if !defined(SPATIAL_SCALE) || !defined(HALF_PIXEL) || !defined(MODE_MAX)
#error "define SPATIAL_SCALE, HALF_PIXEL and MODE_MAX"
#endif

// Bilinear weights and the four neighbours of one sample point, or all-zero weights when the
// point lies more than one pixel outside the map (then the neighbours are pixel 0).
struct Bilinear {
    int p1, p2, p3, p4;
    float w1, w2, w3, w4;
};

__device__ __forceinline__ Bilinear bilinear(float y, float x, int height, int width) {
    Bilinear s = {0, 0, 0, 0, 0.0f, 0.0f, 0.0f, 0.0f};
    if (y < -1.0f || y > static_cast<float>(height) || x < -1.0f || x > static_cast<float>(width)) return s;
    if (y <= 0.0f) y = 0.0f;
    if (x <= 0.0f) x = 0.0f;
    int y_low = static_cast<int>(y), x_low = static_cast<int>(x), y_high, x_high;
    if (y_low >= height - 1) {
        y_high = y_low = height - 1;
        y = static_cast<float>(y_low);
    } else {
        y_high = y_low + 1;
    }
    if (x_low >= width - 1) {
        x_high = x_low = width - 1;
        x = static_cast<float>(x_low);
    } else {
        x_high = x_low + 1;
    }
    const float ly = y - static_cast<float>(y_low), lx = x - static_cast<float>(x_low);
    const float hy = 1.0f - ly, hx = 1.0f - lx;
    s.p1 = y_low * width + x_low;
    s.p2 = y_low * width + x_high;
    s.p3 = y_high * width + x_low;
    s.p4 = y_high * width + x_high;
    s.w1 = hy * hx;
    s.w2 = hy * lx;
    s.w3 = ly * hx;
    s.w4 = ly * lx;
    return s;
}

template <typename T>
__device__ __forceinline__ void roi_align(const T* __restrict__ x, const T* __restrict__ rois,
                                          const long long* __restrict__ batch_indices,
                                          int batch, int channels, int height, int width,
                                          int out_h, int out_w, int sampling_ratio, long long index,
                                          T* __restrict__ y) {
    const int pw = static_cast<int>(index % out_w);
    const int ph = static_cast<int>(index / out_w % out_h);
    const int c = static_cast<int>(index / (out_w * out_h) % channels);
    const int r = static_cast<int>(index / (static_cast<long long>(out_w) * out_h * channels));

    const long long b = batch_indices[r];
    if (b < 0 || b >= batch) {  // a RoI naming a batch entry that does not exist gives 0
        y[index] = from_float<T>(0.0f);
        return;
    }
    const T* roi = rois + static_cast<long long>(r) * 4;
    const float offset = HALF_PIXEL ? 0.5f : 0.0f;
    const float start_w = to_float(roi[0]) * SPATIAL_SCALE - offset;
    const float start_h = to_float(roi[1]) * SPATIAL_SCALE - offset;
    const float end_w = to_float(roi[2]) * SPATIAL_SCALE - offset;
    const float end_h = to_float(roi[3]) * SPATIAL_SCALE - offset;
    float roi_w = end_w - start_w, roi_h = end_h - start_h;
    if (!HALF_PIXEL) {
        roi_w = fmaxf(roi_w, 1.0f);
        roi_h = fmaxf(roi_h, 1.0f);
    }
    const float bin_h = roi_h / static_cast<float>(out_h);
    const float bin_w = roi_w / static_cast<float>(out_w);
    const int grid_h = sampling_ratio > 0 ? sampling_ratio : static_cast<int>(ceilf(roi_h / static_cast<float>(out_h)));
    const int grid_w = sampling_ratio > 0 ? sampling_ratio : static_cast<int>(ceilf(roi_w / static_cast<float>(out_w)));
    const int count = max(grid_h * grid_w, 1);

    const T* plane = x + (b * channels + c) * height * width;
    float result = 0.0f;
    bool first = true;
    for (int iy = 0; iy < grid_h; ++iy) {
        const float yy = start_h + static_cast<float>(ph) * bin_h +
                         (static_cast<float>(iy) + 0.5f) * bin_h / static_cast<float>(grid_h);
        for (int ix = 0; ix < grid_w; ++ix) {
            const float xx = start_w + static_cast<float>(pw) * bin_w +
                             (static_cast<float>(ix) + 0.5f) * bin_w / static_cast<float>(grid_w);
            const Bilinear s = bilinear(yy, xx, height, width);
            const float v1 = s.w1 * to_float(plane[s.p1]), v2 = s.w2 * to_float(plane[s.p2]);
            const float v3 = s.w3 * to_float(plane[s.p3]), v4 = s.w4 * to_float(plane[s.p4]);
            if (MODE_MAX) {
                const float v = fmaxf(fmaxf(fmaxf(v1, v2), v3), v4);
                result = first ? v : fmaxf(result, v);
                first = false;
            } else {
                result += v1 + v2 + v3 + v4;
            }
        }
    }
    if (!MODE_MAX) result /= static_cast<float>(count);
    y[index] = from_float<T>(result);
}

#define ROI_ALIGN_ENTRY(T, SUFFIX)                                                              \
    extern "C" __global__ void __launch_bounds__(256) visionrt_roi_align_##SUFFIX(              \
        const T* __restrict__ x, const T* __restrict__ rois,                                   \
        const long long* __restrict__ batch_indices, int batch, int channels, int height,      \
        int width, int out_h, int out_w, int sampling_ratio, int num_rois,                     \
        T* __restrict__ y) {                                                                   \
        VRT_FOR_EACH_ELEMENT(index, static_cast<long long>(num_rois) * channels * out_h * out_w) \
        roi_align<T>(x, rois, batch_indices, batch, channels, height, width, out_h, out_w,     \
                     sampling_ratio, index, y);                                                \
    }

ROI_ALIGN_ENTRY(float, f32)
ROI_ALIGN_ENTRY(half_t, f16)
