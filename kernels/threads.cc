#include "kernels/threads.h"

#include <omp.h>

#include "glog/logging.h"

namespace pstrain {
namespace kernels {

void SetCpuThreads(int n) {
  CHECK_GE(n, 1);
  omp_set_num_threads(n);
}

int CpuThreads() { return omp_get_max_threads(); }

}  // namespace kernels
}  // namespace pstrain
