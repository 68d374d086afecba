// Shared by every visionrt plugin kernel: the element types and their conversions.
//
// NVRTC from PyPI ships without the CUDA headers, so there is no cuda_fp16.h here: fp16 is
// a 16-bit storage type converted with the PTX cvt instructions, and all arithmetic is
// float. Kernels are templates over the element type T (float or half_t), instantiated as
// one extern "C" entry point per type: <name>_f32 and <name>_f16.
#pragma once

struct __align__(2) half_t {
    unsigned short bits;
};

__device__ __forceinline__ float to_float(float v) { return v; }

__device__ __forceinline__ float to_float(half_t v) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
    return f;
}

template <typename T> __device__ __forceinline__ T from_float(float v);

template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }

template <> __device__ __forceinline__ half_t from_float<half_t>(float v) {
    half_t h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.bits) : "f"(v));
    return h;
}

// Largest finite float: the start value of a running maximum (as onnxruntime's lowest()).
#define VRT_FLT_MAX 3.402823466e+38f

// Grid-stride loop over the output elements [0, total) with 64-bit indices: an output may hold
// 2^31 elements or more (MaxUnpool at a 32x64x1024x1024 profile maximum), which a 32-bit
// index would wrap. AOT kernel arguments are int32, so kernels take the count as int32
// factors (e.g. planes, height, width) and multiply them here in 64 bits.
#define VRT_FOR_EACH_ELEMENT(index, total)                                                     \
    for (long long index = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;       \
         index < (total); index += static_cast<long long>(gridDim.x) * blockDim.x)
