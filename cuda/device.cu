/*
 * device.cu — CUDA device discovery. The only answer without a GPU is "0 devices": the status of
 * cudaGetDeviceCount is checked, never assumed (no driver, no device, insufficient driver all mean 0).
 */
#include <cuda_runtime.h>

extern "C" int mt_cuda_device_count(void) {
    int n = 0;
    cudaError_t st = cudaGetDeviceCount(&n);
    if (st != cudaSuccess) {
        (void)cudaGetLastError(); /* clear the sticky error so later calls start clean */
        return 0;
    }
    return n;
}
