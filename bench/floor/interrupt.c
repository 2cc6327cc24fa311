// What an interrupt costs a busy task on this machine. A task on CPU 0
// copies 64 KB buffers for a fixed time: alone, under a periodic timer
// whose signal has an empty handler (one timer interrupt per period, no
// context switch), and next to a real-time thread on the same CPU that
// sleeps 200 us in a loop (a stream nap of the userspace engine: a timer
// interrupt and two context switches each). The copies lost, divided by the
// interrupts taken, is the CPU time each one cost the task. On a
// paravirtualised guest this is far above bare metal's few microseconds,
// and every timer (a nap, TCP pacing) or cross-CPU wake-up pays it.
// Prints one JSON line.
// Usage: interrupt [SECONDS=1]
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static double seconds = 1;
static _Atomic int stop;
static _Atomic long interrupts;
static char src[65536], dst[65536];

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static void pin(int cpu) {
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(cpu, &s);
  sched_setaffinity(0, sizeof s, &s);
}

static void onTimer(int sig) {
  (void)sig;
  interrupts++;
}

// 64 KB copies done in `seconds`.
static long copy(void) {
  long n = 0;
  double end = now() + seconds;
  while (now() < end) {
    for (int i = 0; i < 16; i++) {
      memcpy(dst, src, sizeof src);
      src[i] ^= dst[i + 1];
    }
    n += 16;
  }
  return n;
}

static void* napper(void* arg) {
  (void)arg;
  pin(0);
  struct sched_param p = {.sched_priority = 1};
  pthread_setschedparam(pthread_self(), SCHED_FIFO, &p);  // as the engine's packet threads
  while (!stop) {
    struct timespec t = {0, 200000};
    clock_nanosleep(CLOCK_MONOTONIC, 0, &t, NULL);
    interrupts++;
  }
  return NULL;
}

static long withTimer(long periodUs) {
  struct itimerval on = {{0, periodUs}, {0, periodUs}}, off = {{0, 0}, {0, 0}};
  interrupts = 0;
  setitimer(ITIMER_REAL, &on, NULL);
  long n = copy();
  setitimer(ITIMER_REAL, &off, NULL);
  return n;
}

static long withNapper(void) {
  pthread_t t;
  interrupts = 0;
  stop = 0;
  pthread_create(&t, NULL, napper, NULL);
  long n = copy();
  stop = 1;
  pthread_join(t, NULL);
  return n;
}

// Microseconds of the copying task's time each interrupt took.
static double costUs(long alone, long with, long count) {
  if (count <= 0) return 0;
  return (double)(alone - with) / alone * seconds * 1e6 / count;
}

int main(int argc, char** argv) {
  if (argc > 1) seconds = atof(argv[1]);
  if (seconds <= 0) {
    fprintf(stderr, "usage: interrupt [SECONDS>0]\n");
    return 2;
  }
  pin(0);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = onTimer;
  sa.sa_flags = SA_RESTART;
  sigaction(SIGALRM, &sa, NULL);
  long alone = copy();
  long t200 = withTimer(200);
  long timer200 = interrupts;
  long t50 = withTimer(50);
  long timer50 = interrupts;
  long nap = withNapper();
  long naps = interrupts;
  long alone2 = copy();  // the machine drifts: the mean of two runs alone
  alone = (alone + alone2) / 2;
  printf("{\"bench\":\"floor\",\"measure\":\"interrupt\",\"seconds\":%g,\"copiesAlone\":%ld,"
         "\"timer200us\":{\"interrupts\":%ld,\"costUs\":%.1f},"
         "\"timer50us\":{\"interrupts\":%ld,\"costUs\":%.1f},"
         "\"realtimeNap200us\":{\"naps\":%ld,\"costUs\":%.1f}}\n",
         seconds, alone, timer200, costUs(alone, t200, timer200), timer50, costUs(alone, t50, timer50), naps,
         costUs(alone, nap, naps));
  return 0;
}
