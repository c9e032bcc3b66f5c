/* clockwatch: the offset of CLOCK_REALTIME against CLOCK_MONOTONIC over time, so that
 * packet timestamps (CLOCK_REALTIME, as tcpdump stamps them) can be put on the monotonic
 * clock even while the realtime clock is being stepped (clock_settime) or slewed.
 *
 * Prints "<monotonic ns> <realtime - monotonic ns> <tick|step>" every 10 ms, and at once
 * whenever the realtime clock is set (a timerfd with TFD_TIMER_CANCEL_ON_SET wakes on each
 * step). Runs until SIGTERM/SIGINT.  Build: cc -O2 -o clockwatch clockwatch.c
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t done;
static void stop(int s) { (void)s; done = 1; }

static int64_t ns(clockid_t c) {
  struct timespec t;
  clock_gettime(c, &t);
  return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void arm(int fd) {
  struct itimerspec its = {0};
  its.it_value.tv_sec = ns(CLOCK_REALTIME) / 1000000000LL + 365 * 86400;
  timerfd_settime(fd, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, &its, NULL);
}

static void line(const char *what) {
  int64_t m1 = ns(CLOCK_MONOTONIC), r = ns(CLOCK_REALTIME), m2 = ns(CLOCK_MONOTONIC);
  int64_t m = m1 + (m2 - m1) / 2;
  printf("%lld %lld %s\n", (long long)m, (long long)(r - m), what);
  fflush(stdout);
}

int main(void) {
  signal(SIGTERM, stop);
  signal(SIGINT, stop);
  int fd = timerfd_create(CLOCK_REALTIME, TFD_CLOEXEC);
  if (fd < 0) { perror("timerfd_create"); return 1; }
  arm(fd);
  line("tick");
  while (!done) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int n = poll(&p, 1, 10);
    if (n > 0) {
      uint64_t v;
      if (read(fd, &v, sizeof v) < 0 && errno == ECANCELED) line("step");
      arm(fd);
    } else if (n == 0) {
      line("tick");
    }
  }
  line("tick");
  return 0;
}
