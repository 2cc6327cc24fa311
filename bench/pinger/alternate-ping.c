// Pings several containers in turn, one echo request at a time, so every
// target sees the same machine: alternate-ping COUNT INTERVAL_US NETNS IP
// [NETNS IP ...]. Sends COUNT requests to each target, rotating which target
// goes first each cycle, INTERVAL_US apart (the path of a target idles
// (targets x interval) between its own pings). An RTT is what ping(8)
// reports: from just before the send to the reply's kernel receive
// timestamp (SO_TIMESTAMPNS). Prints one JSON line per target:
//   {"netns":"...","ip":"...","lost":N,"rttMs":[...]}
// Needs root (raw ICMP socket, setns into the targets' namespaces).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_TARGETS 16

static uint16_t checksum(const void* data, size_t n) {
  const uint8_t* p = data;
  uint32_t sum = 0;
  for (; n > 1; n -= 2, p += 2) sum += (uint32_t)(p[0] << 8 | p[1]);
  if (n) sum += (uint32_t)(p[0] << 8);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return htons((uint16_t)~sum);
}

static double msBetween(struct timespec a, struct timespec b) {
  return ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / 1e6;
}

static void usage(const char* why) {
  fprintf(stderr, "alternate-ping: %s\nusage: alternate-ping COUNT INTERVAL_US NETNS IP [NETNS IP ...]\n", why);
  exit(2);
}

int main(int argc, char** argv) {
  if (argc < 5 || (argc - 3) % 2 != 0) usage("wrong number of arguments");
  char* end;
  long count = strtol(argv[1], &end, 10);
  if (*end || count < 1 || count > 100000) usage("COUNT must be 1..100000");
  long intervalUs = strtol(argv[2], &end, 10);
  if (*end || intervalUs < 0 || intervalUs > 10000000) usage("INTERVAL_US must be 0..10000000");
  int targets = (argc - 3) / 2;
  if (targets > MAX_TARGETS) usage("at most 16 targets");

  int fds[MAX_TARGETS], lost[MAX_TARGETS] = {0}, got[MAX_TARGETS] = {0};
  struct sockaddr_in to[MAX_TARGETS];
  double* rtt[MAX_TARGETS];
  int home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  if (home < 0) usage("cannot open /proc/self/ns/net");
  for (int t = 0; t < targets; t++) {
    const char* netns = argv[3 + 2 * t];
    char path[512];
    snprintf(path, sizeof path, "/var/run/netns/%s", netns);
    int ns = open(path, O_RDONLY | O_CLOEXEC);
    if (ns < 0 || setns(ns, CLONE_NEWNET) != 0) {
      fprintf(stderr, "alternate-ping: cannot enter network namespace %s: %s\n", netns, strerror(errno));
      return 1;
    }
    close(ns);
    // A socket stays in the namespace it was made in.
    fds[t] = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP);
    int one = 1;
    if (fds[t] < 0 || setsockopt(fds[t], SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one) != 0) {
      fprintf(stderr, "alternate-ping: raw ICMP socket in %s: %s (needs root)\n", netns, strerror(errno));
      return 1;
    }
    if (setns(home, CLONE_NEWNET) != 0) return 1;
    memset(&to[t], 0, sizeof to[t]);
    to[t].sin_family = AF_INET;
    if (inet_pton(AF_INET, argv[4 + 2 * t], &to[t].sin_addr) != 1) usage("IP must be an IPv4 address");
    rtt[t] = calloc((size_t)count, sizeof(double));
    if (rtt[t] == NULL) return 1;
  }

  uint16_t id = (uint16_t)getpid();
  for (long i = 0; i < count; i++) {
    for (int k = 0; k < targets; k++) {
      int t = (int)((i + k) % targets);
      struct timespec gap = {intervalUs / 1000000, (intervalUs % 1000000) * 1000};
      while (nanosleep(&gap, &gap) != 0 && errno == EINTR) {
      }
      uint16_t seq = (uint16_t)(i * MAX_TARGETS + t);
      uint8_t request[64] = {0};
      struct icmphdr* h = (struct icmphdr*)request;
      h->type = ICMP_ECHO;
      h->un.echo.id = htons(id);
      h->un.echo.sequence = htons(seq);
      h->checksum = checksum(request, sizeof request);
      struct timespec sent;
      clock_gettime(CLOCK_REALTIME, &sent);  // SO_TIMESTAMPNS is in CLOCK_REALTIME
      if (sendto(fds[t], request, sizeof request, 0, (struct sockaddr*)&to[t], sizeof to[t]) < 0) {
        lost[t]++;
        continue;
      }
      for (;;) {
        struct pollfd pfd = {fds[t], POLLIN, 0};
        if (poll(&pfd, 1, 1000) <= 0) {  // no answer within 1 s: lost
          lost[t]++;
          break;
        }
        uint8_t reply[1500];
        char control[256];
        struct iovec iov = {reply, sizeof reply};
        struct msghdr m = {0};
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        m.msg_control = control;
        m.msg_controllen = sizeof control;
        ssize_t n = recvmsg(fds[t], &m, 0);
        if (n < (ssize_t)sizeof(struct iphdr)) continue;
        const struct iphdr* ip = (const struct iphdr*)reply;
        size_t ipBytes = (size_t)ip->ihl * 4;
        if ((size_t)n < ipBytes + sizeof(struct icmphdr)) continue;
        const struct icmphdr* r = (const struct icmphdr*)(reply + ipBytes);
        // The raw socket sees all ICMP of its namespace: only our answer counts.
        if (r->type != ICMP_ECHOREPLY || ntohs(r->un.echo.id) != id || ntohs(r->un.echo.sequence) != seq) continue;
        struct timespec received = {0, 0};
        for (struct cmsghdr* c = CMSG_FIRSTHDR(&m); c != NULL; c = CMSG_NXTHDR(&m, c))
          if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) memcpy(&received, CMSG_DATA(c), sizeof received);
        if (received.tv_sec == 0) clock_gettime(CLOCK_REALTIME, &received);
        rtt[t][got[t]++] = msBetween(sent, received);
        break;
      }
    }
  }
  for (int t = 0; t < targets; t++) {
    printf("{\"netns\":\"%s\",\"ip\":\"%s\",\"lost\":%d,\"rttMs\":[", argv[3 + 2 * t], argv[4 + 2 * t], lost[t]);
    for (int i = 0; i < got[t]; i++) printf("%s%.4f", i ? "," : "", rtt[t][i]);
    printf("]}\n");
  }
  return 0;
}
