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

// Index of this thread in a 1-D grid; kernels launched with one thread per output element.
__device__ __forceinline__ int global_thread_index() {
    return static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
}
