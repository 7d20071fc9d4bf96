// CPU thread count of the kernels: oneDNN (and our parallel loops) run on
// OpenMP, whose team size is a per-thread setting.
#ifndef PSTRAIN_KERNELS_THREADS_H_
#define PSTRAIN_KERNELS_THREADS_H_

namespace pstrain {
namespace kernels {

// Parallel regions started later by the calling thread use `n` threads
// (n >= 1). Call it on every thread that runs kernels.
void SetCpuThreads(int n);
// The team size the calling thread's parallel regions get.
int CpuThreads();

}  // namespace kernels
}  // namespace pstrain

#endif  // PSTRAIN_KERNELS_THREADS_H_
