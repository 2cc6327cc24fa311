// Thread wake-up latency on this machine: a waker stamps the time and
// writes an eventfd; the wakee, blocked in epoll_wait, stamps it again when
// it runs. Samples are gapUs apart so the wakee's CPU can go idle, as it
// does between pings. Prints one JSON line.
// Usage: wakeup WAKER_CPU WAKEE_CPU FIFO(0|1) GAP_US SAMPLES
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

static uint64_t nowNs(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static int eventFd, epollFd, wakeeCpu, fifo, samples;
static _Atomic uint64_t sentNs;
static _Atomic int done;
static uint64_t* latencyNs;

static void pin(int cpu) {
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(cpu, &s);
  pthread_setaffinity_np(pthread_self(), sizeof s, &s);
}

static void* wakee(void* unused) {
  (void)unused;
  pin(wakeeCpu);
  if (fifo) {
    struct sched_param p = {.sched_priority = 1};
    pthread_setschedparam(pthread_self(), SCHED_FIFO, &p);
  }
  for (int i = 0; i < samples; i++) {
    struct epoll_event ev;
    uint64_t v;
    epoll_wait(epollFd, &ev, 1, -1);
    latencyNs[i] = nowNs() - atomic_load(&sentNs);
    if (read(eventFd, &v, sizeof v) < 0) return NULL;
    atomic_store(&done, i + 1);
  }
  return NULL;
}

static int compare(const void* a, const void* b) {
  uint64_t x = *(const uint64_t*)a, y = *(const uint64_t*)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char** argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: wakeup WAKER_CPU WAKEE_CPU FIFO(0|1) GAP_US SAMPLES\n");
    return 2;
  }
  int wakerCpu = atoi(argv[1]), gapUs = atoi(argv[4]);
  wakeeCpu = atoi(argv[2]);
  fifo = atoi(argv[3]);
  samples = atoi(argv[5]);
  if (samples < 10) samples = 10;
  latencyNs = calloc((size_t)samples, sizeof *latencyNs);
  eventFd = eventfd(0, EFD_NONBLOCK);
  epollFd = epoll_create1(0);
  struct epoll_event e = {.events = EPOLLIN};
  epoll_ctl(epollFd, EPOLL_CTL_ADD, eventFd, &e);
  pthread_t t;
  pthread_create(&t, NULL, wakee, NULL);
  pin(wakerCpu);
  usleep(10000);
  for (int i = 0; i < samples; i++) {
    usleep((useconds_t)gapUs);
    atomic_store(&sentNs, nowNs());
    uint64_t one = 1;
    if (write(eventFd, &one, sizeof one) < 0) return 1;
    while (atomic_load(&done) <= i) sched_yield();  // the wakee may need this CPU
  }
  pthread_join(t, NULL);
  qsort(latencyNs, (size_t)samples, sizeof *latencyNs, compare);
  printf("{\"bench\":\"floor\",\"measure\":\"wakeup\",\"wakerCpu\":%d,\"wakeeCpu\":%d,\"fifo\":%s,\"gapUs\":%d,"
         "\"samples\":%d,\"p50Us\":%.1f,\"p90Us\":%.1f,\"p99Us\":%.1f}\n",
         wakerCpu, wakeeCpu, fifo ? "true" : "false", gapUs, samples, latencyNs[samples / 2] / 1e3,
         latencyNs[samples * 9 / 10] / 1e3, latencyNs[samples * 99 / 100] / 1e3);
  return 0;
}
