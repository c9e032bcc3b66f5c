/* The floor of send accuracy on this machine: a C loop that spins on CLOCK_MONOTONIC and,
 * for each due time t0 + i/rate, notes how late it first saw the clock past it. Nothing
 * is sent; what it measures is how often and how long the CPU is taken from a thread
 * that never sleeps (timer ticks, interrupts, the hypervisor). No user-space generator
 * can be more punctual than this on the same machine at the same time.
 *
 *   spinfloor RATE SECONDS  ->  count p50 p90 p99 p99.9 max (µs, one line)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static double pct(const uint64_t *v, size_t n, double q) {
  size_t i = (size_t)(q * (double)n + 0.999999);
  i = i == 0 ? 0 : i - 1;
  if (i >= n) i = n - 1;
  return (double)v[i] / 1000.0;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: spinfloor RATE SECONDS\n");
    return 2;
  }
  double rate = atof(argv[1]), secs = atof(argv[2]);
  if (!(rate > 0 && rate <= 1e7 && secs > 0 && secs <= 3600)) {
    fprintf(stderr, "spinfloor: RATE must be in (0, 1e7], SECONDS in (0, 3600]\n");
    return 2;
  }
  size_t n = (size_t)(rate * secs);
  uint64_t *late = malloc(n * sizeof *late);
  if (!late) return 1;
  double interval = 1e9 / rate;
  uint64_t t0 = now_ns() + 1000000;
  for (size_t i = 0; i < n; i++) {
    uint64_t due = t0 + (uint64_t)((double)i * interval), t;
    while ((t = now_ns()) < due) {
    }
    late[i] = t - due;
  }
  qsort(late, n, sizeof *late, cmp);
  printf("%zu %.0f %.0f %.0f %.0f %.0f\n", n, pct(late, n, .5), pct(late, n, .9), pct(late, n, .99),
         pct(late, n, .999), (double)late[n - 1] / 1000.0);
  return 0;
}
