// OpenBLAS sgemm called directly from C: the ceiling owlet's CPU GEMM path is compared with.
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

int main(int argc, char** argv) {
  int sizes[][3] = {{1024, 1024, 1024}, {776, 256, 688}, {776, 688, 256}, {2048, 2048, 2048}};
  for (int s = 0; s < 4; s++) {
    int M = sizes[s][0], K = sizes[s][1], N = sizes[s][2];
    float *a = malloc(sizeof(float) * M * K), *b = malloc(sizeof(float) * K * N), *c = malloc(sizeof(float) * M * N);
    for (long i = 0; i < (long)M * K; i++) a[i] = (float)(i % 7) / 7;
    for (long i = 0; i < (long)K * N; i++) b[i] = (float)(i % 5) / 5;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, a, K, b, K, 0, c, N);
    int reps = s == 3 ? 3 : 10;
    double best = 1e9;
    for (int r = 0; r < reps; r++) {
      double t = now();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, a, K, b, K, 0, c, N);
      t = now() - t;
      if (t < best) best = t;
    }
    printf("{\"M\":%d,\"K\":%d,\"N\":%d,\"gflops\":%.1f}\n", M, K, N, 2.0 * M * N * K / best / 1e9);
    free(a); free(b); free(c);
  }
  return 0;
}
